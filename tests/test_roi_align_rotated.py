"""Rotated RoI Align: by properties (torchvision's ``roi_align`` at angle 0, a 90-degree turn of map and
RoI, float64 gradcheck, border and size rules) and, opt-in, against mmcv 1.7.2's CPU kernel.

The mmcv comparison reads ``$ROTDET_ORACLE_DIR/roi_align_rotated.npz``, written by the reference
oracle (``../shared/reference``) on 72 random cases: features, RoIs partly outside the map, tiny,
zero-size and huge RoIs, ``sampling_ratio`` 0 / 1 / 2, ``aligned`` and ``clockwise`` both ways,
float32 and float64, with mmcv's forward output and the features' gradient for a random upstream
gradient. It is skipped when the variable is unset (CI).
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from rotdet.ops.roi_align_rotated import RoIAlignRotated, roi_align_rotated

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ORACLE = Path(os.environ.get("ROTDET_ORACLE_DIR") or "/nonexistent-rotdet-oracle") / "roi_align_rotated.npz"


def _random_rois(gen: torch.Generator, n: int, batch: int, image_hw: tuple[float, float]) -> torch.Tensor:
    h, w = image_hw
    return torch.stack(
        [
            torch.randint(0, batch, (n,), generator=gen).double(),
            torch.rand(n, generator=gen, dtype=torch.float64) * w,
            torch.rand(n, generator=gen, dtype=torch.float64) * h,
            torch.rand(n, generator=gen, dtype=torch.float64) * w * 0.8 + 0.5,
            torch.rand(n, generator=gen, dtype=torch.float64) * h * 0.8 + 0.5,
            (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * 2 * math.pi,
        ],
        dim=1,
    )


@pytest.mark.skipif(not ORACLE.is_file(), reason="ROTDET_ORACLE_DIR with roi_align_rotated.npz not given")
@pytest.mark.parametrize("path", ["cpu", "cpu-gather"] + (["cuda"] if torch.cuda.is_available() else []))
def test_matches_mmcv_cpu_kernel(path, monkeypatch):
    device = path.split("-")[0]
    if path == "cpu-gather":  # the CUDA code path, on the CPU
        monkeypatch.setattr(importlib.import_module("rotdet.ops.roi_align_rotated"), "_SPARSE_ON_CPU", False)
    rec = np.load(ORACLE)
    for i in range(int(rec["num_cases"])):
        p = f"c{i}_"
        oh, ow, scale, ratio, aligned, clockwise = rec[p + "settings"].tolist()
        feats = torch.tensor(rec[p + "feats"], device=device, requires_grad=True)
        rois = torch.tensor(rec[p + "rois"])
        out = roi_align_rotated(
            feats, rois, (int(oh), int(ow)), scale, int(ratio), bool(aligned), bool(clockwise)
        )
        (out * torch.tensor(rec[p + "grad_out"], device=device)).sum().backward()
        # float32: summation order only (gradients sum many terms: relative to their size)
        for name, got, want in (
            ("forward", out.detach(), rec[p + "out"]),
            ("gradient", feats.grad, rec[p + "grad_feats"]),
        ):
            want = torch.from_numpy(want)
            tol = (1e-5 if want.dtype == torch.float32 else 1e-12) * max(1.0, want.abs().max().item())
            torch.testing.assert_close(got.cpu(), want, rtol=0, atol=tol, msg=f"case {i} {name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_angle_zero_is_torchvision_roi_align(device, aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 12, 15, generator=gen, dtype=torch.float64).to(device)
    rois = _random_rois(gen, 30, 2, (48.0, 60.0))
    rois[:, 5] = 0.0
    rois[:3, 1] -= 30.0  # partly (or wholly) off the map's left edge
    rois[3, 3:5] = 0.25  # below one cell
    if not aligned:
        # both widen sizes below one cell to 1, torchvision about the corner, mmcv about the centre
        rois[:, 3:5] = rois[:, 3:5].clamp(min=4.0)
    rois = rois.to(device)
    got = roi_align_rotated(feats, rois, (4, 3), 0.25, sampling_ratio, aligned)
    cx, cy, w, h = rois[:, 1:5].unbind(1)
    boxes = torch.stack([rois[:, 0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    want = roi_align(feats, boxes, (4, 3), 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("clockwise", [False, True])
def test_quarter_turn_of_map_and_roi(clockwise):
    """rot90 maps image point (x, y) to (y, W - x): the RoI (y, W - x, w, h, a +- pi/2) reads the same."""
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 4, 10, 14, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 20, 1, (10.0, 14.0))
    turned = torch.rot90(feats, 1, dims=(2, 3))
    sign = -1.0 if clockwise else 1.0
    new = torch.stack(
        [rois[:, 0], rois[:, 2], 14.0 - rois[:, 1], rois[:, 3], rois[:, 4], rois[:, 5] + sign * math.pi / 2],
        1,
    )
    for ratio in (0, 2):
        want = roi_align_rotated(feats, rois, 5, 1.0, ratio, True, clockwise)
        got = roi_align_rotated(turned, new, 5, 1.0, ratio, True, clockwise)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_clockwise_negates_the_angle():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 3, 9, 9, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 10, 2, (18.0, 18.0))
    mirrored = rois.clone()
    mirrored[:, 5] = -mirrored[:, 5]
    got = roi_align_rotated(feats, rois, 3, 0.5, 2, clockwise=True)
    want = roi_align_rotated(feats, mirrored, 3, 0.5, 2, clockwise=False)
    assert torch.equal(got, want)
    assert not torch.allclose(got, roi_align_rotated(feats, rois, 3, 0.5, 2))


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(gen, 4, 2, (10.0, 12.0))
    for ratio in (0, 2):
        assert torch.autograd.gradcheck(
            lambda f, r=ratio: roi_align_rotated(f, rois, (2, 3), 0.5, r), (feats,)
        )


def test_border_rules():
    """A point within one cell outside the map reads the nearest edge cell; beyond that it reads 0."""
    feats = torch.arange(12, dtype=torch.float64).view(1, 1, 3, 4)

    # 1x1 bins, one sample at the RoI's centre; aligned=False: sample coordinates are image pixels
    def one(x: float, y: float) -> torch.Tensor:
        return roi_align_rotated(feats, torch.tensor([[0, x, y, 1, 1, 0.0]]), 1, 1.0, 1, aligned=False)

    assert one(-0.5, 1.0).item() == feats[0, 0, 1, 0].item()  # in [-1, 0): clamped to column 0
    assert one(3.7, 2.5).item() == feats[0, 0, 2, 3].item()  # beyond the last row/column: that cell
    assert one(-1.01, 1.0).item() == 0.0
    assert one(1.0, 3.01).item() == 0.0
    assert one(1.25, 0.5).item() == pytest.approx(4 * 0.5 + 1.25)  # bilinear keeps the linear map 4y + x


def test_sizes_and_empty_inputs():
    feats = torch.randn(1, 3, 8, 8)
    # a zero-size RoI with an adaptive grid samples nothing: 0, as mmcv's max(count, 1) division
    zero = torch.tensor([[0, 4.0, 4.0, 0.0, 5.0, 0.3]])
    assert torch.equal(roi_align_rotated(feats, zero, 7, 1.0, 0), torch.zeros(1, 3, 7, 7))
    assert roi_align_rotated(feats, zero, 7, 1.0, 2).abs().sum() > 0
    assert roi_align_rotated(feats, torch.zeros(0, 6), (7, 5), 1.0, 2).shape == (0, 3, 7, 5)
    with pytest.raises(ValueError, match="non-negative"):
        roi_align_rotated(feats, torch.tensor([[0, 4.0, 4.0, -1.0, 5.0, 0.3]]), 7, 1.0, 2)
    with pytest.raises(ValueError, match="batch index"):
        roi_align_rotated(feats, torch.tensor([[1, 4.0, 4.0, 1.0, 5.0, 0.3]]), 7, 1.0, 2)
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        roi_align_rotated(feats, torch.zeros(3, 5), 7, 1.0, 2)


def test_chunked_like_unchunked(monkeypatch):
    """Chunks of RoIs and blocks of a huge RoI's grid give the one-pass result."""
    # the module, not the function of the same name that rotdet.ops re-exports
    mod = importlib.import_module("rotdet.ops.roi_align_rotated")

    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 25, 2, (64.0, 64.0))
    rois[0, 3:5] = torch.tensor([300.0, 200.0])  # an adaptive grid of 11 x 8 per bin
    want = [roi_align_rotated(feats, rois, 7, 0.25, r) for r in (0, 2)]
    monkeypatch.setattr(mod, "_GATHER_BUDGET", 7 * 7 * 4 * 3 * 3)  # three grid cells per block
    got = [roi_align_rotated(feats, rois, 7, 0.25, r) for r in (0, 2)]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


def test_sparse_product_equals_gather(monkeypatch):
    """The CPU pools with a sparse product, CUDA with a gather: the very same terms, and gradients."""
    mod = importlib.import_module("rotdet.ops.roi_align_rotated")
    gen = torch.Generator().manual_seed(6)
    feats = torch.randn(2, 5, 12, 12, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 40, 2, (48.0, 48.0))
    rois[:5, 1:3] = torch.tensor([-3.0, 47.0])  # corners clamped to the border: repeated columns
    upstream = torch.randn(40, 5, 7, 7, generator=gen, dtype=torch.float64)

    def pool_all() -> list[torch.Tensor]:
        got = []
        for ratio in (0, 2):
            for aligned in (True, False):
                leaf = feats.clone().requires_grad_()
                out = roi_align_rotated(leaf, rois, 7, 0.25, ratio, aligned, True)
                (out * upstream).sum().backward()
                got += [out.detach(), leaf.grad]
        return got

    assert mod._use_sparse(feats) and not mod._use_sparse(feats.half())
    sparse = pool_all()
    monkeypatch.setattr(mod, "_SPARSE_ON_CPU", False)
    gathered = pool_all()
    for s, g in zip(sparse, gathered, strict=True):
        torch.testing.assert_close(s, g, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_module_and_dtypes(device):
    layer = RoIAlignRotated((7, 7), 1 / 8, 2, clockwise=True)
    assert "clockwise=True" in repr(layer)
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 4, 16, 16, generator=gen).to(device)
    rois = _random_rois(gen, 6, 2, (128.0, 128.0)).float().to(device)
    out = layer(feats, rois)
    assert out.shape == (6, 4, 7, 7) and out.dtype == torch.float32 and out.is_contiguous()
    ref = roi_align_rotated(feats.double(), rois.double(), 7, 1 / 8, 2, True, True)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("aligned, clockwise", [(True, True), (False, False)])
def test_pyramid_equals_each_level(aligned, clockwise):
    """The static-shape pyramid pooling (exported Oriented R-CNN) reads every RoI from its own
    level exactly as roi_align_rotated on that level does, RoIs over the border included."""
    from rotdet.ops.roi_align_rotated import roi_align_rotated_pyramid

    gen = torch.Generator().manual_seed(3)
    strides = [4, 8, 16, 32]
    feats = [torch.randn(2, 6, 96 // s, 64 // s, generator=gen) for s in strides]
    boxes = torch.cat(
        [
            torch.rand(2, 70, 2, generator=gen) * 110 - 20,  # centres partly outside the 64 x 96 image
            torch.rand(2, 70, 2, generator=gen) * 80,
            (torch.rand(2, 70, 1, generator=gen) - 0.5) * 2 * math.pi,
        ],
        dim=2,
    )
    levels = torch.randint(0, 4, (2, 70), generator=gen)
    got = roi_align_rotated_pyramid(
        feats, boxes, levels, [1 / s for s in strides], (7, 5), 2, aligned, clockwise, chunk=16
    )
    assert got.shape == (2, 70, 6, 7, 5)
    for b in range(2):
        for lvl, stride in enumerate(strides):
            inds = (levels[b] == lvl).nonzero().flatten()
            rois = torch.cat([torch.full((len(inds), 1), float(b)), boxes[b, inds]], dim=1)
            want = roi_align_rotated(feats[lvl], rois, (7, 5), 1 / stride, 2, aligned, clockwise)
            torch.testing.assert_close(got[b, inds], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="fixed grid"):
        roi_align_rotated_pyramid(feats, boxes, levels, [1 / s for s in strides], 7, 0)
