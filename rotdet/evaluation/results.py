"""The result of an evaluation: a per-class table and the mean, printed or written as JSON."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ClassResult", "EvalResult", "EvalInputError"]


class EvalInputError(ValueError):
    """Unusable evaluation input (missing or empty folder, malformed line); the message says where."""


@dataclass
class ClassResult:
    """One class: ``num_gts`` ground truths that count (difficult ones excluded by the DOTA protocol,
    ``num_difficult`` of them), ``num_dets`` detections, the final recall and the AP."""

    name: str
    num_gts: int
    num_dets: int
    recall: float
    ap: float
    num_difficult: int = 0
    # The curves, in detection rank order (not written to JSON unless asked).
    recalls: np.ndarray | None = field(default=None, repr=False)
    precisions: np.ndarray | None = field(default=None, repr=False)


@dataclass
class EvalResult:
    """mAP and per-class results of one protocol (``"dota"`` or ``"mmrotate"``)."""

    protocol: str
    map: float
    classes: list[ClassResult]
    iou_thr: float = 0.5
    metric: str = "11points"
    num_images: int = 0

    @property
    def aps(self) -> dict[str, float]:
        return {c.name: c.ap for c in self.classes}

    def to_dict(self, curves: bool = False) -> dict:
        rows = []
        for c in self.classes:
            row = {k: v for k, v in asdict(c).items() if k not in ("recalls", "precisions")}
            if curves:
                row["recalls"] = [] if c.recalls is None else np.asarray(c.recalls, np.float64).tolist()
                row["precisions"] = (
                    [] if c.precisions is None else np.asarray(c.precisions, np.float64).tolist()
                )
            rows.append(row)
        return {
            "protocol": self.protocol,
            "metric": self.metric,
            "iou_thr": self.iou_thr,
            "num_images": self.num_images,
            "mAP": self.map,
            "classes": rows,
        }

    def table(self, digits: int = 4) -> str:
        """A plain-text table: class, gts (difficult), dets, recall, AP, then the mAP row."""
        header = ["class", "gts", "difficult", "dets", "recall", "ap"]
        if self.protocol != "dota":
            header.remove("difficult")
        body = []
        for c in self.classes:
            row = [
                c.name,
                str(c.num_gts),
                str(c.num_difficult),
                str(c.num_dets),
                _f(c.recall, digits),
                _f(c.ap, digits),
            ]
            if self.protocol != "dota":
                row.pop(2)
            body.append(row)
        footer = ["mAP"] + [""] * (len(header) - 2) + [_f(self.map, digits)]
        widths = [max(len(r[i]) for r in [header, *body, footer]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        rule = "  ".join("-" * w for w in widths)
        title = (
            f"{self.protocol} protocol, {self.metric} AP at IoU {'>' if self.protocol == 'dota' else '>='} "
            f"{self.iou_thr:g}, {self.num_images} image(s)"
        )
        return "\n".join([title, line(header), rule, *map(line, body), rule, line(footer)])

    def write_json(self, path: str | os.PathLike, curves: bool = False) -> Path:
        """Write :meth:`to_dict` as JSON (NaN written as null); returns the path."""
        path = Path(path)
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_no_nan(self.to_dict(curves)), indent=2) + "\n")
        return path


def _f(value: float, digits: int) -> str:
    return (
        "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
    )


def _no_nan(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj
