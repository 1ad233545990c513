"""Training: ``rotdet train CONFIG [key=value ...]`` and :func:`train`.

One iteration, as mmdet 2.x's ``EpochBasedRunner`` + ``OptimizerHook`` run it: set the lr of this
iteration (warm-up, then the schedule), ``model.loss_batch(batch)`` under optional autocast, sum
the ``loss*`` terms, backward, clip the gradient norm, step. The run is described by the config
(model, data, optimizer, lr_config, max_epochs, evaluation) plus :class:`TrainOptions`.

What a user can rely on:

* ``work_dir`` holds ``config.yaml`` (resolved), ``train.log``, ``log.jsonl``, ``tensorboard/``,
  ``curves.png``, ``epoch_N.pth`` (the last ``keep`` of them), ``latest.pth`` and ``best.pth``;
  every checkpoint is written atomically.
* ``resume="auto"`` continues from ``work_dir/latest.pth`` when it exists; a checkpoint stores the
  model, optimizer, AMP scaler, epoch, iteration (also within an epoch) and RNG states, and the data
  order and augmentation are functions of (seed, epoch, index), so an interrupted run continues with
  exactly the batches and weights it would have had (bit for bit on the CPU in deterministic mode).
* Ctrl-C finishes the current iteration, saves ``latest.pth`` and exits; a second Ctrl-C aborts.
* A NaN/Inf loss stops the run with an error naming the iteration and the loss term; nothing is
  saved after it, so the last checkpoint is the last good one.
* Under ``torchrun`` with several processes, the model is wrapped in DDP, each rank reads its shard
  of every epoch, evaluation results are gathered from all ranks and rank 0 alone writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from rotdet.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from rotdet.engine.data import build_dataset, build_train_loader
from rotdet.engine.distributed import DistInfo, barrier, broadcast_object, get_dist_info, init_distributed
from rotdet.engine.logger import RunLogger, plot_curves
from rotdet.engine.optim import LrSchedule, build_optimizer, scaled_lr
from rotdet.engine.runtime import AMP_DTYPES, autocast, peak_memory_mib, resolve_amp

__all__ = ["NonFiniteLossError", "TrainOptions", "TrainResult", "train"]

logger = logging.getLogger("rotdet.train")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf (the message names the iteration and the term)."""


@dataclass
class TrainOptions:
    """How to run a training (the config says what to train).

    Attributes:
        work_dir: output folder (default ``work_dirs/<config name>``).
        data_root: overrides the config's ``data.root``.
        resume: ``"auto"`` (from ``work_dir/latest.pth`` if present), a checkpoint path, or None.
        load_from: weights to start from (rotdet or mmrotate checkpoint; tensors whose name or
            shape does not match the model are skipped and listed in the log).
        amp: ``none``, ``bf16``, ``fp16`` (with a gradient scaler; CUDA only) or ``auto`` (see
            :func:`rotdet.engine.runtime.resolve_amp`).
        seed: seeds data order, augmentation and initialisation.
        deterministic: deterministic algorithms (bitwise-reproducible runs on the CPU).
        auto_scale_lr: scale the lr linearly from ``auto_scale_lr.base_batch_size`` to the total batch.
        device: ``cpu``, ``cuda``, ``cuda:1``; default cuda:LOCAL_RANK when available.
        batch_size / num_workers / max_epochs: override the config's per-process batch size,
            loader workers and number of epochs.
        max_iters: stop after this many iterations in total (saving a resumable checkpoint).
        eval_interval: evaluate every N epochs (default ``evaluation.interval``; 0 disables).
        keep: epoch checkpoints kept.
        log_interval: iterations between log records.
        progress: show a tqdm progress bar.
    """

    work_dir: str | os.PathLike | None = None
    data_root: str | os.PathLike | None = None
    resume: str | os.PathLike | None = "auto"
    load_from: str | os.PathLike | None = None
    amp: str = "none"
    seed: int = 0
    deterministic: bool = False
    auto_scale_lr: bool = False
    device: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    max_epochs: int | None = None
    max_iters: int | None = None
    eval_interval: int | None = None
    keep: int = 3
    log_interval: int = 10
    progress: bool = True


@dataclass
class TrainResult:
    work_dir: Path
    epoch: int
    iteration: int
    last_map: float | None = None
    last_eval: object | None = None  # the EvalResult of the last evaluation (rank 0)
    best_map: float | None = None
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    # The legacy global numpy RNG is what third-party transforms draw from.
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _rng_state() -> dict:
    np_state = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load the tensors of a checkpoint whose names and shapes match ``model`` (``--load-from``);
    returns ``{"loaded": n, "skipped": [names]}``."""
    from rotdet.models.mmrotate_import import mmrotate_to_rotdet_key

    ckpt = load_checkpoint(path)
    own = model.state_dict()
    loaded, skipped = {}, []
    for key, value in ckpt["state_dict"].items():
        name = mmrotate_to_rotdet_key(key) if key not in own else key
        if name in own and own[name].shape == value.shape:
            loaded[name] = value
        else:
            skipped.append(key)
    if not loaded:
        raise CheckpointError(
            f"{path}: no tensor matches the model (is it a checkpoint of another detector?)"
        )
    model.load_state_dict(loaded, strict=False)
    missing = sorted(set(own) - set(loaded))
    logger.info(
        "load-from %s: %d tensors loaded, %d skipped, %d left as initialised",
        path,
        len(loaded),
        len(skipped),
        len(missing),
    )
    if skipped:
        logger.info(
            "skipped (name or shape differs): %s",
            ", ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""),
        )
    return {"loaded": len(loaded), "skipped": skipped}


RUN_FILES = (
    "*.pth",
    "log.jsonl",
    "train.log",
    "curves.png",
    "checkpoints.json",
    "config.yaml",
    "tensorboard",
)


def archive_previous_run(work_dir: Path) -> Path | None:
    """Move the files of an earlier run out of the way (into ``work_dir/previous/<time>/``) before a
    fresh start, so its checkpoints are neither overwritten nor pruned; returns the folder."""
    found = [p for pattern in RUN_FILES for p in work_dir.glob(pattern)]
    if not found:
        return None
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
    dest = work_dir / "previous" / stamp
    while dest.exists():
        n += 1
        dest = work_dir / "previous" / f"{stamp}-{n}"
    dest.mkdir(parents=True)
    for path in found:
        path.rename(dest / path.name)
    logger.info("fresh start: the previous run's files were moved to %s", dest)
    return dest


class _LossModule(nn.Module):
    """``forward(batch) -> losses``, so DDP's hooks see the loss computation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.model.loss_batch(batch)


def _to_device(batch: dict, device: torch.device) -> dict:
    out = dict(batch)
    out["img"] = batch["img"].to(device, non_blocking=True)
    for key in ("gt_bboxes", "gt_labels"):
        out[key] = [t.to(device, non_blocking=True) for t in batch[key]]
    return out


def _loss_terms(losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and each term as a float (one host sync for all of them)."""
    names = [k for k in losses if "loss" in k]
    values = torch.stack([losses[k].detach().float().sum() for k in names])
    total = sum(losses[k].sum() for k in names)
    floats = values.cpu().tolist()
    return total, dict(zip(names, floats, strict=True))


class _StopRequest:
    """First Ctrl-C asks the loop to stop after the current iteration; the second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self):
        # Signal handlers can only be installed from the main thread (train() may run elsewhere).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this iteration (Ctrl-C again to abort without saving)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _agreed_stop(requested: bool, info: DistInfo, check_now: bool) -> bool:
    """Whether to stop after this iteration. Under DDP every rank must agree (one rank leaving the
    loop would hang the others in the next all-reduce), so rank 0's flag is broadcast; that costs a
    collective and a host sync, so it is done every ``log_interval`` iterations, not each one."""
    if not info.distributed:
        return requested
    return bool(broadcast_object(requested)) if check_now else False


def _setup_file_logging(work_dir: Path, info: DistInfo) -> logging.Handler | None:
    if not info.is_main:
        return None
    handler = logging.FileHandler(work_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("rotdet")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def train(cfg: dict, options: TrainOptions | None = None) -> TrainResult:
    """Train ``cfg`` (a config dict from :func:`rotdet.configs.load_config`) as ``options`` say.

    The process-wide switches a run sets (deterministic algorithms, cuDNN autotuning) are restored
    when it returns, so a Python session can go on with other work."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    try:
        return _train(cfg, options)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


def _train(cfg: dict, options: TrainOptions | None) -> TrainResult:
    from rotdet.engine.test import evaluate_model
    from rotdet.models.factory import build_model

    opts = options or TrainOptions()
    info, device = init_distributed(opts.device)
    opts = dataclasses.replace(opts, amp=resolve_amp(opts.amp, device))
    work_dir = Path(opts.work_dir or Path("work_dirs") / cfg.get("name", "run"))
    if info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        if opts.resume is None:
            archive_previous_run(work_dir)
        with open(work_dir / "config.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
    barrier()
    log_handler = _setup_file_logging(work_dir, info)
    seed_everything(opts.seed, opts.deterministic)

    # Data first: a wrong data path should fail before the model is built.
    train_set = build_dataset(cfg, "train", opts.data_root)
    eval_interval = (
        opts.eval_interval if opts.eval_interval is not None else cfg.get("evaluation", {}).get("interval", 1)
    )
    val_set = build_dataset(cfg, "val", opts.data_root) if eval_interval else None
    batch_size = opts.batch_size or cfg["data"]["samples_per_gpu"]
    workers = opts.num_workers if opts.num_workers is not None else cfg["data"].get("workers_per_gpu", 2)
    loader, sampler = build_train_loader(
        train_set, batch_size, workers, opts.seed, info.rank, info.world_size
    )
    iters_per_epoch = len(loader)
    max_epochs = opts.max_epochs or cfg["max_epochs"]

    model = build_model(cfg)
    if opts.load_from:
        load_pretrained(model, opts.load_from)
    model.to(device)
    lr = cfg["optimizer"]["lr"]
    if opts.auto_scale_lr:
        base = cfg.get("auto_scale_lr", {}).get("base_batch_size", cfg["data"]["samples_per_gpu"])
        lr = scaled_lr(lr, batch_size * info.world_size, base)
        logger.info(
            "auto-scale-lr: lr %.6g for a total batch of %d (base %d)", lr, batch_size * info.world_size, base
        )
    optimizer = build_optimizer(cfg, model.parameters(), lr)
    schedule = LrSchedule(cfg["lr_config"], lr, total_iters=max_epochs * iters_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=opts.amp == "fp16")
    clip = cfg.get("grad_clip")

    epoch, iteration, epoch_iter = 0, 0, 0
    resume_path = latest_checkpoint(work_dir) if opts.resume == "auto" else opts.resume
    if resume_path:
        # On the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest to the device.
        ckpt = load_checkpoint(resume_path, map_location="cpu")
        if "optimizer" not in ckpt:
            raise CheckpointError(f"{resume_path} holds weights only; use --load-from to start from it")
        model.load_state_dict(ckpt["state_dict"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        meta = ckpt["meta"]
        epoch, iteration, epoch_iter = int(meta["epoch"]), int(meta["iter"]), int(meta.get("epoch_iter", 0))
        if "rng" in ckpt:
            _set_rng_state(ckpt["rng"])
        logger.info("resumed from %s: epoch %d, iteration %d", resume_path, epoch, iteration)
        del ckpt

    module: nn.Module = _LossModule(model)
    if info.distributed:
        module = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None
        )
    run_log = RunLogger(work_dir) if info.is_main else None
    manager = CheckpointManager(work_dir, keep=opts.keep) if info.is_main else None
    classes = list(train_set.classes)
    result = TrainResult(work_dir, epoch, iteration, best_map=manager.best_metric if manager else None)

    def checkpoint(with_training_state: bool = True) -> dict:
        meta = {
            "rotdet_version": __import__("rotdet").__version__,
            "config": cfg,
            "classes": classes,
            "angle_version": cfg["angle_version"],
            "epoch": epoch,
            "iter": iteration,
            "epoch_iter": epoch_iter,
            "seed": opts.seed,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        obj = {"state_dict": model.state_dict(), "meta": meta}
        if with_training_state:
            obj.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=_rng_state())
        return obj

    def save_latest() -> None:
        if manager:
            save_checkpoint(checkpoint(), work_dir / "latest.pth")

    logger.info(
        "training %s on %s (amp %s): %d images, %d iterations/epoch (batch %d x %d processes), %d epochs",
        cfg.get("name"),
        device,
        opts.amp,
        len(train_set),
        iters_per_epoch,
        batch_size,
        info.world_size,
        max_epochs,
    )
    stop_reason = None
    with _StopRequest() as stop:
        while epoch < max_epochs and stop_reason is None:
            model.train()
            sampler.set_epoch(epoch, start=epoch_iter * batch_size)
            bar = None
            if info.is_main and opts.progress:
                from tqdm import tqdm

                bar = tqdm(
                    total=iters_per_epoch,
                    initial=epoch_iter,
                    desc=f"epoch {epoch + 1}/{max_epochs}",
                    dynamic_ncols=True,
                )
            t_data = time.perf_counter()
            window: list[dict] = []
            try:
                for batch in loader:
                    data_time = time.perf_counter() - t_data
                    lr_now = schedule(iteration, epoch)
                    LrSchedule.apply(optimizer, lr_now)
                    batch = _to_device(batch, device)
                    with autocast(device, opts.amp):
                        losses = module(batch)
                    total, terms = _loss_terms(losses)
                    bad = [k for k, v in terms.items() if not math.isfinite(v)]
                    if bad:
                        raise NonFiniteLossError(
                            f"non-finite loss at iteration {iteration + 1} (epoch {epoch + 1}): "
                            + ", ".join(f"{k}={terms[k]}" for k in bad)
                            + f"; the last good checkpoint is in {work_dir}"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(total).backward()
                    if clip:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(
                            [p for p in model.parameters() if p.grad is not None],
                            max_norm=clip["max_norm"],
                            norm_type=clip.get("norm_type", 2),
                        )
                    scaler.step(optimizer)
                    scaler.update()
                    iteration += 1
                    epoch_iter += 1
                    window.append({"loss": sum(terms.values()), **terms, "data_time": data_time})
                    if bar is not None:
                        bar.update(1)
                        # "s0.loss_cls" -> "s0.cls": the terms stay readable in one line
                        shown = {"loss": f"{window[-1]['loss']:.3f}"}  # a dict keeps this order
                        shown.update((k.replace("loss_", ""), f"{v:.3f}") for k, v in terms.items())
                        shown.update(lr=f"{lr_now:.2e}", mem=f"{peak_memory_mib(device):.0f}M")
                        bar.set_postfix(shown, refresh=False)
                    if opts.max_iters is not None and iteration >= opts.max_iters:
                        stop_reason = "max_iters"
                    elif _agreed_stop(stop.requested, info, iteration % opts.log_interval == 0):
                        stop_reason = "interrupted"
                    if run_log and (
                        iteration % opts.log_interval == 0 or epoch_iter == iters_per_epoch or stop_reason
                    ):
                        record = {"mode": "train", "epoch": epoch + 1, "iter": iteration, "lr": lr_now}
                        for key in window[0]:
                            record[key] = sum(w[key] for w in window) / len(window)
                        record["memory"] = round(peak_memory_mib(device), 1)
                        run_log.log(record)
                        result.history.append(record)
                        window = []
                    if stop_reason and epoch_iter < iters_per_epoch:
                        break  # otherwise the epoch is complete: its checkpoint and evaluation follow
                    t_data = time.perf_counter()
            except RuntimeError:
                if not stop.requested:  # a dying loader worker after Ctrl-C is expected
                    raise
                stop_reason = "interrupted"
            finally:
                if bar is not None:
                    bar.close()
            if stop_reason and epoch_iter < iters_per_epoch:
                break
            epoch += 1
            epoch_iter = 0
            if manager:
                manager.save(checkpoint(), epoch)
            if eval_interval and (epoch % eval_interval == 0 or epoch == max_epochs):
                res = evaluate_model(
                    model, val_set, device, amp=opts.amp, progress=opts.progress and info.is_main
                )
                if info.is_main:
                    result.last_map, result.last_eval = res.map, res
                    record = {
                        "mode": "val",
                        "epoch": epoch,
                        "iter": iteration,
                        "mAP": res.map,
                        "AP": {c.name: c.ap for c in res.classes},
                    }
                    run_log.log(record)
                    result.history.append(record)
                    logger.info("epoch %d: mAP %.4f\n%s", epoch, res.map, res.table())
                    if manager.update_best(checkpoint(with_training_state=False), epoch, res.map):
                        logger.info("new best mAP %.4f saved to %s", res.map, work_dir / "best.pth")
            if info.is_main:
                plot_curves(work_dir / "log.jsonl", work_dir / "curves.png")
            if stop_reason:
                break
        if stop_reason:
            if epoch_iter:  # stopped inside an epoch: latest.pth records the position
                save_latest()
            if info.is_main:
                plot_curves(work_dir / "log.jsonl", work_dir / "curves.png")
                logger.info(
                    "stopped (%s) at iteration %d; `--resume` continues from %s",
                    stop_reason,
                    iteration,
                    work_dir / "latest.pth",
                )
    barrier()
    if run_log:
        run_log.close()
    if log_handler:
        logging.getLogger("rotdet").removeHandler(log_handler)
        log_handler.close()
    result.epoch, result.iteration = epoch, iteration
    if manager:
        result.best_map = manager.best_metric
    if stop_reason == "interrupted":
        raise KeyboardInterrupt(
            f"training interrupted at iteration {iteration}; resume from {work_dir / 'latest.pth'}"
        )
    return result


# ----------------------------------------------------------------------------------- command line


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config name (an unknown name lists the valid ones) or a .yaml path")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optimizer.lr=0.005"
    )
    parser.add_argument("--work-dir", default=None, help="output folder (default work_dirs/<config>)")
    parser.add_argument("--data-root", default=None, help="dataset root (default: the config's data.root)")
    parser.add_argument(
        "--resume",
        default="auto",
        metavar="CKPT",
        help="checkpoint to resume from (default: work_dir/latest.pth when present)",
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="start from scratch even if work_dir has a checkpoint"
    )
    parser.add_argument(
        "--load-from", default=None, metavar="CKPT", help="initial weights (rotdet or mmrotate checkpoint)"
    )
    parser.add_argument(
        "--amp",
        choices=[*AMP_DTYPES, "auto"],
        default="none",
        help="mixed precision (auto: bf16 where native)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    parser.add_argument(
        "--auto-scale-lr", action="store_true", help="linear lr scaling to the total batch size"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per process (default: the config's)"
    )
    parser.add_argument("--workers", type=int, default=None, help="loader workers per process")
    parser.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the config's)")
    parser.add_argument("--max-iters", type=int, default=None, help="stop after this many iterations")
    parser.add_argument("--eval-interval", type=int, default=None, help="evaluate every N epochs (0: never)")
    parser.add_argument("--keep", type=int, default=3, help="epoch checkpoints kept (plus latest and best)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    from rotdet.configs import load_config

    cfg = load_config(args.config, args.overrides)
    opts = TrainOptions(
        work_dir=args.work_dir,
        data_root=args.data_root,
        resume=None if args.no_resume else args.resume,
        load_from=args.load_from,
        amp=args.amp,
        seed=args.seed,
        deterministic=args.deterministic,
        auto_scale_lr=args.auto_scale_lr,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        max_epochs=args.epochs,
        max_iters=args.max_iters,
        eval_interval=args.eval_interval,
        keep=args.keep,
        progress=not args.no_progress,
    )
    result = train(cfg, opts)
    if get_dist_info().is_main:
        best = f", best mAP {result.best_map:.4f}" if result.best_map is not None else ""
        print(
            f"trained {result.iteration} iterations ({result.epoch} epochs){best}; "
            f"outputs in {result.work_dir}"
        )
    return 0
