"""DIOR-R labels: one VOC-style XML per image with each rotated box as four named corners, read as
mmrotate 1.x's ``DIORDataset`` reads them (mmrotate 0.3.4 has no DIOR dataset).

Layout (mmrotate 1.x ``tools/data/dior``)::

    DIOR/ImageSets/Main/train.txt, val.txt, test.txt     image ids
    DIOR/Annotations/Oriented Bounding Boxes/<id>.xml
    DIOR/JPEGImages-trainval/<id>.jpg, DIOR/JPEGImages-test/<id>.jpg

Each ``annotation/object`` has a ``name`` (compared lower-cased with the class list, 20 classes:
``data.classes: dior``), ``difficult`` and ``robndbox`` with ``x_left_top y_left_top x_right_top
y_right_top x_right_bottom y_right_bottom x_left_bottom y_left_bottom``: the polygon is read in
that order (left-top, right-top, right-bottom, left-bottom), the elements found by name wherever
they stand. A polygon whose corners in that order cross themselves (two corners swapped by the
annotator) is re-ordered round its centre, starting at the left-top corner, and counted: the box
(minAreaRect in oc / le90) is unchanged, the polygon and le135's edge-based box become right.

As in mmrotate 1.x: the image size is ``size/width`` and ``size/height`` (read from the image when
missing), ``difficult`` is read but no object is ignored for it; beyond it an unknown class name is
skipped with a warning instead of stopping the load (raised in ``strict``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rotdet.data.dota import format_coord
from rotdet.data.formats._xml import BadElement, child_float, child_text, parse_xml, xml_element, xml_files
from rotdet.data.records import (
    OUT_OF_IMAGE,
    UNKNOWN_CLASS,
    ImageRecord,
    ParseLog,
    find_image,
    image_size,
    implausible_objects,
)
from rotdet.fileio import atomic_write_text

__all__ = ["CORNER_TAGS", "parse_dior_xml", "read_dior_records", "write_dior_xml"]

CORNER_TAGS: tuple[str, ...] = (
    "x_left_top", "y_left_top", "x_right_top", "y_right_top",
    "x_right_bottom", "y_right_bottom", "x_left_bottom", "y_left_bottom",
)  # fmt: skip
REORDERED = "DIOR-R polygon(s) with self-crossing corner order re-ordered"


def _crosses(p: np.ndarray) -> bool:
    """Whether the quadrilateral ``p`` [4, 2] in this order crosses itself (a 'bow tie')."""

    def side(a, b, c) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    def proper(a, b, c, d) -> bool:
        return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0

    return proper(p[0], p[1], p[2], p[3]) or proper(p[1], p[2], p[3], p[0])


def _reorder(poly: np.ndarray) -> np.ndarray:
    """The corners in cyclic order round their centre (clockwise on screen), from the first one."""
    p = poly.reshape(4, 2).astype(np.float64)
    centre = p.mean(axis=0)
    ang = np.arctan2(p[:, 1] - centre[1], p[:, 0] - centre[0])
    order = np.argsort((ang - ang[0]) % (2 * np.pi), kind="stable")
    return poly.reshape(4, 2)[order].reshape(8)


def parse_dior_xml(
    path: str | os.PathLike,
    classes: Sequence[str],
    img_dir: str | os.PathLike,
    strict: bool = False,
    log: ParseLog | None = None,
    check_bounds: bool = False,
) -> ImageRecord | None:
    """The record of one DIOR-R XML file (None when the file is skipped). ``check_bounds``: objects
    wholly or absurdly far outside the image (:func:`rotdet.data.records.implausible_objects`) are
    skipped (raised when ``strict``)."""
    log = log if log is not None else ParseLog()
    path = Path(path)
    root = parse_xml(path, log, strict)
    if root is None:
        return None
    log.files += 1
    img = find_image(img_dir, path.stem, (".jpg",))
    width = height = None
    size = root.find("size")
    try:
        if size is None:
            raise BadElement("size", "missing")
        width = int(child_float(size, "width", f"/{root.tag}/size"))
        height = int(child_float(size, "height", f"/{root.tag}/size"))
    except BadElement:
        width, height = (image_size(img) if img is not None else None) or (None, None)
    index = {c.lower(): i for i, c in enumerate(classes)}
    polys, labels, diffs, elements = [], [], [], []
    for k, obj in enumerate(root.findall("object"), start=1):
        where = f"/{root.tag}/object[{k}]"
        try:
            name = child_text(obj, "name", where)
            label = index.get(name.lower())
            if label is None:
                log.note(UNKNOWN_CLASS)
                raise BadElement(f"{where}/name", f"unknown class name ({name})", name)
            box = obj.find("robndbox")
            if box is None:
                raise BadElement(f"{where}/robndbox", "missing element")
            poly = np.array([child_float(box, t, f"{where}/robndbox") for t in CORNER_TAGS], np.float32)
            diff_text = child_text(obj, "difficult", where, required=False)
            try:
                difficulty = int(float(diff_text)) if diff_text is not None else 0
            except ValueError:
                raise BadElement(f"{where}/difficult", "non-numeric value", diff_text) from None
        except BadElement as bad:
            bad.skip(str(path), log, strict)
            continue
        if _crosses(poly.reshape(4, 2)):
            poly = _reorder(poly)
            log.note(REORDERED)
        polys.append(poly)
        labels.append(label)
        diffs.append(difficulty)
        elements.append(where)
    implausible = implausible_objects(np.array(polys).reshape(-1, 8), width, height) if check_bounds else []
    for i, reason in reversed(implausible):
        BadElement(elements[i], reason).skip(str(path), log, strict)
        del polys[i], labels[i], diffs[i]
    record = ImageRecord(
        path.stem,
        str(img if img is not None else Path(img_dir) / f"{path.stem}.jpg"),
        np.array(polys, np.float32).reshape(-1, 8),
        np.array(labels, np.int64),
        np.array(diffs, np.int64),
        width,
        height,
    )
    log.note(OUT_OF_IMAGE, int(record.outside_image().sum()))
    return record


def read_dior_records(
    ann_dir: str | os.PathLike,
    img_dir: str | os.PathLike,
    classes: Sequence[str],
    ann_file: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    strict: bool = False,
    log: ParseLog | None = None,
    check_bounds: bool = False,
) -> list[ImageRecord]:
    """The records of the ids in ``ann_file`` (one ``ImageSets/Main`` list or several: mmrotate 1.x
    trains on train + val), in order; of every ``.xml`` in ``ann_dir`` (sorted) when it is None."""
    log = log if log is not None else ParseLog()
    paths = xml_files(ann_dir, ann_file, log, strict)
    records = [parse_dior_xml(p, classes, img_dir, strict, log, check_bounds) for p in paths]
    return [r for r in records if r is not None]


def write_dior_xml(
    path: str | os.PathLike,
    width: int,
    height: int,
    polygons: np.ndarray,
    labels: Sequence[int],
    classes: Sequence[str],
    difficulties: Sequence[int] | None = None,
) -> None:
    """Write one DIOR-R XML; polygon corners 1-4 become left-top, right-top, right-bottom,
    left-bottom (values written so that they read back as the same float32)."""
    polygons = np.asarray(polygons, np.float32).reshape(-1, 8)
    difficulties = [0] * len(polygons) if difficulties is None else list(difficulties)
    objects = []
    for poly, label, diff in zip(polygons, labels, difficulties, strict=True):
        corners = {t: format_coord(v) for t, v in zip(CORNER_TAGS, poly, strict=True)}
        objects.append(
            (
                "object",
                {
                    "type": "robndbox",
                    "name": classes[int(label)],
                    "pose": "Unspecified",
                    "truncated": 0,
                    "difficult": int(diff),
                    "robndbox": corners,
                },
            )
        )
    body = [
        ("filename", f"{Path(path).stem}.jpg"),
        ("size", {"width": int(width), "height": int(height), "depth": 3}),
        ("segmented", 0),
        *objects,
    ]
    atomic_write_text(
        path, '<?xml version="1.0" encoding="utf-8"?>\n' + xml_element("annotation", body) + "\n"
    )
