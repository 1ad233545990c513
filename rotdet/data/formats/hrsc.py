"""HRSC2016 labels: one VOC-style XML per image, read as mmrotate 0.3.4's ``HRSCDataset`` reads them.

Layout (mmrotate's ``configs/_base_/datasets/hrsc.py``)::

    hrsc/ImageSets/trainval.txt, test.txt        image ids, one per line
    hrsc/FullDataSet/Annotations/<id>.xml
    hrsc/FullDataSet/AllImages/<id>.bmp

The XML root (``HRSC_Image``) holds ``Img_SizeWidth`` / ``Img_SizeHeight`` and
``HRSC_Objects/HRSC_Object`` elements with ``Class_ID``, ``difficult``, the rotated box
``mbox_cx`` / ``mbox_cy`` / ``mbox_w`` / ``mbox_h`` / ``mbox_ang`` (radians) and the bow
``header_x`` / ``header_y``. mmrotate's semantics, kept:

* classes ``("ship",)`` (``data.classes: hrsc``, its configs' ``classwise=False``): every object is
  label 0, whatever its ``Class_ID``. Any other list is its ``classwise`` mode: an object's label is
  the position of its ``Class_ID``'s class in the list and objects of other ids are left out (and
  counted). ``Class_ID`` ``1000000NN`` names ``HRSC_CLASSES`` by mmrotate's id table when the list
  is made of HRSC names (``hrsc-classwise``); for a list of your own it is the NN-th name (1-based);
* the polygon is mmrotate's ``obb2poly_np(mbox, 'le90')`` (float32 arithmetic, best begin point);
  in le90 the box is the ``mbox`` values as written, even with an angle outside [-pi/2, pi/2)
  (counted); in oc / le135 it comes from the polygon (``poly2obb_np``);
* ``difficult`` is read but, as in mmrotate, no object is ignored for it.

Beyond mmrotate: a missing or unreadable size is read from the image, a malformed object is skipped
with its element path (raised in ``strict``), a missing XML is skipped instead of stopping the load.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rotdet.data.classes import HRSC_CLASS_IDS, HRSC_CLASSES
from rotdet.data.dota import format_coord
from rotdet.data.formats._xml import BadElement, child_float, child_text, parse_xml, xml_element, xml_files
from rotdet.data.mmrotate_geometry import mmrotate_obb2poly_np
from rotdet.data.records import (
    OUT_OF_IMAGE,
    UNKNOWN_CLASS,
    ImageRecord,
    ParseLog,
    find_image,
    image_size,
)
from rotdet.fileio import atomic_write_text

__all__ = ["hrsc_class_ids", "parse_hrsc_xml", "read_hrsc_records", "write_hrsc_xml"]

ANGLE_OUTSIDE_LE90 = "HRSC angle(s) outside [-pi/2, pi/2) kept as written (mmrotate's le90 boxes)"
SIZE_FROM_IMAGE = "image size(s) read from the image (no Img_SizeWidth / Img_SizeHeight)"


def hrsc_class_ids(classes: Sequence[str]) -> dict[str, int] | None:
    """``{Class_ID: label}`` for a class list, or None for the one-class ``("ship",)`` setting."""
    classes = tuple(classes)
    if classes == ("ship",):
        return None
    if all(c in HRSC_CLASSES for c in classes):
        return {"1" + "0" * 6 + HRSC_CLASS_IDS[HRSC_CLASSES.index(c)]: i for i, c in enumerate(classes)}
    return {f"1{'0' * 6}{i + 1:02d}": i for i in range(len(classes))}


def _size(root, where: str, img: Path | None, log: ParseLog) -> tuple[int | None, int | None]:
    try:
        w = child_float(root, "Img_SizeWidth", where)
        h = child_float(root, "Img_SizeHeight", where)
        if w > 0 and h > 0:
            return int(w), int(h)
    except BadElement:
        pass
    size = image_size(img) if img is not None else None
    if size is not None:
        log.note(SIZE_FROM_IMAGE)
        return size
    return None, None


def _object(obj, where: str, id_to_label: dict[str, int] | None) -> tuple | None:
    """``(label, mbox [5], difficulty, header [2])`` of one object, None for an unknown class."""
    if id_to_label is None:
        label = 0
    else:
        label = id_to_label.get(child_text(obj, "Class_ID", where))
        if label is None:
            return None
    mbox = [child_float(obj, tag, where) for tag in ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang")]
    diff_text = child_text(obj, "difficult", where, required=False)
    try:
        difficulty = int(float(diff_text)) if diff_text is not None else 0
    except ValueError:
        raise BadElement(f"{where}/difficult", "non-numeric value", diff_text) from None
    header = []
    for tag in ("header_x", "header_y"):
        text = child_text(obj, tag, where, required=False)
        try:
            header.append(int(float(text)) if text is not None else -1)
        except ValueError:
            raise BadElement(f"{where}/{tag}", "non-numeric value", text) from None
    return label, mbox, difficulty, header


def parse_hrsc_xml(
    path: str | os.PathLike,
    classes: Sequence[str],
    img_dir: str | os.PathLike,
    strict: bool = False,
    log: ParseLog | None = None,
) -> ImageRecord | None:
    """The record of one HRSC XML file (None when the file is skipped)."""
    log = log if log is not None else ParseLog()
    path = Path(path)
    root = parse_xml(path, log, strict)
    if root is None:
        return None
    log.files += 1
    img_id = path.stem
    img = find_image(img_dir, img_id, (".bmp",))
    width, height = _size(root, f"/{root.tag}", img, log)
    id_to_label = hrsc_class_ids(classes)
    labels, mboxes, diffs, headers = [], [], [], []
    for k, obj in enumerate(root.findall("HRSC_Objects/HRSC_Object"), start=1):
        where = f"/{root.tag}/HRSC_Objects/HRSC_Object[{k}]"
        try:
            parsed = _object(obj, where, id_to_label)
        except BadElement as bad:
            bad.skip(str(path), log, strict)
            continue
        if parsed is None:
            log.note(UNKNOWN_CLASS)
            continue
        labels.append(parsed[0])
        mboxes.append(parsed[1])
        diffs.append(parsed[2])
        headers.append(parsed[3])
    mbox = np.array(mboxes, np.float32).reshape(-1, 5)
    polygons = mmrotate_obb2poly_np(mbox, "le90").astype(np.float32)
    angles = mbox[:, 4]
    log.note(ANGLE_OUTSIDE_LE90, int(((angles < -math.pi / 2) | (angles >= math.pi / 2)).sum()))
    record = ImageRecord(
        img_id,
        str(img if img is not None else Path(img_dir) / f"{img_id}.bmp"),
        polygons,
        np.array(labels, np.int64),
        np.array(diffs, np.int64),
        width,
        height,
        obbs=mbox,
        obb_version="le90",
        meta={"headers": np.array(headers, np.int64).reshape(-1, 2)},
    )
    log.note(OUT_OF_IMAGE, int(record.outside_image().sum()))
    return record


def read_hrsc_records(
    ann_dir: str | os.PathLike,
    img_dir: str | os.PathLike,
    classes: Sequence[str],
    ann_file: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    strict: bool = False,
    log: ParseLog | None = None,
) -> list[ImageRecord]:
    """The records of the ids in ``ann_file`` (an ``ImageSets`` list, or several), in its order; of
    every ``.xml`` in ``ann_dir`` (sorted) when it is None. A listed id without an XML is skipped."""
    log = log if log is not None else ParseLog()
    paths = xml_files(ann_dir, ann_file, log, strict)
    records = [parse_hrsc_xml(p, classes, img_dir, strict, log) for p in paths]
    return [r for r in records if r is not None]


def write_hrsc_xml(
    path: str | os.PathLike,
    width: int,
    height: int,
    mboxes: np.ndarray,
    labels: Sequence[int],
    classes: Sequence[str],
    difficulties: Sequence[int] | None = None,
) -> None:
    """Write one HRSC XML: ``mboxes`` ``[N, 5]`` le90 ``(cx, cy, w, h, angle)`` written so that they
    read back as the same float32 values; ``Class_ID`` from :func:`hrsc_class_ids` (ship for the
    one-class list)."""
    ids = hrsc_class_ids(classes)
    by_label = {v: k for k, v in ids.items()} if ids is not None else {}
    mboxes = np.asarray(mboxes, np.float32).reshape(-1, 5)
    difficulties = [0] * len(mboxes) if difficulties is None else list(difficulties)
    objects = []
    for k, (box, label, diff) in enumerate(zip(mboxes, labels, difficulties, strict=True), start=1):
        cx, cy, w, h, a = (format_coord(v) for v in box)
        # The bow is the end of the long side the angle points to (HRSC's header point).
        c, s = math.cos(float(box[4])), math.sin(float(box[4]))
        hx, hy = float(box[0]) + float(box[2]) / 2 * c, float(box[1]) + float(box[2]) / 2 * s
        objects.append(
            (
                "HRSC_Object",
                {
                    "Object_ID": k,
                    "Class_ID": by_label.get(int(label), "100000001"),
                    "Object_NameEn": classes[int(label)],
                    "truncated": 0,
                    "difficult": int(diff),
                    "mbox_cx": cx,
                    "mbox_cy": cy,
                    "mbox_w": w,
                    "mbox_h": h,
                    "mbox_ang": a,
                    "header_x": int(round(hx)),
                    "header_y": int(round(hy)),
                },
            )
        )
    stem = Path(path).stem
    body = {
        "Img_ID": stem,
        "Img_FileName": stem,
        "Img_FileFmt": "bmp",
        "Img_SizeWidth": int(width),
        "Img_SizeHeight": int(height),
        "Img_SizeDepth": 3,
        "HRSC_Objects": objects,
    }
    atomic_write_text(
        path, '<?xml version="1.0" encoding="utf-8"?>\n' + xml_element("HRSC_Image", body) + "\n"
    )
