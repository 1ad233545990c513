"""IoU of quadrilaterals as DOTA_devkit's ``polyiou`` defines it, vectorised in float64 (numpy).

The devkit orients both polygons counter-clockwise (it reverses one whose shoelace area is
negative), cuts each into the four signed triangles ``(o, p_i, p_i+1)`` spanned by an origin ``o`` and
its edges, and sums the pairwise intersection areas of these triangles, each with the product of the
two triangles' signs. For simple polygons (convex or not) that sum is the area of the intersection;
for self-intersecting ones it is the integral of the product of the two winding numbers, a signed
quantity that can even exceed either area. The union is ``|area(P)| + |area(Q)| - intersection``.

Here the same sum is computed for many pairs at once. Two counter-clockwise triangles sharing the
apex ``o`` intersect in a convex polygon whose boundary integral ``(x dy - y dx) / 2`` only picks up
the parts of the two far edges ``a b`` and ``c d`` (edges through ``o`` contribute nothing), so each
of the 16 triangle pairs costs two segment clippings against three half-planes. The sum does not
depend on where ``o`` is, so each pair is computed around the mean of its first polygon's vertices,
which keeps float64 cancellation small (the devkit uses the image origin, which agrees to within its
own rounding, ~1e-10 of IoU at DOTA scales).

Shared boundary counts once: an edge of the first triangle lying on the far edge of the second counts
when both run the same way, an edge of the second lying on the first's never does, so identical
polygons have IoU exactly 1 and polygons touching along an edge 0.

Pairs of two strictly convex quadrilaterals (nearly every pair in DOTA: detections are rectangles,
annotations almost always convex) take a shorter way to the same sum. There the sum is the area of
the intersection, whose boundary is the parts of each polygon's edges inside the other: each edge is
clipped against the other polygon's four half-planes (8 edges x 4 planes instead of 16 triangle
pairs x 2 edges x 3 planes), with the same shared-boundary rule (the first polygon's edges own it).
It agrees with the triangle sum to rounding (~1e-15 of the IoU; both are ~1e-10 from the devkit's
own rounding), keeps IoU 1 for identical polygons and 0 for polygons touching along an edge.
"""

from __future__ import annotations

import numpy as np

from rotdet.evaluation._matching import hbb_overlap_pairs

__all__ = ["polygon_areas", "polygon_intersection", "polygon_iou", "polygon_iou_aligned"]

# Pairs per vectorised step: each [4, 4, K] float64 temporary is 128 bytes a pair, so a step's
# temporaries stay in a CPU's L2 cache.
_PAIRS_PER_CHUNK = 1 << 11


def _clip_fraction(sx, sy, ex, ey, ux, uy, vx, vy, owns_shared_edges: bool) -> np.ndarray:
    """Fraction of segment ``s -> e`` inside the counter-clockwise triangle ``(0, u, v)``.

    All inputs are float64 arrays of one shape; so is the result. The triangle's edges are
    ``0 -> u``, ``u -> v``, ``v -> 0``; a point is inside an edge where the cross product of the edge
    with (point - edge start) is >= 0. Shared-boundary rule: see the module docstring.
    """
    t_enter = np.zeros_like(sx)
    t_leave = np.ones_like(sx)
    dropped = np.zeros(sx.shape, dtype=bool)
    esx, esy = ex - sx, ey - sy
    # (edge start, edge direction) of the three edges; the origin start is written out as 0.
    for ox, oy, dx, dy in ((None, None, ux, uy), (ux, uy, vx - ux, vy - uy), (vx, vy, -vx, -vy)):
        if ox is None:
            g0 = dx * sy - dy * sx
            g1 = dx * ey - dy * ex
        else:
            g0 = dx * (sy - oy) - dy * (sx - ox)
            g1 = dx * (ey - oy) - dy * (ex - ox)
        out0, out1 = g0 < 0, g1 < 0
        if owns_shared_edges:
            collinear = (g0 == 0) & (g1 == 0)
            dropped |= (out0 & out1) | (collinear & (dx * esx + dy * esy <= 0))
        else:
            dropped |= (g0 <= 0) & (g1 <= 0)
        denom = g0 - g1
        t_cross = g0 / np.where(denom == 0, 1.0, denom)
        np.maximum(t_enter, t_cross, out=t_enter, where=out0)
        np.minimum(t_leave, t_cross, out=t_leave, where=out1)
    frac = np.maximum(t_leave - t_enter, 0.0)
    frac[dropped] = 0.0
    return frac


def _coordinates(*polys: np.ndarray) -> list[np.ndarray]:
    """x and y ``[4, K]`` of each ``[K, 8]`` array, C-contiguous (a transposed view would make every
    later ``[4, 4, K]`` operation stride over memory)."""
    out = []
    for p in polys:
        out += [np.ascontiguousarray(p[:, 0::2].T), np.ascontiguousarray(p[:, 1::2].T)]
    return out


def _oriented_triangles(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """For vertices ``[4, K]`` (origin already moved): each edge's triangle with the origin, as
    counter-clockwise far-edge endpoints ``a, b`` (``[4, K]`` each coordinate) and its sign
    (+1, -1, or 0 for a degenerate triangle), plus ``|cross(a, b)|``."""
    x2, y2 = np.roll(x, -1, 0), np.roll(y, -1, 0)
    cross = x * y2 - y * x2
    flip = cross < 0
    ax, ay = np.where(flip, x2, x), np.where(flip, y2, y)
    bx, by = np.where(flip, x, x2), np.where(flip, y, y2)
    return ax, ay, bx, by, np.sign(cross), np.abs(cross)


def _shoelace2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x * np.roll(y, -1, 0) - y * np.roll(x, -1, 0)).sum(axis=0)


def _intersection_chunk(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Signed devkit intersection of aligned pairs ``[K, 8]`` float64."""
    px, py = p[:, 0::2].T, p[:, 1::2].T  # [4, K] (views: their layout fixes the sums' rounding)
    qx, qy = q[:, 0::2].T, q[:, 1::2].T
    cx, cy = px.mean(axis=0), py.mean(axis=0)
    px, py, qx, qy = px - cx, py - cy, qx - cx, qy - cy
    ax, ay, bx, by, s1, cross1 = _oriented_triangles(px, py)
    cx_, cy_, dx_, dy_, s2, cross2 = _oriented_triangles(qx, qy)
    # Triangle i of P along dim 0, triangle j of Q along dim 1, pairs last: [4, 4, K].
    k = px.shape[1]
    a = [np.broadcast_to(t[:, None], (4, 4, k)) for t in (ax, ay, bx, by)]
    c = [np.broadcast_to(t[None], (4, 4, k)) for t in (cx_, cy_, dx_, dy_)]
    frac_p = _clip_fraction(*a, *c, owns_shared_edges=True)
    frac_q = _clip_fraction(*c, *a, owns_shared_edges=False)
    twice = frac_p * cross1[:, None] + frac_q * cross2[None]
    signed = (twice * (s1[:, None] * s2[None])).sum(axis=(0, 1)) / 2
    # The devkit reverses a polygon of negative area first, which negates all its triangle signs.
    orient = np.where(_shoelace2(px, py) < 0, -1.0, 1.0) * np.where(_shoelace2(qx, qy) < 0, -1.0, 1.0)
    return signed * orient


def _convex_orientation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """+1 / -1 for quadrilaterals (vertices ``[4, K]``) whose four turns are all left / all right
    (strictly convex, counter-clockwise / clockwise in (x, y) axes), 0 for any other."""
    ex, ey = np.roll(x, -1, 0) - x, np.roll(y, -1, 0) - y
    turn = ex * np.roll(ey, -1, 0) - ey * np.roll(ex, -1, 0)
    return np.where((turn > 0).all(axis=0), 1.0, np.where((turn < 0).all(axis=0), -1.0, 0.0))


def _clipped_edges(sx, sy, sign_s, hx, hy, sign_h, owns_shared_edges: bool) -> np.ndarray:
    """Twice the boundary integral ``x dy - y dx`` over the parts of the edges of convex polygon S
    inside convex polygon H, S traversed counter-clockwise (vertices ``[4, K]``, orientations
    ``sign_*`` of +-1). Edge ``i`` is ``s_i -> s_i+1``; H's half-plane ``k`` is left of
    ``h_k -> h_k+1`` when H turns left (right when it turns right)."""
    # H's edge directions, negated for a clockwise H (exactly: the sides below then are negated).
    dhx, dhy = (np.roll(hx, -1, 0) - hx) * sign_h, (np.roll(hy, -1, 0) - hy) * sign_h  # [4 (k), K]
    # g[i, k]: side of vertex s_i w.r.t. plane k (> 0 inside); an edge's ends are s_i and s_i+1.
    g0 = dhx[None] * (sy[:, None] - hy[None]) - dhy[None] * (sx[:, None] - hx[None])
    g1 = np.roll(g0, -1, 0)
    out0, out1 = g0 < 0, g1 < 0
    if owns_shared_edges:
        dropped = (out0 & out1).any(axis=1)
        collinear = (g0 == 0) & (g1 == 0)
        if collinear.any():  # rare: an edge on the line of one of H's edges
            esx, esy = (np.roll(sx, -1, 0) - sx) * sign_s, (np.roll(sy, -1, 0) - sy) * sign_s
            same_way = dhx[None] * esx[:, None] + dhy[None] * esy[:, None] > 0
            dropped |= (collinear & ~same_way).any(axis=1)
    else:
        dropped = ((g0 <= 0) & (g1 <= 0)).any(axis=1)
    # Masks by multiplication (np.where and masked reductions branch per element, several times
    # slower); the denominator made non-zero keeps every t finite, so that t * False is 0.
    denom = g0 - g1
    denom += denom == 0
    t = g0 / denom
    t_enter = (t * out0).max(axis=1)  # t where the edge enters plane k, else 0
    t_leave = (t * out1 + ~out1).min(axis=1)  # t where it leaves, else 1
    frac = np.maximum(t_leave - t_enter, 0.0) * ~dropped
    cross = sx * np.roll(sy, -1, 0) - sy * np.roll(sx, -1, 0)
    return (frac * cross).sum(axis=0) * sign_s


def _convex_intersection_chunk(p: np.ndarray, q: np.ndarray, sign_p, sign_q) -> np.ndarray:
    """Intersection areas of aligned pairs ``[K, 8]`` of strictly convex quadrilaterals."""
    px, py, qx, qy = _coordinates(p, q)
    cx, cy = px.mean(axis=0), py.mean(axis=0)
    px, py, qx, qy = px - cx, py - cy, qx - cx, qy - cy
    twice = _clipped_edges(px, py, sign_p, qx, qy, sign_q, True)
    twice += _clipped_edges(qx, qy, sign_q, px, py, sign_p, False)
    return twice / 2


def _np64(polys) -> np.ndarray:
    if hasattr(polys, "detach"):  # a torch tensor (without importing torch)
        polys = polys.detach().cpu().numpy()
    return np.ascontiguousarray(polys, dtype=np.float64).reshape(-1, 8)


def polygon_intersection(polys1, polys2) -> np.ndarray:
    """The devkit's (signed) intersection areas ``[K]`` of aligned pairs of quadrilaterals ``[K, 8]``
    (numpy or torch), as float64 numpy; the plain intersection area for simple polygons."""
    p, q = _np64(polys1), _np64(polys2)
    if p.shape != q.shape:
        raise ValueError(f"expected two [K, 8] polygon arrays of one shape, got {p.shape} and {q.shape}")
    out = np.empty(p.shape[0], dtype=np.float64)
    sign_p = _convex_orientation(*_coordinates(p))
    sign_q = _convex_orientation(*_coordinates(q))
    convex = (sign_p != 0) & (sign_q != 0)
    for sel, fast in ((np.flatnonzero(convex), True), (np.flatnonzero(~convex), False)):
        for start in range(0, len(sel), _PAIRS_PER_CHUNK):
            i = sel[start : start + _PAIRS_PER_CHUNK]
            if fast:
                out[i] = _convex_intersection_chunk(p[i], q[i], sign_p[i], sign_q[i])
            else:
                out[i] = _intersection_chunk(p[i], q[i])
    return out


def polygon_areas(polys) -> np.ndarray:
    """Signed shoelace areas ``[K]`` (float64) of quadrilaterals ``[K, 8]``: > 0 counter-clockwise in
    (x, y) axes, i.e. clockwise on screen (y down)."""
    p = _np64(polys)
    x, y = p[:, 0::2].T, p[:, 1::2].T
    return _shoelace2(x - x.mean(axis=0), y - y.mean(axis=0)) / 2


def polygon_iou_aligned(polys1, polys2) -> np.ndarray:
    """DOTA_devkit's ``iou_poly`` of aligned pairs ``[K, 8]`` x ``[K, 8]`` -> ``[K]`` float64 numpy.

    ``inter / (|area1| + |area2| - inter)`` with IEEE division, as the devkit's C++: a zero union
    gives NaN (0 / 0) or +-inf, exactly where the devkit does.
    """
    p, q = _np64(polys1), _np64(polys2)
    inter = polygon_intersection(p, q)
    union = np.abs(polygon_areas(p)) + np.abs(polygon_areas(q)) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def polygon_hbbs(polys) -> np.ndarray:
    """Horizontal boxes ``[K, 4]`` (xmin, ymin, xmax, ymax) of quadrilaterals ``[K, 8]`` (float64)."""
    p = _np64(polys)
    out = np.empty((len(p), 4))
    # Column by column: numpy's reductions over a short axis cost ~10x more. (min/max are exact;
    # a NaN coordinate gives NaN as p.min(axis=1) does.)
    for k, fn in enumerate((np.minimum, np.minimum, np.maximum, np.maximum)):
        c = k % 2
        out[:, k] = fn(fn(p[:, c], p[:, c + 2]), fn(p[:, c + 4], p[:, c + 6]))
    return out


def polygon_iou(polys1, polys2) -> np.ndarray:
    """IoU matrix ``[N, M]`` (float64 numpy) of quadrilaterals ``[N, 8]`` and ``[M, 8]``, by
    :func:`polygon_iou_aligned` on the pairs whose horizontal boxes overlap or touch; 0 elsewhere."""
    p, q = _np64(polys1), _np64(polys2)
    out = np.zeros((p.shape[0], q.shape[0]), dtype=np.float64)
    for r, c in hbb_overlap_pairs(polygon_hbbs(p), polygon_hbbs(q)):
        out[r, c] = polygon_iou_aligned(p[r], q[c])
    return out
