"""Reading evaluation inputs: DOTA Task1 result files, rotdet's JSON detections (schema in
:mod:`rotdet.structures.detections`), labelTxt folders (float64 polygons, as DOTA_devkit reads
them), with errors that name ``file:line``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rotdet.evaluation import _fastparse
from rotdet.evaluation.results import EvalInputError
from rotdet.structures import detections
from rotdet.structures.detections import RotatedDetections

__all__ = [
    "ClassDetections",
    "GroundTruthImage",
    "check_one_model",
    "read_detections_classes",
    "read_detections_json",
    "read_labeltxt_folder",
    "read_task1_folder",
    "task1_from_detections",
]


@dataclass
class ClassDetections:
    """The detections of one class, in Task1 file order: image ids, float64 scores and ``[K, 8]``
    float64 polygons."""

    image_ids: list[str]
    scores: np.ndarray
    polygons: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)

    @staticmethod
    def empty() -> ClassDetections:
        return ClassDetections([], np.zeros(0), np.zeros((0, 8)))


@dataclass
class GroundTruthImage:
    """One labelTxt file as DOTA_devkit's ``parse_gt`` sees it: float64 polygons, names, difficulty."""

    polygons: np.ndarray
    names: list[str]
    difficult: np.ndarray  # int; the devkit treats any non-zero value as difficult


def read_detections_json(path: str | os.PathLike) -> list[RotatedDetections]:
    """:func:`rotdet.structures.detections.read_detections_json` (float64), its schema errors as
    :class:`EvalInputError`."""
    try:
        return detections.read_detections_json(path)
    except detections.DetectionsFormatError as e:
        raise EvalInputError(str(e)) from None


def read_detections_classes(path: str | os.PathLike) -> tuple[str, ...]:
    """The class list a detections document names (also when it holds no image). Only this key is
    checked here: the detections themselves are read (and checked) by :func:`read_detections_json`."""
    import json

    try:
        classes = json.loads(Path(path).read_text(encoding="utf-8")).get("classes")
    except (OSError, ValueError, AttributeError) as e:
        raise EvalInputError(f"{path}: not a rotdet detections file: {e}") from None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise EvalInputError(f'{path}: "classes" must be a non-empty list of names')
    return tuple(classes)


def check_one_model(dets: Sequence[RotatedDetections]) -> tuple[tuple[str, ...], str]:
    """:func:`rotdet.structures.detections.one_model`, its error as :class:`EvalInputError`."""
    try:
        return detections.one_model(dets)
    except ValueError as e:
        raise EvalInputError(str(e)) from None


# ---------------------------------------------------------------------------------------- Task1
def _round_like_text(values: np.ndarray) -> np.ndarray:
    """``float(f"{v:.2f}")`` elementwise, exactly, without formatting every number: ``rint(100 v) / 100``
    is the same double except where ``100 v`` lies within rounding error of a half, and those few are
    formatted as text."""
    v = np.asarray(values, np.float64)
    scaled = v * 100.0
    out = np.rint(scaled) / 100.0
    frac = np.abs(scaled - np.floor(scaled) - 0.5)
    for i in np.flatnonzero(frac < 1e-6).tolist():
        out.flat[i] = float(f"{v.flat[i]:.2f}")
    return out


def task1_from_detections(
    dets: Sequence[RotatedDetections], as_written: bool = True
) -> dict[str, ClassDetections]:
    """Per class, the Task1 records :func:`rotdet.data.write_task1_submission` would write for these
    detections (images in order, each image's detections in order), as the devkit reads them back.

    ``dets``: one entry per image, all of one model (same classes and angle version). Polygons are
    the given ``polygons`` when present, else the boxes' corners started at the DOTA
    begin point (:func:`rotdet.structures.best_begin_point`, le135 rounded through float32 as
    mmrotate does). ``as_written`` rounds coordinates to 2 decimals, as the files hold them.
    """
    import torch

    from rotdet.structures import best_begin_point, obb2poly

    classes, version = check_one_model(dets)
    counts = np.array([len(d) for d in dets], np.int64)
    img_of = np.repeat(np.arange(len(dets)), counts)
    labels = _cat_or([np.asarray(d.labels, np.int64) for d in dets], (0,), np.int64)
    scores = _cat_or([np.asarray(d.scores, np.float64) for d in dets], (0,), np.float64)
    polys = np.zeros((len(labels), 8))
    given = np.repeat([d.has_given_polygons for d in dets], counts)
    if given.any():
        polys[given] = np.concatenate(
            [np.asarray(d.polygons, np.float64) for d in dets if d.has_given_polygons]
        )
    if not given.all():
        boxes = np.concatenate([np.asarray(d.boxes, np.float64) for d in dets if not d.has_given_polygons])
        made = best_begin_point(obb2poly(torch.from_numpy(boxes))).numpy()
        if version == "le135":
            made = made.astype(np.float32).astype(np.float64)
        polys[~given] = made
    if as_written:
        polys = _round_like_text(polys)
    # Per class: images in order, each image's detections in order (a stable sort by label).
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(classes) + 1))
    ids = [d.image_id for d in dets]
    out = {}
    for c, name in enumerate(classes):
        sel = order[bounds[c] : bounds[c + 1]]
        out[name] = ClassDetections([ids[i] for i in img_of[sel].tolist()], scores[sel], polys[sel])
    return out


def _cat_or(parts: list[np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(shape, dtype)


def read_task1_file(path: str | os.PathLike) -> ClassDetections:
    """One ``Task1_<class>.txt``: lines ``imagename score x1 y1 x2 y2 x3 y3 x4 y4`` (blank lines
    skipped; anything else malformed is an error naming ``file:line``).

    Read by the vectorised :mod:`rotdet.evaluation._fastparse`; text it declines (malformed,
    non-ASCII) by :func:`_read_task1_lines`, which defines the result and names the bad line."""
    path = Path(path)
    raw = path.read_bytes()
    fast = _fastparse.read_task1(raw)
    if fast is not None:
        return ClassDetections(*fast)
    return _read_task1_lines(path, raw)


def _read_task1_lines(path: Path, raw: bytes) -> ClassDetections:
    """:func:`read_task1_file` line by line."""
    ids: list[str] = []
    rows: list[list[float]] = []
    text = _fastparse.decode_text(raw, path)
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 10:
            raise EvalInputError(
                f"{path}:{lineno}: expected 10 fields 'imagename score x1 y1 ... x4 y4', "
                f"got {len(tokens)}: {line!r}"
            )
        try:
            values = [float(t) for t in tokens[1:]]
        except ValueError:
            raise EvalInputError(f"{path}:{lineno}: non-numeric score or coordinate: {line!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise EvalInputError(f"{path}:{lineno}: non-finite score or coordinate: {line!r}")
        ids.append(tokens[0])
        rows.append(values)
    arr = np.array(rows, np.float64).reshape(-1, 9)
    return ClassDetections(ids, arr[:, 0].copy(), arr[:, 1:].copy())


def read_task1_folder(folder: str | os.PathLike, classes: Sequence[str]) -> dict[str, ClassDetections]:
    """``Task1_<class>.txt`` of every class in ``folder``. A missing file counts as no detections
    (with a warning); a folder with none of them is an error."""
    import logging

    folder = Path(folder)
    if not folder.is_dir():
        raise EvalInputError(f"{folder}: no such folder")
    out, missing = {}, []
    for name in classes:
        path = folder / f"Task1_{name}.txt"
        if path.is_file():
            out[name] = read_task1_file(path)
        else:
            missing.append(name)
            out[name] = ClassDetections.empty()
    if len(missing) == len(classes):
        present = sorted(p.name for p in folder.glob("Task1_*.txt"))[:5]
        hint = f" (it has {', '.join(present)}: another class list?)" if present else ""
        raise EvalInputError(
            f"{folder}: no Task1_<class>.txt file for any of the {len(classes)} classes{hint}"
        )
    if missing:
        logging.getLogger("rotdet.evaluation").warning(
            "%s: no Task1 file for %d class(es) (%s): counted as no detections",
            folder,
            len(missing),
            ", ".join(missing),
        )
    return out


# -------------------------------------------------------------------------------- ground truth
def parse_labeltxt(path: str | os.PathLike) -> GroundTruthImage:
    """One labelTxt file with DOTA_devkit's ``parse_gt`` semantics: objects are lines of 9 or 10
    fields (``x1 y1 ... x4 y4 class [difficult]``, difficulty 0 when absent), coordinates as
    float64. Blank lines and ``imagesource:`` / ``gsd:`` headers are skipped; other lines are errors
    (``file:line``) where the devkit would crash or silently drop them."""
    path = Path(path)
    return _parse_labeltxt_lines(path, path.read_bytes())


def _parse_labeltxt_lines(path: Path, raw: bytes) -> GroundTruthImage:
    """:func:`parse_labeltxt` line by line (what the vectorised reader must equal)."""
    polys, names, diffs = [], [], []
    text = _fastparse.decode_text(raw, path)
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 9 and _fastparse.is_header(tokens[0]):
            continue
        if len(tokens) not in (9, 10):
            raise EvalInputError(f"{path}:{lineno}: expected 'x1 y1 ... x4 y4 class difficult', got {line!r}")
        try:
            coords = [float(t) for t in tokens[:8]]
            diff = int(tokens[9]) if len(tokens) == 10 else 0
        except ValueError:
            raise EvalInputError(f"{path}:{lineno}: non-numeric coordinate or difficulty: {line!r}") from None
        if not all(math.isfinite(v) for v in coords):
            raise EvalInputError(f"{path}:{lineno}: non-finite coordinate: {line!r}")
        polys.append(coords)
        names.append(tokens[8])
        diffs.append(diff)
    return GroundTruthImage(np.array(polys, np.float64).reshape(-1, 8), names, np.array(diffs, np.int64))


def list_label_files(label_dir: str | os.PathLike) -> list[Path]:
    """The ``*.txt`` files of a labelTxt folder, sorted; errors for a missing or empty folder."""
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise EvalInputError(f"{label_dir}: no such ground-truth folder")
    files = sorted(p for p in label_dir.glob("*.txt") if p.is_file())
    if not files:
        raise EvalInputError(f"{label_dir}: no .txt label file in the ground-truth folder")
    return files


# Bytes of label files read by one vectorised call.
_LABEL_BYTES_PER_BATCH = 1 << 25


def read_labeltxt_folder(label_dir: str | os.PathLike) -> dict[str, GroundTruthImage]:
    """``{image id: GroundTruthImage}`` for every ``*.txt`` of ``label_dir`` (sorted by name), as
    :func:`parse_labeltxt` reads each: files are read together by the vectorised
    :mod:`rotdet.evaluation._fastparse`, and a batch it declines file by file, the files it declines
    line by line (which also raises the error naming the first bad ``file:line``)."""
    files = list_label_files(label_dir)
    out: dict[str, GroundTruthImage] = {}
    batch: list[tuple[Path, bytes]] = []
    size = 0

    def flush() -> None:
        parsed = _fastparse.read_labeltxt_many([raw for _, raw in batch])
        for k, (path, raw) in enumerate(batch):
            if parsed is not None:
                one = parsed[k]
            else:
                alone = _fastparse.read_labeltxt_many([raw]) if len(batch) > 1 else None
                one = alone[0] if alone is not None else None
            out[path.stem] = GroundTruthImage(*one) if one is not None else _parse_labeltxt_lines(path, raw)
        batch.clear()

    for path in files:
        raw = path.read_bytes()
        batch.append((path, raw))
        size += len(raw)
        if size >= _LABEL_BYTES_PER_BATCH:
            flush()
            size = 0
    if batch:
        flush()
    return out
