"""Training records: a JSON-lines log, TensorBoard scalars and loss / mAP curves as PNG.

``log.jsonl`` holds one object per line: ``{"mode": "train", "epoch", "iter", "lr", "loss", <loss
terms>, "time", "data_time", "memory"}`` every ``log_interval`` iterations and ``{"mode": "val",
"epoch", "iter", "mAP", "AP": {class: ap}}`` after each evaluation. The curves are redrawn from it,
so they survive a resume. A resumed run first drops the records that came after the state it
resumes from (:func:`truncate_log`: those of an epoch killed part-way, and evaluations that did not
finish), and TensorBoard hides the events past that step, so no curve overlaps itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from rotdet.fileio import atomic_write, atomic_write_text

__all__ = ["RunLogger", "plot_curves", "read_log", "truncate_log"]

logger = logging.getLogger(__name__)


def read_log(path: str | os.PathLike) -> list[dict]:
    """Records of a ``log.jsonl`` (a truncated last line, from a killed run, is ignored)."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_log(path: str | os.PathLike, iteration: int, evaluated_epoch: int) -> int:
    """Keep in ``log.jsonl`` only what a run resumed at ``iteration`` with epochs up to
    ``evaluated_epoch`` evaluated has already done: training records up to ``iteration`` and
    evaluation records up to ``evaluated_epoch`` (unreadable lines go too). Rewrites the file
    atomically when something was dropped; returns how many records were."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("mode") == "val":
            keep = record.get("epoch", 0) <= evaluated_epoch
        else:
            keep = record.get("iter", 0) <= iteration
        if keep:
            kept.append(line)
    if len(kept) < len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


class RunLogger:
    """Appends records to ``work_dir/log.jsonl`` and mirrors scalars to TensorBoard when the
    ``tensorboard`` package is installed (``work_dir/tensorboard``). ``purge_step``: TensorBoard
    hides the events of earlier sessions from that step on (a resumed run's first new step)."""

    def __init__(
        self, work_dir: str | os.PathLike, tensorboard: bool = True, purge_step: int | None = None
    ) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.work_dir / "log.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.work_dir / "tensorboard"), purge_step=purge_step)
            except ImportError:
                logger.info("TensorBoard logs off: `pip install tensorboard` to get them")

    def log(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            mode, step = record.get("mode", "train"), record.get("iter", 0)
            for key, value in record.items():
                if key not in ("mode", "epoch", "iter") and isinstance(value, int | float):
                    self.writer.add_scalar(f"{mode}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def plot_curves(log_path: str | os.PathLike, out_path: str | os.PathLike) -> Path | None:
    """Draw the training loss (per term, smoothed) and the validation mAP against the iteration
    into one PNG; returns its path, or None when the log has no training record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    train = [r for r in records if r.get("mode") == "train" and math.isfinite(r.get("loss", math.nan))]
    val = [r for r in records if r.get("mode") == "val"]
    if not train:
        return None
    terms = sorted(k for k in train[0] if k.startswith("loss") and k != "loss")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    its = [r["iter"] for r in train]
    window = max(1, len(train) // 20)
    axes[0].plot(its, _smooth([r["loss"] for r in train], window), label="loss", linewidth=2)
    for term in terms:
        axes[0].plot(its, _smooth([r.get(term, math.nan) for r in train], window), label=term, linewidth=1)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("training loss (smoothed)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    if val:
        axes[1].plot([r["iter"] for r in val], [r["mAP"] for r in val], marker="o")
        for r in val[-1:]:
            axes[1].annotate(
                f"{r['mAP']:.3f}", (r["iter"], r["mAP"]), textcoords="offset points", xytext=(0, 6)
            )
    else:
        axes[1].text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=axes[1].transAxes)
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("validation mAP")
    axes[1].set_ylim(0, 1)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    with atomic_write(out_path) as f:  # a viewer never sees half a PNG
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out_path
