"""Triton kernel for the intersection of aligned rotated-box pairs: the CUDA fast path.

Same mathematics, rules and float64 precision as the PyTorch path in :mod:`rotdet.ops.iou` (read its
module docstring first): one program handles a block of pairs, and every per-pair temporary lives
in registers, so a pair costs one read of its pose and one write of its area instead of the ~100
float64 round trips through GPU memory that the unfused PyTorch ops make.

Only imported when Triton is installed; :func:`available` says whether the kernel can run.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_BLOCK = 128


def available(device: torch.device) -> bool:
    """True when the kernel can run on ``device`` (CUDA, or any device under ``TRITON_INTERPRET=1``).

    ``ROTDET_DISABLE_TRITON=1`` forces the PyTorch path everywhere.
    """
    if os.environ.get("ROTDET_DISABLE_TRITON") == "1":
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _clip_half_plane(t_in, t_out, drop, p0x, p0y, p1x, p1y, q0x, q0y, q1x, q1y, OWNER: tl.constexpr):
    """Clip segment p0 -> p1 to the left of edge q0 -> q1; returns the updated (t_in, t_out, drop)."""
    ex = q1x - q0x
    ey = q1y - q0y
    d0 = ex * (p0y - q0y) - ey * (p0x - q0x)
    d1 = ex * (p1y - q0y) - ey * (p1x - q0x)
    if OWNER:
        same_way = (p1x - p0x) * ex + (p1y - p0y) * ey > 0
        outside = ((d0 < 0) & (d1 < 0)) | ((d0 == 0) & (d1 == 0) & (same_way == 0))
    else:
        outside = (d0 <= 0) & (d1 <= 0)
    denom = d0 - d1
    t = d0 / tl.where(denom == 0, 1.0, denom)
    t_in = tl.where(d0 < 0, tl.maximum(t_in, t), t_in)
    t_out = tl.where(d1 < 0, tl.minimum(t_out, t), t_out)
    return t_in, t_out, drop | outside


@triton.jit
def _edge_term(p0x, p0y, p1x, p1y, q0x, q0y, q1x, q1y, q2x, q2y, q3x, q3y, OWNER: tl.constexpr):
    """cross(s0, s1) of the part [s0, s1] of edge p0 -> p1 inside quadrilateral q."""
    t_in = tl.zeros_like(p0x)
    t_out = t_in + 1.0
    drop = t_in > 1.0
    t_in, t_out, drop = _clip_half_plane(t_in, t_out, drop, p0x, p0y, p1x, p1y, q0x, q0y, q1x, q1y, OWNER)
    t_in, t_out, drop = _clip_half_plane(t_in, t_out, drop, p0x, p0y, p1x, p1y, q1x, q1y, q2x, q2y, OWNER)
    t_in, t_out, drop = _clip_half_plane(t_in, t_out, drop, p0x, p0y, p1x, p1y, q2x, q2y, q3x, q3y, OWNER)
    t_in, t_out, drop = _clip_half_plane(t_in, t_out, drop, p0x, p0y, p1x, p1y, q3x, q3y, q0x, q0y, OWNER)
    length = tl.where(drop, 0.0, tl.maximum(t_out - t_in, 0.0))
    return length * (p0x * (p1y - p0y) - p0y * (p1x - p0x))


@triton.jit
def _intersection_kernel(
    half_wa, half_ha, half_wb, half_hb, cos_ptr, sin_ptr, tx_ptr, ty_ptr, out_ptr, num, BLOCK: tl.constexpr
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < num
    a = tl.load(half_wa + offs, mask=mask, other=0.0)
    b = tl.load(half_ha + offs, mask=mask, other=0.0)
    c = tl.load(half_wb + offs, mask=mask, other=0.0)
    d = tl.load(half_hb + offs, mask=mask, other=0.0)
    cos = tl.load(cos_ptr + offs, mask=mask, other=1.0)
    sin = tl.load(sin_ptr + offs, mask=mask, other=0.0)
    tx = tl.load(tx_ptr + offs, mask=mask, other=0.0)
    ty = tl.load(ty_ptr + offs, mask=mask, other=0.0)
    # Box a, axis-aligned at the origin: corners (-a,-b), (a,-b), (a,b), (-a,b).
    # Box b: t + R(turn) (+-c, +-d) in the same counter-clockwise order.
    q0x = tx - c * cos + d * sin
    q0y = ty - c * sin - d * cos
    q1x = tx + c * cos + d * sin
    q1y = ty + c * sin - d * cos
    q2x = tx + c * cos - d * sin
    q2y = ty + c * sin + d * cos
    q3x = tx - c * cos - d * sin
    q3y = ty - c * sin + d * cos
    twice = _edge_term(-a, -b, a, -b, q0x, q0y, q1x, q1y, q2x, q2y, q3x, q3y, True)
    twice += _edge_term(a, -b, a, b, q0x, q0y, q1x, q1y, q2x, q2y, q3x, q3y, True)
    twice += _edge_term(a, b, -a, b, q0x, q0y, q1x, q1y, q2x, q2y, q3x, q3y, True)
    twice += _edge_term(-a, b, -a, -b, q0x, q0y, q1x, q1y, q2x, q2y, q3x, q3y, True)
    twice += _edge_term(q0x, q0y, q1x, q1y, -a, -b, a, -b, a, b, -a, b, False)
    twice += _edge_term(q1x, q1y, q2x, q2y, -a, -b, a, -b, a, b, -a, b, False)
    twice += _edge_term(q2x, q2y, q3x, q3y, -a, -b, a, -b, a, b, -a, b, False)
    twice += _edge_term(q3x, q3y, q0x, q0y, -a, -b, a, -b, a, b, -a, b, False)
    valid = (a > 0) & (b > 0) & (c > 0) & (d > 0)
    tl.store(out_ptr + offs, tl.where(valid, tl.maximum(twice, 0.0) * 0.5, 0.0), mask=mask)


def intersection(half_wa, half_ha, half_wb, half_hb, cos, sin, tx, ty) -> torch.Tensor:
    """Intersection areas ``[K]`` float64 from the relative pose of each pair (all ``[K]`` float64)."""
    out = torch.empty_like(half_wa)
    num = out.numel()
    if num:
        grid = (triton.cdiv(num, _BLOCK),)
        _intersection_kernel[grid](
            half_wa, half_ha, half_wb, half_hb, cos, sin, tx, ty, out, num, BLOCK=_BLOCK
        )
    return out
