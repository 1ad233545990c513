"""Point-in-quadrilateral test with the exact semantics of mmcv's ``points_in_polygons`` CUDA kernel.

mmrotate's ATSS assigner keeps a candidate anchor only if its centre passes this test against the
ground-truth polygon, so the result must match mmcv's kernel bit for bit, boundary cases included:

* even-odd ray casting towards +x over the edges (v0, v3), (v1, v0), (v2, v1), (v3, v2), in float32;
* an edge is skipped when the point's y is outside the edge's closed y-range;
* if the point equals an end of the edge, or lies exactly on the edge where the edge crosses the
  point's row, the walk **stops** and the parity counted so far is the answer.

So a point on a boundary is inside or outside depending on which edge it is met on: a point on the
first edge walked (v0-v3) or equal to v0 or v3 is outside (parity 0 so far); elsewhere it depends
on the crossings already counted. Points strictly inside or strictly outside are exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["points_in_polygons"]

# Point-polygon pairs per vectorised step, to bound the temporaries (each pair holds its four edges:
# ~16 bytes per float32 temporary).
_PAIRS_PER_CHUNK = 1 << 20


def _inside(px: Tensor, py: Tensor, poly: Tensor) -> Tensor:
    """Kernel semantics on broadcastable float32 ``px, py`` and ``poly [..., 8]``; returns bool.

    The four edges are evaluated side by side on a trailing dimension (the same float32 operations
    per edge as the kernel), then the walk's stop is applied: an edge counts only if no earlier edge
    stopped the walk.
    """
    # Edge i runs from vertex i back to vertex i - 1, as the kernel walks them.
    sx, sy = poly[..., 0::2], poly[..., 1::2]  # [..., 4]
    tx, ty = sx.roll(1, dims=-1), sy.roll(1, dims=-1)
    px, py = px[..., None], py[..., None]
    in_band = (py >= torch.minimum(sy, ty)) & (py <= torch.maximum(sy, ty))
    at_vertex = in_band & (((sx == px) & (sy == py)) | ((tx == px) & (ty == py)))
    crosses = in_band & ~at_vertex & ((sy < py) != (ty < py))
    # Where `crosses` is False the quotient may be inf/nan; it is never used there.
    x = sx + (py - sy) * (tx - sx) / (ty - sy)
    on_edge = crosses & (x == px)
    stops = at_vertex | on_edge
    walked = stops.cumsum(dim=-1) - stops.to(torch.int64) == 0  # no stop on an earlier edge
    crossings = (walked & crosses & ~on_edge & (x > px)).sum(dim=-1)
    return crossings % 2 == 1


def points_in_polygons(points: Tensor, polygons: Tensor, aligned: bool = False) -> Tensor:
    """Which points lie inside which quadrilaterals (mmcv ``points_in_polygons`` semantics).

    Args:
        points: ``[P, 2]`` points ``(x, y)``.
        polygons: ``[M, 8]`` quadrilaterals ``x1 y1 ... x4 y4`` (``[P, 8]`` when ``aligned``).
        aligned: test point ``k`` against polygon ``k`` only, as an assigner does for its candidates.

    Returns:
        ``[P, M]`` bool (``[P]`` when aligned). Computed in float32 like the kernel; see the module
        docstring for points exactly on a boundary.
    """
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be [P, 2], got {tuple(points.shape)}")
    if polygons.dim() != 2 or polygons.shape[1] != 8:
        raise ValueError(f"polygons must be [M, 8], got {tuple(polygons.shape)}")
    pts = points.to(torch.float32)
    polys = polygons.to(device=pts.device, dtype=torch.float32)
    if aligned:
        if pts.shape[0] != polys.shape[0]:
            raise ValueError(
                f"aligned mode needs as many points as polygons, got {pts.shape[0]} and {polys.shape[0]}"
            )
        return _inside(pts[:, 0], pts[:, 1], polys)
    out = torch.empty(pts.shape[0], polys.shape[0], dtype=torch.bool, device=pts.device)
    rows = max(1, _PAIRS_PER_CHUNK // max(1, polys.shape[0]))
    for start in range(0, pts.shape[0], rows):
        chunk = pts[start : start + rows]
        out[start : start + chunk.shape[0]] = _inside(chunk[:, 0, None], chunk[:, 1, None], polys[None])
    return out
