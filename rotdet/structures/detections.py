"""One image's rotated detections, :class:`RotatedDetections`, and rotdet's detections JSON.

Every stage that holds detections holds this type: ``model.predict`` (torch tensors on the model's
device), the patch merge and ``Detector.predict`` (numpy on the CPU), evaluation and the DOTA /
Task1 / JSON writers. mmrotate's per-class ``[[K_c, 6] (cx, cy, w, h, theta, score)]`` lists exist
only at its ``eval_rbbox_map`` boundary (:meth:`RotatedDetections.per_class` /
:meth:`RotatedDetections.from_per_class`).

rotdet JSON detections (:func:`detections_to_json` / :func:`detections_from_json`; one document
holds any number of images)::

    {
      "format": "rotdet-detections", "format_version": 1,
      "angle_version": "le90",               # convention of the boxes' theta
      "classes": ["plane", ...],             # label i is classes[i]
      "images": [
        {"id": "P0003",                      # image name without extension (labelTxt stem)
         "image_size": [h, w],               # optional
         "boxes": [[cx, cy, w, h, theta], ...],   # pixels, radians
         "scores": [0.93, ...],
         "labels": [0, ...],
         "polygons": [[x1, y1, ..., x4, y4], ...]}   # optional; default: the boxes' corners
      ]
    }

This module imports neither torch nor OpenCV: evaluation from files reads detections without them.
A tensor's values are reached through its own methods, and torch is imported only to compute
polygons.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "JSON_FORMAT",
    "JSON_FORMAT_VERSION",
    "DetectionsFormatError",
    "RotatedDetections",
    "detections_from_json",
    "detections_to_json",
    "format_coord",
    "one_model",
    "read_detections_json",
    "write_detections_json",
]

JSON_FORMAT = "rotdet-detections"
JSON_FORMAT_VERSION = 1


class DetectionsFormatError(ValueError):
    """A detections document that does not follow the schema; the message names the file and entry."""


def _is_tensor(a: Any) -> bool:
    return hasattr(a, "detach") and hasattr(a, "device")


def _to_numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if _is_tensor(a) else np.asarray(a)


class RotatedDetections:
    """The detections of one image, by descending score unless stated otherwise.

    The arrays are all torch tensors (on one device) or all numpy arrays; their dtype is kept as
    given (the model's float32, the patch merge's float64), so no stage rounds another's numbers.

    Attributes:
        boxes: ``[K, 5]`` ``(cx, cy, w, h, theta)``, pixels, theta in radians in ``angle_version``.
        scores: ``[K]``.
        labels: ``[K]`` int64; label ``i`` is ``classes[i]``.
        angle_version: ``oc``, ``le90`` or ``le135``.
        image_id: the image's name without extension (``"image"`` when it has none).
        classes: class names (may be empty where only labels are known, as inside the model).
        image_size: ``(H, W)`` of the image, when known.
        polygons: ``[K, 8]`` corners ``x1 y1 ... x4 y4``; the boxes' corners unless given.
    """

    __slots__ = (
        "angle_version",
        "boxes",
        "classes",
        "image_id",
        "image_size",
        "labels",
        "scores",
        "_polygons",
    )

    def __init__(
        self,
        boxes: Any,
        scores: Any,
        labels: Any,
        angle_version: str = "le90",
        image_id: str = "image",
        classes: Sequence[str] = (),
        image_size: Sequence[int] | None = None,
        polygons: Any = None,
    ) -> None:
        if _is_tensor(boxes):
            boxes, scores, labels = boxes.reshape(-1, 5), scores.reshape(-1), labels.reshape(-1).long()
        else:
            boxes = np.asarray(boxes).reshape(-1, 5)
            scores = np.asarray(scores).reshape(-1)
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.boxes, self.scores, self.labels = boxes, scores, labels
        self.angle_version = str(angle_version)
        self.image_id = str(image_id)
        self.classes = tuple(str(c) for c in classes)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        if polygons is not None:
            polygons = (
                polygons.reshape(-1, 8) if _is_tensor(polygons) else np.asarray(polygons).reshape(-1, 8)
            )
        self._polygons = polygons
        k = len(boxes)
        if not len(scores) == len(labels) == k or (polygons is not None and len(polygons) != k):
            raise ValueError(
                f"{self.image_id}: boxes ({k}), scores ({len(scores)}), labels ({len(labels)})"
                + ("" if polygons is None else f" and polygons ({len(polygons)})")
                + " must have the same length"
            )
        if k and self.classes:
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= len(self.classes):
                raise ValueError(
                    f"{self.image_id}: labels must lie in [0, {len(self.classes)}), got {low}..{high}"
                )

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.boxes)

    def __repr__(self) -> str:
        kind = f"tensor on {self.boxes.device}" if self.is_tensor else "numpy"
        return f"RotatedDetections({self.image_id!r}: {len(self)} detection(s), {self.angle_version}, {kind})"

    @property
    def is_tensor(self) -> bool:
        """Whether the arrays are torch tensors (else numpy)."""
        return _is_tensor(self.boxes)

    @property
    def has_given_polygons(self) -> bool:
        """Whether polygons were given (e.g. read from a file) rather than made from the boxes."""
        return self._polygons is not None

    @property
    def polygons(self) -> Any:
        """``[K, 8]`` corners, in the boxes' kind and dtype (computed once, on first use)."""
        if self._polygons is None:
            import torch

            from rotdet.structures.conversions import obb2poly

            boxes = self.boxes if self.is_tensor else torch.from_numpy(np.ascontiguousarray(self.boxes))
            polys = obb2poly(boxes)
            self._polygons = polys if self.is_tensor else polys.numpy()
        return self._polygons

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.classes[int(c)] for c in _to_numpy(self.labels)]

    def _with(self, boxes: Any, scores: Any, labels: Any, polygons: Any) -> RotatedDetections:
        return RotatedDetections(
            boxes, scores, labels, self.angle_version, self.image_id, self.classes, self.image_size, polygons
        )

    def select(self, index: Any) -> RotatedDetections:
        """The detections at ``index`` (integer indices or a boolean mask, of the arrays' kind)."""
        polys = None if self._polygons is None else self._polygons[index]
        return self._with(self.boxes[index], self.scores[index], self.labels[index], polys)

    def to(self, device: Any) -> RotatedDetections:
        """The same detections as torch tensors on ``device`` (numpy arrays are converted)."""
        import torch

        def move(a: Any) -> Any:
            return None if a is None else torch.as_tensor(a).to(device)

        return self._with(move(self.boxes), move(self.scores), move(self.labels), move(self._polygons))

    def numpy(self) -> RotatedDetections:
        """The same detections as numpy arrays on the CPU (self when they already are)."""
        if not self.is_tensor:
            return self
        polys = None if self._polygons is None else _to_numpy(self._polygons)
        return self._with(_to_numpy(self.boxes), _to_numpy(self.scores), _to_numpy(self.labels), polys)

    def astype(self, dtype: Any) -> RotatedDetections:
        """numpy detections with float ``dtype`` boxes, scores and given polygons."""
        d = self.numpy()
        polys = None if d._polygons is None else d._polygons.astype(dtype)
        return d._with(d.boxes.astype(dtype), d.scores.astype(dtype), d.labels, polys)

    def describe(self, **changes: Any) -> RotatedDetections:
        """The same arrays with other metadata: ``image_id``, ``classes``, ``image_size`` or
        ``angle_version``."""
        fields = {
            "angle_version": self.angle_version,
            "image_id": self.image_id,
            "classes": self.classes,
            "image_size": self.image_size,
            **changes,
        }
        return RotatedDetections(self.boxes, self.scores, self.labels, polygons=self._polygons, **fields)

    @classmethod
    def cat(cls, parts: Sequence[RotatedDetections], **fields: Any) -> RotatedDetections:
        """The detections of ``parts`` one after the other (all of one kind); metadata from the
        first part unless given in ``fields``. Polygons are kept only when every part has them."""
        if not parts:
            raise ValueError("RotatedDetections.cat needs at least one part")
        first = parts[0]
        if first.is_tensor:
            import torch

            join = torch.cat
        else:
            join = np.concatenate
        polys = None
        if all(p.has_given_polygons for p in parts):
            polys = join([p._polygons for p in parts])
        meta = {
            "angle_version": first.angle_version,
            "image_id": first.image_id,
            "classes": first.classes,
            "image_size": first.image_size,
            **fields,
        }
        return cls(
            join([p.boxes for p in parts]),
            join([p.scores for p in parts]),
            join([p.labels for p in parts]),
            polygons=polys,
            **meta,
        )

    @classmethod
    def empty(cls, dtype: Any = np.float32, **fields: Any) -> RotatedDetections:
        """No detections (numpy arrays of ``dtype``)."""
        return cls(np.zeros((0, 5), dtype), np.zeros(0, dtype), np.zeros(0, np.int64), **fields)

    # ------------------------------------------------------------------ mmrotate's per-class lists
    def per_class(self, num_classes: int | None = None, dtype: Any = None) -> list[np.ndarray]:
        """mmrotate's result for this image: per class a ``[K_c, 6]`` numpy array ``(cx, cy, w, h,
        theta, score)``, each in this object's order (by descending score)."""
        n = len(self.classes) if num_classes is None else int(num_classes)
        d = self.numpy()
        rows = np.concatenate([d.boxes, d.scores[:, None].astype(d.boxes.dtype)], axis=1)
        if dtype is not None:
            rows = rows.astype(dtype)
        return [rows[d.labels == c] for c in range(n)]

    @classmethod
    def from_per_class(cls, per_class: Sequence[Any], **fields: Any) -> RotatedDetections:
        """From mmrotate's per-class ``[K_c, 6]`` arrays (or tensors): class-major order."""
        arrays = [_to_numpy(a).reshape(-1, 6) for a in per_class]
        classes = fields.get("classes") or ()
        if classes and len(arrays) != len(classes):
            where = fields.get("image_id", "image")
            raise ValueError(f"{where}: {len(arrays)} class entries, expected {len(classes)}")
        dtype = np.result_type(*[a.dtype for a in arrays]) if arrays else np.float64
        rows = np.concatenate(arrays).astype(dtype) if arrays else np.zeros((0, 6), dtype)
        labels = (
            np.concatenate([np.full(len(a), c, np.int64) for c, a in enumerate(arrays)]) if arrays else []
        )
        return cls(rows[:, :5], rows[:, 5], labels, **fields)

    # ------------------------------------------------------------------ JSON
    def to_json_entry(self, polygons: bool = True) -> dict:
        """This image's entry of a detections document (floats round-trip exactly); ``polygons``
        writes the corners too (a reader without them makes them from the boxes)."""
        d = self.numpy()
        entry: dict[str, Any] = {"id": self.image_id}
        if self.image_size is not None:
            entry["image_size"] = list(self.image_size)
        entry["boxes"] = d.boxes.tolist()
        entry["scores"] = d.scores.tolist()
        entry["labels"] = d.labels.tolist()
        if polygons:
            entry["polygons"] = _to_numpy(d.polygons).tolist()
        return entry

    def write_json(self, path: str | os.PathLike) -> Path:
        """This image as a detections document (atomically); returns the path."""
        return write_detections_json(path, [self])

    @classmethod
    def read_json(cls, path: str | os.PathLike) -> RotatedDetections:
        """The first image of a detections document (float32, as :meth:`write_json` wrote it from a
        ``Detector``'s detections)."""
        found = read_detections_json(path, dtype=np.float32)
        if not found:
            raise DetectionsFormatError(f"{path}: the document holds no image")
        return found[0]

    def write_dota_txt(self, path: str | os.PathLike) -> Path:
        """Write DOTA detection lines ``x1 y1 x2 y2 x3 y3 x4 y4 class score`` (atomically).

        Numbers are written as the shortest text that reads back to the same float32 (as the DOTA
        label writer does), so the file loses nothing.
        """
        from rotdet.fileio import atomic_write_text

        d = self.numpy()
        names = self.names
        polys = np.asarray(_to_numpy(d.polygons), np.float32)
        scores = d.scores.astype(np.float32)
        lines = [
            " ".join([*(format_coord(v) for v in poly), name, format_coord(score)])
            for poly, name, score in zip(polys, names, scores, strict=True)
        ]
        return atomic_write_text(path, "".join(line + "\n" for line in lines))


def format_coord(value: float) -> str:
    """The shortest text that reads back to the same float32 (``398.0``, ``12.5``), as numpy's
    ``str(np.float32)`` and so as mmrotate's split tool writes label files."""
    return str(np.float32(value))


def one_model(detections: Sequence[RotatedDetections]) -> tuple[tuple[str, ...], str]:
    """The classes and angle version shared by ``detections`` (``((), "oc")`` for none); a
    ValueError when they differ: one document, or one evaluation, holds one model's detections."""
    if not detections:
        return (), "oc"
    first = detections[0]
    for d in detections[1:]:
        if d.classes != first.classes or d.angle_version != first.angle_version:
            raise ValueError(
                f"{d.image_id}: classes / angle version differ from {first.image_id}'s: one document "
                "holds detections of one model"
            )
    return first.classes, first.angle_version


def detections_to_json(detections: Sequence[RotatedDetections], polygons: bool = True) -> dict:
    """A detections document for ``detections`` (one entry per image; they share classes and angle
    version), with each detection's corners when ``polygons``."""
    if not detections:
        raise ValueError("no detections to write: pass at least one image (possibly with no detection)")
    classes, version = one_model(detections)
    return {
        "format": JSON_FORMAT,
        "format_version": JSON_FORMAT_VERSION,
        "angle_version": version,
        "classes": list(classes),
        "images": [d.to_json_entry(polygons) for d in detections],
    }


def write_detections_json(
    path: str | os.PathLike, detections: Sequence[RotatedDetections], polygons: bool = True
) -> Path:
    """Write :func:`detections_to_json` to ``path`` atomically; returns the path. Without
    ``polygons``, an evaluation of the file makes them as the Task1 writer does (DOTA's begin
    point, from the boxes), so it scores exactly as ``rotdet test --merge``."""
    from rotdet.fileio import atomic_write_text

    return atomic_write_text(path, json.dumps(detections_to_json(list(detections), polygons)))


def read_detections_json(path: str | os.PathLike, dtype: Any = np.float64) -> list[RotatedDetections]:
    """Read a detections document, checking the schema: errors (:class:`DetectionsFormatError`)
    name the file and the image entry. Floats are read as ``dtype``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DetectionsFormatError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DetectionsFormatError(f"{path}: not a JSON file: {e}") from None
    return detections_from_json(doc, source=str(path), dtype=dtype)


def detections_from_json(
    doc: Mapping, source: str = "<document>", dtype: Any = np.float64
) -> list[RotatedDetections]:
    """The images of a detections document (the inverse of :func:`detections_to_json`)."""
    if not isinstance(doc, Mapping) or doc.get("format") != JSON_FORMAT:
        raise DetectionsFormatError(
            f'{source}: not a rotdet detections file (expected "format": "{JSON_FORMAT}")'
        )
    if doc.get("format_version") != JSON_FORMAT_VERSION:
        raise DetectionsFormatError(f"{source}: unsupported format_version {doc.get('format_version')!r}")
    classes = doc.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DetectionsFormatError(f'{source}: "classes" must be a non-empty list of names')
    version = doc.get("angle_version", "oc")
    out: list[RotatedDetections] = []
    seen: set[str] = set()
    for k, entry in enumerate(doc.get("images", [])):
        where = f"{source}: images[{k}]"
        try:
            img_id = str(entry["id"])
            boxes = np.asarray(entry["boxes"], dtype).reshape(-1, 5)
            scores = np.asarray(entry["scores"], dtype).reshape(-1)
            labels = np.asarray(entry["labels"], np.int64).reshape(-1)
            polys = entry.get("polygons")
            polys = None if polys is None else np.asarray(polys, dtype).reshape(-1, 8)
            size = entry.get("image_size")
        except (KeyError, TypeError, ValueError) as e:
            raise DetectionsFormatError(f"{where}: malformed entry ({type(e).__name__}: {e})") from None
        n = len(boxes)
        if len(scores) != n or len(labels) != n or (polys is not None and len(polys) != n):
            raise DetectionsFormatError(
                f"{where} ({img_id}): boxes, scores, labels (and polygons) differ in length"
            )
        if n and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DetectionsFormatError(f"{where} ({img_id}): label out of range [0, {len(classes)})")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise DetectionsFormatError(f"{where} ({img_id}): non-finite box or score")
        if img_id in seen:
            raise DetectionsFormatError(f"{where}: image id {img_id!r} appears twice")
        seen.add(img_id)
        out.append(RotatedDetections(boxes, scores, labels, version, img_id, classes, size, polys))
    return out
