"""Conversions between rotated boxes, polygons and horizontal boxes (mmrotate 0.3.4 semantics).

Shapes used throughout:

* obb  -- ``[..., 5]`` ``(cx, cy, w, h, theta)``, pixels and radians (see :mod:`rotdet.structures.angles`).
* poly -- ``[..., 8]`` ``(x1, y1, x2, y2, x3, y3, x4, y4)``, DOTA vertex order.
* xyxy -- ``[..., 4]`` ``(x1, y1, x2, y2)`` horizontal box.

The torch functions are batched over any leading shape, keep the input's device and dtype and
accept empty inputs. Where mmrotate has a quirk (a formula that is only right inside one angle
range, a half-open range that differs from the documented one, ...) it is reproduced on purpose so
that targets, assignments and submissions match mmrotate exactly; each one is marked ``QUIRK``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import cv2
import numpy as np
import torch
from torch import Tensor

from rotdet.structures.angles import check_version, norm_angle

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)

HALF_PI = math.pi / 2

# Vertex index of position j when a polygon is started at vertex k: _CYCLIC[k, j] == (k + j) % 4.
_CYCLIC = [[(k + j) % 4 for j in range(4)] for k in range(4)]


# --------------------------------------------------------------------------------------------- helpers
def _check_last_dim(x: Tensor | np.ndarray, size: int, name: str, at_least: bool = False) -> None:
    last = x.shape[-1] if x.ndim else None
    ok = last is not None and (last >= size if at_least else last == size)
    if not ok:
        want = f"[..., >={size}]" if at_least else f"[..., {size}]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")


def as_tensor(x: Tensor | np.ndarray) -> tuple[Tensor, bool]:
    """Return ``(tensor, was_numpy)``; a numpy array is wrapped without a copy where possible."""
    if isinstance(x, Tensor):
        return x, False
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)), True
    raise TypeError(f"expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def restore(t: Tensor, was_numpy: bool) -> Tensor | np.ndarray:
    """Undo :func:`as_tensor`: give numpy back to a numpy caller (never sharing memory with the input)."""
    return t.numpy() if was_numpy else t


def _both_backends(fn: Callable[..., Tensor]) -> Callable[..., Tensor | np.ndarray]:
    """Let a torch implementation also take (and return) numpy arrays in its first argument."""

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        t, was_numpy = as_tensor(x)
        return restore(fn(t, *args, **kwargs), was_numpy)

    return wrapper


def _range_of(version: str) -> tuple[float, float]:
    """``(low, high)`` of the half-open angle range ``[low, high)`` of a long-edge version."""
    low = -HALF_PI if version == "le90" else -math.pi / 4
    return low, low + math.pi


# ------------------------------------------------------------------------------------ poly -> obb
def poly2obb(polys: Tensor, version: str = "oc") -> Tensor:
    """Polygons ``[..., 8]`` to rotated boxes ``[..., 5]`` in ``version`` (torch, differentiable).

    Semantics of mmrotate's torch ``poly2obb_{oc,le90,le135}``; the polygon is assumed to be a
    rectangle (for a general quadrilateral the result is what mmrotate computes, not a fit):

    * ``oc``: centre is the mean of the 4 vertices; the edges p1p2 / p2p3 give w and h, assigned
      so that w lies along theta.  QUIRK: theta is a floored remainder, so it lies in [0, pi/2)
      and axis-aligned boxes get theta == 0, not pi/2 as in the documented range (0, pi/2].
    * ``le90`` / ``le135``: w / h are the longer / shorter of edges p1p2 and p2p3; theta is the
      direction of p1->p2 if |p1p2| > |p2p3| else of p1->p4, wrapped by :func:`norm_angle`;
      centre is the midpoint of the diagonal p1p3.
    """
    check_version(version)
    _check_last_dim(polys, 8, "polys")
    pts = polys.reshape(*polys.shape[:-1], 4, 2)
    p1, p2, p3, p4 = pts.unbind(-2)
    if version == "oc":
        centre = pts.sum(-2) / 4.0
        edge1 = torch.linalg.vector_norm(p1 - p2, dim=-1)
        edge2 = torch.linalg.vector_norm(p2 - p3, dim=-1)
        # Angle of p1->p2 minus pi/2, i.e. the direction of the edge p2p3 (mod pi).
        theta = torch.atan2(-(p2[..., 0] - p1[..., 0]), p2[..., 1] - p1[..., 1])
        # Even quadrant of theta: the reduced angle is the direction of p2p3, so w = |p2p3|.
        p2p3_along = torch.remainder(torch.floor(theta / HALF_PI), 2) == 0
        w = torch.where(p2p3_along, edge2, edge1)
        h = torch.where(p2p3_along, edge1, edge2)
        theta = torch.remainder(theta, HALF_PI)
        return torch.stack([centre[..., 0], centre[..., 1], w, h, theta], dim=-1)

    d12 = p1 - p2
    d23 = p2 - p3
    edge1 = torch.sqrt(d12[..., 0] ** 2 + d12[..., 1] ** 2)
    edge2 = torch.sqrt(d23[..., 0] ** 2 + d23[..., 1] ** 2)
    along12 = torch.atan2(p2[..., 1] - p1[..., 1], p2[..., 0] - p1[..., 0])
    along14 = torch.atan2(p4[..., 1] - p1[..., 1], p4[..., 0] - p1[..., 0])
    theta = norm_angle(torch.where(edge1 > edge2, along12, along14), version)
    cx = (p1[..., 0] + p3[..., 0]) / 2.0
    cy = (p1[..., 1] + p3[..., 1]) / 2.0
    return torch.stack([cx, cy, torch.maximum(edge1, edge2), torch.minimum(edge1, edge2), theta], dim=-1)


def _wrap_degrees_oc(w: np.ndarray, h: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, ...]:
    """Bring a ``cv2.minAreaRect`` result ``(w, h, angle in degrees)`` into the oc form, in place.

    The oc form is angle in (0, 90] with w the edge along the angle -- what OpenCV 4.5.1 .. 4.12
    return directly. OpenCV >= 4.13 / 5.x return angles in [-90, 0) (opencv/opencv#28051), older
    ones [-90, 0) too; the step rule is mmrotate's ``poly2obb_np_oc`` loop: -90 becomes 90 (same
    edge direction, no swap), any other out-of-range angle is turned by +90 with w and h swapped.
    Applying it to every OpenCV's output gives the same canonical form (the (0, 90] direction of
    a rectangle's edges is unique), so the result does not depend on the installed OpenCV (checked
    against OpenCV 4.10: same keep / centre / size bits, angle within 1 float32 ulp).
    """
    for _ in range(8):  # cv2 angles lie in [-90, 90]: at most 2 steps are ever needed
        bad = ~((a > 0) & (a <= 90))
        if not bad.any():
            return w, h, a
        flip_half_turn = bad & (a == -90)
        quarter = bad & ~flip_half_turn
        a[flip_half_turn] += 180
        a[quarter] += 90
        w[quarter], h[quarter] = h[quarter], w[quarter].copy()
    raise ValueError("cv2.minAreaRect returned an angle outside [-90, 90]")


def _wrap_radians(a: np.ndarray, low: float, high: float) -> np.ndarray:
    """mmrotate's ``while not high > a >= low: a -= pi if a >= high else a += pi``, vectorised."""
    for _ in range(8):
        above = a >= high
        below = a < low
        if not (above.any() or below.any()):
            return a
        a[above] -= np.pi
        a[below] += np.pi
    raise ValueError("angle too far outside the target range")


def poly2obb_np(polys: np.ndarray, version: str = "oc") -> tuple[np.ndarray, np.ndarray]:
    """Polygons ``[N, 8]`` to rotated boxes the way mmrotate's ``DOTADataset`` loads labels.

    Returns ``(obbs [K, 5] float32, keep [N] bool)``: ``obbs`` are the rows of ``polys`` where
    ``keep`` is True, in order. Polygons are first cast to float32 (as ``DOTADataset`` does).

    * ``oc``: ``cv2.minAreaRect`` brought into (0, 90] degrees with w along the angle (see
      :func:`_wrap_degrees_oc`), then radians.
    * ``le90``: from that same canonical minAreaRect: if w < h swap and add pi/2, then wrap into
      [-pi/2, pi/2). Starting from the canonical form (not from whatever the installed OpenCV
      returns) matters for squares (w == h): mmrotate, run with OpenCV 4.5.1 .. 4.12, gets the
      (0, pi/2] angle there, and so do we on any OpenCV version.
    * ``le135``: no minAreaRect; from the edges p1p2 / p2p3 like :func:`poly2obb` but with
      mmrotate's numpy arithmetic (edges, differences and the p1+p3 sum in float32, the angle in
      float64).

    Dropped (``keep`` False), as mmrotate drops them: oc / le90 where the minAreaRect w < 2 or
    h < 2; le135 where either edge < 2 (QUIRK: only the edge lengths are checked, so e.g. a
    collinear polygon with long edges is kept in le135 and dropped in oc / le90). Also dropped:
    non-finite polygons (mmrotate would loop forever on those in oc / le90).
    """
    check_version(version)
    polys = np.asarray(polys, dtype=np.float32)
    _check_last_dim(polys, 8, "polys")
    polys = polys.reshape(-1, 8)
    n = polys.shape[0]
    finite = np.isfinite(polys).all(axis=1)

    if version == "le135":
        p = polys.reshape(n, 4, 2)  # float32 throughout, like mmrotate's per-polygon arithmetic
        d12 = p[:, 0] - p[:, 1]
        d23 = p[:, 1] - p[:, 2]
        edge1 = np.sqrt(d12[:, 0] * d12[:, 0] + d12[:, 1] * d12[:, 1])
        edge2 = np.sqrt(d23[:, 0] * d23[:, 0] + d23[:, 1] * d23[:, 1])
        keep = finite & ~((edge1 < 2) | (edge2 < 2))
        p, edge1, edge2 = p[keep], edge1[keep], edge2[keep]
        v12 = (p[:, 1] - p[:, 0]).astype(np.float64)
        v14 = (p[:, 3] - p[:, 0]).astype(np.float64)
        theta = np.where(edge1 > edge2, np.arctan2(v12[:, 1], v12[:, 0]), np.arctan2(v14[:, 1], v14[:, 0]))
        theta = norm_angle(theta, "le135")
        centre = (p[:, 0] + p[:, 2]).astype(np.float64) / 2
        obbs = np.stack(
            [centre[:, 0], centre[:, 1], np.maximum(edge1, edge2), np.minimum(edge1, edge2), theta], axis=1
        )
        return obbs.astype(np.float32), keep

    rects = np.zeros((n, 5), dtype=np.float64)
    for i in np.flatnonzero(finite):  # cv2 has no batched minAreaRect
        (cx, cy), (w, h), a = cv2.minAreaRect(polys[i].reshape(4, 2))
        rects[i] = (cx, cy, w, h, a)
    keep = finite & ~((rects[:, 2] < 2) | (rects[:, 3] < 2))
    cx, cy, w, h, a = (np.ascontiguousarray(c) for c in rects[keep].T)
    w, h, a = _wrap_degrees_oc(w, h, a)
    theta = a / 180 * np.pi
    if version == "le90":
        swap = w < h
        w, h = np.where(swap, h, w), np.where(swap, w, h)
        theta = np.where(swap, theta + np.pi / 2, theta)
        theta = _wrap_radians(theta, -np.pi / 2, np.pi / 2)
    return np.stack([cx, cy, w, h, theta], axis=1).astype(np.float32), keep


# ------------------------------------------------------------------------------------ obb -> poly
def obb2poly(obbs: Tensor, version: str | None = None) -> Tensor:
    """Rotated boxes ``[..., 5]`` to their corner polygons ``[..., 8]``.

    With ``u = (cos t, sin t)`` and ``v = (-sin t, cos t)`` the corners are ``c - w/2 u - h/2 v``,
    ``c + w/2 u - h/2 v``, ``c + w/2 u + h/2 v``, ``c - w/2 u + h/2 v`` -- clockwise on screen (y
    down). mmrotate's three versions all give this order, so ``version`` is only checked (it is
    accepted for call compatibility with mmrotate's ``obb2poly(rbboxes, version)``).
    """
    if version is not None:
        check_version(version)
    _check_last_dim(obbs, 5, "obbs")
    cx, cy, w, h, theta = obbs.unbind(-1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    wx, wy = w / 2 * cos, w / 2 * sin
    hx, hy = -h / 2 * sin, h / 2 * cos
    corners = [
        cx - wx - hx, cy - wy - hy,
        cx + wx - hx, cy + wy - hy,
        cx + wx + hx, cy + wy + hy,
        cx - wx + hx, cy - wy + hy,
    ]  # fmt: skip
    return torch.stack(corners, dim=-1)


def obb2poly_np(obbs: np.ndarray, version: str | None = None) -> np.ndarray:
    """Numpy :func:`obb2poly`: ``[..., 5]`` to ``[..., 8]``, same dtype.

    Unlike mmrotate's ``obb2poly_np`` this neither carries a score column nor reorders vertices;
    for a DOTA submission use ``best_begin_point(obb2poly_np(obbs))``.
    """
    return obb2poly(torch.from_numpy(np.ascontiguousarray(obbs)), version).numpy()


# ------------------------------------------------------------------------------ obb <-> horizontal
def _xyxy_oc(obbs: Tensor) -> tuple[Tensor, ...]:
    cx, cy, w, h, theta = obbs.unbind(-1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # QUIRK (mmrotate obb2xyxy_oc / obb2hbb_oc): no abs(), so only right for theta in [0, pi/2];
    # outside that range the extent shrinks or even goes negative.
    extent_x = cos * w + sin * h
    extent_y = sin * w + cos * h
    return cx, cy, extent_x, extent_y


def _xyxy_le135(obbs: Tensor) -> Tensor:
    # mmrotate goes through the corner polygon and takes its min / max.
    pts = obb2poly(obbs).reshape(*obbs.shape[:-1], 4, 2)
    return torch.cat([pts.amin(dim=-2), pts.amax(dim=-2)], dim=-1)


def _xyxy_le90(obbs: Tensor) -> Tensor:
    cx, cy, w, h, theta = obbs.unbind(-1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    half_x = torch.abs(w / 2 * cos) + torch.abs(h / 2 * sin)
    half_y = torch.abs(w / 2 * sin) + torch.abs(h / 2 * cos)
    return torch.stack([cx - half_x, cy - half_y, cx + half_x, cy + half_y], dim=-1)


@_both_backends
def obb2xyxy(obbs: Tensor, version: str = "oc") -> Tensor:
    """Circumscribed horizontal box ``[..., 4]`` (x1, y1, x2, y2) of rotated boxes ``[..., 5]``.

    mmrotate's per-version formulas: ``oc`` uses ``cos*w + sin*h`` / ``sin*w + cos*h`` without
    abs (QUIRK: only valid for oc angles in [0, pi/2]); ``le135`` takes the min / max of the
    corner polygon; ``le90`` uses ``|w/2 cos| + |h/2 sin|`` / ``|w/2 sin| + |h/2 cos|``. For a
    box in the version's range all three give the same box (up to rounding).
    """
    check_version(version)
    _check_last_dim(obbs, 5, "obbs")
    if version == "le135":
        return _xyxy_le135(obbs)
    if version == "le90":
        return _xyxy_le90(obbs)
    cx, cy, extent_x, extent_y = _xyxy_oc(obbs)
    return torch.stack([cx - extent_x / 2, cy - extent_y / 2, cx + extent_x / 2, cy + extent_y / 2], dim=-1)


@_both_backends
def obb2hbb(obbs: Tensor, version: str = "oc") -> Tensor:
    """Circumscribed horizontal box of rotated boxes, as a rotated box ``[..., 5]`` in ``version``.

    This is what mmrotate's ``assign_by_circumhbbox`` hands the assigner. Per-version QUIRKS kept:

    * ``oc``: centre unchanged, ``(cx, cy, extent_y, extent_x, pi/2)`` with the abs-free extents
      of :func:`obb2xyxy` (w is the vertical extent: the edge along pi/2).
    * ``le135``: from the polygon's min / max; ``(xc, yc, ex, ey, 0)`` if ``ex >= ey`` else
      ``(xc, yc, ey, ex, pi/2)``, centre recomputed as the middle of the min / max.
    * ``le90``: from the abs formulas; ``(xc, yc, ex, ey, 0)`` if ``ex >= ey`` else
      ``(xc, yc, ey, ex, -pi/2)``, centre recomputed as the middle of the box.
    """
    check_version(version)
    _check_last_dim(obbs, 5, "obbs")
    if version == "oc":
        cx, cy, extent_x, extent_y = _xyxy_oc(obbs)
        return torch.stack([cx, cy, extent_y, extent_x, torch.full_like(cx, HALF_PI)], dim=-1)
    if version == "le135":
        x1, y1, x2, y2 = _xyxy_le135(obbs).unbind(-1)
        xc, yc = (x2 + x1) / 2.0, (y2 + y1) / 2.0
        ex, ey = torch.abs(x2 - x1), torch.abs(y2 - y1)
        upright = ex < ey
        theta = torch.where(upright, torch.full_like(ex, HALF_PI), torch.zeros_like(ex))
    else:
        x1, y1, x2, y2 = _xyxy_le90(obbs).unbind(-1)
        xc, yc = (x1 + x2) * 0.5, (y1 + y2) * 0.5
        ex, ey = x2 - x1, y2 - y1
        upright = ~(ex >= ey)
        theta = torch.where(upright, torch.full_like(ex, -HALF_PI), torch.zeros_like(ex))
    w = torch.where(upright, ey, ex)
    h = torch.where(upright, ex, ey)
    return torch.stack([xc, yc, w, h, theta], dim=-1)


@_both_backends
def hbb2obb(xyxy: Tensor, version: str = "oc") -> Tensor:
    """Horizontal boxes ``[..., 4]`` (x1, y1, x2, y2) to rotated boxes ``[..., 5]`` in ``version``.

    ``oc``: always ``(xc, yc, height, width, pi/2)``; ``le135``: ``(xc, yc, width, height, 0)`` if
    width >= height else ``(xc, yc, height, width, pi/2)``; ``le90``: likewise with ``-pi/2``.
    """
    check_version(version)
    _check_last_dim(xyxy, 4, "xyxy")
    x1, y1, x2, y2 = xyxy.unbind(-1)
    xc, yc = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    width, height = x2 - x1, y2 - y1
    if version == "oc":
        return torch.stack([xc, yc, height, width, torch.full_like(xc, HALF_PI)], dim=-1)
    upright = ~(width >= height)
    theta = torch.where(
        upright, torch.full_like(xc, HALF_PI if version == "le135" else -HALF_PI), torch.zeros_like(xc)
    )
    w = torch.where(upright, height, width)
    h = torch.where(upright, width, height)
    return torch.stack([xc, yc, w, h, theta], dim=-1)


# --------------------------------------------------------------------------------- canonical form
@_both_backends
def regularize_obb(obbs: Tensor, version: str) -> Tensor:
    """The same rectangles ``[..., 5]``, re-parameterised canonically in ``version``.

    Any angle and either w / h order is accepted (a rectangle is unchanged by theta + pi, and by
    theta + pi/2 with w and h swapped). Results:

    * ``oc``: theta in (0, pi/2], w the edge along theta. A box whose edge lies exactly on a
      multiple of pi/2 gets theta == pi/2 (w = the vertical edge). Squares: w == h, so the swap
      is invisible; theta is reduced modulo pi/2.
    * ``le90`` / ``le135``: w >= h, theta in [-pi/2, pi/2) / [-pi/4, 3pi/4). When w < h the two
      are swapped and pi/2 is added; then theta is wrapped by multiples of pi, so a box exactly on
      the upper bound goes to the lower bound (pi/2 -> -pi/2; 3pi/4 -> -pi/4). Squares (w == h)
      are never swapped: their theta is only wrapped modulo pi (mmrotate's "swap only if w < h").

    The result is idempotent: ``regularize_obb(regularize_obb(b, v), v) == regularize_obb(b, v)``.
    Rounding that would land on the excluded bound is pulled back into range.
    """
    check_version(version)
    _check_last_dim(obbs, 5, "obbs")
    cx, cy, w, h, theta = obbs.unbind(-1)
    if version == "oc":
        r = torch.remainder(theta, HALF_PI)  # in [0, pi/2]; pi/2 only when rounding a tiny negative
        quarter_turns = torch.round((theta - r) / HALF_PI)
        odd = torch.remainder(quarter_turns, 2) != 0
        on_axis = r == 0
        swap = odd ^ on_axis  # an odd number of quarter turns swaps w / h; theta 0 -> pi/2 swaps again
        theta = torch.where(on_axis, torch.full_like(r, HALF_PI), r)
    else:
        low, high = _range_of(version)
        swap = w < h
        theta = norm_angle(torch.where(swap, theta + HALF_PI, theta), version)
        theta = torch.where(theta >= high, theta - math.pi, theta)
        theta = torch.where(theta < low, torch.full_like(theta, low), theta)
    w, h = torch.where(swap, h, w), torch.where(swap, w, h)
    return torch.stack([cx, cy, w, h, theta], dim=-1)


def convert_version(obbs: ArrayT, src: str, dst: str) -> ArrayT:
    """Re-express rotated boxes given in convention ``src`` in convention ``dst`` (same rectangles).

    Any valid box converts regardless of ``src`` (it is only validated), via :func:`regularize_obb`.
    Tensors or ndarrays ``[..., 5]``.
    """
    check_version(src)
    return regularize_obb(obbs, dst)


# ------------------------------------------------------------------------------- best begin point
@_both_backends
def best_begin_point(polys: Tensor) -> Tensor:
    """Re-start each polygon at the vertex that best matches its horizontal box, as DOTA expects.

    ``polys`` is ``[..., D]`` with ``D >= 8``: the first 8 columns are the polygon, any further
    columns (a score) are passed through. Of the 4 cyclic rotations of the vertices, the one
    minimising the summed distance of vertex j to hbb corner j -- (xmin, ymin), (xmax, ymin),
    (xmax, ymax), (xmin, ymax) -- is chosen; ties keep the earliest rotation (mmrotate's strict
    ``<``). The costs are computed in float64 and summed left to right, as mmrotate's Python loop
    does, so ties break identically. QUIRK kept: mmrotate starts the search at a cost of 1e8, so a
    polygon whose best cost is >= 1e8 (or NaN) keeps its order.
    """
    _check_last_dim(polys, 8, "polys", at_least=True)
    pts = polys[..., :8].reshape(*polys.shape[:-1], 4, 2)
    p64 = pts.to(torch.float64)
    lo, hi = p64.amin(dim=-2), p64.amax(dim=-2)
    targets = torch.stack(
        [lo, torch.stack([hi[..., 0], lo[..., 1]], -1), hi, torch.stack([lo[..., 0], hi[..., 1]], -1)], dim=-2
    )  # [..., 4, 2]
    cyclic = torch.tensor(_CYCLIC, device=polys.device)
    diff = p64[..., cyclic, :] - targets.unsqueeze(-3)  # [..., 4 rotations, 4 vertices, 2]
    dist = torch.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1])
    cost = ((dist[..., 0] + dist[..., 1]) + dist[..., 2]) + dist[..., 3]
    cost = torch.nan_to_num(cost, nan=math.inf)
    best = torch.argmin(cost, dim=-1)
    best = torch.where(cost.amin(dim=-1) < 1e8, best, torch.zeros_like(best))
    order = cyclic[best]  # [..., 4]
    reordered = torch.take_along_dim(pts, order.unsqueeze(-1), dim=-2).reshape(*polys.shape[:-1], 8)
    return torch.cat([reordered, polys[..., 8:]], dim=-1)
