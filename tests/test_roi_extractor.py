"""RotatedSingleRoIExtractor: level rule, per-level pooling, empty inputs, AMP dtype, config; and, opt-in,
against mmrotate 0.3.4's extractor (``$ROTDET_ORACLE_DIR/parts.npz`` from the reference oracle: 80 RoIs
of 4-700 px incl. the exact level boundaries on a 4-level pyramid, output and feature gradients)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rotdet.models.roi_extractor import RotatedSingleRoIExtractor
from rotdet.ops.roi_align_rotated import roi_align_rotated

ORACLE = Path(os.environ.get("ROTDET_ORACLE_DIR") or "/nonexistent-rotdet-oracle") / "parts.npz"
CFG = dict(
    type="RotatedSingleRoIExtractor",
    roi_layer=dict(type="RoIAlignRotated", out_size=7, sample_num=2, clockwise=True),
    out_channels=8,
    featmap_strides=[4, 8, 16, 32],
)


def _pyramid(gen: torch.Generator, size: int = 64, channels: int = 8) -> list[torch.Tensor]:
    return [torch.randn(2, channels, size >> i, size >> i, generator=gen) for i in range(4)]


def _rois(scales: list[float], gen: torch.Generator) -> torch.Tensor:
    n = len(scales)
    s = torch.tensor(scales)
    return torch.stack(
        [
            torch.arange(n) % 2,
            torch.rand(n, generator=gen) * 256,
            torch.rand(n, generator=gen) * 256,
            s * 1.5,
            s / 1.5,
            (torch.rand(n, generator=gen) - 0.5) * math.pi,
        ],
        dim=1,
    ).float()


@pytest.mark.skipif(not ORACLE.is_file(), reason="ROTDET_ORACLE_DIR with parts.npz not given")
def test_matches_mmrotate():
    rec = np.load(ORACLE)
    ext = RotatedSingleRoIExtractor.from_config(CFG)
    feats = [torch.tensor(rec[f"ext_feat{i}"], requires_grad=True) for i in range(4)]
    rois = torch.from_numpy(rec["ext_rois"])
    assert torch.equal(ext.map_roi_levels(rois, 4), torch.from_numpy(rec["ext_levels"]))
    out = ext(feats, rois)
    (out * torch.from_numpy(rec["ext_grad_out"])).sum().backward()
    torch.testing.assert_close(out.detach(), torch.from_numpy(rec["ext_out"]), rtol=0, atol=1e-5)
    for i, f in enumerate(feats):
        torch.testing.assert_close(f.grad, torch.from_numpy(rec[f"ext_grad{i}"]), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        ext(feats[:1], rois).detach(), torch.from_numpy(rec["ext1_out"]), rtol=0, atol=1e-5
    )
    assert ext(feats, rois[:0]).shape == rec["ext0_out"].shape


def test_level_rule():
    ext = RotatedSingleRoIExtractor.from_config(CFG)
    # sqrt(w h): below 112 -> 0; the 1e-6 tips exact boundaries (112, 224, 448) up a level
    scale = torch.tensor([1.0, 111.99, 112.0, 223.9, 224.0, 448.0, 5000.0])
    rois = torch.zeros(len(scale), 6)
    rois[:, 3], rois[:, 4] = scale * 2, scale / 2
    assert ext.map_roi_levels(rois, 4).tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert ext.map_roi_levels(rois, 2).tolist() == [0, 0, 1, 1, 1, 1, 1]


def test_each_roi_pooled_from_its_level():
    gen = torch.Generator().manual_seed(0)
    feats = _pyramid(gen)
    rois = _rois([20.0, 150.0, 300.0, 600.0, 30.0, 1000.0], gen)
    ext = RotatedSingleRoIExtractor.from_config(CFG)
    out = ext(feats, rois)
    assert out.shape == (6, 8, 7, 7)
    for i, level in enumerate(ext.map_roi_levels(rois, 4).tolist()):
        stride = CFG["featmap_strides"][level]
        want = roi_align_rotated(feats[level], rois[i : i + 1], 7, 1 / stride, 2, True, True)
        torch.testing.assert_close(out[i : i + 1], want, rtol=0, atol=0)


def test_unused_levels_and_no_rois_keep_the_graph():
    gen = torch.Generator().manual_seed(1)
    feats = [f.requires_grad_() for f in _pyramid(gen)]
    ext = RotatedSingleRoIExtractor.from_config(CFG)
    ext(feats, _rois([20.0, 30.0], gen)).sum().backward()  # level 0 only
    assert feats[0].grad.abs().sum() > 0
    assert all(f.grad is not None and f.grad.abs().sum() == 0 for f in feats[1:])
    empty = ext(feats, torch.zeros(0, 6))
    assert empty.shape == (0, 8, 7, 7)
    empty.sum().backward()  # every level is in the graph (DDP), with zero gradient
    one_level = ext(feats[:1], torch.zeros(0, 6))
    assert one_level.shape == (0, 8, 7, 7)


def test_half_features_pool_in_float32():
    gen = torch.Generator().manual_seed(2)
    feats = _pyramid(gen)
    rois = _rois([20.0, 150.0, 300.0], gen)
    ext = RotatedSingleRoIExtractor.from_config(CFG)
    out = ext([f.half() for f in feats], rois)
    assert out.dtype == torch.float16
    want = ext([f.half().float() for f in feats], rois).half()
    assert torch.equal(out, want)


def test_roi_scale_factor_after_level_choice():
    gen = torch.Generator().manual_seed(3)
    feats = _pyramid(gen)
    rois = _rois([100.0, 200.0], gen)
    ext = RotatedSingleRoIExtractor.from_config(CFG)
    scaled = rois.clone()
    scaled[:, 3:5] *= 1.5
    got = ext(feats, rois, roi_scale_factor=1.5)
    for i, level in enumerate(ext.map_roi_levels(rois, 4).tolist()):  # the unscaled RoIs' levels
        stride = CFG["featmap_strides"][level]
        want = roi_align_rotated(feats[level], scaled[i : i + 1], 7, 1 / stride, 2, True, True)
        torch.testing.assert_close(got[i : i + 1], want, rtol=0, atol=0)
    assert ext.map_roi_levels(scaled, 4).tolist() != ext.map_roi_levels(rois, 4).tolist()


def test_config_errors_and_names():
    ext = RotatedSingleRoIExtractor.from_config({**CFG, "finest_scale": 28, "init_cfg": None})
    assert ext.finest_scale == 28 and ext.num_inputs == 4 and ext.output_size == (7, 7)
    layer = ext.roi_layers[2]
    assert (layer.spatial_scale, layer.sampling_ratio, layer.clockwise, layer.aligned) == (
        1 / 16,
        2,
        True,
        True,
    )
    new_names = dict(type="RoIAlignRotated", output_size=(7, 5), sampling_ratio=0)
    assert RotatedSingleRoIExtractor.from_config({**CFG, "roi_layer": new_names}).output_size == (7, 5)
    with pytest.raises(ValueError, match="unknown key"):
        RotatedSingleRoIExtractor.from_config({**CFG, "roi_layer": {**CFG["roi_layer"], "pool_mode": "avg"}})
    with pytest.raises(ValueError, match="given twice"):
        RotatedSingleRoIExtractor.from_config({**CFG, "roi_layer": {**CFG["roi_layer"], "output_size": 7}})
    with pytest.raises(ValueError, match="RoIAlignRotated"):
        RotatedSingleRoIExtractor.from_config({**CFG, "roi_layer": dict(type="RoIAlign", output_size=7)})
    with pytest.raises(ValueError, match="bbox_roi_extractor"):
        RotatedSingleRoIExtractor.from_config({**CFG, "gc_context": True})
    gen = torch.Generator().manual_seed(4)
    with pytest.raises(ValueError, match="out_channels"):
        ext(_pyramid(gen, channels=4), torch.zeros(0, 6))
    with pytest.raises(ValueError, match="feature levels"):
        ext(_pyramid(gen) + _pyramid(gen)[:1], torch.zeros(0, 6))
