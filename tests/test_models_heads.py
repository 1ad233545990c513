"""Heads, losses, R3Det's feature refinement and rotated_feature_align (small, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from rotdet.models.anchors import AnchorGenerator
from rotdet.models.assigners import ATSSAssigner, MaxIoUAssigner
from rotdet.models.coders import DeltaXYWHAOBBoxCoder
from rotdet.models.heads import RotatedATSSHead, RotatedRetinaHead, TestConfig
from rotdet.models.losses import LossSpec, l1_loss, sigmoid_focal_loss, smooth_l1_loss
from rotdet.models.r3det import FeatureRefineModule
from rotdet.ops import rotated_feature_align


@pytest.fixture(autouse=True)
def _isolated_rng():
    """Leave the global RNG state as it was (other test files draw from it)."""
    with torch.random.fork_rng():
        yield


STRIDES = (8, 16, 32, 64, 128)


def retina_head(num_classes=3, channels=16, atss=False, assign_by_circumhbbox=None, **kw):
    if atss:
        gen = AnchorGenerator(STRIDES, octave_base_scale=4, scales_per_octave=1, ratios=[1.0])
        assigner = ATSSAssigner(topk=9, angle_version="le90")
        cls = RotatedATSSHead
    else:
        gen = AnchorGenerator(STRIDES, octave_base_scale=4, scales_per_octave=3, ratios=[1.0, 0.5, 2.0])
        assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0)
        cls = RotatedRetinaHead
    return cls(
        num_classes,
        in_channels=channels,
        feat_channels=channels,
        stacked_convs=2,
        anchor_generator=gen,
        bbox_coder=DeltaXYWHAOBBoxCoder(angle_range="le90", edge_swap=True, proj_xy=True),
        assigner=assigner,
        assign_by_circumhbbox=assign_by_circumhbbox,
        **kw,
    )


def feats_for(size=128, channels=16, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, channels, math.ceil(size / s), math.ceil(size / s), generator=g) for s in STRIDES
    ]


def metas_for(size=128, batch=1):
    return [{"img_shape": (size, size, 3), "pad_shape": (size, size, 3), "scale_factor": [1.0] * 4}] * batch


# ----------------------------------------------------------------------------------------- losses
def test_focal_loss_matches_torchvision_and_background_label():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 4, generator=g) * 3
    labels = torch.randint(0, 5, (50,), generator=g)  # 4 = background
    onehot = torch.nn.functional.one_hot(labels, 5)[:, :4].float()
    ours = sigmoid_focal_loss(logits, labels, 2.0, 0.25)
    ref = torchvision.ops.sigmoid_focal_loss(logits, onehot, alpha=0.25, gamma=2.0, reduction="none")
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    assert torch.all(ours[labels == 4] == sigmoid_focal_loss(logits[labels == 4], labels[labels == 4]))


def test_l1_and_smooth_l1():
    pred, target = torch.tensor([0.0, 0.05, 1.0]), torch.zeros(3)
    torch.testing.assert_close(l1_loss(pred, target), torch.tensor([0.0, 0.05, 1.0]))
    torch.testing.assert_close(
        smooth_l1_loss(pred, target, 0.11), torch.tensor([0.0, 0.5 * 0.05**2 / 0.11, 1 - 0.055])
    )
    with pytest.raises(ValueError, match="unknown loss type"):
        LossSpec.from_cfg({"type": "GIoULoss"})


# ------------------------------------------------------------------------------------------ heads
def test_head_layout_and_init():
    head = retina_head(num_classes=15, channels=32)
    keys = set(head.state_dict())
    assert {
        "cls_convs.0.conv.weight",
        "reg_convs.1.conv.bias",
        "retina_cls.weight",
        "retina_reg.bias",
    } <= keys
    assert head.retina_cls.out_channels == 9 * 15 and head.retina_reg.out_channels == 9 * 5
    torch.testing.assert_close(head.retina_cls.bias, torch.full((135,), -math.log(99)))
    assert float(head.cls_convs[0].conv.weight.detach().std()) == pytest.approx(0.01, rel=0.2)


@pytest.mark.parametrize("atss", [False, True])
def test_losses_finite_with_zero_positives(atss):
    head = retina_head(atss=atss)
    feats = [f.requires_grad_() for f in feats_for(batch=2)]
    cls, reg = head(feats)
    empty = [torch.zeros(0, 5), torch.zeros(0, 5)]
    labels = [torch.zeros(0, dtype=torch.long)] * 2
    losses = head.loss(cls, reg, empty, labels, metas_for(batch=2))
    assert losses["loss_cls"].shape == (5,) and torch.isfinite(losses["loss_cls"]).all()
    assert torch.all(losses["loss_bbox"] == 0)
    # no positives: avg_factor = 1 per image -> the focal sum over all anchors / 2
    flat = torch.cat([c.permute(0, 2, 3, 1).reshape(-1, 3) for c in cls])
    bg = torch.full((flat.shape[0],), 3)
    expected = sigmoid_focal_loss(flat, bg).sum() / 2
    torch.testing.assert_close(losses["loss_cls"].sum(), expected, rtol=1e-5, atol=0)
    (losses["loss_cls"].sum() + losses["loss_bbox"].sum()).backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)


def test_loss_normalised_by_positives_with_hbb_assignment():
    head = retina_head(assign_by_circumhbbox="le90")
    cls, reg = head(feats_for(batch=2))
    gts = [torch.tensor([[60.0, 60.0, 64.0, 32.0, 0.3]]), torch.zeros(0, 5)]
    labels = [torch.tensor([1]), torch.zeros(0, dtype=torch.long)]
    labels_t, lw, bt, bw, num_pos = head.get_targets(
        torch.cat(head.grid_anchors([tuple(c.shape[-2:]) for c in cls], "cpu"))[None].expand(2, -1, -1),
        [c.shape[-1] * c.shape[-2] * 9 for c in cls],
        [tuple(c.shape[-2:]) for c in cls],
        gts,
        labels,
        metas_for(batch=2),
    )
    pos = int((labels_t[0] == 1).sum())
    assert pos > 0 and num_pos == pos + 1  # the empty image counts 1 (mmdet's max(pos, 1))
    assert int((bw[0].sum(-1) > 0).sum()) == pos and int(bw[1].sum()) == 0
    assert torch.all(lw[1] == 1)  # no ground truth: every anchor a negative


def test_valid_flags_exclude_padding():
    """Anchors beyond an image's own padded shape are neither positive nor negative."""
    head = retina_head(atss=True)
    cls, reg = head(feats_for(size=128))
    metas = [{"img_shape": (64, 128, 3), "pad_shape": (64, 128, 3), "scale_factor": [1.0] * 4}]
    sizes = [tuple(c.shape[-2:]) for c in cls]
    anchors = torch.cat(head.grid_anchors(sizes, "cpu"))[None]
    _, lw, _, _, _ = head.get_targets(
        anchors,
        [h * w for h, w in sizes],
        sizes,
        [torch.zeros(0, 5)],
        [torch.zeros(0, dtype=torch.long)],
        metas,
    )
    assert torch.all(lw[0][anchors[0, :, 1] >= 64] == 0) and torch.all(lw[0][anchors[0, :, 1] < 64] == 1)


@pytest.mark.parametrize("atss", [True, False])
def test_all_valid_fast_path_equals_flag_path(atss, monkeypatch):
    """Images padded to the batch shape skip the per-anchor flags; the targets are the same."""
    head = retina_head(atss=atss)
    cls, _ = head(feats_for(size=128))
    sizes = [tuple(c.shape[-2:]) for c in cls]
    anchors = torch.cat(head.grid_anchors(sizes, "cpu"))[None].expand(2, -1, -1)
    metas = [{"img_shape": (128, 128, 3), "pad_shape": (128, 128, 3), "scale_factor": [1.0] * 4}] * 2
    gts = [torch.tensor([[40.0, 50.0, 30.0, 12.0, 0.3], [90.0, 90.0, 60.0, 20.0, -0.7]]), torch.zeros(0, 5)]
    labels = [torch.tensor([0, 1]), torch.zeros(0, dtype=torch.long)]
    args = (anchors, [h * w * head.num_anchors for h, w in sizes], sizes, gts, labels, metas)
    fast = head.get_targets(*args)
    monkeypatch.setattr(type(head.anchor_generator), "all_valid", lambda *a: False)
    slow = head.get_targets(*args)
    for a, b in zip(fast[:4], slow[:4], strict=True):
        assert torch.equal(a, b)
    assert fast[4] == slow[4] and int((fast[0][0] < head.num_classes).sum()) > 0
    # the grid anchors are made once per feature-map sizes and kept out of the state dict
    assert head.grid_anchors(sizes, "cpu") is head.grid_anchors(sizes, "cpu")
    assert not any("anchor" in k for k in head.state_dict())


def test_predict_rescale_topk_and_versions():
    head = retina_head(test_cfg=TestConfig(nms_pre=50, score_thr=0.0, iou_thr=0.1, max_per_img=30))
    cls, reg = head(feats_for())
    metas = [{"img_shape": (128, 128, 3), "pad_shape": (128, 128, 3), "scale_factor": [2.0, 4.0, 2.0, 4.0]}]
    cand = head.predict(cls, reg, metas, rescale=False, with_nms=False)[0]
    assert cand["boxes"].shape == (50 * 3 + 4 * 9 + 1 * 9, 5)  # levels with fewer anchors keep all
    scaled = head.predict(cls, reg, metas, rescale=True, with_nms=False)[0]
    torch.testing.assert_close(
        scaled["boxes"][:, :4], cand["boxes"][:, :4] / torch.tensor([2.0, 4.0, 2.0, 4.0])
    )
    dets = head.predict(cls, reg, metas)[0]
    assert 0 < len(dets["boxes"]) <= 30 and torch.all(dets["scores"][:-1] >= dets["scores"][1:])
    a = dets["boxes"][:, 4]
    assert torch.all((a >= -math.pi / 2) & (a < math.pi / 2)) and torch.all(
        dets["boxes"][:, 2] >= dets["boxes"][:, 3]
    )


def test_filter_bboxes_picks_best_anchor():
    head = retina_head()
    cls, reg = head(feats_for())
    rois = head.filter_bboxes(cls, reg)
    lvl = 2
    h, w = cls[lvl].shape[-2:]
    scores = cls[lvl][0].permute(1, 2, 0).reshape(h * w, 9, 3).max(-1).values
    best = scores.argmax(-1)
    anchors = head.grid_anchors([tuple(c.shape[-2:]) for c in cls], "cpu")[lvl].reshape(h * w, 9, 5)
    deltas = reg[lvl][0].permute(1, 2, 0).reshape(h * w, 9, 5)
    idx = torch.arange(h * w)
    expected = head.bbox_coder.decode(anchors[idx, best], deltas[idx, best])
    torch.testing.assert_close(rois[lvl][0], expected)
    assert not rois[lvl].requires_grad


# ------------------------------------------------------------------------ rotated feature align
def test_rotated_feature_align_sampling_rules():
    f = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(1, 2, 4, 5)
    boxes = torch.zeros(1, 4, 5, 5)
    boxes[..., 0], boxes[..., 1] = 3 * 8.0, 1 * 8.0  # image (cx, cy) = (24, 8) -> feature (x=3, y=1)
    plain = rotated_feature_align(f, boxes, 1 / 8, points=1, mmcv_yx=False)
    torch.testing.assert_close(plain, f + f[:, :, 1, 3][..., None, None])
    # mmcv's reading is transposed: y = cx * scale = 3, x = cy * scale = 1
    mmcv = rotated_feature_align(f, boxes, 1 / 8)
    torch.testing.assert_close(mmcv, f + f[:, :, 3, 1][..., None, None])
    # bilinear between columns, clamping past the last row, zero outside [-1, H] x [-1, W]
    boxes[..., 0], boxes[..., 1] = 2.5 * 8, 9.0 * 8
    out = rotated_feature_align(f, boxes, 1 / 8, mmcv_yx=False)
    torch.testing.assert_close(out, f)
    boxes[..., 0], boxes[..., 1] = 2.5 * 8, 3.5 * 8
    out = rotated_feature_align(f, boxes, 1 / 8, mmcv_yx=False)
    torch.testing.assert_close(out, f + ((f[:, :, 3, 2] + f[:, :, 3, 3]) / 2)[..., None, None])


def test_rotated_feature_align_five_points_and_gradient():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    boxes = torch.rand(1, 5, 6, 5, dtype=torch.float64, generator=g) * torch.tensor([40.0, 40, 16, 16, 3.0])
    one = rotated_feature_align(f, boxes, 1 / 8, points=1)
    five = rotated_feature_align(f, boxes, 1 / 8, points=5)
    assert not torch.allclose(one, five)
    # the op is linear in the features: a generic finite-difference check through autograd
    assert torch.autograd.gradcheck(lambda x: rotated_feature_align(x, boxes + 0.123, 1 / 8, points=5), (f,))
    with pytest.raises(ValueError, match="points"):
        rotated_feature_align(f, boxes, 1 / 8, points=4)


def test_feature_refine_module_shapes_and_names():
    frm = FeatureRefineModule(in_channels=8)
    assert set(frm.state_dict()) == {
        f"conv_{k}.{p}" for k in ("5_1", "1_5", "1_1") for p in ("weight", "bias")
    }
    feats = feats_for(channels=8, batch=2)
    rois = [torch.rand(2, f.shape[-2] * f.shape[-1], 5) * 100 for f in feats]
    out = frm(feats, rois)
    assert [o.shape for o in out] == [f.shape for f in feats]
