"""COCO-style mAP of rotated boxes (``rotdet eval --protocol coco``).

The definition is pycocotools' ``COCOeval`` (``iouType="bbox"``, area range "all") with the box
IoU replaced by the exact rotated-box IoU, as mmrotate 1.x's ``RotatedCocoMetric`` evaluates:

* per image and class, detections sorted by descending score (stable) and cut to ``max_dets``;
  ground truths sorted with the non-ignored first;
* for each IoU threshold ``t`` in 0.50, 0.55, ..., 0.95 (``np.linspace(.5, .95, 10)``), each
  detection in score order takes, among the ground truths not yet taken (ignored ones may be taken
  again, as COCO's crowd), the one of highest IoU with IoU >= ``t`` (the last one of equal IoU),
  preferring a non-ignored ground truth; a detection that takes an ignored one is left out;
* per class the detections of all images are ranked by score (stable), precision is made
  monotone from the right and read at the 101 recalls 0, 0.01, ..., 1 (``np.searchsorted``,
  ``side="left"``; 0 past the last recall reached); the class's AP at ``t`` is the mean of those;
* mAP is the mean over thresholds and over the classes that have a (non-ignored) ground truth;
  AP50 and AP75 are the same at ``t`` = 0.5 and 0.75. Classes without ground truth are left out.

``max_dets`` (per image and class) is 100, pycocotools' summary setting: mAP, AP50 and AP75 are then
its ``stats[0:3]`` to rounding. mmdet's ``CocoMetric`` (so mmrotate 1.x's ``RotatedCocoMetric``)
sets ``maxDets = [100, 300, 1000]``, and pycocotools' summary then takes mAP at 100 but AP50 / AP75
at 1000 detections: ``max_dets=1000`` gives its AP50 / AP75 (and all three at 1000) -- worth it on
dense aerial images, where 100 boxes of one class in one image are common. All ground truths count
(mmrotate keeps difficult objects, difficulty <= 100); ``ignore_difficult=True`` makes objects of
difficulty > 0 COCO's ignored ("crowd") ground truths instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rotdet.ops import box_iou_rotated

__all__ = ["COCO_IOU_THRS", "COCO_REC_THRS", "CocoClassResult", "CocoResult", "eval_coco"]

COCO_IOU_THRS: np.ndarray = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
COCO_REC_THRS: np.ndarray = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)


@dataclass
class CocoClassResult:
    name: str
    num_gts: int
    num_dets: int
    ap: float  # mean over the IoU thresholds; -1 without ground truth
    ap50: float
    ap75: float
    aps: list[float] = field(default_factory=list, repr=False)  # per threshold


@dataclass
class CocoResult:
    """mAP@[0.5:0.95], AP50, AP75 and the per-class values."""

    map: float
    ap50: float
    ap75: float
    classes: list[CocoClassResult]
    iou_thrs: list[float]
    max_dets: int
    num_images: int
    protocol: str = "coco"

    @property
    def aps(self) -> dict[str, float]:
        return {c.name: c.ap for c in self.classes}

    def to_dict(self) -> dict:
        return {
            "protocol": "coco",
            "mAP": self.map,
            "AP50": self.ap50,
            "AP75": self.ap75,
            "iou_thrs": self.iou_thrs,
            "max_dets": self.max_dets,
            "num_images": self.num_images,
            "classes": [
                {
                    "name": c.name,
                    "num_gts": c.num_gts,
                    "num_dets": c.num_dets,
                    "ap": c.ap,
                    "ap50": c.ap50,
                    "ap75": c.ap75,
                    "aps": c.aps,
                }  # fmt: skip
                for c in self.classes
            ],
        }

    def table(self, digits: int = 4) -> str:
        header = ["class", "gts", "dets", "AP", "AP50", "AP75"]

        def f(v: float) -> str:
            return "-" if v < 0 else f"{v:.{digits}f}"

        body = [
            [c.name, str(c.num_gts), str(c.num_dets), f(c.ap), f(c.ap50), f(c.ap75)] for c in self.classes
        ]
        footer = ["mean", "", "", f(self.map), f(self.ap50), f(self.ap75)]
        widths = [max(len(r[i]) for r in [header, *body, footer]) for i in range(len(header))]

        def line(cells):
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        rule = "  ".join("-" * w for w in widths)
        title = (
            f"coco protocol: rotated IoU, AP = mean over IoU {self.iou_thrs[0]:g}:{self.iou_thrs[-1]:g} "
            f"(101 recall points), at most {self.max_dets} detections per image and class, "
            f"{self.num_images} image(s)"
        )
        return "\n".join([title, line(header), rule, *map(line, body), rule, line(footer)])

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _match_image(ious: np.ndarray, ignored: np.ndarray, thrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO's ``evaluateImg`` matching for one image and class: ``(matched [T, D], det_ignored [T, D])``
    for detections in score order and ground truths with the non-ignored first."""
    num_t, (num_d, num_g) = len(thrs), ious.shape
    matched = np.zeros((num_t, num_d), bool)
    det_ignored = np.zeros((num_t, num_d), bool)
    if num_d == 0 or num_g == 0:
        return matched, det_ignored
    best_any = ious.max(axis=1)
    plain = ~ignored
    for t, thr in enumerate(thrs):
        thr = min(float(thr), 1 - 1e-10)
        taken = np.zeros(num_g, bool)
        for d in np.flatnonzero(best_any >= thr):  # others can match nothing
            row = ious[d]
            for pool in (plain & ~taken, ignored):  # a non-ignored match first, as COCO's break
                cand = np.where(pool & (row >= thr), row, -np.inf)
                best = cand.max() if len(cand) else -np.inf
                if best >= thr:
                    g = num_g - 1 - int(np.argmax(cand[::-1] == best))  # the last one of equal IoU
                    matched[t, d] = True
                    det_ignored[t, d] = ignored[g]
                    taken[g] = True
                    break
    return matched, det_ignored


def _ap_101(matched: np.ndarray, det_ignored: np.ndarray, scores: np.ndarray, num_gts: int) -> np.ndarray:
    """Per threshold: COCO's ``accumulate`` for one class (precision at the 101 recall points, meaned)."""
    order = np.argsort(-scores, kind="mergesort")
    tps = matched[:, order] & ~det_ignored[:, order]
    fps = ~matched[:, order] & ~det_ignored[:, order]
    tp_sum = np.cumsum(tps, axis=1).astype(float)
    fp_sum = np.cumsum(fps, axis=1).astype(float)
    out = np.zeros(len(matched))
    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum, strict=True)):
        nd = len(tp)
        rc = tp / num_gts
        pr = tp / (fp + tp + np.spacing(1))
        q = np.zeros(len(COCO_REC_THRS))
        if nd:
            pr = np.maximum.accumulate(pr[::-1])[::-1]  # COCO's right-to-left envelope
            inds = np.searchsorted(rc, COCO_REC_THRS, side="left")
            valid = inds < nd
            q[valid] = pr[inds[valid]]  # recall points never reached stay 0
        out[t] = q.mean()
    return out


def _class_result(
    c: int,
    name: str,
    det_results: Sequence[Sequence[np.ndarray]],
    annotations: Sequence[dict],
    thrs: np.ndarray,
    max_dets: int,
    ignore_difficult: bool,
) -> CocoClassResult:
    """One class: COCO's ``evaluateImg`` per image, then ``accumulate``."""
    m_parts, ig_parts, s_parts = [], [], []
    num_gts = num_dets = 0
    for dets_img, ann in zip(det_results, annotations, strict=True):
        dets = np.asarray(dets_img[c], np.float32).reshape(-1, 6)
        labels = np.asarray(ann["labels"]).reshape(-1)
        gts = np.asarray(ann["bboxes"], np.float32).reshape(-1, 5)[labels == c]
        diff = np.asarray(ann.get("difficulties", np.zeros(len(labels)))).reshape(-1)[labels == c]
        ignored = diff > 0 if ignore_difficult else np.zeros(len(gts), bool)
        gts, ignored = gts[np.argsort(ignored, kind="mergesort")], np.sort(ignored, kind="mergesort")
        dets = dets[np.argsort(-dets[:, 5], kind="mergesort")][:max_dets]
        num_gts += int((~ignored).sum())
        num_dets += len(dets)
        if len(dets) == 0:
            continue
        ious = (
            box_iou_rotated(torch.from_numpy(dets[:, :5]), torch.from_numpy(gts)).numpy().astype(np.float64)
        )
        matched, det_ig = _match_image(ious, ignored, thrs)
        m_parts.append(matched)
        ig_parts.append(det_ig)
        s_parts.append(dets[:, 5].astype(np.float64))
    if num_gts == 0:
        return CocoClassResult(name, 0, num_dets, -1.0, -1.0, -1.0, [-1.0] * len(thrs))
    if s_parts:
        aps = _ap_101(
            np.concatenate(m_parts, 1), np.concatenate(ig_parts, 1), np.concatenate(s_parts), num_gts
        )
    else:
        aps = np.zeros(len(thrs))
    return CocoClassResult(
        name,
        num_gts,
        num_dets,
        float(aps.mean()),
        _at(aps, thrs, 0.5),
        _at(aps, thrs, 0.75),
        [float(a) for a in aps],
    )


def eval_coco(
    det_results: Sequence[Sequence[np.ndarray]],
    annotations: Sequence[dict],
    classes: Sequence[str] | None = None,
    iou_thrs: Sequence[float] | np.ndarray = COCO_IOU_THRS,
    max_dets: int = 100,
    ignore_difficult: bool = False,
    image_ids: Sequence[str] | None = None,
) -> CocoResult:
    """COCO-style AP of rotated detections (see the module docstring).

    Args:
        det_results: per image, per class ``[K, 6]`` ``(cx, cy, w, h, theta, score)`` (mmrotate's
            result format, as :func:`rotdet.evaluation.eval_rbbox_map` takes).
        annotations: per image ``{"bboxes": [N, 5], "labels": [N]}`` (``difficulties`` for
            ``ignore_difficult``).
        iou_thrs: the thresholds; AP50 / AP75 are read at 0.5 / 0.75 when present (else -1).
        image_ids: the images' ids; when given, images are taken in sorted id order, as COCOeval
            does (it only decides the order of detections of equal score).
    """
    if len(det_results) != len(annotations):
        raise ValueError(f"{len(det_results)} detection entries for {len(annotations)} annotations")
    if not det_results:
        raise ValueError("no images to evaluate")
    thrs = np.asarray(iou_thrs, np.float64)
    if image_ids is not None:
        order = sorted(range(len(image_ids)), key=lambda i: image_ids[i])
        det_results = [det_results[i] for i in order]
        annotations = [annotations[i] for i in order]
    num_classes = len(det_results[0])
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    rows = [
        _class_result(c, names[c], det_results, annotations, thrs, max_dets, ignore_difficult)
        for c in range(num_classes)
    ]
    valid = [r for r in rows if r.num_gts > 0]

    def mean(values: list[float]) -> float:
        values = [v for v in values if v >= 0]
        return float(np.mean(values)) if values else -1.0

    return CocoResult(
        map=mean([r.ap for r in valid]),
        ap50=mean([r.ap50 for r in valid]),
        ap75=mean([r.ap75 for r in valid]),
        classes=rows,
        iou_thrs=[float(t) for t in thrs],
        max_dets=int(max_dets),
        num_images=len(det_results),
    )


def _at(aps: np.ndarray, thrs: np.ndarray, value: float) -> float:
    hit = np.flatnonzero(np.isclose(thrs, value, rtol=0, atol=1e-12))
    return float(aps[hit[0]]) if len(hit) else -1.0
