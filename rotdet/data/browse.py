"""``rotdet browse``: draw the annotations of a few samples to PNG, to check labels by eye.

Boxes are the obbs in the chosen angle version (converted from the label polygons exactly as
training sees them) drawn back as rectangles, with a dot on the first corner and the class name;
difficult objects (difficulty > 0) are drawn thinner.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from rotdet.data.dota import get_classes, load_dota_infos
from rotdet.data.toy import TOY_CLASSES
from rotdet.data.transforms import ImageReadError, load_image
from rotdet.data.visualize import draw_polygons
from rotdet.fileio import atomic_write_bytes

logger = logging.getLogger("rotdet.data")


def resolve_classes(spec: str) -> tuple[str, ...]:
    """``"toy"``, a DOTA version (``"v1.0"``...) or comma-separated names."""
    if spec == "toy":
        return TOY_CLASSES
    if "," in spec:
        return get_classes(spec.split(","))
    return get_classes(spec)


def draw_annotations(
    img: np.ndarray, obbs: np.ndarray, labels: np.ndarray, classes: Sequence[str], difficulties=None
) -> np.ndarray:
    """A copy of BGR ``img`` with obbs [N, 5] drawn in per-class colours and labelled (the shared
    :func:`rotdet.data.visualize.draw_polygons`; difficult objects thinner)."""
    from rotdet.structures import obb2poly_np

    polys = obb2poly_np(np.asarray(obbs, np.float64).reshape(-1, 5)).reshape(-1, 8)
    labels = np.asarray(labels, np.int64).reshape(-1)
    thin = None if difficulties is None else np.asarray(difficulties).reshape(-1) > 0
    captions = [classes[int(c)] for c in labels]
    return draw_polygons(img, polys, labels, captions, thin=thin, mark_first_corner=True)


def browse(
    ann_dir: str | os.PathLike,
    img_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    classes: Sequence[str],
    version: str = "le90",
    num: int = 4,
    seed: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Draw ``num`` samples (the first ones, or a seeded random choice) to ``out_dir/<id>.png``.

    Returns ``(written paths, problems)``: a label file without its image or an image that cannot
    be read is skipped (logged, listed in ``problems``) and the next sample drawn instead. A missing
    folder is a FileNotFoundError."""
    for folder, what in ((ann_dir, "annotation"), (img_dir, "image")):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    infos = load_dota_infos(ann_dir, img_dir, classes, version)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(infos))
        infos = [infos[i] for i in order]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, problems = [], []
    for info in infos:
        if len(written) == num:
            break
        try:
            img = load_image(info["filename"])
        except (ImageReadError, FileNotFoundError) as exc:
            logger.warning("skipped %s: %s", info["id"], exc)
            problems.append(str(exc))
            continue
        ann = info["ann"]
        img = draw_annotations(img, ann["bboxes"], ann["labels"], classes, ann["difficulties"])
        path = out / f"{info['id']}.png"
        ok, png = cv2.imencode(".png", img)
        atomic_write_bytes(path, png.tobytes())
        written.append(path)
    return written, problems
