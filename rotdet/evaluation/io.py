"""Reading evaluation inputs: DOTA Task1 result files, rotdet's JSON detections, labelTxt folders
(float64 polygons, as DOTA_devkit reads them), with errors that name ``file:line``.

rotdet JSON detections (written by :func:`write_detections_json`, read by
:func:`read_detections_json`)::

    {
      "format": "rotdet-detections", "format_version": 1,
      "angle_version": "le90",               # convention of the boxes' theta
      "classes": ["plane", ...],             # label i is classes[i]
      "images": [
        {"id": "P0003",                      # image name without extension (labelTxt stem)
         "boxes": [[cx, cy, w, h, theta], ...],   # pixels, radians
         "scores": [0.93, ...],
         "labels": [0, ...],
         "polygons": [[x1, y1, ..., x4, y4], ...]}   # optional; default: the boxes' corners
      ]
    }
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rotdet.evaluation import _fastparse
from rotdet.evaluation.results import EvalInputError
from rotdet.fileio import atomic_write_text

__all__ = [
    "ClassDetections",
    "DetectionSet",
    "GroundTruthImage",
    "read_detections_json",
    "read_labeltxt_folder",
    "read_task1_folder",
    "task1_from_detection_set",
    "write_detections_json",
]

JSON_FORMAT = "rotdet-detections"
JSON_FORMAT_VERSION = 1


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


@dataclass
class DetectionSet:
    """Detections of many images as the engine produces them: per image id, ``boxes`` ``[K, 5]``
    (obb in ``angle_version``), ``scores`` ``[K]``, ``labels`` ``[K]`` and optionally ``polygons``
    ``[K, 8]``; ``classes`` names the labels."""

    classes: tuple[str, ...]
    angle_version: str
    images: dict[str, dict[str, np.ndarray]]

    @staticmethod
    def from_merged(
        merged: Mapping[str, Sequence[np.ndarray]], classes: Sequence[str], angle_version: str
    ) -> DetectionSet:
        """From ``{image id: [[K_c, 6] (cx, cy, w, h, theta, score) per class]}`` (what
        :func:`rotdet.data.merge_patch_detections` returns)."""
        images = {}
        for img_id, per_class in merged.items():
            if len(per_class) != len(classes):
                raise ValueError(f"{img_id}: {len(per_class)} class entries, expected {len(classes)}")
            arrays = [_np(d).reshape(-1, 6) for d in per_class]
            rows = np.concatenate(arrays) if arrays else np.zeros((0, 6))
            labels = np.concatenate([np.full(len(a), c, np.int64) for c, a in enumerate(arrays)])
            images[str(img_id)] = {"boxes": rows[:, :5], "scores": rows[:, 5], "labels": labels}
        return DetectionSet(tuple(classes), angle_version, images)

    def per_class_arrays(self, image_ids: Sequence[str], dtype=np.float32) -> list[list[np.ndarray]]:
        """mmrotate's ``det_results`` for ``image_ids`` (images without detections get empty arrays)."""
        out = []
        for img_id in image_ids:
            d = self.images.get(img_id)
            per_class = []
            for c in range(len(self.classes)):
                if d is None:
                    per_class.append(np.zeros((0, 6), dtype))
                    continue
                m = d["labels"] == c
                per_class.append(np.concatenate([d["boxes"][m], d["scores"][m, None]], axis=1).astype(dtype))
            out.append(per_class)
        return out


def _np(a) -> np.ndarray:
    # A torch tensor without importing torch (evaluation from files does not need it).
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


# ----------------------------------------------------------------------------------------- JSON
def write_detections_json(
    path: str | os.PathLike,
    detections: DetectionSet | Mapping[str, Sequence[np.ndarray]],
    classes: Sequence[str] | None = None,
    angle_version: str | None = None,
) -> Path:
    """Write detections as rotdet JSON (schema in the module docstring); ``detections`` is a
    :class:`DetectionSet` or a merged ``{image id: [[K_c, 6] per class]}`` (then ``classes`` and
    ``angle_version`` are required). Floats are written with full (round-trip) precision."""
    if not isinstance(detections, DetectionSet):
        if classes is None or angle_version is None:
            raise ValueError("classes and angle_version are required with per-class arrays")
        detections = DetectionSet.from_merged(detections, classes, angle_version)
    images = []
    for img_id, d in detections.images.items():
        entry = {
            "id": img_id,
            "boxes": np.asarray(d["boxes"], np.float64).reshape(-1, 5).tolist(),
            "scores": np.asarray(d["scores"], np.float64).reshape(-1).tolist(),
            "labels": np.asarray(d["labels"], np.int64).reshape(-1).tolist(),
        }
        if d.get("polygons") is not None:
            entry["polygons"] = np.asarray(d["polygons"], np.float64).reshape(-1, 8).tolist()
        images.append(entry)
    doc = {
        "format": JSON_FORMAT,
        "format_version": JSON_FORMAT_VERSION,
        "angle_version": detections.angle_version,
        "classes": list(detections.classes),
        "images": images,
    }
    return atomic_write_text(path, json.dumps(doc))


def read_detections_json(path: str | os.PathLike) -> DetectionSet:
    """Read rotdet JSON detections, checking the schema (errors name the file and the image)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalInputError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvalInputError(f"{path}: not a JSON file: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        raise EvalInputError(f'{path}: not a rotdet detections file (expected "format": "{JSON_FORMAT}")')
    if doc.get("format_version") != JSON_FORMAT_VERSION:
        raise EvalInputError(f"{path}: unsupported format_version {doc.get('format_version')!r}")
    classes = doc.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise EvalInputError(f'{path}: "classes" must be a non-empty list of names')
    version = doc.get("angle_version", "oc")
    images: dict[str, dict[str, np.ndarray]] = {}
    for k, entry in enumerate(doc.get("images", [])):
        where = f"{path}: images[{k}]"
        try:
            img_id = str(entry["id"])
            boxes = np.asarray(entry["boxes"], np.float64).reshape(-1, 5)
            scores = np.asarray(entry["scores"], np.float64).reshape(-1)
            labels = np.asarray(entry["labels"], np.int64).reshape(-1)
            polys = entry.get("polygons")
            polys = None if polys is None else np.asarray(polys, np.float64).reshape(-1, 8)
        except (KeyError, TypeError, ValueError) as e:
            raise EvalInputError(f"{where}: malformed entry ({type(e).__name__}: {e})") from None
        n = len(boxes)
        if len(scores) != n or len(labels) != n or (polys is not None and len(polys) != n):
            raise EvalInputError(f"{where} ({img_id}): boxes, scores, labels (and polygons) differ in length")
        if n and (labels.min() < 0 or labels.max() >= len(classes)):
            raise EvalInputError(f"{where} ({img_id}): label out of range [0, {len(classes)})")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise EvalInputError(f"{where} ({img_id}): non-finite box or score")
        if img_id in images:
            raise EvalInputError(f"{where}: image id {img_id!r} appears twice")
        images[img_id] = {"boxes": boxes, "scores": scores, "labels": labels, "polygons": polys}
    return DetectionSet(tuple(classes), version, images)


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


def task1_from_detection_set(detections: DetectionSet, as_written: bool = True) -> dict[str, ClassDetections]:
    """Per class, the Task1 records :func:`rotdet.data.write_task1_submission` would write for these
    detections (images in order, each image's detections in order), as the devkit reads them back.

    Polygons are the given ``polygons`` when present, else the boxes' corners started at the DOTA
    begin point (:func:`rotdet.structures.best_begin_point`, le135 rounded through float32 as
    mmrotate does). ``as_written`` rounds coordinates to 2 decimals, as the files hold them.
    """
    import torch

    from rotdet.structures import best_begin_point, obb2poly

    entries = list(detections.images.items())
    counts = np.array([len(np.asarray(d["labels"]).reshape(-1)) for _, d in entries], np.int64)
    img_of = np.repeat(np.arange(len(entries)), counts)
    labels = _cat_or([np.asarray(d["labels"], np.int64).reshape(-1) for _, d in entries], (0,), np.int64)
    scores = _cat_or([np.asarray(d["scores"], np.float64).reshape(-1) for _, d in entries], (0,), np.float64)
    polys = np.zeros((len(labels), 8))
    given = np.repeat([d.get("polygons") is not None for _, d in entries], counts)
    if given.any():
        polys[given] = np.concatenate(
            [
                np.asarray(d["polygons"], np.float64).reshape(-1, 8)
                for _, d in entries
                if d.get("polygons") is not None
            ]
        )
    if not given.all():
        boxes = np.concatenate(
            [
                np.asarray(d["boxes"], np.float64).reshape(-1, 5)
                for _, d in entries
                if d.get("polygons") is None
            ]
        )
        made = best_begin_point(obb2poly(torch.from_numpy(boxes))).numpy()
        if detections.angle_version == "le135":
            made = made.astype(np.float32).astype(np.float64)
        polys[~given] = made
    if as_written:
        polys = _round_like_text(polys)
    # Per class: images in order, each image's detections in order (a stable sort by label).
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(detections.classes) + 1))
    ids = [img for img, _ in entries]
    out = {}
    for c, name in enumerate(detections.classes):
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
