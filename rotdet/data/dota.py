"""DOTA annotation files: class lists, a forgiving parser, a lossless writer, dataset indexing.

A DOTA ``labelTxt`` file holds optional header lines ``imagesource:<text>`` and ``gsd:<float>``,
then one object per line: ``x1 y1 x2 y2 x3 y3 x4 y4 class difficulty``. Real files mix LF and CRLF,
sometimes start with a UTF-8 BOM or are UTF-16 (a Windows editor's "Unicode"), quote the header keys,
end with blank lines or are empty (an image without objects).

Bad input never stops a load halfway: a malformed line is skipped with a warning naming
``file:line`` and the reason, and a :class:`ParseLog` counts what was skipped; ``strict=True``
turns the first problem into a :class:`DotaFormatError` instead.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rotdet.data.classes import (
    DOTA_CLASSES,
    DOTA_V1_CLASSES,
    DOTA_V2_CLASSES,
    DOTA_V15_CLASSES,
    get_classes,
)
from rotdet.data.records import (
    FLOAT32_MAX,
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
    records_to_infos,
)
from rotdet.data.records import find_image as find_image_as
from rotdet.fileio import atomic_write_bytes
from rotdet.structures.detections import format_coord

logger = logging.getLogger("rotdet.data")

__all__ = [
    "DOTA_CLASSES",
    "DOTA_V1_CLASSES",
    "DOTA_V15_CLASSES",
    "DOTA_V2_CLASSES",
    "DotaAnnotation",
    "DotaFormatError",
    "ParseLog",
    "SkippedLine",
    "get_classes",
    "load_dota_infos",
    "parse_dota_text",
    "read_dota_records",
    "read_dota_txt",
    "write_dota_txt",
]


class DotaFormatError(LabelFormatError):
    """A malformed DOTA label line, raised in ``strict`` mode; the message names ``file:line``."""


@dataclass
class DotaAnnotation:
    """The objects of one label file.

    polygons: float32 [N, 8] (DOTA vertex order, as read); names: N class names;
    difficulties: int64 [N]; imagesource / gsd: the header values, None when absent;
    linenos: int64 [N] the line of each object in its file (None when not read from text).
    """

    polygons: np.ndarray
    names: list[str]
    difficulties: np.ndarray
    imagesource: str | None = None
    gsd: float | None = None
    linenos: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    @staticmethod
    def empty() -> DotaAnnotation:
        return DotaAnnotation(np.zeros((0, 8), np.float32), [], np.zeros((0,), np.int64))

    def select(self, index: np.ndarray | Sequence[int]) -> DotaAnnotation:
        """The subset at integer ``index`` (headers kept)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return DotaAnnotation(
            self.polygons[index],
            [self.names[i] for i in index],
            self.difficulties[index],
            self.imagesource,
            self.gsd,
            None if self.linenos is None else self.linenos[index],
        )

    def labels(self, classes: Sequence[str]) -> np.ndarray:
        """int64 [N] label ids of the names in ``classes`` (KeyError for an unknown name)."""
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[n] for n in self.names], dtype=np.int64)


def _parse_header(line: str) -> tuple[str, str] | None:
    """``(key, value)`` of an ``imagesource:`` / ``gsd:`` header line (DOTA v1.5 / 2.0 files quote
    the keys in places: ``'gsd':0.13``), or None. Like DOTA_devkit, which skips every line of fewer
    than 9 fields, a header may hold spaces (``imagesource: Google Earth``)."""
    head, sep, value = line.partition(":")
    key = head.strip().strip("'\"").strip().lower()
    if sep and key in ("imagesource", "gsd") and len(line.split()) < 9:
        return key, value.strip().strip("'\"").strip()
    return None


def _gsd(value: str) -> float | None:
    """A ``gsd:`` header's value; None where it is no finite number (DOTA has ``gsd:null`` in places:
    the header is optional information)."""
    try:
        gsd = float(value)
    except ValueError:
        return None
    return gsd if math.isfinite(gsd) else None


def parse_dota_text(
    text: str,
    path: str = "<text>",
    classes: Sequence[str] | None = None,
    strict: bool = False,
    log: ParseLog | None = None,
) -> DotaAnnotation:
    """Parse the content of one DOTA label file; see :func:`read_dota_txt`."""
    polys: list[list[float]] = []
    names: list[str] = []
    diffs: list[int] = []
    linenos: list[int] = []
    imagesource: str | None = None
    gsd: float | None = None
    known = set(classes) if classes is not None else None
    text = text.removeprefix("\ufeff")  # a BOM left by an editor, when the caller decoded as plain UTF-8

    def skip(lineno: int, reason: str, line: str) -> None:
        item = SkippedLine(path, lineno, reason, line)
        if strict:
            raise DotaFormatError(str(item))
        logger.warning("skipped %s", item)
        if log is not None:
            log.skipped.append(item)
            log.note(UNKNOWN_CLASS, int(reason.startswith("unknown class")))

    # str.splitlines knows CRLF, CR and LF, so mixed line ends need no special case.
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line:
            continue
        header = _parse_header(line)
        if header is not None:
            key, value = header
            if key == "imagesource":
                imagesource = value
            else:
                gsd = _gsd(value)
            continue
        tokens = line.split()
        # DOTA_devkit reads 9 tokens as difficulty 0; more than 10 is not a DOTA line.
        if len(tokens) not in (9, 10):
            skip(lineno, f"wrong token count ({len(tokens)}, expected 10)", raw_line)
            continue
        try:
            coords = [float(t) for t in tokens[:8]]
        except ValueError:
            skip(lineno, "non-numeric coordinate", raw_line)
            continue
        # Beyond float32's range is inf once stored as float32, as mmrotate stores it (NaN fails too).
        if not all(abs(c) <= FLOAT32_MAX for c in coords):
            skip(lineno, "non-finite coordinate (NaN, inf, or beyond float32's 3.4e38)", raw_line)
            continue
        name = tokens[8]
        if known is not None and name not in known:
            skip(lineno, f"unknown class name ({name})", raw_line)
            continue
        difficulty = 0
        if len(tokens) == 10:
            try:
                difficulty = int(tokens[9])
            except ValueError:
                skip(lineno, f"non-integer difficulty ({tokens[9]})", raw_line)
                continue
        polys.append(coords)
        names.append(name)
        diffs.append(difficulty)
        linenos.append(lineno)

    if log is not None:
        log.files += 1
    return DotaAnnotation(
        np.array(polys, dtype=np.float32).reshape(-1, 8),
        names,
        np.array(diffs, dtype=np.int64),
        imagesource,
        gsd,
        np.array(linenos, dtype=np.int64),
    )


def read_dota_txt(
    path: str | os.PathLike,
    classes: Sequence[str] | None = None,
    strict: bool = False,
    log: ParseLog | None = None,
) -> DotaAnnotation:
    """Read one DOTA ``labelTxt`` file.

    classes: when given, objects of other class names are skipped (a warning each);
    strict: raise :class:`DotaFormatError` on the first malformed line instead of skipping it;
    log: collects skipped lines across calls (see :meth:`ParseLog.summary`).
    Polygons are float32 as mmrotate reads them; a missing file raises FileNotFoundError.
    """
    path = str(path)
    with open(path, "rb") as f:
        text = decode_label_text(f.read(), path)
    return parse_dota_text(text, path, classes=classes, strict=strict, log=log)


def format_dota_text(ann: DotaAnnotation, header: bool = True) -> str:
    """DOTA label text for ``ann``: headers (when present and ``header``), then one line per object."""
    lines = []
    if header and ann.imagesource is not None:
        lines.append(f"imagesource:{ann.imagesource}")
    if header and ann.gsd is not None:
        lines.append(f"gsd:{ann.gsd!r}")
    for poly, name, diff in zip(ann.polygons, ann.names, ann.difficulties, strict=True):
        lines.append(" ".join([*(format_coord(v) for v in poly), name, str(int(diff))]))
    return "".join(line + "\n" for line in lines)


def write_dota_txt(path: str | os.PathLike, ann: DotaAnnotation, header: bool = True) -> None:
    """Write ``ann`` as a DOTA label file (LF line ends, UTF-8, no BOM), atomically: the text goes to
    a temporary file that is then renamed, so a reader never sees half a file.

    ``read_dota_txt(write_dota_txt(ann))`` gives back the same float32 polygons, names,
    difficulties and headers.
    """
    atomic_write_bytes(path, format_dota_text(ann, header=header).encode("utf-8"))


def find_image(img_dir: str | os.PathLike, stem: str) -> Path | None:
    """The image file ``stem.<ext>`` in ``img_dir`` (``.png`` first, as mmrotate assumes), or None."""
    return find_image_as(img_dir, stem, (".png",))


def list_images(img_dir: str | os.PathLike) -> list[Path]:
    """Image files of ``img_dir`` (by extension, case-insensitive), sorted by name."""
    return sorted(p for p in Path(img_dir).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _drop_implausible(
    rec: ImageRecord, ann: DotaAnnotation, path: str, strict: bool, log: ParseLog
) -> ImageRecord:
    """``rec`` without the objects :func:`implausible_objects` names, each skipped as its line."""
    bad = implausible_objects(rec.polygons, rec.width, rec.height)
    for i, reason in bad:
        line = " ".join([*(format_coord(v) for v in ann.polygons[i]), ann.names[i], str(ann.difficulties[i])])
        lineno = int(ann.linenos[i]) if ann.linenos is not None else None
        log.skip(SkippedLine(path, lineno, reason, line), strict)
    if not bad:
        return rec
    return rec.select(np.setdiff1d(np.arange(len(rec)), [i for i, _ in bad]))


def read_dota_records(
    ann_dir: str | os.PathLike | None,
    img_dir: str | os.PathLike,
    classes: Sequence[str],
    strict: bool = False,
    log: ParseLog | None = None,
    skip_empty_files: bool = False,
    check_bounds: bool = False,
) -> list[ImageRecord]:
    """One :class:`ImageRecord` per label file of ``ann_dir`` (sorted by name), as mmrotate 0.3.4's
    ``DOTADataset.load_annotations`` lists them; when ``ann_dir`` is None or holds no ``.txt``, one
    empty record per image of ``img_dir`` (the test phase).

    ``skip_empty_files`` drops label files of size 0 before parsing (mmrotate does whenever
    ``filter_empty_gt`` is on, also in test mode). ``check_bounds`` reads each image's size from
    its header: objects wholly outside the image, or with a corner farther outside than its size
    (:func:`rotdet.data.records.implausible_objects`), are skipped with a warning naming
    ``file:line`` (raised when ``strict``); those that cross its border are kept and counted.
    """
    log = log if log is not None else ParseLog()
    ann_files = sorted(Path(ann_dir).glob("*.txt")) if ann_dir is not None else []
    if not ann_files:
        return [ImageRecord.empty(img.stem, str(img)) for img in list_images(img_dir)]
    records = []
    for ann_file in ann_files:
        if skip_empty_files and ann_file.stat().st_size == 0:
            continue
        stem = ann_file.stem
        img = find_image(img_dir, stem)
        ann = read_dota_txt(ann_file, classes=classes, strict=strict, log=log)
        rec = ImageRecord(
            stem,
            str(img) if img is not None else str(Path(img_dir) / (stem + ".png")),
            ann.polygons,
            ann.labels(classes),
            ann.difficulties,
            meta={"imagesource": ann.imagesource, "gsd": ann.gsd},
        )
        if check_bounds and img is not None and (size := image_size(img)) is not None:
            rec.width, rec.height = size
            rec = _drop_implausible(rec, ann, str(ann_file), strict, log)
            log.note(OUT_OF_IMAGE, int(rec.outside_image().sum()))
        records.append(rec)
    return records


def load_dota_infos(
    ann_dir: str | os.PathLike | None,
    img_dir: str | os.PathLike,
    classes: Sequence[str],
    version: str = "oc",
    difficulty: int = 100,
    strict: bool = False,
    log: ParseLog | None = None,
    skip_empty_files: bool = False,
    check_bounds: bool = False,
) -> list[dict]:
    """Index a DOTA split as mmrotate 0.3.4's ``DOTADataset.load_annotations`` does.

    For each label file (sorted by name; when ``ann_dir`` is None or holds no ``.txt``, the images
    of ``img_dir`` without annotations: the test phase) one dict::

        {"id": "P0001__1024__0___0", "filename": <image path>, "ann": {
            "bboxes": float32 [N, 5] obbs in ``version``, "labels": int64 [N],
            "polygons": float32 [N, 8] the original polygons, "difficulties": int64 [N]}}

    Objects whose polygon gives a degenerate box (poly2obb_np's drop, e.g. an edge under 2 px) and
    objects with difficulty > ``difficulty`` are dropped, as mmrotate does. ``skip_empty_files``
    drops label files of size 0 before parsing, as mmrotate does whenever ``filter_empty_gt`` is on
    (also in test mode: its validation set has no empty patches). ``check_bounds``: see
    :func:`read_dota_records` (objects wholly or absurdly far outside their image are skipped).
    """
    from rotdet.structures import check_version

    check_version(version)
    own_log = log if log is not None else ParseLog()
    records = read_dota_records(ann_dir, img_dir, classes, strict, own_log, skip_empty_files, check_bounds)
    infos = records_to_infos(records, version, difficulty, own_log)
    if log is None and own_log.skipped:
        logger.warning(own_log.summary())
    return infos
