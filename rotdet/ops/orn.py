"""Oriented response networks' ops as S2A-Net uses them (mmrotate 0.3.4 ``ORConv2d`` with mmcv's
``active_rotated_filter``, and ``RotationInvariantPooling``), as plain tensor reshuffles.

An oriented convolution learns ``O`` filters of ``I * N_o`` input channels and ``k x k`` taps and
applies each one ``N_r`` times, rotated by ``360 / N_r`` degrees steps: the rotation moves the taps
(a fixed permutation of the 3x3 kernel per 45 degrees) and cycles the ``N_o`` orientation channels.
:func:`orconv_indices` builds that permutation table exactly as mmrotate does (1-based, its
``indices`` buffer, saved in checkpoints), :func:`active_rotated_filter` expands the learnt weight
into the ``[O * N_r, I * N_o, k, k]`` weight of a plain ``conv2d`` (so the convolution itself is
torch's, on any device, with autograd), and :func:`rotation_invariant_pooling` takes, for each
filter, the maximum over its ``N_r`` rotated responses.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["active_rotated_filter", "orconv_indices", "rotation_invariant_pooling"]

# Where each tap of a 3x3 kernel (1-based, row-major) comes from after a rotation by the key's
# degrees (mmrotate's table; a 1x1 kernel has one tap).
_KERNEL_TAPS: dict[int, dict[int, tuple[int, ...]]] = {
    1: {a: (1,) for a in range(0, 360, 45)},
    3: {
        0: (1, 2, 3, 4, 5, 6, 7, 8, 9),
        45: (2, 3, 6, 1, 5, 9, 4, 7, 8),
        90: (3, 6, 9, 2, 5, 8, 1, 4, 7),
        135: (6, 9, 8, 3, 5, 7, 2, 1, 4),
        180: (9, 8, 7, 6, 5, 4, 3, 2, 1),
        225: (8, 7, 4, 9, 5, 1, 6, 3, 2),
        270: (7, 4, 1, 8, 5, 2, 9, 6, 3),
        315: (4, 1, 2, 7, 5, 3, 8, 9, 6),
    },
}


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def orconv_indices(num_orientations: int, num_rotations: int, kernel_size: int = 3) -> Tensor:
    """mmrotate's ``ORConv2d.get_indices``: ``[N_o, k, k, N_r]`` int32, 1-based.

    Entry ``[o, i, j, r]`` is the position (``layer * k * k + tap``, 1-based) that weight entry
    ``(o, i, j)`` takes in the filter rotated ``r`` times by ``360 / N_r`` degrees.
    """
    if kernel_size not in _KERNEL_TAPS:
        raise ValueError(f"oriented convolutions have 1x1 or 3x3 kernels, got {kernel_size}")
    if not (_is_power_of_two(num_orientations) and _is_power_of_two(num_rotations)) or num_rotations > 8:
        raise ValueError(
            f"arf_config ({num_orientations}, {num_rotations}): both must be powers of two, "
            "the rotations at most 8 (45-degree steps)"
        )
    taps = kernel_size * kernel_size
    delta_orientation = 360 / num_orientations
    delta_rotation = 360 / num_rotations
    table = torch.empty(num_orientations * taps, num_rotations, dtype=torch.int32)
    for o in range(num_orientations):
        for j in range(taps):
            for r in range(num_rotations):
                angle = delta_rotation * r
                layer = (o + math.floor(angle / delta_orientation)) % num_orientations
                tap = _KERNEL_TAPS[kernel_size][int(angle)][j]
                table[o * taps + j, r] = layer * taps + tap
    return table.view(num_orientations, kernel_size, kernel_size, num_rotations)


def active_rotated_filter(weight: Tensor, indices: Tensor) -> Tensor:
    """mmcv's ``active_rotated_filter``: the learnt oriented filters expanded into a conv weight.

    Args:
        weight: ``[O, I, N_o, k, k]``.
        indices: ``[N_o, k, k, N_r]`` from :func:`orconv_indices` (1-based; each rotation's column
            a permutation of the ``N_o * k * k`` entries).

    Returns:
        ``[O * N_r, I * N_o, k, k]``: output channel ``o * N_r + r`` is filter ``o`` rotated ``r``
        times (mmcv writes ``weight[o, i, e]`` to entry ``indices[e, r] - 1`` of that filter's
        input plane ``i``; here the inverse permutation gathers it, differentiably).
    """
    out_planes, in_planes, num_orientations, kh, kw = weight.shape
    num_rotations = int(indices.shape[-1])
    entries = num_orientations * kh * kw
    dest = indices.reshape(entries, num_rotations).to(device=weight.device, dtype=torch.long) - 1
    source = dest.argsort(dim=0)  # [entries, N_r]: which weight entry lands at each position
    flat = weight.reshape(out_planes, in_planes, entries)
    rotated = flat[:, :, source]  # [O, I, entries, N_r]
    return rotated.permute(0, 3, 1, 2).reshape(
        out_planes * num_rotations, in_planes * num_orientations, kh, kw
    )


def rotation_invariant_pooling(x: Tensor, num_orientations: int = 8) -> Tensor:
    """mmrotate's ``RotationInvariantPooling``: ``[B, G * N, H, W]`` -> ``[B, G, H, W]``, the maximum
    over each group of ``N = num_orientations`` consecutive channels (one filter's rotations)."""
    batch, channels, h, w = x.shape
    if channels % num_orientations:
        raise ValueError(f"{channels} channels do not split into groups of {num_orientations}")
    return x.view(batch, channels // num_orientations, num_orientations, h, w).max(dim=2).values
