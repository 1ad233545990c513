"""MidpointOffsetCoder (Oriented R-CNN's RPN coder): round trips, the targets of known boxes, decode's
clamps, config; and, opt-in, against mmrotate 0.3.4 (``$ROTDET_ORACLE_DIR/parts.npz`` from the reference
oracle: 300 anchors x gts per angle version, encode, decode of random and clamp-hitting deltas)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rotdet.models.coders import MidpointOffsetCoder
from rotdet.structures.conversions import obb2poly, poly2obb

ORACLE = Path(os.environ.get("ROTDET_ORACLE_DIR") or "/nonexistent-rotdet-oracle") / "parts.npz"
STDS = (1.0, 1.0, 1.0, 1.0, 0.5, 0.5)  # the Oriented R-CNN config's
VERSIONS = ("le90", "le135", "oc")


@pytest.mark.skipif(not ORACLE.is_file(), reason="ROTDET_ORACLE_DIR with parts.npz not given")
@pytest.mark.parametrize("version", VERSIONS)
def test_matches_mmrotate(version):
    rec = np.load(ORACLE)
    coder = MidpointOffsetCoder(target_stds=STDS, angle_range=version)
    anchors = torch.from_numpy(rec[f"coder_{version}_anchors"])
    enc = coder.encode(anchors, torch.from_numpy(rec[f"coder_{version}_gt"]))
    torch.testing.assert_close(enc, torch.from_numpy(rec[f"coder_{version}_enc"]), rtol=0, atol=0)
    dec = coder.decode(anchors, torch.from_numpy(rec[f"coder_{version}_deltas"]), max_shape=(100, 100))
    torch.testing.assert_close(dec, torch.from_numpy(rec[f"coder_{version}_dec"]), rtol=0, atol=0)
    back = coder.decode(anchors, torch.from_numpy(rec[f"coder_{version}_enc"]))
    torch.testing.assert_close(back, torch.from_numpy(rec[f"coder_{version}_roundtrip"]), rtol=0, atol=0)


def _boxes(gen: torch.Generator, n: int, version: str) -> torch.Tensor:
    """Random rotated boxes in ``version``, none within 0.02 rad of axis-aligned."""
    quarter = torch.rand(n, generator=gen) * (math.pi / 2 - 0.04) + 0.02
    angle = quarter + torch.randint(-2, 2, (n,), generator=gen) * (math.pi / 2)
    boxes = torch.stack(
        [
            torch.rand(n, generator=gen) * 500,
            torch.rand(n, generator=gen) * 500,
            torch.rand(n, generator=gen) * 200 + 5,
            torch.rand(n, generator=gen) * 200 + 5,
            angle,
        ],
        dim=1,
    )
    return poly2obb(obb2poly(boxes), version)


@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip(version):
    gen = torch.Generator().manual_seed(0)
    gt = _boxes(gen, 300, version)
    anchors = torch.cat([gt[:, :2] - torch.rand(300, 2, generator=gen) * 40, gt[:, :2] + 30], 1)
    coder = MidpointOffsetCoder(target_stds=STDS, angle_range=version)
    back = coder.decode(anchors, coder.encode(anchors, gt))
    torch.testing.assert_close(back[:, :4], gt[:, :4], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(back[:, 4], gt[:, 4], rtol=0, atol=1e-5)


def test_targets_of_known_boxes():
    coder = MidpointOffsetCoder(target_stds=STDS, angle_range="le90")
    anchor = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    # the anchor itself: corners on the top / right edges, the rightmost / lowest at +half a side
    same = coder.encode(anchor, torch.tensor([[30.0, 30.0, 40.0, 20.0, 0.0]]))
    torch.testing.assert_close(same, torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 1.0]]))  # 0.5 / std 0.5
    # a square at 45 degrees: its top vertex is at the middle of the circumscribed box's top edge
    s = 10 * math.sqrt(2)
    diamond = coder.encode(anchor, torch.tensor([[40.0, 30.0, s, s, math.pi / 4]]))
    want = torch.tensor([[10 / 40, 0.0, math.log(20 / 40), math.log(20 / 20), 0.0, 0.0]])
    torch.testing.assert_close(diamond, want, rtol=0, atol=1e-5)
    assert coder.encode(anchor.double(), torch.tensor([[30.0, 30.0, 40.0, 20.0, 0.0]])).dtype == torch.float32


def test_near_axis_aligned_boxes_snap():
    """mmrotate's 0.1 px vertex test: a box a hair off axis-aligned encodes as axis-aligned."""
    coder = MidpointOffsetCoder(angle_range="le90")
    gt = torch.tensor([[100.0, 100.0, 160.0, 80.0, 5e-4]])
    anchor = torch.tensor([[60.0, 70.0, 140.0, 130.0]])
    back = coder.decode(anchor, coder.encode(anchor, gt))
    assert abs(back[0, 4].item()) < 1e-6


def test_decode_clamps_and_ignores_max_shape():
    coder = MidpointOffsetCoder(angle_range="le90")
    anchor = torch.tensor([[0.0, 0.0, 100.0, 50.0]])
    huge = torch.tensor([[0.0, 0.0, 50.0, -50.0, 3.0, -3.0]])
    box = coder.decode(anchor, huge, max_shape=(10, 10))  # not clipped to the image
    max_ratio = abs(math.log(16 / 1000))
    # da, db clamped to +-0.5: the vertices sit at the box's corners, i.e. a zero-width diagonal
    # rectangle along the circumscribed box's diagonal
    width, height = 100 * math.exp(max_ratio), 50 * math.exp(-max_ratio)
    assert box[0, 2].item() == pytest.approx(math.hypot(width, height), rel=1e-5)
    assert box[0, 3].item() == pytest.approx(0.0, abs=1e-3)
    assert box[0, 0].item() == pytest.approx(50.0) and box[0, 1].item() == pytest.approx(25.0)
    again = coder.decode(anchor, torch.tensor([[0.0, 0.0, 9.0, -9.0, 0.5, -0.5]]))
    torch.testing.assert_close(box, again)


def test_config_and_shapes():
    cfg = dict(type="MidpointOffsetCoder", angle_range="le90", target_means=[0.0] * 6, target_stds=list(STDS))
    coder = MidpointOffsetCoder.from_config(cfg)
    assert coder.stds == STDS and coder.angle_range == "le90"
    with pytest.raises(ValueError, match="6 values"):
        MidpointOffsetCoder(target_stds=(1.0,) * 5)
    with pytest.raises(ValueError, match="bbox_coder"):
        MidpointOffsetCoder.from_config({**cfg, "type": "DeltaXYWHBBoxCoder"})
    with pytest.raises(ValueError, match="encode"):
        coder.encode(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="decode"):
        coder.decode(torch.zeros(3, 4), torch.zeros(3, 5))
    assert coder.decode(torch.zeros(0, 4), torch.zeros(0, 6)).shape == (0, 5)
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 5)).shape == (0, 6)
