"""YOLO-OBB labels (Ultralytics), read and written.

One ``.txt`` per image, one object per line: ``class x1 y1 x2 y2 x3 y3 x4 y4`` with the class an
index into the dataset YAML's ``names`` and the corners normalised by the image width / height
(``x / W``, ``y / H``, so 0 and 1 are the image's edges). An empty file, or no file, is an image
without objects (Ultralytics' "background" image).

Where a label is: Ultralytics replaces the last ``/images/`` of the image path by ``/labels/`` and
the extension by ``.txt`` (``ds/images/train/a.jpg`` -> ``ds/labels/train/a.txt``); a config may
also name a label folder directly (``ann_dir``).

The dataset YAML (``path``, ``train``, ``val``, optional ``test``, ``names``)::

    path: /data/ships        # root; a relative path is taken from the YAML's folder
    train: images/train      # a folder of images, a .txt list of images, or a list of those
    val: images/val
    names: {0: ship, 1: harbor}   # or a list

Reading denormalises in float64 and rounds to float32 (as rotdet holds polygons); writing gives
each value the fewest digits that read back to the same float32 pixel coordinate, so
DOTA -> YOLO-OBB -> DOTA is lossless.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from rotdet.data.records import (
    IMAGE_EXTENSIONS,
    OUT_OF_IMAGE,
    UNKNOWN_CLASS,
    ImageRecord,
    LabelFormatError,
    ParseLog,
    SkippedLine,
    decode_label_text,
    image_size,
    implausible_objects,
)
from rotdet.fileio import atomic_write_bytes, atomic_write_text

logger = logging.getLogger("rotdet.data")

__all__ = [
    "YOLO_IMAGE_EXTENSIONS",
    "YoloDataYaml",
    "format_yolo_obb_text",
    "label_path_for",
    "list_split_images",
    "parse_yolo_obb_text",
    "read_data_yaml",
    "read_yolo_obb_records",
    "write_data_yaml",
    "write_yolo_obb_txt",
]

YOLO_IMAGE_EXTENSIONS: tuple[str, ...] = (*IMAGE_EXTENSIONS, ".webp")
NO_LABEL_FILE = "image(s) without a label file (no objects)"


# ------------------------------------------------------------------------------------ labels
def parse_yolo_obb_text(
    text: str,
    width: int,
    height: int,
    num_classes: int,
    path: str = "<text>",
    strict: bool = False,
    log: ParseLog | None = None,
    check_bounds: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(polygons float32 [N, 8] in pixels, labels int64 [N])`` of one label file's text.

    A line with another token count, a non-integer or out-of-range class, or a non-numeric or
    non-finite coordinate, and with ``check_bounds`` (datasets for training and testing) a polygon
    wholly outside the image or with a corner farther outside than its size
    (:func:`rotdet.data.records.implausible_objects`), is skipped with a warning naming
    ``path:line`` (raised in ``strict``); objects with a corner outside ``[0, 1]`` are kept and
    counted in ``log``.
    """
    log = log if log is not None else ParseLog()
    polys: list[list[float]] = []
    labels: list[int] = []
    outside = 0
    for lineno, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        tokens = raw.split()
        if not tokens:
            continue

        def skip(reason: str, raw: str = raw, lineno: int = lineno) -> None:
            log.skip(SkippedLine(path, lineno, reason, raw), strict)

        if len(tokens) != 9:
            skip(f"wrong token count ({len(tokens)}, expected 9: class x1 y1 ... x4 y4)")
            continue
        try:
            cls_value = float(tokens[0])
            coords = [float(t) for t in tokens[1:]]
        except ValueError:
            skip("non-numeric value")
            continue
        if not (math.isfinite(cls_value) and cls_value == int(cls_value)):
            skip(f"non-integer class index ({tokens[0]})")
            continue
        cls = int(cls_value)
        if not 0 <= cls < num_classes:
            log.note(UNKNOWN_CLASS)
            skip(f"unknown class index ({cls}; {num_classes} names)")
            continue
        if not all(math.isfinite(c) for c in coords):
            skip("non-finite coordinate (NaN or inf)")
            continue
        scale = np.tile(np.array([width, height], np.float64), 4)
        poly = np.array(coords, np.float64) * scale
        implausible = implausible_objects(poly, width, height) if check_bounds else None
        if implausible:
            skip(implausible[0][1])
            continue
        if min(coords) < 0 or max(coords) > 1:
            outside += 1
        polys.append(poly.tolist())
        labels.append(cls)
    log.note(OUT_OF_IMAGE, outside)
    log.files += 1
    return np.array(polys, np.float32).reshape(-1, 8), np.array(labels, np.int64)


def _shortest(norm: float, size: int, target: np.float32) -> str:
    """The shortest ``%g`` text of ``norm`` whose ``float32(value * size)`` is ``target``."""
    for digits in range(6, 18):
        text = f"{norm:.{digits}g}"
        if np.float32(float(text) * size) == target:
            return text
    return repr(norm)


def format_yolo_obb_text(polygons: np.ndarray, labels: np.ndarray, width: int, height: int) -> str:
    """YOLO-OBB label text for pixel ``polygons`` ``[N, 8]`` and class indices ``labels``."""
    polygons = np.asarray(polygons, np.float32).reshape(-1, 8)
    lines = []
    for poly, label in zip(polygons, np.asarray(labels).reshape(-1), strict=True):
        cells = [str(int(label))]
        for j, v in enumerate(poly):
            size = width if j % 2 == 0 else height
            cells.append(_shortest(float(v) / size, size, v))
        lines.append(" ".join(cells))
    return "".join(line + "\n" for line in lines)


def write_yolo_obb_txt(
    path: str | os.PathLike, polygons: np.ndarray, labels: np.ndarray, width: int, height: int
) -> None:
    """Write one YOLO-OBB label file atomically (an image without objects gets an empty file)."""
    atomic_write_bytes(path, format_yolo_obb_text(polygons, labels, width, height).encode("utf-8"))


def label_path_for(image: str | os.PathLike) -> Path:
    """Ultralytics' label path of an image: the last ``/images/`` -> ``/labels/``, extension ``.txt``."""
    text = os.fspath(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    text = text.replace("/", os.sep)
    return Path(sb.join(text.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


# ------------------------------------------------------------------------------- dataset YAML
@dataclass
class YoloDataYaml:
    """A dataset YAML: the resolved root, the split entries (as written) and the class names."""

    file: Path
    root: Path
    splits: dict[str, list[str] | None]
    names: tuple[str, ...]

    def split_images(self, split: str) -> list[Path]:
        """The image files of ``split`` (``train`` / ``val`` / ``test``); error when it is missing."""
        entries = self.splits.get(split)
        if not entries:
            raise ValueError(f"{self.file}: no {split!r} entry")
        return list_split_images(entries, self.root)


def read_data_yaml(path: str | os.PathLike) -> YoloDataYaml:
    """Read an Ultralytics dataset YAML; ``names`` as a list or a ``{index: name}`` mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LabelFormatError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise LabelFormatError(f"{path}: not a YOLO dataset YAML (no 'names')")
    names = data["names"]
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise LabelFormatError(f"{path}: names keys must be 0..{len(keys) - 1}, got {keys}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise LabelFormatError(f"{path}: names must be a non-empty list or mapping")
    names = tuple(str(n) for n in names)
    if len(set(names)) != len(names):
        raise LabelFormatError(f"{path}: duplicate class names in {list(names)}")
    if "nc" in data and int(data["nc"]) != len(names):
        raise LabelFormatError(f"{path}: nc is {data['nc']} but there are {len(names)} names")
    root = Path(data.get("path") or ".")
    if not root.is_absolute():
        root = path.parent / root
    splits = {}
    for split in ("train", "val", "test"):
        value = data.get(split)
        splits[split] = (
            None if value in (None, "") else [str(v) for v in (value if isinstance(value, list) else [value])]
        )
    return YoloDataYaml(path, root, splits, names)


def write_data_yaml(
    path: str | os.PathLike,
    names: Sequence[str],
    root: str | os.PathLike | None = None,
    train: str | None = "images/train",
    val: str | None = "images/val",
    test: str | None = None,
) -> Path:
    """Write a dataset YAML. ``root`` (default: the YAML's folder) is written as an absolute
    ``path``, which Ultralytics and rotdet both read the same way."""
    path = Path(path)
    root = Path(root).resolve() if root is not None else path.parent.resolve()
    lines = ["# YOLO-OBB dataset (written by rotdet)", f"path: {root.as_posix()}"]
    for key, value in (("train", train), ("val", val), ("test", test)):
        if value is not None:
            lines.append(f"{key}: {value}")
    lines.append("names:")
    lines += [f"  {i}: {yaml.safe_dump(n, default_style=None).splitlines()[0]}" for i, n in enumerate(names)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def list_split_images(entries: Sequence[str | os.PathLike], root: str | os.PathLike = ".") -> list[Path]:
    """The images of split entries (folders searched recursively, or ``.txt`` lists of image paths),
    relative entries taken from ``root``; sorted by path, as Ultralytics does."""
    root = Path(root)
    found: list[Path] = []
    for entry in entries:
        p = Path(entry)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            found += [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in YOLO_IMAGE_EXTENSIONS]
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in decode_label_text(p.read_bytes(), p).splitlines():
                line = line.strip()
                if not line:
                    continue
                f = Path(line)
                f = f if f.is_absolute() else p.parent / (line[2:] if line.startswith("./") else line)
                found.append(f)
        else:
            raise FileNotFoundError(f"image folder or list {p} does not exist")
    return sorted(dict.fromkeys(found), key=lambda f: os.fspath(f))


# ------------------------------------------------------------------------------------ records
def read_yolo_obb_records(
    images: Sequence[str | os.PathLike],
    classes: Sequence[str],
    ann_dir: str | os.PathLike | None = None,
    strict: bool = False,
    log: ParseLog | None = None,
    check_bounds: bool = False,
) -> list[ImageRecord]:
    """One record per image (in the given order), its objects from ``ann_dir/<stem>.txt`` or, when
    ``ann_dir`` is None, from Ultralytics' label path (:func:`label_path_for`). The image size comes
    from the image header; an unreadable image is skipped (raised in ``strict``)."""
    log = log if log is not None else ParseLog()
    records = []
    for image in images:
        image = Path(image)
        label = Path(ann_dir) / f"{image.stem}.txt" if ann_dir is not None else label_path_for(image)
        size = image_size(image)
        if size is None:
            log.skip(SkippedLine(str(image), None, "unreadable or missing image", ""), strict)
            continue
        width, height = size
        if not label.is_file():
            log.note(NO_LABEL_FILE)
            records.append(ImageRecord.empty(image.stem, str(image), width, height))
            continue
        text = decode_label_text(label.read_bytes(), label)
        polys, labels = parse_yolo_obb_text(
            text, width, height, len(classes), str(label), strict, log, check_bounds
        )
        records.append(
            ImageRecord(image.stem, str(image), polys, labels, np.zeros(len(labels), np.int64), width, height)
        )
    return records
