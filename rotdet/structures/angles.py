"""Angle conventions of rotated boxes, with mmrotate 0.3.4's exact semantics.

A rotated box is ``(cx, cy, w, h, theta)`` in pixels and radians, image coordinates (x right, y
down), so a positive ``theta`` turns the ``w`` edge clockwise on screen. Each convention picks one
of the equivalent parameterisations of the same rectangle:

* ``oc``    theta in (0, pi/2]; w is the edge along theta (OpenCV >= 4.5.1 ``minAreaRect``).
* ``le90``  theta in [-pi/2, pi/2) and w >= h ("long edge", 90 degree range).
* ``le135`` theta in [-pi/4, 3pi/4) and w >= h ("long edge", 135 degree range).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

ANGLE_VERSIONS: tuple[str, ...] = ("oc", "le90", "le135")

ArrayLike = TypeVar("ArrayLike", torch.Tensor, np.ndarray, float)


def check_version(version: str) -> str:
    """Return ``version`` if it is a known angle convention, else raise a ValueError naming them."""
    if version not in ANGLE_VERSIONS:
        raise ValueError(f"unknown angle version {version!r}; expected one of {', '.join(ANGLE_VERSIONS)}")
    return version


def norm_angle(angle: ArrayLike, version: str) -> ArrayLike:
    """Wrap angles into the range of ``version`` by multiples of pi, as mmrotate's ``norm_angle``.

    ``oc`` is returned unchanged (mmrotate's ``norm_angle`` is the identity for it: an ``oc`` angle
    cannot be wrapped by pi alone, it also needs a w/h swap, see :func:`regularize_obb`).
    Works on tensors, numpy arrays and Python floats; the result has the input's type.
    """
    check_version(version)
    if version == "oc":
        return angle
    low = -math.pi / 2 if version == "le90" else -math.pi / 4
    # Python's and torch's % are floored modulo, as numpy's: the result is in [0, pi).
    return (angle - low) % math.pi + low
