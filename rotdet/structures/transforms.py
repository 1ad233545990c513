"""Geometric transforms of rotated boxes and polygons, with mmrotate 0.3.4's RRandomFlip / RResize rules.

Every function takes a torch tensor or a numpy array and returns the same kind, same dtype; inputs
are never modified. Flips use mmrotate's pixel-index convention ``x' = W - x - 1`` (and
``y' = H - y - 1``) for boxes and polygons alike, so a flipped box's corners are exactly the
flipped corners (as a point set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from rotdet.structures.angles import check_version, norm_angle
from rotdet.structures.conversions import ArrayT, as_tensor, restore

FLIP_DIRECTIONS: tuple[str, ...] = ("horizontal", "vertical", "diagonal")

# A mirror reverses a polygon's winding; reading the mirrored vertices as p1, p4, p3, p2 restores the
# clockwise (DOTA / obb2poly) winding and keeps p1 first.
_MIRROR_ORDER = [0, 3, 2, 1]


def _check_direction(direction: str) -> None:
    if direction not in FLIP_DIRECTIONS:
        raise ValueError(
            f"invalid flip direction {direction!r}; expected one of {', '.join(FLIP_DIRECTIONS)}"
        )


def flip_obb(
    obbs: ArrayT, img_shape: Sequence[int], direction: str = "horizontal", version: str = "oc"
) -> ArrayT:
    """Flip rotated boxes ``[..., 5]`` in an image of shape ``img_shape = (H, W, ...)``.

    mmrotate RRandomFlip rules: the centre moves to ``W - cx - 1`` (horizontal), ``H - cy - 1``
    (vertical) or both (diagonal). A diagonal flip is a half turn, so the angle is unchanged. For
    a mirror, ``le90`` / ``le135`` use ``theta' = norm_angle(pi - theta)`` with w / h unchanged;
    ``oc`` uses ``theta' = pi/2 - theta`` with w / h swapped, except that a box with theta exactly
    pi/2 (an axis-aligned oc box, which a mirror maps to itself) is left as is. In-range inputs
    stay in range; an oc box with theta == 0 (from the torch ``poly2obb``) becomes (h, w, pi/2).
    """
    check_version(version)
    _check_direction(direction)
    t, was_numpy = as_tensor(obbs)
    if t.shape[-1] != 5:
        raise ValueError(f"obbs must have shape [..., 5], got {tuple(t.shape)}")
    height, width = img_shape[0], img_shape[1]
    cx, cy, w, h, theta = t.unbind(-1)
    if direction in ("horizontal", "diagonal"):
        cx = width - cx - 1
    if direction in ("vertical", "diagonal"):
        cy = height - cy - 1
    if direction != "diagonal":
        if version == "oc":
            # QUIRK: exact float comparison with pi/2, as mmrotate (in the tensor's dtype).
            turned = theta != math.pi / 2
            theta = torch.where(turned, math.pi / 2 - theta, theta)
            w, h = torch.where(turned, h, w), torch.where(turned, w, h)
        else:
            theta = norm_angle(math.pi - theta, version)
    return restore(torch.stack([cx, cy, w, h, theta], dim=-1), was_numpy)


def flip_poly(polys: ArrayT, img_shape: Sequence[int], direction: str = "horizontal") -> ArrayT:
    """Flip polygons ``[..., 8]`` in an image of shape ``img_shape = (H, W, ...)``.

    Coordinates map as in :func:`flip_obb` (``x' = W - x - 1``, ``y' = H - y - 1``). A horizontal
    or vertical mirror would turn a clockwise polygon anticlockwise, so the vertices are re-read as
    p1, p4, p3, p2: the winding stays clockwise (as DOTA labels and :func:`obb2poly` are), p1 stays
    first, and flipping twice returns the input exactly. A diagonal flip is a rotation: the order is
    kept. ``obb2poly(flip_obb(b))`` and ``flip_poly(obb2poly(b))`` are then the same vertices in the
    same winding, possibly starting at a different vertex.
    """
    _check_direction(direction)
    t, was_numpy = as_tensor(polys)
    if t.shape[-1] != 8:
        raise ValueError(f"polys must have shape [..., 8], got {tuple(t.shape)}")
    height, width = img_shape[0], img_shape[1]
    x, y = t[..., 0::2], t[..., 1::2]
    if direction in ("horizontal", "diagonal"):
        x = width - x - 1
    if direction in ("vertical", "diagonal"):
        y = height - y - 1
    if direction != "diagonal":
        x, y = x[..., _MIRROR_ORDER], y[..., _MIRROR_ORDER]
    return restore(torch.stack([x, y], dim=-1).reshape(t.shape), was_numpy)


def rescale_obb(obbs: ArrayT, scale_factor: float | Sequence[float] | np.ndarray) -> ArrayT:
    """Rescale rotated boxes ``[..., 5]`` as mmrotate's RResize does.

    ``scale_factor`` is ``(sx, sy)`` or mmdet's ``(sx, sy, sx, sy)`` (only the first two are used),
    or one number for both. ``cx *= sx``, ``cy *= sy``, ``w, h *= sqrt(sx * sy)``, angle unchanged
    (exact for isotropic scaling; RResize only scales with the aspect ratio kept).
    """
    sf = np.asarray(scale_factor).reshape(-1)
    sx, sy = (sf[0], sf[0]) if sf.size == 1 else (sf[0], sf[1])
    size_scale = float(np.sqrt(sx * sy))  # in the scale factor's own dtype, as mmrotate
    t, was_numpy = as_tensor(obbs)
    if t.shape[-1] != 5:
        raise ValueError(f"obbs must have shape [..., 5], got {tuple(t.shape)}")
    cx, cy, w, h, theta = t.unbind(-1)
    out = torch.stack([cx * float(sx), cy * float(sy), w * size_scale, h * size_scale, theta], dim=-1)
    return restore(out, was_numpy)
