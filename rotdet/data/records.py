"""The one record type every label reader returns, the report of what a read skipped or noticed,
and the step from records to the dataset's annotation dicts.

* :class:`ImageRecord`: one image and its objects (polygons in pixels, labels, difficulties, and
  the rotated boxes themselves where a format stores them, as HRSC2016 does);
* :class:`ParseLog`: the lines / XML elements skipped (each with ``file:line`` or
  ``file:element path``) and counts of what was kept but is suspicious (coordinates outside the
  image) or dropped later (degenerate polygons); :meth:`ParseLog.summary` is one line;
* :class:`LabelFormatError`: what ``strict=True`` raises instead of skipping;
* :func:`records_to_infos`: records -> ``{"id", "filename", "ann": {...}}`` in an angle version, the
  dicts :class:`rotdet.data.RotatedDataset` and the evaluation read.
"""

from __future__ import annotations

import codecs
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger("rotdet.data")

__all__ = [
    "ImageRecord",
    "LabelFormatError",
    "ParseLog",
    "SkippedLine",
    "decode_label_text",
    "decode_utf16",
    "image_size",
    "implausible_objects",
    "records_to_infos",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# Observation kinds counted by ParseLog.note (kept objects, or objects dropped after reading).
OUT_OF_IMAGE = "object(s) with coordinates outside the image (kept)"
DEGENERATE = "degenerate polygon(s) dropped (an edge under 2 px)"
UNKNOWN_CLASS = "object(s) of an unknown class skipped"


class LabelFormatError(ValueError):
    """A malformed label file, line or element, raised in ``strict`` mode; the message says where
    (``file:line`` or ``file:element path``)."""


# UTF-32 first: its little-endian BOM begins with UTF-16's.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_utf16(raw: bytes, path: str | os.PathLike = "<bytes>") -> str | None:
    """The text of a label file saved as UTF-16 or UTF-32 (Windows editors' "Unicode"): with a BOM,
    or without one when every other byte is NUL (ASCII text in UTF-16); None for other bytes.
    Such bytes that do not decode raise :class:`LabelFormatError` naming ``path``."""
    codec = next((c for bom, c in _WIDE_BOMS if raw.startswith(bom)), None)
    if codec is None and len(raw) >= 2 and len(raw) % 2 == 0 and b"\x00" in raw:
        if not raw[1::2].strip(b"\x00"):
            codec = "utf-16-le"
        elif not raw[0::2].strip(b"\x00"):
            codec = "utf-16-be"
    if codec is None:
        return None
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise LabelFormatError(
            f"{path}: {codec.upper()} text (by its byte order mark or NUL bytes) that does not decode: "
            f"{exc.reason} at byte {exc.start}; save it as UTF-8"
        ) from None


def decode_label_text(raw: bytes, path: str | os.PathLike = "<bytes>") -> str:
    """A label file's text: UTF-16 / UTF-32 (:func:`decode_utf16`), else UTF-8 with or without a
    BOM, else Latin-1 (with a warning naming ``path``)."""
    text = decode_utf16(raw, path)
    if text is not None:
        return text
    try:
        return raw.decode("utf-8-sig")  # strips a BOM when there is one
    except UnicodeDecodeError:
        logger.warning("%s: not UTF-8, decoded as latin-1", path)
        return raw.decode("latin-1")


@dataclass
class SkippedLine:
    """One skipped line (``lineno``) or XML element (``element``, e.g. ``/annotation/object[2]``)."""

    path: str
    lineno: int | None
    reason: str
    text: str
    element: str | None = None

    @property
    def where(self) -> str:
        if self.element is not None:
            return f"{self.path}:{self.element}"
        return f"{self.path}:{self.lineno}" if self.lineno is not None else self.path

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}: {self.text!r}" if self.text else f"{self.where}: {self.reason}"


@dataclass
class ParseLog:
    """Collects what was skipped while reading one or many label files, and counts of noticed
    problems (:data:`OUT_OF_IMAGE`, :data:`DEGENERATE`, :data:`UNKNOWN_CLASS`, ...)."""

    skipped: list[SkippedLine] = field(default_factory=list)
    files: int = 0
    counts: Counter = field(default_factory=Counter)

    def skip(self, item: SkippedLine, strict: bool = False) -> None:
        """Record ``item`` (a warning), or raise :class:`LabelFormatError` when ``strict``."""
        if strict:
            raise LabelFormatError(str(item))
        logger.warning("skipped %s", item)
        self.skipped.append(item)

    def note(self, kind: str, n: int = 1) -> None:
        if n:
            self.counts[kind] += int(n)

    def summary(self) -> str:
        parts = [f"read {self.files} label file(s)"]
        if self.skipped:
            reasons = Counter(s.reason.split(" (")[0] for s in self.skipped)
            n_files = len({s.path for s in self.skipped})
            detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
            parts.append(f"skipped {len(self.skipped)} line(s) in {n_files} file(s): {detail}")
        else:
            parts.append("no line skipped")
        parts += [f"{n} {kind}" for kind, n in sorted(self.counts.items()) if n]
        return ", ".join(parts)

    @property
    def problems(self) -> bool:
        """Whether anything was skipped (the counts alone describe data that is usable as it is:
        DOTA objects cross patch borders, mmrotate drops degenerate polygons too)."""
        return bool(self.skipped)


@dataclass
class ImageRecord:
    """One image and its objects, whatever the file format.

    Attributes:
        id: image id (the image / label file stem).
        filename: image path.
        width, height: image size in pixels when the labels give it (XML) or it was read (YOLO).
        polygons: float32 ``[N, 8]`` corners in pixels, in the file's vertex order.
        labels: int64 ``[N]`` indices into the class list the reader was given.
        difficulties: int64 ``[N]`` (0 where the format has none).
        obbs, obb_version: the rotated boxes ``[N, 5]`` as the file stores them (HRSC2016's
            ``mbox``, le90) or None; :func:`records_to_infos` uses them as they are for that
            version (mmrotate's HRSCDataset does) and converts the polygons for any other.
        meta: format extras (DOTA ``imagesource`` / ``gsd``, HRSC ``headers`` ``[N, 2]``).
    """

    id: str
    filename: str
    polygons: np.ndarray
    labels: np.ndarray
    difficulties: np.ndarray
    width: int | None = None
    height: int | None = None
    obbs: np.ndarray | None = None
    obb_version: str | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @staticmethod
    def empty(img_id: str, filename: str, width: int | None = None, height: int | None = None) -> ImageRecord:
        return ImageRecord(
            img_id,
            filename,
            np.zeros((0, 8), np.float32),
            np.zeros((0,), np.int64),
            np.zeros((0,), np.int64),
            width,
            height,
        )

    def select(self, index: np.ndarray | Sequence[int]) -> ImageRecord:
        """The objects at integer ``index`` (per-object arrays in ``meta`` are not subset)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return ImageRecord(
            self.id,
            self.filename,
            self.polygons[index],
            self.labels[index],
            self.difficulties[index],
            self.width,
            self.height,
            None if self.obbs is None else self.obbs[index],
            self.obb_version,
            dict(self.meta),
        )

    def outside_image(self, tolerance: float = 0.0) -> np.ndarray:
        """bool ``[N]``: a corner outside ``[0, width] x [0, height]`` (all False, size unknown)."""
        if self.width is None or self.height is None or not len(self):
            return np.zeros(len(self), bool)
        xs, ys = self.polygons[:, 0::2], self.polygons[:, 1::2]
        lo, hx, hy = -tolerance, self.width + tolerance, self.height + tolerance
        return ((xs < lo) | (xs > hx) | (ys < lo) | (ys > hy)).any(axis=1)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def implausible_objects(
    polygons: np.ndarray, width: int | None = None, height: int | None = None
) -> list[tuple[int, str]]:
    """``(index, reason)`` of the polygons ``[N, 8]`` (pixels) that cannot be a training target:
    a coordinate that is not finite in float32 (``1e39`` is ``inf`` there); and, when the image size
    is known, a polygon wholly outside the image, or one with a corner farther outside than the
    image's own width / height (``1e30``). Polygons that cross the border stay, as in DOTA and
    mmrotate: a split patch keeps objects of which at least 70 % lies inside, so a real object never
    reaches that far out."""
    polys = np.asarray(polygons, np.float64).reshape(-1, 8)
    out: list[tuple[int, str]] = []
    finite = (np.abs(polys) <= FLOAT32_MAX).all(axis=1)  # False for NaN too
    out += [
        (int(i), "non-finite coordinate in float32 (NaN, inf or beyond 3.4e38)")
        for i in np.flatnonzero(~finite)
    ]
    if width is None or height is None or not len(polys):
        return out
    xs, ys = polys[:, 0::2], polys[:, 1::2]
    with np.errstate(invalid="ignore"):
        wholly = (xs.max(1) < 0) | (xs.min(1) > width) | (ys.max(1) < 0) | (ys.min(1) > height)
        far = ((xs < -width) | (xs > 2 * width) | (ys < -height) | (ys > 2 * height)).any(axis=1)
    size = f"{width}x{height}"
    for i in np.flatnonzero(finite & (wholly | far)):
        what = "polygon wholly outside" if wholly[i] else "corner farther than the image size outside"
        out.append((int(i), f"{what} the image ({size})"))
    return sorted(out)


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` from the image file's header (no decoding), or None when unreadable.

    Pillow's decompression-bomb guard is off while the header is read: DOTA's largest scenes
    (20,000 px square) are above its limit."""
    from PIL import Image, UnidentifiedImageError

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as img:
            return int(img.size[0]), int(img.size[1])
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def records_to_infos(
    records: Sequence[ImageRecord],
    version: str,
    difficulty: int = 100,
    log: ParseLog | None = None,
) -> list[dict]:
    """The dataset's annotation dicts, as mmrotate 0.3.4's datasets build them::

        {"id", "filename", "width", "height", "ann": {"bboxes": float32 [N, 5] obbs in ``version``,
         "labels": int64 [N], "polygons": float32 [N, 8], "difficulties": int64 [N]}}

    Objects with a difficulty above ``difficulty`` are dropped, then objects whose polygon gives no
    box (``poly2obb_np``'s drop: an edge under 2 px) are dropped and counted in ``log``. A record
    with ``obbs`` in ``version`` keeps them as its boxes (HRSC2016 in le90, as mmrotate).
    """
    from rotdet.structures import check_version, poly2obb_np

    check_version(version)
    infos = []
    for rec in records:
        rec = rec.select(np.flatnonzero(rec.difficulties <= difficulty))
        if rec.obbs is not None and rec.obb_version == version:
            obbs = np.asarray(rec.obbs, np.float32).reshape(-1, 5)
        elif len(rec):
            obbs, keep = poly2obb_np(rec.polygons, version)
            if log is not None:
                log.note(DEGENERATE, int((~keep).sum()))
            rec = rec.select(np.flatnonzero(keep))
            obbs = np.asarray(obbs, np.float32).reshape(-1, 5)
        else:
            obbs = np.zeros((0, 5), np.float32)
        infos.append(
            {
                "id": rec.id,
                "filename": rec.filename,
                "width": rec.width,
                "height": rec.height,
                "ann": {
                    "bboxes": obbs,
                    "labels": rec.labels.astype(np.int64),
                    "polygons": rec.polygons.astype(np.float32),
                    "difficulties": rec.difficulties.astype(np.int64),
                },
            }
        )
    return infos


def find_image(img_dir: str | os.PathLike, stem: str, prefer: Sequence[str] = (".png",)) -> Path | None:
    """The image ``stem.<ext>`` in ``img_dir`` (the ``prefer`` extensions first), or None."""
    img_dir = Path(img_dir)
    exts = list(dict.fromkeys([*prefer, *IMAGE_EXTENSIONS]))
    for ext in exts + [e.upper() for e in exts]:
        p = img_dir / (stem + ext)
        if p.is_file():
            return p
    # Any other spelling of the extension (``.Png``), as split and predict list images.
    names = _names_by_lower(img_dir)
    for ext in exts:
        name = names.get((stem + ext).lower())
        if name is not None and (img_dir / name).is_file():
            return img_dir / name
    return None


_DIR_INDEX: dict[tuple[str, int], dict[str, str]] = {}


def _names_by_lower(folder: Path) -> dict[str, str]:
    """``{lower-case name: name}`` of the files in ``folder``, listed once per folder state (its
    mtime), so that looking up thousands of stems does not list it thousands of times."""
    try:
        key = (str(folder), folder.stat().st_mtime_ns)
        if key not in _DIR_INDEX:
            index: dict[str, str] = {}
            for name in sorted(os.listdir(folder)):
                index.setdefault(name.lower(), name)
            if len(_DIR_INDEX) >= 8:
                _DIR_INDEX.clear()
            _DIR_INDEX[key] = index
        return _DIR_INDEX[key]
    except OSError:
        return {}
