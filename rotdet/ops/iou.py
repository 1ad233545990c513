"""Exact IoU of rotated boxes in pure PyTorch (and a fused Triton kernel for CUDA tensors).

The area of the intersection of two convex polygons P and Q is the integral of ``(x dy - y dx) / 2``
around its boundary, and that boundary is made of the parts of P's edges inside Q and the parts of
Q's edges inside P. Each edge of a convex polygon meets another convex polygon in one segment, found
by clipping the edge against the other polygon's four half-planes (Cyrus-Beck). So the area is a sum
of eight clipped-edge terms: no vertex sorting, no variable-size polygon, a fixed amount of work per
pair that vectorises over millions of pairs on the CPU or a GPU.

Degenerate contacts are decided by one rule so that shared boundary is counted exactly once: an edge
of P lying on a line of Q's boundary counts when the two edges run the same way (P owns shared
boundary), and an edge of Q lying on a line of P's boundary never counts. Identical boxes thus give
IoU 1 and boxes touching along an edge give 0.

Precision: each pair is computed in the frame of its first box (origin at its centre, axes along its
sides), so the result depends on relative positions only, and in float64: in float32 the relative
placement of two 0.01 px thin boxes tens of pixels long is already off by ~1e-4 of their height.
Only pairs whose circumscribed horizontal boxes overlap are computed; the rest are 0 at almost no
cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from rotdet.structures.conversions import obb2xyxy

try:  # Triton ships with PyTorch's CUDA wheels; without it the PyTorch path runs everywhere.
    from rotdet.ops import _triton_iou
except ImportError:  # pragma: no cover - depends on the installation
    _triton_iou = None

__all__ = [
    "bbox_overlaps",
    "box_iou_rotated",
    "circumscribed_xyxy",
    "hbb_overlap_pairs",
    "rotated_box_intersection",
    "separate_groups",
]

# Pairs handled per vectorised step; each pair holds a few dozen float64 temporaries of 16 values.
# On the CPU small steps stay in cache (2**14 pairs: ~2 MB a temporary); a GPU wants big launches
# (2**18 pairs: ~30 MB a temporary). Either way memory is bounded whatever N x M is.
_PAIRS_PER_CHUNK = {"cpu": 1 << 14}
_PAIRS_PER_CHUNK_DEFAULT = 1 << 18
# Elements of the row-block x column-window horizontal-overlap mask built per step.
_MASK_ELEMS_PER_BLOCK = 1 << 24

# Corner signs in polygon order: (-w,-h), (+w,-h), (+w,+h), (-w,+h); counter-clockwise in (x, y).
_SIGN_X = (-1.0, 1.0, 1.0, -1.0)
_SIGN_Y = (-1.0, -1.0, 1.0, 1.0)

# Layout: every per-pair quantity is stored pair-last ([4, K] or [4, 4, K]) so that elementwise
# kernels run over long contiguous rows of K values, which vectorises well on CPUs; the natural
# [K, 4, 4] layout has 4-long inner rows and runs several times slower.


def _corners(half_w: Tensor, half_h: Tensor, cos: Tensor, sin: Tensor, cx: Tensor, cy: Tensor):
    """Corners ``x, y`` (each ``[4, K]``) of boxes given by half sizes, rotation and centre (``[K]``)."""
    sx = torch.tensor(_SIGN_X, dtype=half_w.dtype, device=half_w.device)[:, None]
    sy = torch.tensor(_SIGN_Y, dtype=half_w.dtype, device=half_w.device)[:, None]
    local_x = sx * half_w
    local_y = sy * half_h
    return cx + local_x * cos - local_y * sin, cy + local_x * sin + local_y * cos


def _clipped_edges_area(px: Tensor, py: Tensor, qx: Tensor, qy: Tensor, owns_shared_edges: bool) -> Tensor:
    """Twice the signed area contributed by the edges of polygon P that lie inside polygon Q.

    Args:
        px, py: ``[4, K]`` vertices of counter-clockwise convex quadrilaterals P, whose edges are
            integrated (edge i runs from vertex i to vertex i + 1).
        qx, qy: ``[4, K]`` vertices of the counter-clockwise convex quadrilaterals Q that clip them.
        owns_shared_edges: how an edge of P lying exactly on a line of Q's boundary counts: if True
            it counts when both edges run the same way, else it never counts.

    Returns:
        ``[K]``: the sum over the clipped segments ``[s0, s1]`` of ``cross(s0, s1)``.
    """
    ex, ey = px.roll(-1, 0) - px, py.roll(-1, 0) - py  # [4, K] edges of P
    cx, cy = qx.roll(-1, 0) - qx, qy.roll(-1, 0) - qy  # [4, K] edges of Q
    # d0[i, j] = cross(Q edge j, P vertex i - Q vertex j): > 0 strictly inside Q's edge j.
    d0 = cx[None] * (py[:, None] - qy[None]) - cy[None] * (px[:, None] - qx[None])  # [4 P, 4 Q, K]
    d1 = d0.roll(-1, 0)  # the end of P's edge i is vertex i + 1
    if owns_shared_edges:
        same_way = ex[:, None] * cx[None] + ey[:, None] * cy[None] > 0
        outside = ((d0 < 0) & (d1 < 0)) | ((d0 == 0) & (d1 == 0) & ~same_way)
    else:
        outside = (d0 <= 0) & (d1 <= 0)
    # Where both ends are outside the edge is dropped by `outside`, so t values there do not matter;
    # elsewhere an entering or leaving t lies in [0, 1]. Masks are applied by multiplication, which
    # is several times faster than torch.where on the CPU.
    denom = d0 - d1
    t_cross = d0 / (denom + (denom == 0))
    t_enter = (t_cross * (d0 < 0)).amax(dim=1)
    t_leave = 1 - ((1 - t_cross) * (d1 < 0)).amax(dim=1)
    dropped = outside[:, 0] | outside[:, 1] | outside[:, 2] | outside[:, 3]
    length = (t_leave - t_enter).clamp(min=0) * ~dropped
    # cross(p + t0 e, p + t1 e) = (t1 - t0) cross(p, e): one product per edge.
    return (length * (px * ey - py * ex)).sum(dim=0)


def _relative_pose(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, ...]:
    """Each pair in the frame of its first box: half sizes of both, b's turn, b's centre (``[K]`` float64)."""
    ax, ay, aw, ah, at = boxes1.to(torch.float64).T.contiguous()
    bx, by, bw, bh, bt = boxes2.to(torch.float64).T.contiguous()
    cos_a, sin_a = torch.cos(at), torch.sin(at)
    dx, dy = bx - ax, by - ay
    turn = bt - at
    return (
        aw / 2,
        ah / 2,
        bw / 2,
        bh / 2,
        torch.cos(turn),
        torch.sin(turn),
        cos_a * dx + sin_a * dy,
        cos_a * dy - sin_a * dx,
    )


def _intersection_torch(half_wa, half_ha, half_wb, half_hb, cos, sin, tx, ty) -> Tensor:
    """The PyTorch path of :func:`rotated_box_intersection`, from the relative pose of each pair."""
    zeros, ones = torch.zeros_like(tx), torch.ones_like(tx)
    pax, pay = _corners(half_wa, half_ha, ones, zeros, zeros, zeros)
    pbx, pby = _corners(half_wb, half_hb, cos, sin, tx, ty)
    twice = _clipped_edges_area(pax, pay, pbx, pby, True) + _clipped_edges_area(pbx, pby, pax, pay, False)
    valid = (half_wa > 0) & (half_ha > 0) & (half_wb > 0) & (half_hb > 0)
    return torch.where(valid, twice.clamp(min=0) / 2, zeros)


def rotated_box_intersection(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Exact intersection areas of aligned pairs of rotated boxes, in float64.

    Runs a fused Triton kernel on CUDA tensors when Triton is installed, else PyTorch ops; both
    follow the same rules (set ``ROTDET_DISABLE_TRITON=1`` to force the PyTorch path).

    Args:
        boxes1: ``[K, 5]`` boxes ``(cx, cy, w, h, theta)``.
        boxes2: ``[K, 5]`` boxes, paired with ``boxes1`` row by row.

    Returns:
        ``[K]`` float64 areas; 0 where either box has a non-positive width or height.
    """
    # Work in box a's frame: a becomes axis-aligned at the origin, b is moved and turned with it.
    pose = _relative_pose(boxes1, boxes2)
    if _triton_iou is not None and _triton_iou.available(boxes1.device):
        return _triton_iou.intersection(*pose)
    return _intersection_torch(*pose)


def _overlap_from_areas(inter: Tensor, area1: Tensor, area2: Tensor, mode: str) -> Tensor:
    """IoU or IoF from float64 intersections and areas; 0 (never NaN) where a box is empty."""
    inter = torch.minimum(inter, torch.minimum(area1, area2))
    base = area1 if mode == "iof" else area1 + area2 - inter
    return torch.where(
        base > 0, inter / base.clamp(min=torch.finfo(base.dtype).tiny), torch.zeros_like(inter)
    )


def _aligned_overlaps(boxes1: Tensor, boxes2: Tensor, mode: str) -> Tensor:
    """Float64 IoU/IoF ``[K]`` of aligned pairs, computed in bounded-memory chunks."""
    out = torch.empty(boxes1.shape[0], dtype=torch.float64, device=boxes1.device)
    step = _PAIRS_PER_CHUNK.get(boxes1.device.type, _PAIRS_PER_CHUNK_DEFAULT)
    for start in range(0, boxes1.shape[0], step):
        a = boxes1[start : start + step]
        b = boxes2[start : start + step]
        inter = rotated_box_intersection(a, b)
        area1 = _areas(a)
        area2 = _areas(b)
        out[start : start + a.shape[0]] = _overlap_from_areas(inter, area1, area2, mode)
    return out


def _areas(boxes: Tensor) -> Tensor:
    """Float64 areas ``[K]``; 0 for boxes with a non-positive side."""
    w, h = boxes[:, 2].to(torch.float64), boxes[:, 3].to(torch.float64)
    return torch.where((w > 0) & (h > 0), w * h, torch.zeros_like(w))


def bbox_overlaps(
    boxes1: Tensor, boxes2: Tensor, aligned: bool = False, mode: str = "iou", eps: float = 1e-6
) -> Tensor:
    """mmdet's ``bbox_overlaps`` (mode ``iou`` or ``giou``) of horizontal xyxy boxes: ``[N, 4]`` and
    ``[M, 4]`` -> ``[N, M]``, or ``[N]`` for ``aligned`` pairs of ``[N, 4]`` and ``[N, 4]``.

    mmdet's float order (``area1 + area2 - overlap``, the union at least ``eps``; for ``giou`` the
    enclosing box's area too) in one formula for both forms, so a pair's IoU has the same bits
    whether it is computed in a matrix or alone.
    """
    if mode not in ("iou", "giou"):
        raise ValueError(f"bbox_overlaps: mode must be 'iou' or 'giou', got {mode!r}")
    if not aligned:
        boxes1, boxes2 = boxes1[:, None], boxes2[None]
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = (area1 + area2 - overlap).clamp(min=eps)
    if mode == "iou":
        return overlap / union
    enclose = (
        torch.max(boxes1[..., 2:], boxes2[..., 2:]) - torch.min(boxes1[..., :2], boxes2[..., :2])
    ).clamp(min=0)
    enclose_area = (enclose[..., 0] * enclose[..., 1]).clamp(min=eps)
    return overlap / union - (enclose_area - union) / enclose_area


def circumscribed_xyxy(boxes: Tensor) -> Tensor:
    """Horizontal boxes ``[N, 4]`` (x1, y1, x2, y2) circumscribing rotated boxes ``[N, 5]``.

    The angle-independent ``|cos|, |sin|`` formula (mmrotate's le90 one), so any angle works; boxes
    with a non-positive side get an empty (inverted) box so they overlap nothing.
    """
    xyxy = obb2xyxy(boxes, "le90")
    invalid = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
    empty = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=boxes.dtype, device=boxes.device) * float("inf")
    return torch.where(invalid[:, None], empty, xyxy)


def separate_groups(xyxys: list[Tensor], groups: list[Tensor]) -> list[Tensor]:
    """Horizontal boxes moved so that boxes of different groups never overlap: group ``k`` goes to
    its own strip ``k`` of the x axis, for an overlap search only.

    Args:
        xyxys: float64 ``[N_i, 4]`` boxes (one or more sets searched against each other).
        groups: ``[N_i]`` non-negative int group of each box (a class, an image).

    float64 keeps the shifted edges exact enough (10^4 groups x 10^5 px strips leave ulps below
    1e-6 px). Computed on the device: no host sync.
    """
    los, his = [], []
    for x in xyxys:
        finite = torch.isfinite(x).all(dim=1)
        los.append(torch.where(finite, x[:, 0], math.inf).amin())
        his.append(torch.where(finite, x[:, 2], -math.inf).amax())
    lo, hi = torch.stack(los).amin(), torch.stack(his).amax()
    span = torch.where(hi >= lo, hi - lo + 1.0, 1.0)  # 1.0 when no box is finite
    out = []
    for x, g in zip(xyxys, groups, strict=True):
        shift = g.to(torch.float64) * span
        out.append(x + torch.stack((shift, torch.zeros_like(shift)) * 2, dim=1))
    return out


def hbb_overlap_pairs(
    xyxy1: Tensor, xyxy2: Tensor, upper_triangle: bool = False
) -> Iterator[tuple[Tensor, Tensor]]:
    """Index pairs ``(i, j)`` whose horizontal boxes overlap or touch, in chunks.

    A blocked sweep: rows and columns are sorted by left edge, rows are taken in blocks, and each
    block is compared (as a dense mask) only with the run of columns whose left edge lies within
    ``[block's first x1 - widest column, block's largest x2]``. On a large image most disjoint pairs
    are never looked at; on a small crowded one this is the plain dense mask, which is the fastest
    test there. The mask of a block never exceeds ``_MASK_ELEMS_PER_BLOCK`` elements.

    Args:
        xyxy1: ``[N, 4]`` row boxes (x1, y1, x2, y2).
        xyxy2: ``[M, 4]`` column boxes.
        upper_triangle: keep only pairs with row < column (when both sides are the same boxes).

    Yields:
        ``(rows, cols)`` int64 ``[P]`` index tensors, one block at a time.
    """
    n, m = xyxy1.shape[0], xyxy2.shape[0]
    if n == 0 or m == 0:
        return
    row_order = torch.argsort(xyxy1[:, 0])
    col_order = torch.argsort(xyxy2[:, 0])
    rows_sorted, cols_sorted = xyxy1[row_order], xyxy2[col_order]
    left_sorted = cols_sorted[:, 0].contiguous()
    widest = (xyxy2[:, 2] - xyxy2[:, 0]).max()
    block = min(n, max(64, _MASK_ELEMS_PER_BLOCK // m))
    firsts = torch.arange(0, n, block, device=xyxy1.device)
    # Column window of each row block: left edges in [first row's x1 - widest, block's max x2].
    right_most = torch.nn.functional.pad(rows_sorted[:, 2], (0, (-n) % block), value=-math.inf)
    right_most = right_most.view(-1, block).amax(dim=1)
    lo = torch.searchsorted(left_sorted, (rows_sorted[firsts, 0] - widest).contiguous(), side="left")
    hi = torch.searchsorted(left_sorted, right_most.contiguous(), side="right")
    for first, col_lo, col_hi in zip(firsts.tolist(), lo.tolist(), hi.tolist(), strict=True):
        if col_hi <= col_lo:
            continue
        r = rows_sorted[first : first + block, None, :]
        c = cols_sorted[None, col_lo:col_hi, :]
        mask = (
            (r[..., 0] <= c[..., 2])
            & (c[..., 0] <= r[..., 2])
            & (r[..., 1] <= c[..., 3])
            & (c[..., 1] <= r[..., 3])
        )
        if upper_triangle:  # in the mask, so that one nonzero (one host sync) finds the pairs
            mask &= row_order[first : first + block, None] < col_order[None, col_lo:col_hi]
        pairs = mask.nonzero()
        yield row_order[first + pairs[:, 0]], col_order[col_lo + pairs[:, 1]]


def box_iou_rotated(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", aligned: bool = False) -> Tensor:
    """Exact IoU (or IoF) of rotated boxes, as mmcv's ``box_iou_rotated``.

    Args:
        boxes1: ``[N, 5]`` boxes ``(cx, cy, w, h, theta)``, theta in radians (any convention: the
            value only depends on the rectangles).
        boxes2: ``[M, 5]`` boxes (``M == N`` when ``aligned``).
        mode: ``"iou"`` intersection over union, or ``"iof"`` intersection over the area of the box
            of ``boxes1``.
        aligned: pair row ``i`` of both inputs instead of all ``N x M`` pairs.

    Returns:
        ``[N, M]`` (or ``[N]`` when aligned) in the dtype of ``boxes1`` (float32 for integer
        input). Boxes with a non-positive width or height give 0, never NaN.
    """
    if mode not in ("iou", "iof"):
        raise ValueError(f"mode must be 'iou' or 'iof', got {mode!r}")
    if boxes1.shape[-1] != 5 or boxes2.shape[-1] != 5 or boxes1.dim() != 2 or boxes2.dim() != 2:
        raise ValueError(
            f"expected boxes of shape [N, 5] and [M, 5], got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    out_dtype = boxes1.dtype if boxes1.is_floating_point() else torch.float32
    boxes2 = boxes2.to(boxes1.device)
    if aligned:
        if boxes1.shape[0] != boxes2.shape[0]:
            raise ValueError(
                f"aligned mode needs as many boxes on both sides, got {boxes1.shape[0]} and {boxes2.shape[0]}"
            )
        return _aligned_overlaps(boxes1, boxes2, mode).to(out_dtype)

    n, m = boxes1.shape[0], boxes2.shape[0]
    out = torch.zeros(n, m, dtype=out_dtype, device=boxes1.device)
    if n == 0 or m == 0:
        return out
    xyxy1, xyxy2 = circumscribed_xyxy(boxes1.to(torch.float64)), circumscribed_xyxy(boxes2.to(torch.float64))
    for rows, cols in hbb_overlap_pairs(xyxy1, xyxy2):
        out[rows, cols] = _aligned_overlaps(boxes1[rows], boxes2[cols], mode).to(out_dtype)
    return out
