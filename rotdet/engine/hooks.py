"""The hooks of :class:`rotdet.engine.trainer.Trainer`: one small class per concern.

A hook sees the trainer as ``self.trainer`` (set by :meth:`Trainer.register_hooks`) and reads what
it needs from it: ``epoch`` (epochs completed), ``iteration`` (steps done), ``epoch_iter``,
``iters_per_epoch``, ``max_epochs``, ``step_output`` (the floats of the last step), ``stop_reason``,
``work_dir``, ``info`` (rank, world size). Hooks run in the order they are registered, at:

``before_train`` · ``before_epoch`` · ``after_step`` · ``after_epoch`` · ``before_eval`` ·
``after_eval(result)`` · ``write(record)`` (a record for the logs) · ``after_train``

``after_train`` also runs when training fails (``trainer.failed`` then is True), so that files are
closed; nothing is saved then. The default set (:func:`default_hooks`), in this order:

* :class:`ProgressBar` (rank 0): a tqdm bar per epoch with the loss terms, lr and memory;
* :class:`StopOnInterrupt`: the first Ctrl-C stops after the current iteration (under DDP once every
  rank agrees), during an evaluation at once; a second Ctrl-C aborts;
* :class:`MetricsWriter` (rank 0): ``log.jsonl``, TensorBoard scalars and ``curves.png``;
* :class:`Checkpointer` (rank 0): ``epoch_N.pth`` / ``latest.pth`` (the last K epochs), ``best.pth``,
  and ``latest.pth`` when a run stops inside an epoch;
* :class:`Evaluator`: every ``interval`` epochs and after the last one; first of all an evaluation
  that a killed run left undone.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from rotdet.engine.checkpoint import CheckpointManager
from rotdet.engine.distributed import broadcast_object
from rotdet.engine.logger import RunLogger, plot_curves, truncate_log
from rotdet.engine.runtime import peak_memory_mib
from rotdet.engine.test import evaluate_model

__all__ = [
    "Checkpointer",
    "Evaluator",
    "HookBase",
    "MetricsWriter",
    "ProgressBar",
    "StopOnInterrupt",
    "default_hooks",
]

logger = logging.getLogger("rotdet.train")


class HookBase:
    """Does nothing at every event; a hook overrides the events it cares about."""

    trainer: Any = None

    def before_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def after_step(self) -> None: ...

    def after_epoch(self) -> None: ...

    def before_eval(self) -> None: ...

    def after_eval(self, result) -> None: ...

    def write(self, record: dict) -> None: ...

    def after_train(self) -> None: ...


def loss_terms(output: dict[str, float]) -> dict[str, float]:
    """The loss terms of a step's output (``loss_cls``, ``s0.loss_bbox``...), not their sum."""
    return {k: v for k, v in output.items() if "loss" in k and k != "loss"}


class ProgressBar(HookBase):
    """One tqdm bar per epoch; the postfix shows the loss, each term, the lr and peak memory."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def before_epoch(self) -> None:
        t = self.trainer
        desc = f"epoch {t.epoch + 1}/{t.max_epochs}"
        self.bar = tqdm(total=t.iters_per_epoch, initial=t.epoch_iter, desc=desc, dynamic_ncols=True)

    def after_step(self) -> None:
        out = self.trainer.step_output
        self.bar.update(1)
        # "s0.loss_cls" -> "s0.cls": the terms stay readable in one line
        shown = {"loss": f"{out['loss']:.3f}"}  # a dict keeps this order
        shown.update((k.replace("loss_", ""), f"{v:.3f}") for k, v in loss_terms(out).items())
        shown.update(lr=f"{out['lr']:.2e}", mem=f"{peak_memory_mib(self.trainer.device):.0f}M")
        self.bar.set_postfix(shown, refresh=False)

    def after_epoch(self) -> None:
        self._close()

    def after_train(self) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StopOnInterrupt(HookBase):
    """Ctrl-C handling. The first Ctrl-C asks to stop after the current iteration (the trainer then
    saves ``latest.pth``); during an evaluation it stops at once, since the rerun evaluates that epoch
    first; a second Ctrl-C aborts. Under DDP every rank must leave the loop at the same iteration
    (one rank leaving would hang the others in the next all-reduce), so rank 0's flag is broadcast
    every ``check_interval`` iterations (a collective and a host sync: not each iteration)."""

    def __init__(self, check_interval: int = 10) -> None:
        self.check_interval = max(1, int(check_interval))
        self.evaluating = False
        self._previous = None

    def before_train(self) -> None:
        # Signal handlers can only be installed from the main thread (train() may run elsewhere).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum=None, frame=None) -> None:
        t = self.trainer
        if self.evaluating:
            raise KeyboardInterrupt(
                f"interrupted at the evaluation of epoch {t.epoch}, which a rerun does first; "
                + t.resume_hint()
            )
        if t.interrupted:
            raise KeyboardInterrupt(f"aborted by a second Ctrl-C; {t.resume_hint()}")
        t.interrupted = True
        logger.warning("\nstopping after this iteration (Ctrl-C again to abort without saving)")

    def after_step(self) -> None:
        t = self.trainer
        if t.stop_reason:
            return
        if t.info.distributed:
            if t.iteration % self.check_interval == 0 and broadcast_object(t.interrupted):
                t.stop_reason = "interrupted"
        elif t.interrupted:
            t.stop_reason = "interrupted"

    def before_eval(self) -> None:
        self.evaluating = True
        if self.trainer.interrupted and not self.trainer.info.distributed:
            self.handle()  # the Ctrl-C came while the epoch was being saved: do not start

    def after_eval(self, result) -> None:
        self.evaluating = False

    def after_train(self) -> None:
        self.evaluating = False
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class MetricsWriter(HookBase):
    """Training records (means over ``log_interval`` iterations, and at the end of each epoch) and
    evaluation records into ``log.jsonl`` and TensorBoard; ``curves.png`` redrawn after every epoch
    (when the next one starts, that is after its evaluation) and at the end."""

    def __init__(self, log_interval: int = 10, tensorboard: bool = True) -> None:
        self.log_interval = max(1, int(log_interval))
        self.tensorboard = tensorboard
        self.run_log: RunLogger | None = None
        self.window: list[dict[str, float]] = []

    def before_train(self) -> None:
        t = self.trainer
        dropped = truncate_log(t.work_dir / "log.jsonl", t.iteration, t.evaluated_epoch)
        if dropped:
            logger.info("log.jsonl: %d records of the interrupted run after this point removed", dropped)
        self.run_log = RunLogger(t.work_dir, tensorboard=self.tensorboard, purge_step=t.iteration + 1)

    def before_epoch(self) -> None:
        self.window = []
        self._plot()

    def after_step(self) -> None:
        t = self.trainer
        self.window.append({k: v for k, v in t.step_output.items() if k != "lr"})
        if t.iteration % self.log_interval == 0 or t.epoch_iter == t.iters_per_epoch or t.stop_reason:
            record = {"mode": "train", "epoch": t.epoch + 1, "iter": t.iteration, "lr": t.step_output["lr"]}
            for key in self.window[0]:
                record[key] = sum(w[key] for w in self.window) / len(self.window)
            record["memory"] = round(peak_memory_mib(t.device), 1)
            self.window = []
            t.log(record)

    def write(self, record: dict) -> None:
        self.run_log.log(record)

    def after_train(self) -> None:
        if self.run_log is not None:
            self._plot()
            self.run_log.close()
            self.run_log = None

    def _plot(self) -> None:
        work_dir = self.trainer.work_dir
        plot_curves(work_dir / "log.jsonl", work_dir / "curves.png")


class Checkpointer(HookBase):
    """``epoch_N.pth`` + ``latest.pth`` after each epoch (the last ``keep`` epochs are kept),
    ``best.pth`` when an evaluation improves the mAP, ``latest.pth`` when a run stops part-way
    through an epoch. Non-finite weights are never written (the trainer raises instead)."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self.manager: CheckpointManager | None = None

    def before_train(self) -> None:
        self.manager = CheckpointManager(self.trainer.work_dir, keep=self.keep)
        self.manager.evaluated_epoch = self.trainer.evaluated_epoch  # also known for older work dirs
        self.trainer.result.best_map = self.manager.best_metric

    def after_epoch(self) -> None:
        t = self.trainer
        t.check_finite_state()
        t.last_checkpoint = self.manager.save(t.state_dict(), t.epoch)

    def after_eval(self, result) -> None:
        t = self.trainer
        if self.manager.update_best(t.state_dict(with_training_state=False), t.epoch, result.map):
            logger.info("new best mAP %.4f saved to %s", result.map, t.work_dir / "best.pth")
        t.evaluated_epoch = t.epoch
        t.result.best_map = self.manager.best_metric

    def after_train(self) -> None:
        t = self.trainer
        if t.failed or not t.stop_reason:
            return
        if t.epoch_iter:  # stopped inside an epoch: latest.pth records the position
            t.check_finite_state()
            t.last_checkpoint = self.manager.save(t.state_dict(), t.epoch, name="latest.pth")
        logger.info(
            "stopped (%s) at iteration %d; `--resume` continues from %s",
            t.stop_reason,
            t.iteration,
            t.work_dir / "latest.pth",
        )


class Evaluator(HookBase):
    """mAP on ``dataset`` every ``interval`` epochs and after the last one (all ranks take part; rank 0
    logs it). First of all, the evaluation a killed run left undone: a run resumed at the end of
    an epoch due for evaluation that ``trainer.evaluated_epoch`` does not cover evaluates it before
    training on. An interrupted run (Ctrl-C) leaves the evaluation of its last epoch to the rerun."""

    def __init__(self, dataset, interval: int, evaluate: Callable = evaluate_model) -> None:
        self.dataset = dataset
        self.interval = interval
        self.evaluate = evaluate

    def before_train(self) -> None:
        t = self.trainer
        if t.epoch and not t.epoch_iter and self.due(t.epoch) and t.evaluated_epoch < t.epoch:
            logger.info("epoch %d was saved but its evaluation did not finish: evaluating it now", t.epoch)
            self.run()

    def after_epoch(self) -> None:
        if self.due(self.trainer.epoch) and self.trainer.stop_reason != "interrupted":
            self.run()

    def due(self, epoch: int) -> bool:
        return bool(self.interval) and (epoch % self.interval == 0 or epoch == self.trainer.max_epochs)

    def run(self) -> None:
        t = self.trainer
        t.call_hooks("before_eval")
        progress = t.opts.progress and t.info.is_main
        res = self.evaluate(t.model, self.dataset, t.device, amp=t.amp, progress=progress)
        if t.info.is_main:
            t.result.last_map, t.result.last_eval = res.map, res
            aps = {c.name: c.ap for c in res.classes}
            t.log({"mode": "val", "epoch": t.epoch, "iter": t.iteration, "mAP": res.map, "AP": aps})
            logger.info("epoch %d: mAP %.4f\n%s", t.epoch, res.map, res.table())
        t.call_hooks("after_eval", res)


def default_hooks(trainer) -> list[HookBase]:
    """The hooks of ``rotdet train`` for ``trainer`` (built: its options, rank and datasets known)."""
    opts, main = trainer.opts, trainer.info.is_main
    hooks: list[HookBase] = [ProgressBar()] if main and opts.progress else []
    hooks.append(StopOnInterrupt(opts.log_interval))
    if main:
        hooks += [MetricsWriter(opts.log_interval), Checkpointer(opts.keep)]
    if trainer.eval_interval:
        hooks.append(Evaluator(trainer.val_set, trainer.eval_interval))
    return hooks
