"""Label formats: each reader returns :class:`rotdet.data.records.ImageRecord` s.

======== ============================================== ==========================================
format   files                                          split entry keys
======== ============================================== ==========================================
dota     ``labelTxt/<id>.txt`` (DOTA v1.0/1.5/2.0)      ``ann_dir``, ``img_dir`` (no ``ann_dir``:
         ``x1 y1 ... x4 y4 class difficulty``            the test phase, images only)
sar      SSDD / HRSID as mmrotate prepares them: DOTA   as dota; classes ``sar`` (``ship``)
         label files (mmrotate's SARDataset)
yolo-obb ``labels/<id>.txt`` ``class x1 y1 ... y4``     ``img_dir`` or the YAML's split, ``ann_dir``
         normalised, + the dataset YAML                 (default: Ultralytics' label paths)
hrsc     HRSC2016 XML (``mbox_cx`` ...)                 ``ann_dir``, ``img_dir``, ``ann_file``
dior     DIOR-R XML (``robndbox`` corners)              ``ann_dir``, ``img_dir``, ``ann_file``
======== ============================================== ==========================================

Readers: :func:`rotdet.data.dota.read_dota_records`,
:func:`rotdet.data.formats.yolo_obb.read_yolo_obb_records`,
:func:`rotdet.data.formats.hrsc.read_hrsc_records`, :func:`rotdet.data.formats.dior.read_dior_records`.

:func:`read_split` dispatches on the format name for one split entry of a config.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rotdet.data.dota import read_dota_records
from rotdet.data.formats.dior import read_dior_records
from rotdet.data.formats.hrsc import read_hrsc_records
from rotdet.data.formats.yolo_obb import list_split_images, read_data_yaml, read_yolo_obb_records
from rotdet.data.records import ImageRecord, ParseLog

__all__ = ["FORMATS", "check_format", "read_ground_truth", "read_split"]

FORMATS: tuple[str, ...] = ("dota", "sar", "yolo-obb", "hrsc", "dior")
_ALIASES = {"yolo": "yolo-obb", "yolo_obb": "yolo-obb", "yolov8-obb": "yolo-obb", "dior-r": "dior"}


def check_format(fmt: str | None) -> str:
    """The canonical format name (``dota`` when None), or a ValueError listing the known ones."""
    name = (fmt or "dota").strip().lower()
    name = _ALIASES.get(name, name)
    if name not in FORMATS:
        raise ValueError(f"unknown data.format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return name


def _join(root: Path, value: str | os.PathLike | None) -> Path | None:
    if value is None or value == "":
        return None
    p = Path(value)
    return p if p.is_absolute() else root / p


def _ann_files(root: Path, value) -> list[Path] | None:
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    return [_join(root, v) for v in values]


def read_split(
    fmt: str,
    entry: dict,
    root: str | os.PathLike,
    classes: Sequence[str],
    strict: bool = False,
    log: ParseLog | None = None,
    skip_empty_files: bool = False,
    split: str | None = None,
    yaml_file: str | os.PathLike | None = None,
) -> list[ImageRecord]:
    """The records of one split entry (``{"img_dir": ..., "ann_dir": ..., "ann_file": ...}``, paths
    relative to ``root``). For ``yolo-obb`` with a dataset YAML (``yaml_file``) and no ``img_dir``,
    the YAML's ``split`` entry gives the images (its ``path`` the root).

    ``skip_empty_files``: DOTA / SAR label files of size 0 are left out (mmrotate's
    ``filter_empty_gt``). Objects wholly outside their image, or with a corner farther outside
    than its size, are skipped naming their line or element (DOTA, SAR, YOLO-OBB, DIOR-R; not the
    evaluation's ground truth, read as the official tools read it)."""
    fmt = check_format(fmt)
    root = Path(root)
    log = log if log is not None else ParseLog()
    img_dir = _join(root, entry.get("img_dir"))
    ann_dir = _join(root, entry.get("ann_dir"))
    if fmt in ("dota", "sar"):
        return read_dota_records(ann_dir, img_dir, classes, strict, log, skip_empty_files, check_bounds=True)
    if fmt == "yolo-obb":
        if img_dir is not None:
            images = list_split_images([img_dir])
        elif entry.get("ann_file"):
            images = list_split_images(_ann_files(root, entry["ann_file"]))
        elif yaml_file is not None:
            images = read_data_yaml(yaml_file).split_images(split or "train")
        else:
            raise ValueError("a yolo-obb split needs img_dir, ann_file (an image list) or data.yaml")
        return read_yolo_obb_records(images, classes, ann_dir, strict, log, check_bounds=True)
    if ann_dir is None:
        raise ValueError(f"a {fmt} split needs ann_dir (the XML folder)")
    ann_files = _ann_files(root, entry.get("ann_file"))
    if fmt == "hrsc":  # its rotated boxes are the targets, as they are (counted when outside)
        return read_hrsc_records(ann_dir, img_dir, classes, ann_files, strict, log)
    return read_dior_records(ann_dir, img_dir, classes, ann_files, strict, log, check_bounds=True)


def read_ground_truth(
    gt: str | os.PathLike,
    fmt: str,
    classes: Sequence[str],
    images: str | os.PathLike | None = None,
    version: str = "le90",
    split: str = "val",
    log: ParseLog | None = None,
    ann_file: str | os.PathLike | None = None,
) -> tuple[list[str], list[dict]]:
    """``(image ids, annotations)`` of a ground-truth folder for evaluation (``rotdet eval``), every
    object kept (difficulty <= 100, degenerate polygons dropped, as mmrotate's loaders):

    * dota / sar: a labelTxt folder; hrsc / dior: the XML folder (all ``.xml``, or the ids of the
      ``ann_file`` list, e.g. HRSC2016's ``ImageSets/test.txt``);
    * yolo-obb: a dataset YAML (its ``split`` entry; ``test`` falls back to ``val``), or a label
      folder with ``images`` the image folder (every image is evaluated, with or without labels).
    """
    from rotdet.data.dota import list_images
    from rotdet.data.records import records_to_infos

    fmt = check_format(fmt)
    gt = Path(gt)
    log = log if log is not None else ParseLog()
    if fmt in ("dota", "sar"):
        records = read_dota_records(gt, images if images is not None else gt, classes, log=log)
    elif fmt == "yolo-obb":
        if gt.is_file():
            yml = read_data_yaml(gt)
            use = split if yml.splits.get(split) else "val"
            records = read_yolo_obb_records(yml.split_images(use), classes, log=log)
        else:
            if images is None:
                raise ValueError(
                    "YOLO-OBB ground truth: give the data YAML, or the label folder and --images"
                )
            records = read_yolo_obb_records(list_images(images), classes, gt, log=log)
    else:
        reader = read_hrsc_records if fmt == "hrsc" else read_dior_records
        records = reader(gt, images if images is not None else gt, classes, ann_file, log=log)
    infos = records_to_infos(records, version, 100, log)
    return [i["id"] for i in infos], [i["ann"] for i in infos]
