"""The training loop: :class:`Trainer`, its named steps, and the options and result of a run.

One iteration, :meth:`Trainer.run_step`, as mmdet 2.x's ``EpochBasedRunner`` + ``OptimizerHook``
run it: set the lr of this iteration (warm-up, then the schedule), ``model.loss_batch(batch)`` under
optional autocast, sum the ``loss*`` terms, stop on a non-finite term, backward, clip (and measure)
the gradient norm, stop on a non-finite norm without taking the step, optimizer step. It is the
only copy of the training step: ``rotdet bench --train`` times it too.

Everything around the step is a hook (:mod:`rotdet.engine.hooks`): progress bar, logs, checkpoints,
evaluation, Ctrl-C. ``Trainer(cfg, options).build().train()`` is what ``rotdet train`` runs::

    trainer = Trainer(cfg, TrainOptions(work_dir="work_dirs/x"), model=my_model)  # model: optional
    trainer.build()                       # data, model, optimizer, resume, hooks
    trainer.register_hooks([MyHook()])    # more hooks (or hooks=[...] replaces the default set)
    result = trainer.train()

The state of a run is ``(model, optimizer, scaler, epoch, iteration, epoch_iter, RNG states)``
(:meth:`Trainer.state_dict`); the data order and augmentation are functions of (seed, epoch,
index), so a resumed run continues with exactly the batches and weights it would have had (bit for
bit on the CPU in deterministic mode).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

import rotdet
from rotdet.data.dataset import check_images
from rotdet.data.transforms import ImageReadError
from rotdet.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    check_checkpoint_fits,
    latest_checkpoint,
    load_checkpoint,
)
from rotdet.engine.data import build_dataset, build_train_loader
from rotdet.engine.distributed import DistInfo, barrier, broadcast_object, init_distributed
from rotdet.engine.hooks import HookBase, default_hooks
from rotdet.engine.logger import read_log
from rotdet.engine.optim import LrSchedule, build_optimizer, scaled_lr
from rotdet.engine.runtime import (
    autocast,
    config_loss_scaling,
    loss_scaling,
    resolve_train_amp,
    rng_state,
    seed_everything,
    set_rng_state,
)
from rotdet.fileio import atomic_write_text, remove_stale_temporaries
from rotdet.models.factory import build_model
from rotdet.models.mmrotate_import import load_weights

__all__ = [
    "NonFiniteLossError",
    "TrainOptions",
    "TrainResult",
    "Trainer",
    "archive_previous_run",
    "load_pretrained",
    "weights_record",
]

logger = logging.getLogger("rotdet.train")


class NonFiniteLossError(FloatingPointError):
    """The loss, the gradients or the weights became NaN or Inf (the message names the iteration,
    the term, and the last good checkpoint or that there is none)."""


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
            :func:`rotdet.engine.runtime.resolve_amp`); None (the default): the config's, ``fp16``
            when it has an ``fp16`` key (bf16 off CUDA, with a warning), else ``none`` (see
            :func:`rotdet.engine.runtime.resolve_train_amp`). fp16 scales the loss as the config's
            ``fp16.loss_scale`` says (dynamic without one).
        seed: seeds data order, augmentation and initialisation.
        deterministic: deterministic algorithms (bitwise-reproducible runs on the CPU).
        auto_scale_lr: scale the lr linearly from ``auto_scale_lr.base_batch_size`` to the total batch.
        device: ``cpu``, ``cuda``, ``cuda:1``; default cuda:LOCAL_RANK when available.
        batch_size / num_workers / max_epochs: override the config's per-process batch size,
            loader workers and number of epochs.
        max_iters: stop after this many iterations in total (saving a resumable checkpoint).
        eval_interval: evaluate every N epochs (default ``evaluation.interval``; 0 disables).
        skip_invalid: leave out the missing or unreadable images the scan before training finds
            (default: an error naming them all; also ``data.skip_invalid: true`` in a config).
        keep: epoch checkpoints kept.
        log_interval: iterations between log records.
        progress: show a tqdm progress bar.
    """

    work_dir: str | os.PathLike | None = None
    data_root: str | os.PathLike | None = None
    resume: str | os.PathLike | None = "auto"
    load_from: str | os.PathLike | None = None
    amp: str | None = None
    seed: int = 0
    deterministic: bool = False
    auto_scale_lr: bool = False
    device: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    max_epochs: int | None = None
    max_iters: int | None = None
    eval_interval: int | None = None
    skip_invalid: bool = False
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


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load the tensors of a checkpoint whose names and shapes match ``model`` (``--load-from``,
    :func:`rotdet.models.load_weights` in its matching mode); returns ``{"loaded": n, "skipped":
    [names]}``."""
    try:
        report = load_weights(model, load_checkpoint(path), strict=False)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    logger.info(
        "load-from %s: %d tensors loaded, %d skipped, %d left as initialised",
        path,
        report.loaded,
        len(report.skipped),
        len(report.missing),
    )
    if report.skipped:
        logger.info(
            "skipped (name or shape differs): %s",
            ", ".join(report.skipped[:20]) + (" ..." if len(report.skipped) > 20 else ""),
        )
    return {"loaded": report.loaded, "skipped": report.skipped}


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, in hex (a second or less for a ResNet-50 or a detector checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_file(source: str) -> Path | None:
    """The local file of a weights source: the path itself, or the hub cache file of a URL."""
    if "://" not in source:
        return Path(source)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(source).name
    return cached if cached.is_file() else None


def weights_record(model: nn.Module, load_from: str | os.PathLike | None = None) -> dict:
    """What a model's weights started from, for the checkpoint's meta: ``{"pretrained": [{"module",
    "source" (path or URL), "sha256"}], "load_from": {"source", "sha256"} or None}``; the pretrained
    entries are the modules that loaded weights themselves (``pretrained_from``, the backbone's
    ImageNet weights); empty when the run started from random initialisation."""

    def entry(source: str) -> dict:
        local = _weights_file(source)
        return {"source": source, "sha256": file_sha256(local) if local and local.is_file() else None}

    pretrained = [
        {"module": name or type(module).__name__, **entry(str(module.pretrained_from))}
        for name, module in model.named_modules()
        if getattr(module, "pretrained_from", None)
    ]
    return {"pretrained": pretrained, "load_from": entry(str(load_from)) if load_from else None}


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


class Trainer:
    """Trains ``cfg`` as ``options`` say (see the module docstring for the life of a run).

    Args:
        cfg: a config dict (:func:`rotdet.configs.load_config`).
        options: :class:`TrainOptions` (default: all defaults).
        model: the detector to train (default: built from ``cfg``); anything with
            ``loss_batch(batch) -> {name: loss}`` and, for evaluation, ``predict``.
        hooks: the hooks to run (default: :func:`rotdet.engine.hooks.default_hooks`).
    """

    def __init__(
        self,
        cfg: dict,
        options: TrainOptions | None = None,
        *,
        model: nn.Module | None = None,
        hooks: list[HookBase] | None = None,
    ) -> None:
        self.cfg, self.opts, self.model = cfg, options or TrainOptions(), model
        self.hooks: list[HookBase] = []
        self._given_hooks = hooks
        self.info, self.device, self.amp = DistInfo(), torch.device("cpu"), "none"
        self.optimizer: torch.optim.Optimizer | None = None
        self.epoch = self.iteration = self.epoch_iter = 0
        self.step_output: dict[str, float] = {}
        self.stop_reason: str | None = None  # "max_iters" or "interrupted" (all ranks agree)
        self.interrupted = False  # a Ctrl-C arrived (this process)
        self.failed = False
        self.last_checkpoint: Path | None = None  # the last state written or resumed from
        self.evaluated_epoch = 0  # the last epoch whose evaluation (and best.pth) finished
        self.weights: dict | None = None  # what the weights started from (weights_record)
        self._log_handler: logging.Handler | None = None

    # -------------------------------------------------------------------------------- building

    def build(self) -> Trainer:
        """Prepare the work dir, seed, build data, model and optimizer, resume, register hooks."""
        opts = self.opts
        self.info, device = init_distributed(opts.device)
        # A bad --amp (or config fp16 key) fails before anything is written; build_step logs.
        self.amp, _ = resolve_train_amp(opts.amp, self.cfg, device)
        self.work_dir = Path(opts.work_dir or Path("work_dirs") / self.cfg.get("name", "run"))
        resume_path = latest_checkpoint(self.work_dir) if opts.resume == "auto" else opts.resume
        # A checkpoint that cannot be resumed (weights only, another architecture) is refused
        # before anything is written: the work dir's config.yaml and train.log stay the old run's.
        resume_ckpt = self._resumable_checkpoint(resume_path) if resume_path else None
        self._prepare_work_dir()
        seed_everything(opts.seed, opts.deterministic)
        self._build_data()  # first: a wrong data path should fail before the model is built
        if self.model is None:
            self.model = build_model(self.cfg)
        if opts.load_from:
            load_pretrained(self.model, opts.load_from)
        # What the weights started from; a resumed run keeps what its checkpoint says.
        if resume_ckpt is None:
            self.weights = weights_record(self.model, opts.load_from)
        else:  # None for a checkpoint of an older rotdet: unknown, not "random initialisation"
            self.weights = resume_ckpt["meta"].get("weights")
        self.model.to(device)
        self.build_step(device, self.max_epochs * self.iters_per_epoch, self._base_lr())
        if resume_ckpt is not None:
            self.resume(resume_path, resume_ckpt)
        done = broadcast_object(self._read_evaluated_epoch() if self.info.is_main else None)
        self.evaluated_epoch = min(done, self.epoch)  # resumed from an older checkpoint: its own
        if self.info.distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.module = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        self.result = TrainResult(self.work_dir, self.epoch, self.iteration)
        self.register_hooks(default_hooks(self) if self._given_hooks is None else self._given_hooks)
        amp = f"{self.amp}, {self.loss_scaling.describe()}" if self.scaler.is_enabled() else self.amp
        logger.info(
            "training %s on %s (amp %s): %d images, %d iterations/epoch (batch %d x %d processes), %d epochs",
            *(self.cfg.get("name"), device, amp, len(self.train_set), self.iters_per_epoch),
            *(self.batch_size, self.info.world_size, self.max_epochs),
        )
        return self

    def build_step(self, device: torch.device | str, total_iters: int, lr: float | None = None) -> Trainer:
        """What :meth:`run_step` needs for ``self.model`` on ``device``: optimizer, lr schedule over
        ``total_iters`` iterations from ``lr`` (default: the config's), AMP and gradient scaler,
        clipping. :meth:`build` calls it; ``rotdet bench`` calls it alone."""
        self.device = torch.device(device)
        self.amp, warning = resolve_train_amp(self.opts.amp, self.cfg, self.device)
        if warning:
            logger.warning(warning)
        lr = self.cfg["optimizer"]["lr"] if lr is None else lr
        self.optimizer = build_optimizer(self.cfg, self.model, lr)
        self.schedule = LrSchedule(self.cfg["lr_config"], lr, total_iters=total_iters)
        # The config's fp16.loss_scale; an fp16 run without one scales dynamically (torch's defaults).
        self.loss_scaling = config_loss_scaling(self.cfg) or loss_scaling("dynamic")
        self.scaler = self.loss_scaling.grad_scaler(self.device.type, enabled=self.amp == "fp16")
        self.clip = self.cfg.get("grad_clip")
        self.module: nn.Module = _LossModule(self.model)
        return self

    def register_hooks(self, hooks: list[HookBase]) -> None:
        """Append ``hooks`` (run in this order, after those registered before)."""
        for hook in hooks:
            hook.trainer = self
        self.hooks.extend(hooks)

    def _prepare_work_dir(self) -> None:
        """Rank 0: create it (moving an earlier run aside on a fresh start), remove the temporaries of
        writes a killed run left, write the resolved config; then ``train.log`` for rank 0."""
        removed = []
        if self.info.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            if self.opts.resume is None:
                archive_previous_run(self.work_dir)
            removed = remove_stale_temporaries(self.work_dir)
            atomic_write_text(self.work_dir / "config.yaml", yaml.safe_dump(self.cfg, sort_keys=False))
        barrier()
        if self.info.is_main:
            handler = logging.FileHandler(self.work_dir / "train.log", encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            root = logging.getLogger("rotdet")
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            self._log_handler = handler
        if removed:
            names = ", ".join(p.name for p in removed)
            logger.info("removed %d temporaries of interrupted writes: %s", len(removed), names)

    def _build_val_set(self):
        try:
            return build_dataset(self.cfg, "val", self.opts.data_root)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{exc}; or train without evaluation: --eval-interval 0") from None

    def _build_data(self) -> None:
        cfg, opts = self.cfg, self.opts
        self.train_set = build_dataset(cfg, "train", opts.data_root)
        interval = opts.eval_interval
        self.eval_interval = cfg.get("evaluation", {}).get("interval", 1) if interval is None else interval
        self.val_set = self._build_val_set() if self.eval_interval else None
        # Every missing or unreadable image at once, before the first step (not one per rerun).
        skip = bool(opts.skip_invalid or cfg["data"].get("skip_invalid", False))
        for split, dataset in (("train", self.train_set), ("val", self.val_set)):
            if dataset is not None:
                check_images(dataset, split, skip)
        # One that still fails to decode mid-epoch (a truncated body) is skipped with a warning.
        self.train_set.skip_unreadable = True
        self.batch_size = opts.batch_size or cfg["data"]["samples_per_gpu"]
        workers = opts.num_workers if opts.num_workers is not None else cfg["data"].get("workers_per_gpu", 2)
        self.loader, self.sampler = build_train_loader(
            self.train_set, self.batch_size, workers, opts.seed, self.info.rank, self.info.world_size
        )
        self.iters_per_epoch = len(self.loader)
        self.max_epochs = opts.max_epochs or cfg["max_epochs"]

    def _base_lr(self) -> float:
        cfg, lr = self.cfg, self.cfg["optimizer"]["lr"]
        if self.opts.auto_scale_lr:
            total = self.batch_size * self.info.world_size
            base = cfg.get("auto_scale_lr", {}).get("base_batch_size", cfg["data"]["samples_per_gpu"])
            lr = scaled_lr(lr, total, base)
            logger.info("auto-scale-lr: lr %.6g for a total batch of %d (base %d)", lr, total, base)
        return lr

    def _read_evaluated_epoch(self) -> int:
        """The last epoch whose evaluation finished (``checkpoints.json``; for a work dir of an older
        rotdet, the last evaluation in ``log.jsonl``)."""
        done = CheckpointManager(self.work_dir, keep=max(1, self.opts.keep)).evaluated_epoch
        if done is None:
            val = [r.get("epoch", 0) for r in read_log(self.work_dir / "log.jsonl") if r.get("mode") == "val"]
            done = max(val, default=0)
        return int(done)

    # ------------------------------------------------------------------------------------ state

    def state_dict(self, with_training_state: bool = True) -> dict:
        """A checkpoint of the current state (mmcv's layout: ``state_dict``, ``meta``; with the
        training state also ``optimizer``, ``scaler`` and ``rng``)."""
        meta = {
            "rotdet_version": rotdet.__version__,
            "config": self.cfg,
            "classes": list(self.train_set.classes),
            "angle_version": self.cfg["angle_version"],
            "epoch": self.epoch,
            "iter": self.iteration,
            "epoch_iter": self.epoch_iter,
            "seed": self.opts.seed,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "weights": self.weights,
        }
        obj = {"state_dict": self.model.state_dict(), "meta": meta}
        if with_training_state:
            obj.update(
                optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(), rng=rng_state()
            )
        return obj

    def load_state_dict(self, ckpt: dict) -> None:
        """Restore what :meth:`state_dict` returned (RNG states when present)."""
        self.model.load_state_dict(ckpt["state_dict"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])  # a disabled scaler ignores it
        elif self.scaler.is_enabled():  # saved by a run without fp16 (an empty state)
            logger.info(
                "the checkpoint has no loss-scale state (trained without fp16): %s from the start",
                self.loss_scaling.describe(),
            )
        meta = ckpt["meta"]
        self.epoch, self.iteration = int(meta["epoch"]), int(meta["iter"])
        self.epoch_iter = int(meta.get("epoch_iter", 0))
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])

    def _resumable_checkpoint(self, path: str | os.PathLike) -> dict:
        """The training checkpoint ``path``, checked against this run's model: a
        :class:`CheckpointError` naming the file, both configs and the tensors that differ when it
        is of another architecture. The model is built here when none was given, without its
        ImageNet weights (the checkpoint's replace them)."""
        # On the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest to the device.
        ckpt = load_checkpoint(path, map_location="cpu")
        if "optimizer" not in ckpt:
            raise CheckpointError(f"{path} holds weights only; use --load-from to start from it")
        if self.model is None:
            cfg = copy.deepcopy(self.cfg)
            backbone = cfg.get("model", {}).get("backbone")
            if isinstance(backbone, dict) and backbone.get("pretrained"):
                backbone["pretrained"] = False
            self.model = build_model(cfg)
        try:
            check_checkpoint_fits(path, ckpt, self.model, self.cfg)
        except CheckpointError as exc:
            hint = "; use --load-from to start from the tensors that fit, or another --work-dir"
            raise CheckpointError(f"{exc}{hint}") from None
        return ckpt

    def resume(self, path: str | os.PathLike, ckpt: dict | None = None) -> None:
        """Continue from the training checkpoint ``path`` (after :meth:`build_step`); ``ckpt``: its
        content when already read (by :meth:`build`)."""
        if ckpt is None:
            ckpt = self._resumable_checkpoint(path)
        self.load_state_dict(ckpt)
        self.last_checkpoint = Path(path)
        logger.info("resumed from %s: epoch %d, iteration %d", path, self.epoch, self.iteration)

    def check_finite_state(self) -> None:
        """Raise :class:`NonFiniteLossError` when a weight or buffer is NaN or Inf (one host sync):
        the check before every checkpoint write, so that none holds a diverged model."""
        tensors = [v for v in self.model.state_dict().values() if v.is_floating_point()]
        if tensors and not bool(torch.stack([torch.isfinite(v).all() for v in tensors]).all()):
            raise NonFiniteLossError(
                f"the weights are non-finite after iteration {self.iteration} "
                f"(epoch {self.epoch + (self.epoch_iter > 0)}): not saved"
            )

    def resume_hint(self) -> str:
        """Where a rerun continues from: the last checkpoint written or resumed from, or none."""
        if self.last_checkpoint is None:
            return "no checkpoint was saved yet (a rerun starts from the beginning)"
        return f"the last good checkpoint is {self.last_checkpoint} (`--resume {self.last_checkpoint}`)"

    # ------------------------------------------------------------------------------------- loop

    def call_hooks(self, event: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, event)(*args)

    def log(self, record: dict) -> None:
        """A record for the logs: kept in ``result.history`` and handed to every hook's ``write``."""
        self.result.history.append(record)
        self.call_hooks("write", record)

    def run_step(self, batch: dict) -> dict[str, float]:
        """One training iteration on a :func:`rotdet.data.collate` batch; returns ``{"loss": total,
        <each loss term>, "lr", "grad_norm" (when measured)}`` as floats. A non-finite loss term or
        gradient norm raises :class:`NonFiniteLossError` before the optimizer step (with fp16 the
        gradient scaler skips such steps itself, as it should)."""
        lr = self.schedule(self.iteration, self.epoch)
        LrSchedule.apply(self.optimizer, lr)
        batch = _to_device(batch, self.device)
        with autocast(self.device, self.amp):
            losses = self.module(batch)
        total, terms = _loss_terms(losses)
        bad = {k: v for k, v in terms.items() if not math.isfinite(v)}
        if bad:
            self._non_finite("loss", bad)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        grad_norm = self._clip_gradients()
        if grad_norm is not None and not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            self._non_finite("gradient norm", {"grad_norm": grad_norm})
        self.scaler.step(self.optimizer)
        self.scaler.update(self.loss_scaling.fixed_scale)  # None: the dynamic rule
        self.iteration += 1
        self.epoch_iter += 1
        out = {"loss": sum(terms.values()), **terms, "lr": lr}
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        return out

    def _clip_gradients(self) -> float | None:
        """Clip the gradient norm as the config says; returns the norm before clipping (None with
        fp16 and no clipping, where the scaler checks the gradients)."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            norm_type = self.clip.get("norm_type", 2)
            norm = nn.utils.clip_grad_norm_(params, max_norm=self.clip["max_norm"], norm_type=norm_type)
        elif self.scaler.is_enabled():
            return None
        else:
            norm = nn.utils.get_total_norm([p.grad for p in params])
        return float(norm)

    def _non_finite(self, what: str, values: dict[str, float]) -> None:
        raise NonFiniteLossError(
            f"non-finite {what} at iteration {self.iteration + 1} (epoch {self.epoch + 1}): "
            + ", ".join(f"{k}={v}" for k, v in values.items())
            + " (the step was not taken)"
        )

    def run_epoch(self) -> None:
        """The (rest of the) current epoch; ``after_epoch`` hooks run when it completes."""
        self.model.train()
        self.sampler.set_epoch(self.epoch, start=self.epoch_iter * self.batch_size)
        self.call_hooks("before_epoch")
        t_data = time.perf_counter()
        try:
            for batch in self.loader:
                data_time = time.perf_counter() - t_data
                self.step_output = {**self.run_step(batch), "data_time": data_time}
                if self.opts.max_iters is not None and self.iteration >= self.opts.max_iters:
                    self.stop_reason = "max_iters"
                self.call_hooks("after_step")
                if self.stop_reason and self.epoch_iter < self.iters_per_epoch:
                    return  # otherwise the epoch is complete: its checkpoint and evaluation follow
                t_data = time.perf_counter()
        except ImageReadError as exc:
            # From a loader worker the message holds the worker's traceback: keep its last line.
            message = str(exc).strip().splitlines()[-1].split("ImageReadError: ")[-1]
            raise ImageReadError(message) from exc
        except RuntimeError:
            if not self.interrupted:  # a dying loader worker after Ctrl-C is expected
                raise
            self.stop_reason = "interrupted"
            return
        self.epoch, self.epoch_iter = self.epoch + 1, 0
        self.call_hooks("after_epoch")

    def train(self) -> TrainResult:
        """Train to ``max_epochs`` (or ``max_iters``); returns the :class:`TrainResult`. Raises
        :class:`NonFiniteLossError` when training diverges (nothing is saved after the last good
        state, which the message names) and ``KeyboardInterrupt`` after a Ctrl-C (once
        ``latest.pth`` holds the position)."""
        if self.optimizer is None:
            self.build()
        self.failed = True
        try:
            self.call_hooks("before_train")
            while self.epoch < self.max_epochs and not self.stop_reason:
                self.run_epoch()
            barrier()
            self.failed = False
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(f"{exc}; {self.resume_hint()}") from exc
        finally:
            self.call_hooks("after_train")
            self.close()
        self.result.epoch, self.result.iteration = self.epoch, self.iteration
        if self.stop_reason == "interrupted":
            raise KeyboardInterrupt(
                f"training interrupted at iteration {self.iteration}; "
                f"resume from {self.work_dir / 'latest.pth'}"
            )
        return self.result

    def close(self) -> None:
        """Detach ``train.log`` (done by :meth:`train`; for a trainer built but not trained)."""
        if self._log_handler is not None:
            logging.getLogger("rotdet").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
