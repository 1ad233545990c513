"""S2A-Net's alignment convolution (mmrotate 0.3.4 ``AlignConv``) on torchvision's ``deform_conv2d``.

A ``k x k`` convolution whose samples, at each feature-map location, are not the regular grid
around the location but a ``k x k`` grid spread over that location's rotated box (the box divided
by the level's stride, cut into ``k x k`` cells along its own axes, rotated by its angle): the
features are read where the object is. :func:`align_conv_offsets` turns one box per location into
the offsets (sampling point minus regular grid point) that ``deform_conv2d`` adds, with mmrotate's
arithmetic and layout; :func:`align_conv` applies them (ReLU after, no bias, as mmrotate's module).

:func:`deform_conv2d_gather` is the same deformable convolution in plain tensor ops (gathers and one
matrix product), for the exported graph (``rotdet export``): ONNX has no torchvision op. It gives
torchvision's values up to float rounding; the model itself keeps torchvision's kernel.

Layout: torchvision's and mmcv's deformable convolutions read the same offset tensor,
``[B, 2 * k * k, H, W]`` with channel ``2 * j`` the y and ``2 * j + 1`` the x offset of kernel tap
``j`` (row-major over the kernel), and sample bilinearly with zeros outside the map.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import deform_conv2d

__all__ = ["align_conv", "align_conv_offsets", "deform_conv2d_gather"]


@torch.no_grad()
def align_conv_offsets(
    boxes: Tensor, featmap_size: tuple[int, int], stride: float, kernel_size: int = 3
) -> Tensor:
    """mmrotate's ``AlignConv.get_offset`` for a batch: the deformable-conv offsets that move each
    location's ``k x k`` taps onto its box.

    Args:
        boxes: ``[B, H * W, 5]`` one rotated box ``(cx, cy, w, h, angle)`` per location, in image
            pixels, row-major over the ``H x W`` map (S2A-Net's first-stage boxes).
        featmap_size: ``(H, W)``.
        stride: the level's stride (pixels per feature-map cell).
        kernel_size: ``k`` (odd).

    Returns:
        ``[B, 2 * k * k, H, W]`` offsets in feature-map cells, detached (mmrotate computes them
        under ``no_grad``: no gradient flows into the boxes).
    """
    batch = boxes.shape[0]
    feat_h, feat_w = int(featmap_size[0]), int(featmap_size[1])
    if boxes.shape[1] != feat_h * feat_w or boxes.shape[-1] != 5:
        raise ValueError(f"boxes {tuple(boxes.shape)} is not [B, {feat_h} * {feat_w}, 5]")
    dtype, device = boxes.dtype, boxes.device
    pad = (kernel_size - 1) // 2
    taps = torch.arange(-pad, pad + 1, dtype=dtype, device=device)
    tap_y, tap_x = torch.meshgrid(taps, taps, indexing="ij")
    tap_x, tap_y = tap_x.reshape(-1), tap_y.reshape(-1)  # [k*k], row-major over the kernel

    # the taps of the plain convolution at every location
    grid_y, grid_x = torch.meshgrid(
        torch.arange(feat_h, dtype=dtype, device=device),
        torch.arange(feat_w, dtype=dtype, device=device),
        indexing="ij",
    )
    conv_x = grid_x.reshape(-1)[:, None] + tap_x  # [HW, k*k]
    conv_y = grid_y.reshape(-1)[:, None] + tap_y

    # the taps spread over the box, in feature-map cells (same operation order as mmrotate, so
    # the offsets are the same floats)
    cx, cy, w, h, angle = boxes.unbind(dim=-1)  # [B, HW]
    cx, cy, w, h = cx / stride, cy / stride, w / stride, h / stride
    cos, sin = torch.cos(angle), torch.sin(angle)
    dw, dh = w / kernel_size, h / kernel_size
    x, y = dw[..., None] * tap_x, dh[..., None] * tap_y  # [B, HW, k*k]
    xr = cos[..., None] * x - sin[..., None] * y
    yr = sin[..., None] * x + cos[..., None] * y
    box_x, box_y = xr + cx[..., None], yr + cy[..., None]

    offset = torch.stack([box_y - conv_y, box_x - conv_x], dim=-1)  # [B, HW, k*k, 2]: (y, x)
    return offset.reshape(batch, feat_h * feat_w, -1).permute(0, 2, 1).reshape(batch, -1, feat_h, feat_w)


def align_conv(x: Tensor, boxes: Tensor, weight: Tensor, stride: float) -> Tensor:
    """mmrotate's ``AlignConv.forward``: ``relu(deform_conv(x, offsets(boxes)))``, no bias.

    Args:
        x: ``[B, C_in, H, W]`` one FPN level.
        boxes: ``[B, H * W, 5]`` (or ``[B * H * W, 5]``) one box per location, image pixels.
        weight: ``[C_out, C_in, k, k]`` the deformable convolution's weight (padding ``(k - 1) // 2``).
        stride: the level's stride.

    Returns:
        ``[B, C_out, H, W]``.
    """
    batch, _, feat_h, feat_w = x.shape
    k = int(weight.shape[-1])
    offsets = align_conv_offsets(boxes.reshape(batch, feat_h * feat_w, 5), (feat_h, feat_w), stride, k)
    pad = (k - 1) // 2
    # In float32 whatever the training precision: torchvision's CPU kernel has no bfloat16, and the
    # sampling positions are sub-pixel values that half precision would round.
    out = deform_conv2d(x.float(), offsets.float(), weight.float(), padding=(pad, pad))
    return torch.relu(out).to(x.dtype)


def deform_conv2d_gather(x: Tensor, offsets: Tensor, weight: Tensor, padding: int) -> Tensor:
    """torchvision's ``deform_conv2d(x, offsets, weight, padding=(p, p))`` (stride 1, no dilation,
    one offset group, no bias, no mask) in gathers and a matrix product.

    Each tap samples bilinearly at ``(h - p + i + dy, w - p + j + dx)`` with torchvision's rule: a
    point at or beyond ``-1`` / ``H`` (``W``) is 0, and corners outside the map count 0 (here: the
    map padded by one row / column of zeros, which the corners of an inside point never pass).

    Args:
        x: ``[B, C, H, W]``; offsets: ``[B, 2 * k * k, H, W]`` (``(dy, dx)`` per tap, row-major);
        weight: ``[O, C, k, k]``; padding: ``p``.

    Returns:
        ``[B, O, H, W]``.
    """
    batch, channels, height, width = x.shape
    k = int(weight.shape[-1])
    taps = torch.arange(k, dtype=offsets.dtype, device=offsets.device)
    tap_y, tap_x = torch.meshgrid(taps, taps, indexing="ij")
    rows = torch.arange(height, dtype=offsets.dtype, device=offsets.device)
    cols = torch.arange(width, dtype=offsets.dtype, device=offsets.device)
    off = offsets.reshape(batch, k * k, 2, height, width)
    y = rows[:, None] - padding + tap_y.reshape(-1, 1, 1) + off[:, :, 0]  # [B, k*k, H, W]
    x_ = cols[None, :] - padding + tap_x.reshape(-1, 1, 1) + off[:, :, 1]
    inside = (y > -1) & (y < height) & (x_ > -1) & (x_ < width)
    y0, x0 = y.floor(), x_.floor()
    ly, lx = y - y0, x_ - x0
    hy, hx = 1 - ly, 1 - lx
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1)).reshape(batch, channels, -1)
    stride_row = width + 2

    def corner(yi: Tensor, xi: Tensor) -> Tensor:
        # padded coordinates of an inside point's corners lie in [0, H + 1] x [0, W + 1]
        idx = ((yi + 1).clamp(0, height + 1) * stride_row + (xi + 1).clamp(0, width + 1)).long()
        return padded.gather(2, idx.reshape(batch, 1, -1).expand(-1, channels, -1)).reshape(
            batch, channels, k * k, height, width
        )

    w1, w2, w3, w4 = ((a * b)[:, None] for a, b in ((hy, hx), (hy, lx), (ly, hx), (ly, lx)))
    val = (
        w1 * corner(y0, x0) + w2 * corner(y0, x0 + 1) + w3 * corner(y0 + 1, x0) + w4 * corner(y0 + 1, x0 + 1)
    )
    val = val * inside[:, None].to(val.dtype)
    columns = val.reshape(batch, channels * k * k, height * width)
    out = weight.reshape(weight.shape[0], -1).to(columns.dtype) @ columns
    return out.reshape(batch, -1, height, width)
