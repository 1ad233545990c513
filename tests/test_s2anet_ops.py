"""S2A-Net's ops: the alignment convolution's offsets and forward, the oriented convolution's index
table and filter expansion, rotation-invariant pooling -- by properties, and against mmcv / mmrotate
0.3.4's outputs recorded by ``tests/data/s2anet_ops_oracle.py`` (same inputs rebuilt here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rotdet.ops.align_conv import align_conv, align_conv_offsets
from rotdet.ops.orn import active_rotated_filter, orconv_indices, rotation_invariant_pooling

sys.path.insert(0, str(Path(__file__).parent / "data"))
from s2anet_ops_oracle import ARF_CONFIGS, OUT, STRIDES, make_inputs  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def recorded():
    inputs = {k: torch.from_numpy(v) for k, v in make_inputs().items()}
    return inputs, {k: torch.from_numpy(v) for k, v in np.load(OUT).items()}


# --------------------------------------------------------------------------- against mmcv / mmrotate
@pytest.mark.parametrize("device", DEVICES)
def test_oriented_conv_matches_mmcv(recorded, device):
    d, ref = recorded
    for n_orient, n_rot in ARF_CONFIGS:
        for k in (1, 3):
            idx = orconv_indices(n_orient, n_rot, k)
            assert idx.dtype == torch.int32
            assert torch.equal(idx, ref[f"indices_{n_orient}_{n_rot}_{k}"])
            w = d[f"arf_w_{n_orient}_{k}"].to(device)
            got = active_rotated_filter(w, idx.to(device)).cpu()
            assert torch.equal(got, ref[f"arf_{n_orient}_{n_rot}_{k}"]), (n_orient, n_rot, k)
    weight = active_rotated_filter(d["or_w"].to(device), orconv_indices(1, 8, 3).to(device))
    out = F.conv2d(d["or_x"].to(device), weight, d["or_b"].to(device), padding=1).cpu()
    torch.testing.assert_close(out, ref["or_out"], rtol=0, atol=1e-5 if device == "cuda" else 0)
    pooled = rotation_invariant_pooling(d["or_x"].to(device), 8).cpu()
    assert torch.equal(pooled, ref["ripool"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stride", STRIDES)
def test_align_conv_matches_mmrotate(recorded, stride, device):
    d, ref = recorded
    x, boxes = d[f"ac_x_{stride}"].to(device), d[f"ac_boxes_{stride}"].to(device)
    offsets = align_conv_offsets(boxes, x.shape[-2:], stride, 3).cpu()
    torch.testing.assert_close(
        offsets, ref[f"ac_offset_{stride}"], rtol=0, atol=1e-5 if device == "cuda" else 0
    )
    out = align_conv(x, boxes, d["ac_w"].to(device), stride).cpu()
    torch.testing.assert_close(out, ref[f"ac_out_{stride}"], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- properties
def test_rotation_by_90_degrees_is_rot90_of_the_kernel():
    """Two 45-degree steps of a 3x3 filter (one orientation channel) turn it a quarter clockwise."""
    w = torch.randn(2, 3, 1, 3, 3)
    full = active_rotated_filter(w, orconv_indices(1, 8, 3)).view(2, 8, 3, 3, 3)
    assert torch.equal(full[:, 0], w[:, :, 0])
    assert torch.equal(full[:, 2], torch.rot90(w[:, :, 0], -1, dims=(-2, -1)))
    assert torch.equal(full[:, 4], torch.rot90(w[:, :, 0], 2, dims=(-2, -1)))


def test_orientation_channels_cycle_with_the_rotation():
    """With 4 orientations and 4 rotations each quarter turn also moves orientation channel o to o+1."""
    w = torch.randn(1, 1, 4, 1, 1)
    full = active_rotated_filter(w, orconv_indices(4, 4, 1)).view(4, 4)
    for r in range(4):
        assert torch.equal(full[r], torch.roll(w.view(4), r))


def test_active_rotated_filter_gradient_sums_over_rotations():
    w = torch.randn(2, 3, 1, 3, 3, requires_grad=True)
    active_rotated_filter(w, orconv_indices(1, 8, 3)).sum().backward()
    assert torch.equal(w.grad, torch.full_like(w, 8.0))


def test_bad_arf_configs_are_refused():
    with pytest.raises(ValueError, match="powers of two"):
        orconv_indices(3, 8)
    with pytest.raises(ValueError, match="1x1 or 3x3"):
        orconv_indices(1, 8, 5)
    with pytest.raises(ValueError, match="groups of 8"):
        rotation_invariant_pooling(torch.zeros(1, 12, 2, 2), 8)


def _grid_boxes(h: int, w: int, stride: int, size: float, angle: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h) * stride + 0.0, torch.arange(w) * stride + 0.0, indexing="ij")
    n = h * w
    return torch.stack(
        [
            xs.reshape(-1),
            ys.reshape(-1),
            torch.full((n,), size),
            torch.full((n,), size),
            torch.full((n,), angle),
        ],
        dim=-1,
    )[None]


def test_align_conv_of_cell_sized_boxes_is_a_plain_convolution():
    """A box of 3x3 cells centred on its location puts every tap on the regular grid: zero offsets."""
    x, weight = torch.randn(1, 4, 6, 7), torch.randn(5, 4, 3, 3)
    boxes = _grid_boxes(6, 7, 8, 3 * 8.0, 0.0)
    assert align_conv_offsets(boxes, (6, 7), 8).abs().max() == 0
    torch.testing.assert_close(align_conv(x, boxes, weight, 8), F.conv2d(x, weight, padding=1).relu())


def test_align_conv_follows_the_box_size_and_angle():
    """Twice the size: a convolution dilated by 2; a square box turned a quarter: the kernel turned."""
    x, weight = torch.randn(1, 4, 6, 7), torch.randn(5, 4, 3, 3)
    wide = align_conv(x, _grid_boxes(6, 7, 8, 6 * 8.0, 0.0), weight, 8)
    torch.testing.assert_close(wide, F.conv2d(x, weight, padding=2, dilation=2).relu())
    turned = align_conv(x, _grid_boxes(6, 7, 8, 3 * 8.0, torch.pi / 2), weight, 8)
    # tap (dy, dx) now reads the point (dx, -dy): the same as the kernel turned a quarter clockwise
    expected = F.conv2d(x, torch.rot90(weight, -1, dims=(-2, -1)), padding=1).relu()
    torch.testing.assert_close(turned, expected, atol=1e-5, rtol=1e-5)


def test_align_conv_offsets_need_one_box_per_location():
    with pytest.raises(ValueError, match="not \\[B, 6 \\* 7, 5\\]"):
        align_conv_offsets(torch.zeros(1, 41, 5), (6, 7), 8)
