""":class:`ImageMeta`, what a model is told about each image of a batch, and :func:`image_meta`, the
one function that makes it.

The keys are mmdet's ``img_metas`` keys, so code (and checkpoints' habits) written against mmrotate
read the same names. A meta is a plain dict at run time (it crosses ``DataLoader`` workers and DDP
ranks as one); the type says which keys exist and what they hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

__all__ = ["META_KEYS", "ImageMeta", "image_meta"]


class ImageMeta(TypedDict, total=False):
    """One image's metadata (only ``img_shape`` is always present).

    Attributes:
        id: the image's name without extension (names its detections).
        filename: the image file.
        ori_shape: ``(H, W, C)`` as loaded.
        img_shape: ``(h, w, C)`` after resizing, before padding (boxes are clipped to it).
        pad_shape: ``(h', w', C)`` after padding.
        scale_factor: float32 ``[4]`` ``(w, h, w, h)`` scales from ``ori_shape`` to ``img_shape``.
        flip: whether the image was flipped; flip_direction: ``horizontal`` / ``vertical`` / ``diagonal``.
        img_norm_cfg: the normalisation applied (``mean``, ``std``, ``to_rgb``).
        batch_input_shape: ``(H, W)`` of the padded batch tensor (added by collation).
    """

    id: str
    filename: str
    ori_shape: tuple[int, ...]
    img_shape: tuple[int, ...]
    pad_shape: tuple[int, ...]
    scale_factor: np.ndarray
    flip: bool
    flip_direction: str | None
    img_norm_cfg: dict
    batch_input_shape: tuple[int, int]


# What a sample's meta carries from the pipeline's results (mmdet's Collect meta_keys).
META_KEYS: tuple[str, ...] = (
    "id",
    "filename",
    "ori_shape",
    "img_shape",
    "pad_shape",
    "scale_factor",
    "flip",
    "flip_direction",
    "img_norm_cfg",
)
_ALL_KEYS = frozenset(ImageMeta.__annotations__)


def image_meta(fields: Mapping[str, Any] | None = None, /, **values: Any) -> ImageMeta:
    """An :class:`ImageMeta` from a pipeline's results dict (its :data:`META_KEYS`; other keys are
    ignored) and/or keyword values (unknown keys are an error). ``img_shape`` is required;
    ``ori_shape`` and ``pad_shape`` default to it, ``scale_factor`` to ones and ``flip`` to False, as
    for an image given to the model as loaded."""
    meta: dict[str, Any] = {k: fields[k] for k in META_KEYS if k in fields} if fields is not None else {}
    unknown = sorted(set(values) - _ALL_KEYS)
    if unknown:
        raise TypeError(f"unknown image meta key(s) {unknown}; known: {sorted(_ALL_KEYS)}")
    meta.update(values)
    if "img_shape" not in meta:
        raise ValueError("an image meta needs img_shape")
    meta["img_shape"] = _shape(meta["img_shape"])
    meta.setdefault("ori_shape", meta["img_shape"])
    meta.setdefault("pad_shape", meta["img_shape"])
    meta.setdefault("scale_factor", np.ones(4, np.float32))
    meta.setdefault("flip", False)
    return meta  # type: ignore[return-value]


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)
