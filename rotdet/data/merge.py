"""Merging patch detections back onto the original images, and DOTA Task1 submission files.

As mmrotate 0.3.4's ``DOTADataset.merge_det`` / ``_results2submission``: each patch name
``<id>__<size>__<x>___<y>`` gives the original image and the patch offset; detections are shifted
back (centre only: patches are cut, not scaled, in original pixels) and merged by class-wise rotated
NMS at IoU 0.1 per original image. A submission is one ``Task1_<class>.txt`` per class with lines
``<image id> <score> x1 y1 x2 y2 x3 y3 x4 y4`` (polygons in best-begin-point order, 2 decimals), and
a zip of those files for the evaluation server.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

_OFFSET = re.compile(r"__(\d+)___(\d+)")


def parse_patch_name(name: str) -> tuple[str, int, int]:
    """``"P0001__1024__824___0"`` -> ``("P0001", 824, 0)``; a name without an offset is an original
    image at ``(0, 0)`` (so unsplit test images merge too)."""
    stem = Path(name).stem if "/" in name or name.endswith((".png", ".jpg", ".tif", ".bmp")) else name
    m = _OFFSET.search(stem)
    if m is None:
        return stem, 0, 0
    return stem.split("__")[0], int(m.group(1)), int(m.group(2))


def _as_numpy(dets) -> np.ndarray:
    if isinstance(dets, torch.Tensor):
        dets = dets.detach().cpu().numpy()
    return np.asarray(dets).reshape(-1, 6)


def merge_patch_detections(
    patch_results: Mapping[str, Sequence] | Iterable[tuple[str, Sequence]],
    num_classes: int,
    iou_thr: float = 0.1,
) -> dict[str, list[np.ndarray]]:
    """Merge per-patch detections into per-image detections.

    patch_results: ``{patch name: [dets of class 0, dets of class 1, ...]}`` (or pairs), each dets a
    ``[K, 6]`` array or tensor ``(cx, cy, w, h, theta, score)`` in patch pixels.
    Returns ``{original id: [[K_c, 6] float64 per class]}``, ids in first-seen order, each class's
    boxes by descending score (as mmcv's ``nms_rotated`` returns them). The shift is done in the
    detections' own dtype and the NMS in float64, as mmrotate does (its label column is float64).
    """
    from rotdet.ops import batched_nms_rotated

    items = patch_results.items() if isinstance(patch_results, Mapping) else patch_results
    collected: dict[str, list[np.ndarray]] = {}
    for name, per_class in items:
        if len(per_class) != num_classes:
            raise ValueError(f"{name}: {len(per_class)} class entries, expected {num_classes}")
        ori, x, y = parse_patch_name(name)
        rows = []
        for c, dets in enumerate(per_class):
            d = _as_numpy(dets)
            if not len(d):
                continue
            boxes = d[:, :5].copy()
            boxes[:, :2] = boxes[:, :2] + np.array([x, y], dtype=boxes.dtype)
            rows.append(np.concatenate([np.full((len(d), 1), c, np.float64), boxes, d[:, 5:6]], axis=1))
        collected.setdefault(ori, [])
        if rows:
            collected[ori].append(np.concatenate(rows).astype(np.float64))

    merged: dict[str, list[np.ndarray]] = {}
    for ori, parts in collected.items():
        out = [np.zeros((0, 6), np.float64) for _ in range(num_classes)]
        if parts:
            allrows = np.concatenate(parts)
            labels = torch.from_numpy(allrows[:, 0].astype(np.int64))
            dets = torch.from_numpy(allrows[:, 1:])
            keep = batched_nms_rotated(dets[:, :5], dets[:, 5], labels, iou_thr).numpy()
            kept, kept_labels = allrows[keep, 1:], allrows[keep, 0].astype(np.int64)
            for c in range(num_classes):
                sel = kept[kept_labels == c]  # keep is by descending score, so each class is too
                if len(sel):
                    out[c] = sel
        merged[ori] = out
    return merged


def _score_text(score: float, version: str) -> str:
    # mmrotate's obb2poly_np builds le135 polygons (score column included) in float32, oc/le90 in the
    # detections' float64: the score text differs accordingly.
    return str(np.float32(score)) if version == "le135" else str(np.float64(score))


def write_task1_submission(
    out_dir: str | os.PathLike,
    merged: Mapping[str, Sequence[np.ndarray]],
    classes: Sequence[str],
    version: str = "oc",
    zip_name: str | None = None,
) -> tuple[list[Path], Path]:
    """Write ``out_dir/Task1_<class>.txt`` for every class (empty files included) and the zip.

    merged: ``{image id: [[K_c, 6] per class]}`` as :func:`merge_patch_detections` returns.
    The zip is ``out_dir/<zip_name or out_dir's name>.zip`` holding the Task1 files at its root.
    Returns ``(task1 files, zip path)``.
    """
    from rotdet.structures import best_begin_point, check_version, obb2poly

    check_version(version)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[list[str]] = [[] for _ in classes]
    for img_id, per_class in merged.items():
        if len(per_class) != len(classes):
            raise ValueError(f"{img_id}: {len(per_class)} class entries, expected {len(classes)}")
        for c, dets in enumerate(per_class):
            d = _as_numpy(dets).astype(np.float64)
            if not len(d):
                continue
            polys = best_begin_point(obb2poly(torch.from_numpy(d[:, :5]))).numpy()
            if version == "le135":
                polys = polys.astype(np.float32)
            for poly, score in zip(polys, d[:, 5], strict=True):
                lines[c].append(" ".join([img_id, _score_text(score, version), *(f"{p:.2f}" for p in poly)]))
    files = []
    for cls, cls_lines in zip(classes, lines, strict=True):
        path = out / f"Task1_{cls}.txt"
        path.write_text("".join(line + "\n" for line in cls_lines))
        files.append(path)
    zip_path = out / f"{zip_name or out.resolve().name}.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.name)
    return files, zip_path
