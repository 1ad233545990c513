"""Checkpoints: atomic writes, safe loading, rotation of the last K plus the best.

A rotdet checkpoint is a plain dict (mmcv's layout, so mmrotate tools can read its weights)::

    {"state_dict": model weights,
     "meta": {"rotdet_version", "config" (the resolved config dict), "classes", "epoch", "iter", ...},
     "optimizer": ..., "scaler": ..., "rng": ...}   # training state, only in training checkpoints

Files are written to a temporary name in the same folder, flushed to disk and renamed over the
target, so a crash or Ctrl-C while saving leaves the previous file intact. Every load uses
``torch.load(weights_only=True)``: a checkpoint is data, never code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from rotdet.fileio import TEMP_SUFFIX, atomic_torch_save, atomic_write_text, safe_torch_load

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "check_checkpoint_fits",
    "checkpoint_config",
    "checkpoint_origin",
    "config_label",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "state_dict_misfit",
]

logger = logging.getLogger(__name__)

_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pth$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not what it should be (message names the file)."""


def save_checkpoint(obj: Mapping, path: str | os.PathLike) -> Path:
    """Write ``obj`` with ``torch.save`` atomically (temporary file, fsync, rename)."""
    return atomic_torch_save(dict(obj), path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint (rotdet's or mmrotate's) with ``weights_only=True``.

    Returns a dict with at least ``state_dict`` and ``meta``; a bare state dict is wrapped.
    Raises :class:`CheckpointError` naming the file when it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = safe_torch_load(path, map_location)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a usable checkpoint"
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a checkpoint (a {type(obj).__name__}, not a dict)")
    if "state_dict" not in obj:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = {"state_dict": obj, "meta": {}}
        else:
            raise CheckpointError(f"{path} has no 'state_dict'")
    obj.setdefault("meta", {})
    return obj


def checkpoint_config(ckpt: Mapping) -> dict | str | None:
    """The config a checkpoint was made with: the resolved dict (rotdet training checkpoints), a
    config name (``rotdet convert`` output), or None (mmrotate checkpoints)."""
    cfg = ckpt.get("meta", {}).get("config")
    return cfg if isinstance(cfg, dict | str) else None


def config_label(cfg: Mapping) -> str:
    """``config 'NAME' (detector, head, backbone)`` of a config dict, for messages."""
    model = cfg.get("model", {}) if isinstance(cfg.get("model"), Mapping) else {}
    parts = [str(model.get("type", "?"))]
    head, backbone = model.get("bbox_head"), model.get("backbone")
    if isinstance(head, Mapping) and head.get("type"):
        parts.append(str(head["type"]))
    if isinstance(backbone, Mapping) and backbone.get("type"):
        parts.append(
            f"{backbone['type']}-{backbone['depth']}" if backbone.get("depth") else str(backbone["type"])
        )
    return f"config {cfg.get('name', '<unnamed>')!r} ({', '.join(parts)})"


def checkpoint_origin(ckpt: Mapping) -> str:
    """What a checkpoint says it was made with, for messages: ``config 'NAME' (MODEL TYPE)``."""
    cfg = checkpoint_config(ckpt)
    if isinstance(cfg, dict):
        return config_label(cfg)
    if isinstance(cfg, str):
        return f"config {cfg!r}"
    return "a config it does not name (no config in its meta: an mmrotate checkpoint?)"


def _examples(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def state_dict_misfit(
    state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> str | None:
    """How ``state`` differs from ``model_state`` in names and shapes, in one phrase (None when it
    fits exactly); a DDP ``module.`` prefix does not count."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = sorted(set(model_state) - set(state))
    unexpected = sorted(set(state) - set(model_state))
    shape = sorted(
        k for k in set(state) & set(model_state) if tuple(state[k].shape) != tuple(model_state[k].shape)
    )
    if not (missing or unexpected or shape):
        return None
    counts = f"{len(missing)} missing / {len(unexpected)} unexpected / {len(shape)} shape-mismatched tensors"
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(model_state[k].shape)}" for k in shape]
    parts = [
        f"{what} {_examples(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    parts += [f"shape {_examples(shapes, 2)}"] if shapes else []
    return f"{counts} (e.g. {'; '.join(parts)})"


def check_checkpoint_fits(
    path: str | os.PathLike, ckpt: Mapping, model: torch.nn.Module, cfg: Mapping
) -> None:
    """Raise :class:`CheckpointError` in one line when the weights of ``ckpt`` (read from ``path``)
    do not fit ``model`` (built from ``cfg``), naming the file, both configs and what differs."""
    misfit = state_dict_misfit(ckpt["state_dict"], model.state_dict())
    if misfit is None:
        return
    raise CheckpointError(
        f"checkpoint {path} was trained with {checkpoint_origin(ckpt)}, this run is {config_label(cfg)}: "
        f"{misfit}"
    )


def latest_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """``work_dir/latest.pth`` if present, else the ``epoch_N.pth`` with the largest N."""
    work_dir = Path(work_dir)
    latest = work_dir / "latest.pth"
    if latest.is_file():
        return latest
    epochs = _epoch_files(work_dir)
    return epochs[-1][1] if epochs else None


def _epoch_files(work_dir: Path) -> list[tuple[int, Path]]:
    """``(N, path)`` of every ``epoch_N.pth`` in ``work_dir``, by N."""
    return sorted(
        (int(m.group(1)), p) for p in work_dir.glob("epoch_*.pth") if (m := _EPOCH_RE.match(p.name))
    )


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` atomically: a hard link (no second write of a large
    file) under a temporary name renamed over ``dst``; a copy where links are not supported."""
    tmp = dst.with_name(f".{dst.name}.link{TEMP_SUFFIX}")  # a stale one is cleaned at the next start
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class CheckpointManager:
    """Saves ``epoch_N.pth`` + ``latest.pth`` each time, keeps the last ``keep`` epoch files, and
    ``best.pth`` whenever the tracked metric improves.

    ``checkpoints.json`` records the best metric and epoch and ``evaluated_epoch``, the last epoch
    whose evaluation and best-checkpoint update both finished: a run killed between ``epoch_N.pth``
    and the end of its evaluation is recognised on the rerun, which evaluates epoch N first.
    ``evaluated_epoch`` is None only for a work dir without that record (none yet, or written by an
    older rotdet)."""

    def __init__(self, work_dir: str | os.PathLike, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.work_dir = Path(work_dir)
        self.keep = keep
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.evaluated_epoch: int | None = None
        state = self.work_dir / "checkpoints.json"
        if state.is_file():
            try:
                data = json.loads(state.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError(f"a {type(data).__name__}, not a mapping")
            except (ValueError, UnicodeDecodeError) as exc:
                raise CheckpointError(
                    f"{state} cannot be read ({' '.join(str(exc).split())}); it only records the best "
                    "mAP so far: delete it to resume (best.pth is then replaced by the next evaluation)"
                ) from None
            self.best_metric, self.best_epoch = data.get("best_metric"), data.get("best_epoch")
            self.evaluated_epoch = data.get("evaluated_epoch")

    def save(self, obj: Mapping, epoch: int, name: str | None = None) -> Path:
        """Save an epoch checkpoint (or ``name``) and refresh ``latest.pth``; prune old epochs."""
        path = save_checkpoint(obj, self.work_dir / (name or f"epoch_{epoch}.pth"))
        _link_or_copy(path, self.work_dir / "latest.pth")
        epochs = _epoch_files(self.work_dir)
        for _, old in epochs[: max(0, len(epochs) - self.keep)]:
            old.unlink(missing_ok=True)
        if self.evaluated_epoch is None:
            self.evaluated_epoch = 0  # from now on the record exists
        self._write_state()
        return path

    def update_best(self, obj: Mapping, epoch: int, metric: float) -> bool:
        """Record the evaluation of ``epoch`` and save ``best.pth`` when ``metric`` beats the best so
        far; True when it did."""
        improved = self.best_metric is None or metric > self.best_metric
        if improved:
            save_checkpoint(obj, self.work_dir / "best.pth")
            self.best_metric, self.best_epoch = float(metric), int(epoch)
        self.evaluated_epoch = int(epoch)
        self._write_state()
        return improved

    def _write_state(self) -> None:
        data = {
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "evaluated_epoch": self.evaluated_epoch,
        }
        atomic_write_text(self.work_dir / "checkpoints.json", json.dumps(data))
