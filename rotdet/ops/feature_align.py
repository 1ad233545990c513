"""Rotated feature alignment (R3Det's feature refinement), in pure PyTorch.

:func:`rotated_feature_align` reproduces mmcv 1.7.2's ``rotated_feature_align`` (the op behind
mmrotate's ``FeatureRefineModule``): each output location ``(n, c, h, w)`` is the input feature
there plus the bilinear samples of the same channel at the sample points of the box
``best_rboxes[n, h, w]`` scaled by ``spatial_scale``; ``points=1`` samples the box centre,
``points=5`` the centre and the four corners (the paper's variant).

mmcv's bilinear rule: a point with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` contributes 0;
otherwise negative coordinates are clamped to 0 and coordinates beyond the last row / column
sample the last row / column.

**mmcv quirk, reproduced by default.** mmcv reads the first box coordinate as *y* and the second as
*x* (its docstring says ``(cx, cx, h, w, a)``), while mmrotate passes ``(cx, cy, w, h, a)`` boxes:
mmrotate's R3Det therefore samples at the transposed point ``(y, x) = (cx, cy)`` (and builds the
corners with w/h and the angle in that transposed frame). mmrotate's released R3Det checkpoints were
trained with this, so ``mmcv_yx=True`` is the default; ``mmcv_yx=False`` samples at the box's own
points ``(x, y) = (cx, cy)``, an opt-in for training new models.

Gradients flow into ``features`` only (the boxes are treated as constants, as in mmcv).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rotated_feature_align"]


def _sample_points(boxes: Tensor, spatial_scale: float, points: int, mmcv_yx: bool) -> tuple[Tensor, Tensor]:
    """Sample coordinates ``(py, px)``, each ``[N, P, H*W]``, in feature-map pixels."""
    b = boxes.detach()
    first, second = b[..., 0] * spatial_scale, b[..., 1] * spatial_scale
    if mmcv_yx:
        y, x = first, second
    else:
        x, y = first, second
    ys, xs = [y], [x]
    if points == 5:
        w, h, a = b[..., 2] * spatial_scale, b[..., 3] * spatial_scale, b[..., 4]
        cos, sin = torch.cos(a), torch.sin(a)
        w2, h2 = w / 2, h / 2
        # (With mmcv_yx, this is mmcv's transposed frame: x is the box's second coordinate.)
        wx, wy = cos * w2, sin * w2
        hx, hy = -sin * h2, cos * h2
        xs += [x + wx + hx, x - wx + hx, x - wx - hx, x + wx - hx]
        ys += [y + wy + hy, y - wy + hy, y - wy - hy, y + wy - hy]
    return torch.stack(ys, dim=1), torch.stack(xs, dim=1)


def _bilinear(flat: Tensor, y: Tensor, x: Tensor, height: int, width: int) -> Tensor:
    """mmcv's ``bilinear_interpolate`` of ``flat [N, C, H*W]`` at ``y, x [N, L]`` -> ``[N, C, L]``."""
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y = y.clamp(min=0)
    x = x.clamp(min=0)
    y_low = y.floor()
    x_low = x.floor()
    at_bottom = y_low >= height - 1
    at_right = x_low >= width - 1
    y_low = torch.where(at_bottom, torch.full_like(y_low, height - 1), y_low)
    x_low = torch.where(at_right, torch.full_like(x_low, width - 1), x_low)
    y = torch.where(at_bottom, y_low, y)
    x = torch.where(at_right, x_low, x)
    y_high = torch.where(at_bottom, y_low, y_low + 1)
    x_high = torch.where(at_right, x_low, x_low + 1)
    ly = (y - y_low).to(flat.dtype)
    lx = (x - x_low).to(flat.dtype)
    y_low, y_high, x_low, x_high = (t.long() for t in (y_low, y_high, x_low, x_high))
    channels = flat.shape[1]

    def gather(yi: Tensor, xi: Tensor) -> Tensor:
        idx = (yi * width + xi).clamp(0, height * width - 1)
        return flat.gather(2, idx[:, None, :].expand(-1, channels, -1))

    v1, v2 = gather(y_low, x_low), gather(y_low, x_high)
    v3, v4 = gather(y_high, x_low), gather(y_high, x_high)
    lx, ly = lx[:, None, :], ly[:, None, :]
    v_low = (v2 - v1) * lx + v1
    v_high = (v4 - v3) * lx + v3
    val = (v_high - v_low) * ly + v_low
    return val.masked_fill(outside[:, None, :], 0.0)


def rotated_feature_align(
    features: Tensor, best_rboxes: Tensor, spatial_scale: float = 1 / 8, points: int = 1, mmcv_yx: bool = True
) -> Tensor:
    """``features + sum_p bilinear(features, point_p(best_rboxes))`` as mmcv's op.

    Args:
        features: ``[N, C, H, W]``.
        best_rboxes: ``[N, H, W, 5]`` (or anything reshapeable to it, e.g. ``[N * H * W, 5]``)
            rotated boxes ``(cx, cy, w, h, a)`` in image pixels, one per feature location.
        spatial_scale: feature pixels per image pixel (``1 / stride``).
        points: 1 (centre, mmrotate's default) or 5 (centre + 4 corners).
        mmcv_yx: reproduce mmcv's transposed reading of the box (see the module note).

    Returns:
        ``[N, C, H, W]``.
    """
    if points not in (1, 5):
        raise ValueError(f"points must be 1 or 5, got {points}")
    n, c, h, w = features.shape
    # coordinates in at least float32 (bf16 cannot hold pixel positions), samples in the features' dtype
    boxes = best_rboxes.reshape(n, h * w, 5).to(torch.promote_types(features.dtype, torch.float32))
    py, px = _sample_points(boxes, float(spatial_scale), points, mmcv_yx)
    flat = features.reshape(n, c, h * w)
    sampled = _bilinear(flat, py.reshape(n, -1), px.reshape(n, -1), h, w)
    sampled = sampled.reshape(n, c, points, h, w)
    out = features
    for i in range(points):  # mmcv's accumulation order: feature, then each point in turn
        out = out + sampled[:, :, i]
    return out
