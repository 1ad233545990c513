"""HRSC2016's protocol as mmrotate 0.3.4's ``HRSCDataset.evaluate`` computes it.

mmrotate's HRSC configs ask for ``metric="mAP"`` without an ``iou_thr``, so its evaluation runs
``eval_rbbox_map`` (obb IoU >= thr, no object ignored, VOC07 11-point AP by default:
``use_07_metric=True``; the area / VOC12 variant with ``use_07_metric=False``) at each of the ten
thresholds 0.5, 0.55, ..., 0.95 and reports

* ``AP50`` ... ``AP95``: each threshold's mean AP, rounded to 3 decimals, named
  ``AP{int(thr * 100):02d}``;
* ``mAP``: the mean of the ten unrounded mean APs (so the "mAP" of an mmrotate HRSC log is a
  COCO-like average over IoUs, with VOC APs; the model zoo's HRSC figures are its AP50).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rotdet.evaluation.mmrotate_map import eval_rbbox_map
from rotdet.evaluation.results import EvalResult

__all__ = ["HRSC_IOU_THRS", "HrscResult", "eval_hrsc"]

# HRSCDataset.evaluate's default iou_thr list, as written there.
HRSC_IOU_THRS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


@dataclass
class HrscResult:
    """``map`` (mmrotate's ``mAP``), ``aps`` (``{"AP50": 0.9, ...}``, rounded as mmrotate) and each
    threshold's full :class:`EvalResult`."""

    map: float
    aps: dict[str, float]
    per_threshold: list[EvalResult]
    metric: str
    protocol: str = "hrsc"

    @property
    def ap50(self) -> EvalResult | None:
        return next((r for r in self.per_threshold if r.iou_thr == 0.5), None)

    def to_dict(self) -> dict:
        return {
            "protocol": "hrsc",
            "metric": self.metric,
            "mAP": self.map,
            **self.aps,
            "per_threshold": [r.to_dict() for r in self.per_threshold],
        }

    def table(self, digits: int = 4) -> str:
        lines = []
        if self.ap50 is not None:
            lines += [self.ap50.table(digits), ""]
        lines.append(f"hrsc protocol (mmrotate HRSCDataset.evaluate), {self.metric} AP:")
        lines.append("  " + "  ".join(f"{k} {v:.3f}" for k, v in self.aps.items()))
        lines.append(f"  mAP (mean over the {len(self.aps)} IoU thresholds) {self.map:.{digits}f}")
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def eval_hrsc(
    det_results: Sequence[Sequence],
    annotations: Sequence[dict],
    classes: Sequence[str] | None = None,
    iou_thrs: float | Sequence[float] = HRSC_IOU_THRS,
    use_07_metric: bool = True,
) -> HrscResult:
    """mmrotate 0.3.4's ``HRSCDataset.evaluate(results, metric="mAP")`` on the same inputs as
    :func:`rotdet.evaluation.eval_rbbox_map`."""
    thrs = [iou_thrs] if isinstance(iou_thrs, float) else list(iou_thrs)
    results = [eval_rbbox_map(det_results, annotations, thr, use_07_metric, classes) for thr in thrs]
    aps = {f"AP{int(thr * 100):02d}": round(r.map, 3) for thr, r in zip(thrs, results, strict=True)}
    mean = sum(r.map for r in results) / len(results)
    return HrscResult(mean, aps, results, "11points" if use_07_metric else "area")
