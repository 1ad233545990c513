"""Average precision from a precision/recall curve, in the two codebases' exact arithmetic.

* :func:`average_precision_mmdet`: mmdet's ``average_precision`` as mmrotate 0.3.4 calls it: the
  11-point value is accumulated in float32 and divided by 11 in float32; the area value is summed
  in float64 and returned as float32.
* :func:`average_precision_voc`: DOTA_devkit's ``voc_ap``: float64 throughout, the 11-point value
  accumulated as ``ap + p / 11``.

Both use the thresholds ``0, 0.1, ..., 1`` as ``np.arange`` produces them, so that e.g. a recall of
exactly 3/10 does *not* reach the threshold 0.30000000000000004, as in both originals.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ELEVEN_POINTS", "average_precision_mmdet", "average_precision_voc"]

# np.arange(0, 1 + 1e-3, 0.1) (mmdet) and np.arange(0., 1.1, 0.1) (DOTA_devkit) are the same 11 values.
ELEVEN_POINTS: np.ndarray = np.arange(0, 1 + 1e-3, 0.1)


def _eleven_point_maxima(recalls: np.ndarray, precisions: np.ndarray) -> list:
    """For each threshold t: the max precision over recall >= t, or None when no recall reaches t."""
    out = []
    if recalls.size == 0:
        return [None] * len(ELEVEN_POINTS)
    # Recall is a cumulative count over a constant, so non-decreasing (NaN when there is nothing to
    # recall: then no comparison holds, as in the originals). The max precision over recall >= t is a
    # suffix maximum starting at the first index reaching t.
    reach = recalls[None, :] >= ELEVEN_POINTS[:, None]  # [11, D]
    any_reach = reach.any(axis=1)
    first = reach.argmax(axis=1)
    suffix_max = np.maximum.accumulate(precisions[::-1])[::-1]
    for ok, i in zip(any_reach.tolist(), first.tolist(), strict=True):
        out.append(suffix_max[i] if ok else None)
    return out


def average_precision_mmdet(
    recalls: np.ndarray, precisions: np.ndarray, mode: str = "11points"
) -> np.float32:
    """mmdet 2.x ``average_precision`` for one scale: ``mode`` is ``"11points"`` or ``"area"``."""
    recalls = np.asarray(recalls)
    precisions = np.asarray(precisions)
    if mode == "11points":
        ap = np.zeros(1, dtype=np.float32)
        for p in _eleven_point_maxima(recalls, precisions):
            ap[0] += p if p is not None else 0
        ap /= 11
        return ap[0]
    if mode == "area":
        mrec = np.concatenate((np.zeros(1, recalls.dtype), recalls, np.ones(1, recalls.dtype)))
        mpre = np.concatenate((np.zeros(1, recalls.dtype), precisions, np.zeros(1, recalls.dtype)))
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        ind = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.zeros(1, dtype=np.float32)
        ap[0] = np.sum((mrec[ind + 1] - mrec[ind]) * mpre[ind + 1])
        return ap[0]
    raise ValueError(f"unknown AP mode {mode!r}; expected '11points' or 'area'")


def average_precision_voc(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = True) -> float:
    """DOTA_devkit's ``voc_ap`` (float64)."""
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for p in _eleven_point_maxima(rec, prec):
            ap = ap + (p if p is not None else 0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
