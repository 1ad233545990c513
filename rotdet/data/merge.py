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
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from rotdet.structures.detections import RotatedDetections

_OFFSET = re.compile(r"__(\d+)___(\d+)")


def parse_patch_name(name: str) -> tuple[str, int, int]:
    """``"P0001__1024__824___0"`` -> ``("P0001", 824, 0)``; a name without an offset is an original
    image at ``(0, 0)`` (so unsplit test images merge too)."""
    stem = Path(name).stem if "/" in name or name.endswith((".png", ".jpg", ".tif", ".bmp")) else name
    m = _OFFSET.search(stem)
    if m is None:
        return stem, 0, 0
    return stem.split("__")[0], int(m.group(1)), int(m.group(2))


def merge_windows(
    parts: Iterable[tuple[RotatedDetections, tuple[int, int]]], iou_thr: float = 0.1
) -> RotatedDetections | None:
    """Detections of one image from its windows: mmrotate's ``merge_det`` rule, the one copy.

    parts: ``(detections in window pixels, (x, y) window origin)`` pairs. Each window's detections
    are taken class-major (a stable sort by label: the order mmrotate collects its per-class lists,
    so equal scores meet the NMS in the same order), shifted by the origin in their own dtype, and
    all are merged by class-wise rotated NMS at ``iou_thr`` in float64, as mmrotate runs it.

    Returns the merged detections (float64 numpy, by descending score; metadata of the first part),
    or None when ``parts`` is empty.
    """
    from rotdet.ops import batched_nms_rotated

    boxes, scores, labels, first = [], [], [], None
    for dets, (x, y) in parts:
        if first is None:
            first = dets
        d = dets.numpy()
        order = np.argsort(d.labels, kind="stable")
        b = d.boxes[order].copy()
        b[:, :2] = b[:, :2] + np.array([x, y], dtype=b.dtype)
        boxes.append(b.astype(np.float64))
        scores.append(d.scores[order].astype(np.float64))
        labels.append(d.labels[order])
    if first is None:
        return None
    boxes_t = torch.from_numpy(np.concatenate(boxes).reshape(-1, 5))
    scores_t = torch.from_numpy(np.concatenate(scores))
    labels_t = torch.from_numpy(np.concatenate(labels).astype(np.int64))
    keep = batched_nms_rotated(boxes_t, scores_t, labels_t, iou_thr).numpy()
    return RotatedDetections(
        boxes_t.numpy()[keep],
        scores_t.numpy()[keep],
        labels_t.numpy()[keep],
        first.angle_version,
        first.image_id,
        first.classes,
        first.image_size,
    )


def merge_patch_detections(
    patch_results: Iterable[RotatedDetections], iou_thr: float = 0.1
) -> list[RotatedDetections]:
    """Merge per-patch detections into per-image detections (:func:`merge_windows` per image).

    patch_results: detections whose ``image_id`` is the patch name ``<id>__<size>__<x>___<y>``
    (:func:`parse_patch_name`; a name without an offset is an original image), in patch pixels.
    Returns one :class:`RotatedDetections` per original image (float64, by descending score; their
    ``per_class()`` is mmrotate's merged result), ids in first-seen order.
    """
    groups: dict[str, list[tuple[RotatedDetections, tuple[int, int]]]] = {}
    for dets in patch_results:
        ori, x, y = parse_patch_name(dets.image_id)
        groups.setdefault(ori, []).append((dets.describe(image_id=ori, image_size=None), (x, y)))
    return [merge_windows(parts, iou_thr) for parts in groups.values()]


def _score_text(score: float, version: str) -> str:
    # mmrotate's obb2poly_np builds le135 polygons (score column included) in float32, oc/le90 in the
    # detections' float64: the score text differs accordingly.
    return str(np.float32(score)) if version == "le135" else str(np.float64(score))


def write_task1_submission(
    out_dir: str | os.PathLike,
    merged: Sequence[RotatedDetections],
    classes: Sequence[str],
    version: str = "oc",
    zip_name: str | None = None,
) -> tuple[list[Path], Path]:
    """Write ``out_dir/Task1_<class>.txt`` for every class (empty files included) and the zip.

    merged: per original image its detections, as :func:`merge_patch_detections` returns them.
    The zip is ``out_dir/<zip_name or out_dir's name>.zip`` holding the Task1 files at its root.
    Returns ``(task1 files, zip path)``.
    """
    from rotdet.structures import best_begin_point, check_version, obb2poly

    check_version(version)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[list[str]] = [[] for _ in classes]
    for dets in merged:
        for c, d in enumerate(dets.per_class(len(classes), dtype=np.float64)):
            if not len(d):
                continue
            polys = best_begin_point(obb2poly(torch.from_numpy(d[:, :5]))).numpy()
            if version == "le135":
                polys = polys.astype(np.float32)
            for poly, score in zip(polys, d[:, 5], strict=True):
                lines[c].append(
                    " ".join([dets.image_id, _score_text(score, version), *(f"{p:.2f}" for p in poly)])
                )
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
