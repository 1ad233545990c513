"""Differentiable IoU of aligned rotated-box pairs: mmcv 1.x's ``diff_iou_rotated_2d``, in PyTorch.

mmrotate's ``RotatedIoULoss`` (Rotated FCOS) trains on this IoU, so its values *and* gradients must
be mmcv's. The intersection polygon of two boxes is built from 24 candidate vertices -- the four
corners of each box that lie in the other, and the 16 edge-edge crossings -- of which the valid
ones are put in angular order and summed with the shoelace formula. Gradients flow through the
vertex coordinates; the order is a non-differentiable index, as in mmcv.

The order is mmcv's CUDA ``diff_iou_rotated_sort_vertices_forward`` kernel (which has no CPU
version) step for step, so that ties and degenerate pairs come out the same:

* the vertices are centred on the mean of the valid ones;
* a selection sort: slot ``j`` takes, scanning candidates ``k = 0..23`` in order, every valid
  candidate "smaller" than the running minimum (which starts at ``(1, -1e-8)``) and, after slot 0,
  "larger" than the vertex of slot ``j - 1``; a slot where none qualifies takes candidate 0;
* "smaller" is the kernel's comparator: points within 1e-8 in x and y are equal (never smaller);
  ``y > 0`` comes before ``y < 0``; within a half plane by ``|x| x / (x^2 + y^2 + 1e-8)``, ascending
  (``y > 0``) or descending (``y < 0``) with a 1e-8 margin; a point with ``y == 0`` exactly is never
  smaller nor larger than anything (so it is never taken);
* the slot after the last valid vertex repeats slot 0 and the rest point at the first invalid
  crossing (a zero vertex); with fewer than 3 valid vertices every slot does (area 0);
* two identical boxes (8 valid corners, each repeated) keep the first four slots only.

The comparator runs in the input's precision with the kernel's mixed float/double constants; on
CUDA the kernel may contract ``x*x + y*y`` into a fused multiply-add, which can flip a comparison
only between points equal to within rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_corners", "diff_iou_rotated_2d", "sort_vertex_indices"]

_EPS = 1e-8  # mmcv's EPSILON, in the Python and the CUDA code alike
_CORNERS = 4
_CROSSINGS_OFFSET = 8  # candidates 8..23 are the edge crossings
_SLOTS = 9  # at most 8 polygon vertices, plus the closing repeat of the first


def box_corners(boxes: Tensor) -> Tensor:
    """``[..., 5]`` boxes ``(x, y, w, h, a)`` -> ``[..., 4, 2]`` corners in mmcv's order:
    ``(w/2, h/2), (-w/2, h/2), (-w/2, -h/2), (w/2, -h/2)`` turned by ``a`` about the centre."""
    x, y, w, h, a = boxes.unbind(-1)
    sx = boxes.new_tensor([0.5, -0.5, -0.5, 0.5])
    sy = boxes.new_tensor([0.5, 0.5, -0.5, -0.5])
    dx, dy = sx * w[..., None], sy * h[..., None]
    cos, sin = torch.cos(a)[..., None], torch.sin(a)[..., None]
    return torch.stack([dx * cos - dy * sin + x[..., None], dx * sin + dy * cos + y[..., None]], dim=-1)


def _edge_crossings(c1: Tensor, c2: Tensor) -> tuple[Tensor, Tensor]:
    """Crossings of every edge of ``c1 [M, 4, 2]`` with every edge of ``c2``: ``[M, 4, 4, 2]``
    points (zero where there is none) and the ``[M, 4, 4]`` mask. Both line parameters must be in
    the open interval (0, 1); parallel edges never cross."""
    p1, p2 = c1[:, :, None, :], c1.roll(-1, dims=1)[:, :, None, :]
    p3, p4 = c2[:, None, :, :], c2.roll(-1, dims=1)[:, None, :, :]
    x1, y1, x2, y2 = p1[..., 0], p1[..., 1], p2[..., 0], p2[..., 1]
    x3, y3, x4, y4 = p3[..., 0], p3[..., 1], p4[..., 0], p4[..., 1]
    den = (x1 - x2) * (y3 - y4) - (y1 - y2) * (x3 - x4)
    num_t = (x1 - x3) * (y3 - y4) - (y1 - y3) * (x3 - x4)
    num_u = (x1 - x2) * (y1 - y3) - (y1 - y2) * (x1 - x3)
    with torch.no_grad():
        parallel = den == 0
        t, u = num_t / den, -num_u / den
        valid = ~parallel & (t > 0) & (t < 1) & (u > 0) & (u < 1)
    # mmcv's point uses den + eps (finite even where the mask drops it, so no NaN gradient)
    t = num_t / (den + _EPS)
    points = torch.stack([x1 + t * (x2 - x1), y1 + t * (y2 - y1)], dim=-1)
    return points * valid[..., None].to(points.dtype), valid


def _corners_inside(c1: Tensor, c2: Tensor) -> Tensor:
    """``[M, 4]``: corner ``i`` of ``c1`` lies in the rectangle ``c2`` (edges included, with
    mmcv's 1e-6 tolerance on the projections onto two adjacent edges)."""
    with torch.no_grad():
        a, b, d = c2[:, 0:1], c2[:, 1:2], c2[:, 3:4]
        ab, ad, am = b - a, d - a, c1 - a
        on_ab = (ab * am).sum(-1) / (ab * ab).sum(-1)
        on_ad = (ad * am).sum(-1) / (ad * ad).sum(-1)
        return (on_ab > -1e-6) & (on_ab < 1 + 1e-6) & (on_ad > -1e-6) & (on_ad < 1 + 1e-6)


def _norms(x: Tensor, y: Tensor) -> Tensor:
    # float n = x*x + y*y + EPSILON: the sum in the input precision, the double constant added in
    # double, the result rounded back
    return ((x * x + y * y).double() + _EPS).to(x.dtype)


def _before(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor) -> Tensor:
    """The kernel's ``compare_vertices(x1, y1, x2, y2)``: does point 1 come before point 2
    (broadcasting, bool)."""
    equal = ((x1 - x2).abs().double() < _EPS) & ((y2 - y1).abs().double() < _EPS)
    diff = (x1.abs() * x1 / _norms(x1, y1) - x2.abs() * x2 / _norms(x2, y2)).double()
    upper_first = (y1 > 0) & (y2 < 0)
    both_upper = (y1 > 0) & (y2 > 0) & (diff > _EPS)
    both_lower = (y1 < 0) & (y2 < 0) & (diff < _EPS)
    return ~equal & (upper_first | both_upper | both_lower)


@torch.no_grad()
def sort_vertex_indices(vertices: Tensor, mask: Tensor) -> Tensor:
    """The kernel's vertex order (see the module docstring).

    Args:
        vertices: ``[M, 24, 2]`` candidates (4 + 4 corners, then 16 crossings).
        mask: ``[M, 24]`` bool, the valid ones.

    Returns:
        ``[M, 9]`` int64 indices into the candidates.
    """
    m, n = mask.shape
    num_valid = mask.sum(1)
    mean = (vertices * mask[..., None].to(vertices.dtype)).sum(1, keepdim=True) / num_valid[:, None, None]
    xs, ys = (vertices - mean).unbind(-1)  # [M, 24]
    # before[m, a, b]: candidate a comes before candidate b; first[m, k]: k before the start value
    before = _before(xs[:, :, None], ys[:, :, None], xs[:, None, :], ys[:, None, :])
    start_x = xs.new_ones(())
    start_y = torch.tensor(-_EPS, dtype=xs.dtype, device=xs.device)  # float y_min = -EPSILON
    first = _before(xs, ys, start_x, start_y)
    # pad: the first invalid crossing (a zero vertex with zero gradient)
    invalid_crossing = ~mask[:, _CROSSINGS_OFFSET:]
    pad = invalid_crossing.to(torch.int8).argmax(1) + _CROSSINGS_OFFSET
    idx = pad[:, None].repeat(1, _SLOTS)
    rows = torch.arange(m, device=mask.device)
    taken = torch.zeros(m, dtype=torch.long, device=mask.device)
    slots = min(int(num_valid.max()) if m else 0, _SLOTS - 1)
    for j in range(slots):
        eligible = mask if j == 0 else mask & before[rows, taken]  # after slot j - 1
        best = torch.full((m,), -1, dtype=torch.long, device=mask.device)  # -1: the start value
        for k in range(n):
            beats = torch.where(best < 0, first[:, k], before[rows, k, best.clamp(min=0)])
            best = torch.where(eligible[:, k] & beats, k, best)
        taken = best.clamp(min=0)  # nothing qualified: candidate 0, as the kernel's i_take
        idx[:, j] = torch.where(j < num_valid, taken, idx[:, j])
    closing = num_valid.clamp(max=_SLOTS - 1)
    idx[rows, closing] = idx[:, 0].clone()
    slot = torch.arange(_SLOTS, device=mask.device)
    idx = torch.where(slot[None] > closing[:, None], pad[:, None], idx)
    # identical boxes: the 8 corners pair up; keep the first four (and close the polygon there)
    repeats = (idx[:, :4, None] == idx[:, None, 4:8]).sum((1, 2))
    identical = (num_valid == 8) & (repeats == 4)
    square = torch.cat([idx[:, :4], idx[:, :1], pad[:, None].expand(-1, _SLOTS - 5)], dim=1)
    idx = torch.where(identical[:, None], square, idx)
    return torch.where((num_valid < 3)[:, None], pad[:, None], idx)


def _intersection_area(c1: Tensor, c2: Tensor) -> Tensor:
    """Intersection areas ``[M]`` of the rectangles with corners ``c1, c2 [M, 4, 2]``."""
    crossings, crossing_mask = _edge_crossings(c1, c2)
    vertices = torch.cat([c1, c2, crossings.reshape(-1, 16, 2)], dim=1)
    mask = torch.cat([_corners_inside(c1, c2), _corners_inside(c2, c1), crossing_mask.reshape(-1, 16)], 1)
    idx = sort_vertex_indices(vertices, mask)
    ring = vertices.gather(1, idx[..., None].expand(-1, -1, 2))  # [M, 9, 2]
    cross = ring[:, :-1, 0] * ring[:, 1:, 1] - ring[:, :-1, 1] * ring[:, 1:, 0]
    return cross.sum(1).abs() / 2


def diff_iou_rotated_2d(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of aligned pairs of rotated boxes, differentiable (mmcv's ``diff_iou_rotated_2d``).

    Args:
        boxes1, boxes2: ``[..., 5]`` boxes ``(x, y, w, h, a)``, ``a`` in radians (any convention:
            the corners are what count); mmcv takes ``[B, N, 5]``.

    Returns:
        ``[...]`` IoU of ``boxes1[i]`` and ``boxes2[i]`` (in their dtype). Like mmcv there is no
        epsilon in the union: two empty boxes give NaN.
    """
    if boxes1.shape != boxes2.shape or boxes1.shape[-1] != 5:
        raise ValueError(
            f"need two [..., 5] tensors of one shape, got {tuple(boxes1.shape)}, {tuple(boxes2.shape)}"
        )
    lead = boxes1.shape[:-1]
    b1, b2 = boxes1.reshape(-1, 5), boxes2.reshape(-1, 5)
    inter = _intersection_area(box_corners(b1), box_corners(b2))
    union = b1[:, 2] * b1[:, 3] + b2[:, 2] * b2[:, 3] - inter
    return (inter / union).reshape(lead)
