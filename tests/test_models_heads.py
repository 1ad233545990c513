"""Heads, losses, R3Det's feature refinement and rotated_feature_align (small, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from rotdet.models.anchors import AnchorGenerator
from rotdet.models.assigners import ATSSAssigner, MaxIoUAssigner, assign_targets_boxes
from rotdet.models.coders import DeltaXYWHAOBBoxCoder
from rotdet.models.detectors import dense_head_losses
from rotdet.models.heads import RotatedRetinaHead, TestConfig
from rotdet.models.losses import LossSpec, l1_loss, sigmoid_focal_loss, smooth_l1_loss
from rotdet.models.r3det import FeatureRefineModule, filter_bboxes
from rotdet.models.targets import (
    DenseAnchors,
    GroundTruths,
    TrainConfig,
    anchor_targets,
    assign_anchors,
    dense_anchors,
    rotated_anchor_inside_flags,
)
from rotdet.ops import rotated_feature_align


@pytest.fixture(autouse=True)
def _isolated_rng():
    """Leave the global RNG state as it was (other test files draw from it)."""
    with torch.random.fork_rng():
        yield


STRIDES = (8, 16, 32, 64, 128)


def retina_head(num_classes=3, channels=16, atss=False, assign_by_circumhbbox=None, assigner=None, **kw):
    """RetinaNet's nine anchors with MaxIoU, or (``atss``) ATSS's one anchor with ATSS, unless an
    ``assigner`` is given (any pairing trains)."""
    if atss:
        gen = AnchorGenerator(STRIDES, octave_base_scale=4, scales_per_octave=1, ratios=[1.0])
        default = ATSSAssigner(topk=9, angle_version="le90")
    else:
        gen = AnchorGenerator(STRIDES, octave_base_scale=4, scales_per_octave=3, ratios=[1.0, 0.5, 2.0])
        default = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0)
    return RotatedRetinaHead(
        num_classes,
        in_channels=channels,
        feat_channels=channels,
        stacked_convs=2,
        anchor_generator=gen,
        bbox_coder=DeltaXYWHAOBBoxCoder(angle_range="le90", edge_swap=True, proj_xy=True),
        assigner=default if assigner is None else assigner,
        assign_by_circumhbbox=assign_by_circumhbbox,
        **kw,
    )


def head_loss(head, cls, reg, gt_boxes, gt_labels, metas, priors=None):
    return dense_head_losses(head, cls, reg, GroundTruths.pad(gt_boxes, gt_labels, "cpu"), metas, priors)


def head_targets(head, sizes, gt_boxes, gt_labels, metas, priors=None):
    """Steps 1-3 of the training path: ``(DenseAnchors, AnchorTargets)``."""
    anchors = dense_anchors(head.anchor_generator, sizes, metas, "cpu", priors, head.train_cfg.allowed_border)
    gts = GroundTruths.pad(gt_boxes, gt_labels, "cpu")
    gt_inds = assign_anchors(head.assigner, anchors, gts, head.assign_by_circumhbbox)
    coder, pos_weight = head.bbox_coder, head.train_cfg.pos_weight
    return anchors, anchor_targets(anchors, gt_inds, gts, coder, head.num_classes, pos_weight)


def image_by_image_targets(head, anchors, sizes, gt_boxes, gt_labels, metas):
    """The per-image path the heads had before anchor validity joined the batch (mmdet's
    ``get_targets``): each image's inside anchors alone through the assigner's single-image call,
    ``-1`` for the others; then the same targets step."""
    batch, n = anchors.shape[:2]
    level_sizes = [h * w * head.num_anchors for h, w in sizes]
    gt_inds = torch.full((batch, n), -1, dtype=torch.long)
    for i in range(batch):
        valid = torch.cat(head.anchor_generator.valid_flags(sizes, metas[i]["pad_shape"]))
        inside = rotated_anchor_inside_flags(
            anchors[i], valid, metas[i]["img_shape"], head.train_cfg.allowed_border
        )
        idx = inside.nonzero()[:, 0]
        counts = [int(f.sum()) for f in inside.split(level_sizes)]
        boxes = assign_targets_boxes(gt_boxes[i], head.assign_by_circumhbbox)
        if isinstance(head.assigner, ATSSAssigner):
            result = head.assigner.assign(anchors[i][idx], counts, boxes)
        else:
            result = head.assigner.assign(anchors[i][idx], boxes)
        gt_inds[i, idx] = result.gt_inds
    gts = GroundTruths.pad(gt_boxes, gt_labels, "cpu")
    dense = DenseAnchors(anchors, level_sizes, None)
    return anchor_targets(dense, gt_inds, gts, head.bbox_coder, head.num_classes, head.train_cfg.pos_weight)


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
    losses = head_loss(head, cls, reg, empty, labels, metas_for(batch=2))
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
    _, t = head_targets(head, [tuple(c.shape[-2:]) for c in cls], gts, labels, metas_for(batch=2))
    pos = int((t.labels[0] == 1).sum())
    assert pos > 0 and t.num_total_pos == pos + 1  # the empty image counts 1 (mmdet's max(pos, 1))
    assert int((t.bbox_weights[0].sum(-1) > 0).sum()) == pos and int(t.bbox_weights[1].sum()) == 0
    assert torch.all(t.label_weights[1] == 1)  # no ground truth: every anchor a negative


def test_valid_flags_exclude_padding():
    """Anchors beyond an image's own padded shape are neither positive nor negative."""
    head = retina_head(atss=True)
    cls, reg = head(feats_for(size=128))
    metas = [{"img_shape": (64, 128, 3), "pad_shape": (64, 128, 3), "scale_factor": [1.0] * 4}]
    sizes = [tuple(c.shape[-2:]) for c in cls]
    anchors, t = head_targets(head, sizes, [torch.zeros(0, 5)], [torch.zeros(0, dtype=torch.long)], metas)
    lw, y = t.label_weights[0], anchors.boxes[0, :, 1]
    assert torch.all(lw[y >= 64] == 0) and torch.all(lw[y < 64] == 1)


def padded_batch(seed=0):
    """Three images of one 128 x 128 batch with their own padded shapes (the second so small that
    its coarse levels keep fewer than ATSS's nine anchors) and ground truths (none in the last)."""
    g = torch.Generator().manual_seed(seed)
    metas = [
        {"img_shape": (128, 120, 3), "pad_shape": (128, 128, 3), "scale_factor": [1.0] * 4},
        {"img_shape": (60, 90, 3), "pad_shape": (64, 96, 3), "scale_factor": [1.0] * 4},
        {"img_shape": (90, 128, 3), "pad_shape": (96, 128, 3), "scale_factor": [1.0] * 4},
    ]
    gts = []
    for m, meta in zip((14, 4, 0), metas, strict=True):
        h, w = meta["img_shape"][:2]
        centre = torch.rand(m, 2, generator=g) * torch.tensor([w, h])
        size = 6 + torch.rand(m, 2, generator=g) * 40
        angle = (torch.rand(m, 1, generator=g) - 0.5) * 3.1
        gts.append(torch.cat([centre, size, angle], 1))
    labels = [torch.randint(0, 3, (len(b),), generator=g) for b in gts]
    return gts, labels, metas


@pytest.mark.parametrize("border", [-1, 0, 8])
@pytest.mark.parametrize("kind", ["atss", "retina", "refine"])
def test_padded_batch_targets_equal_image_by_image(kind, border):
    """Padding anchors fold into the batched path through the anchor-validity mask: every target
    equals the one of assigning each image's own inside anchors alone (grid anchors with ATSS and
    with MaxIoU, and R3Det-like per-image priors; with and without ``allowed_border``)."""
    train_cfg = TrainConfig(allowed_border=border)
    if kind == "refine":
        assigner = MaxIoUAssigner(pos_iou_thr=0.6, neg_iou_thr=0.5, min_pos_iou=0)
        head = RotatedRetinaHead(3, 16, 16, 1, None, assigner=assigner, train_cfg=train_cfg)
    else:
        head = retina_head(atss=kind == "atss", train_cfg=train_cfg)
    cls, _ = head(feats_for(size=128))
    sizes = [tuple(c.shape[-2:]) for c in cls]
    gts, labels, metas = padded_batch()
    priors = None
    if kind == "refine":  # jittered one-per-location boxes, different in every image
        g = torch.Generator().manual_seed(1)
        grid = AnchorGenerator(STRIDES, octave_base_scale=4, scales_per_octave=1).grid_anchors(sizes)
        priors = [
            a[None] + torch.randn(3, *a.shape, generator=g) * torch.tensor([2, 2, 3, 3, 0.3]) for a in grid
        ]
    anchors, got = head_targets(head, sizes, gts, labels, metas, priors)
    assert anchors.valid is not None and not anchors.valid.all()
    expected = image_by_image_targets(head, anchors.boxes, sizes, gts, labels, metas)
    for field in ("labels", "label_weights", "bbox_targets", "bbox_weights", "num_total_pos"):
        assert torch.equal(getattr(got, field), getattr(expected, field)), field
    assert (got.labels[:2] < head.num_classes).any(dim=1).all()  # positives in both images with gts


def test_all_valid_batch_needs_no_flags():
    """Images padded to the batch shape: every anchor takes part, known from the shapes alone (no
    flags, no mask); the grid anchors are made once per sizes and kept out of the state dict."""
    head = retina_head(atss=True)
    cls, _ = head(feats_for(size=128))
    sizes = [tuple(c.shape[-2:]) for c in cls]
    anchors = dense_anchors(head.anchor_generator, sizes, metas_for(batch=2), "cpu")
    assert anchors.valid is None and anchors.boxes.shape == (2, sum(anchors.level_sizes), 5)
    assert head.grid_anchors(sizes, "cpu") is head.grid_anchors(sizes, "cpu")
    assert not any("anchor" in k for k in head.state_dict())


@pytest.mark.parametrize(
    "anchors_of, assigner",
    [
        ("retina", ATSSAssigner(topk=9, angle_version="le90")),
        ("atss", MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0)),
        ("retina", MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0)),
        ("atss", ATSSAssigner(topk=9, angle_version="le90")),
    ],
)
def test_any_head_trains_with_any_assigner(anchors_of, assigner):
    """One assigner protocol: RetinaNet's nine anchors with ATSS, ATSS's one anchor with MaxIoU (and
    the usual pairs) all find positives and take a training step, padded images included."""
    head = retina_head(atss=anchors_of == "atss", assigner=assigner)
    gts, labels, metas = padded_batch()
    optimizer = torch.optim.SGD(head.parameters(), lr=0.01)
    before = head.retina_reg.weight.detach().clone()
    losses = head_loss(head, *head(feats_for(size=128, batch=3)), gts, labels, metas)
    total = losses["loss_cls"].sum() + losses["loss_bbox"].sum()
    assert torch.isfinite(total) and float(losses["loss_bbox"].sum().detach()) > 0  # positives found
    total.backward()
    optimizer.step()
    assert not torch.equal(head.retina_reg.weight, before)


def test_head_rejects_an_assigner_without_the_protocol():
    class Legacy:
        def assign(self, anchors, gt_boxes):
            return None

    with pytest.raises(TypeError, match="Legacy does not follow rotdet.models.assigners.Assigner"):
        retina_head(assigner=Legacy())


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
    assert 0 < len(dets.boxes) <= 30 and torch.all(dets.scores[:-1] >= dets.scores[1:])
    a = dets.boxes[:, 4]
    assert torch.all((a >= -math.pi / 2) & (a < math.pi / 2)) and torch.all(
        dets.boxes[:, 2] >= dets.boxes[:, 3]
    )


def test_filter_bboxes_picks_best_anchor():
    head = retina_head()
    cls, reg = head(feats_for())
    rois = filter_bboxes(
        cls, reg, head.grid_anchors([tuple(c.shape[-2:]) for c in cls], "cpu"), head.bbox_coder.decode
    )
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
