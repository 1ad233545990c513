"""``rotdet convert-labels``: label folders from one format to another, and the writers behind
``rotdet make-toy --format``.

Readable: ``dota``, ``hrsc``, ``dior``, ``yolo-obb``; writable: ``dota``, ``yolo-obb`` (and, for
ToyDOTA, ``hrsc`` / ``dior`` through :func:`write_records`). Objects keep their polygon (HRSC2016's
is mmrotate's polygon of its ``mbox``), class and difficulty; YOLO-OBB needs the image sizes, which
come from the labels (XML) or from the images (``--images``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rotdet.data.classes import classes_from_text, get_classes
from rotdet.data.dota import DotaAnnotation, list_images, read_dota_records, write_dota_txt
from rotdet.data.formats import check_format
from rotdet.data.formats.dior import read_dior_records, write_dior_xml
from rotdet.data.formats.hrsc import read_hrsc_records, write_hrsc_xml
from rotdet.data.formats.yolo_obb import read_data_yaml, read_yolo_obb_records, write_yolo_obb_txt
from rotdet.data.records import ImageRecord, ParseLog, find_image, image_size

logger = logging.getLogger("rotdet.data")

__all__ = ["ConvertResult", "convert_labels", "read_records", "write_records"]

READABLE = ("dota", "hrsc", "dior", "yolo-obb")
WRITABLE = ("dota", "yolo-obb")
_DEFAULT_CLASSES = {"dota": "dota1.0", "hrsc": "hrsc", "dior": "dior"}


@dataclass
class ConvertResult:
    written: int
    log: ParseLog
    missing_size: list[str]

    def summary(self) -> str:
        text = f"wrote {self.written} label file(s); {self.log.summary()}"
        if self.missing_size:
            text += (
                f"; {len(self.missing_size)} image(s) left out, no size known (e.g. {self.missing_size[0]})"
            )
        return text


def resolve_class_spec(spec: str | Sequence[str] | None, src_format: str) -> tuple[str, ...]:
    """``--classes``: a list name, comma-separated names, a YOLO dataset YAML, or the source
    format's default (``dota1.0``, ``hrsc``, ``dior``; YOLO-OBB has none)."""
    if spec is None:
        if src_format not in _DEFAULT_CLASSES:
            raise ValueError(
                f"--classes is needed for {src_format} labels (a list name, names or a data YAML)"
            )
        return get_classes(_DEFAULT_CLASSES[src_format])
    if isinstance(spec, str):
        if spec.endswith((".yaml", ".yml")) and Path(spec).is_file():
            return read_data_yaml(spec).names
        return classes_from_text(spec)
    return get_classes(spec)


def read_records(
    src: str | os.PathLike,
    src_format: str,
    classes: Sequence[str],
    images: str | os.PathLike | None = None,
    strict: bool = False,
    log: ParseLog | None = None,
) -> list[ImageRecord]:
    """The records of a label folder ``src`` (YOLO-OBB: of the images in ``images``, labels in ``src``)."""
    fmt = check_format(src_format)
    log = log if log is not None else ParseLog()
    img_dir = Path(images) if images is not None else Path(src)
    if fmt in ("dota", "sar"):
        return read_dota_records(src, img_dir, classes, strict, log)
    if fmt == "hrsc":
        return read_hrsc_records(src, img_dir, classes, None, strict, log)
    if fmt == "dior":
        return read_dior_records(src, img_dir, classes, None, strict, log)
    if images is None:
        raise ValueError("YOLO-OBB labels are normalised: --images must give the images (for their sizes)")
    return read_yolo_obb_records(list_images(images), classes, src, strict, log)


def _size(rec: ImageRecord, images: str | os.PathLike | None) -> tuple[int, int] | None:
    if rec.width and rec.height:
        return rec.width, rec.height
    img = find_image(images, rec.id) if images is not None else None
    if img is None and Path(rec.filename).is_file():
        img = Path(rec.filename)
    return image_size(img) if img is not None else None


def write_records(
    records: Sequence[ImageRecord],
    dst: str | os.PathLike,
    dst_format: str,
    classes: Sequence[str],
    images: str | os.PathLike | None = None,
) -> tuple[int, list[str]]:
    """Write one label file per record into ``dst``; returns ``(files written, ids left out for want
    of an image size)``. HRSC2016 gets the le90 box of each polygon (``poly2obb_np``; degenerate
    polygons left out) and DIOR-R the polygon's corners as left-top ... left-bottom."""
    from rotdet.structures import poly2obb_np

    fmt = check_format(dst_format)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    names = list(classes)
    if fmt == "dota":
        bad = [n for n in names if len(n.split()) != 1]
        if bad:
            raise ValueError(f"class name(s) {bad} hold spaces, which a DOTA line cannot; use --to yolo-obb")
    written, missing = 0, []
    for rec in records:
        if fmt == "dota":
            ann = DotaAnnotation(rec.polygons, [names[i] for i in rec.labels], rec.difficulties)
            write_dota_txt(dst / f"{rec.id}.txt", ann)
            written += 1
            continue
        size = _size(rec, images)
        if size is None:
            missing.append(rec.id)
            continue
        if fmt == "yolo-obb":
            write_yolo_obb_txt(dst / f"{rec.id}.txt", rec.polygons, rec.labels, *size)
        elif fmt == "hrsc":
            obbs, keep = poly2obb_np(rec.polygons, "le90")
            write_hrsc_xml(
                dst / f"{rec.id}.xml", *size, obbs, rec.labels[keep], names, rec.difficulties[keep]
            )
        elif fmt == "dior":
            write_dior_xml(dst / f"{rec.id}.xml", *size, rec.polygons, rec.labels, names, rec.difficulties)
        else:
            raise ValueError(f"cannot write {fmt} labels; writable: {', '.join(WRITABLE)}, hrsc, dior")
        written += 1
    return written, missing


def convert_labels(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    src_format: str,
    dst_format: str,
    images: str | os.PathLike | None = None,
    classes: str | Sequence[str] | None = None,
    strict: bool = False,
) -> ConvertResult:
    """Convert the label folder ``src`` (``src_format``) into ``dst`` (``dst_format``)."""
    src_format, dst_format = check_format(src_format), check_format(dst_format)
    if not Path(src).is_dir():
        raise FileNotFoundError(f"label folder {src} does not exist")
    names = resolve_class_spec(classes, src_format)
    log = ParseLog()
    records = read_records(src, src_format, names, images, strict, log)
    written, missing = write_records(records, dst, dst_format, names, images)
    return ConvertResult(written, log, missing)
