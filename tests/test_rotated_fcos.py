"""Rotated FCOS (``rotated_fcos_r50_fpn_1x_dota_le90`` and its ``sep_angle``, ``kld`` and
``csl_gaussian`` variants): the differentiable rotated IoU and its loss, the coders, the target
rules, the configs and mmrotate's state-dict layout, the demo-size variant's training step and
inference, the command line, and -- opt-in -- the mmrotate 0.3.4 oracle dump.

The dump is made in the reference venv by the oracle harness's ``fcos_dump.py`` (it patches mmcv's
CUDA-only vertex sort with a literal Python transcription of the kernel, and sets the attribute
mmrotate's CSL head misspells) into ``$ROTDET_ORACLE_DIR/<config>``; the comparison is skipped when
it is absent (CI).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rotdet.configs import load_config
from rotdet.models import load_weights
from rotdet.models.detectors import sum_losses
from rotdet.models.factory import build_model
from rotdet.models.fcos import DistanceAnglePointCoder, RotatedFCOS, RotatedFCOSHead, level_points
from rotdet.models.iou_losses import GIoULoss, RotatedIoULoss
from rotdet.models.mmrotate_import import rotdet_to_mmrotate_key
from rotdet.models.postprocess import TestConfig
from rotdet.models.targets import GroundTruths
from rotdet.ops.diff_iou import diff_iou_rotated_2d
from rotdet.ops.iou import bbox_overlaps, box_iou_rotated
from rotdet.structures.detections import RotatedDetections

LE90 = "rotated_fcos_r50_fpn_1x_dota_le90"
SEP = "rotated_fcos_sep_angle_r50_fpn_1x_dota_le90"
KLD = "rotated_fcos_kld_r50_fpn_1x_dota_le90"
CSL = "rotated_fcos_csl_gaussian_r50_fpn_1x_dota_le90"
CONFIGS = (LE90, SEP, KLD, CSL)
TESTS = Path(__file__).parent
ORACLE_ROOT = Path(os.environ.get("ROTDET_ORACLE_DIR") or "/nonexistent-rotdet-oracle")


@pytest.fixture(autouse=True)
def _isolated_rng():
    """Tiny random-init models give denormal floats (slow on a CPU); leave the global RNG as it was."""
    torch.set_flush_denormal(True)
    with torch.random.fork_rng():
        yield
    torch.set_flush_denormal(False)


def tiny_overrides(channels: int = 32, num_classes: int = 3) -> list[str]:
    """The demo-size variant: ResNet-18, 32-channel neck and head (GroupNorm of 8 groups), one conv
    per tower, 3 classes."""
    return [
        "model.backbone.depth=18",
        "model.backbone.pretrained=false",
        "model.neck.in_channels=null",
        f"model.neck.out_channels={channels}",
        f"model.bbox_head.in_channels={channels}",
        f"model.bbox_head.feat_channels={channels}",
        f"model.bbox_head.num_classes={num_classes}",
        "model.bbox_head.stacked_convs=1",
        "model.bbox_head.norm_cfg.num_groups=8",
    ]


def _random_pairs(n: int, seed: int = 0, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b1 = torch.cat(
        [
            torch.rand(n, 2, generator=g) * 60,
            torch.rand(n, 2, generator=g) * 30 + 2,
            torch.rand(n, 1, generator=g) * 3.2 - 1.6,
        ],
        1,
    )
    b2 = b1 + torch.randn(n, 5, generator=g) * torch.tensor([6.0, 6.0, 4.0, 4.0, 0.4])
    b2[:, 2:4] = b2[:, 2:4].abs() + 1
    return b1.to(dtype), b2.to(dtype)


# --------------------------------------------------------------------------- differentiable IoU
def test_diff_iou_equals_the_exact_rotated_iou():
    b1, b2 = _random_pairs(600)
    b2[:40, :2] += 300  # disjoint
    b2[40:80] = b1[40:80]
    b2[40:80, 2:4] *= 0.4  # one inside the other
    b2[80:120] = b1[80:120]
    b2[80:120, 4] += 0.5  # same centre, turned
    ours = diff_iou_rotated_2d(b1[None], b2[None])[0]
    exact = box_iou_rotated(b1, b2, aligned=True)
    assert ours.shape == (600,)
    assert (ours[:40] == 0).all()
    assert torch.allclose(ours[40:80], torch.full((40,), 0.16), atol=1e-5)
    assert (ours - exact).abs().max() < 2e-5
    # float64: identical boxes are the 8-corner special case of the kernel's sort (IoU exactly 1)
    d1, d2 = b1.double(), b2.double()
    d2[:30] = d1[:30]
    ours64 = diff_iou_rotated_2d(d1, d2)
    assert torch.allclose(ours64[:30], torch.ones(30, dtype=torch.float64), atol=1e-12)
    assert (ours64 - box_iou_rotated(d1, d2, aligned=True)).abs().max() < 1e-9


def test_diff_iou_gradients_by_gradcheck():
    b1, b2 = _random_pairs(12, seed=3, dtype=torch.float64)
    b1.requires_grad_(True)
    b2.requires_grad_(True)
    assert torch.autograd.gradcheck(diff_iou_rotated_2d, (b1, b2), eps=1e-6, atol=1e-6)
    # no overlap: zero IoU, zero gradient (not NaN)
    far = b2.detach().clone()
    far[:, :2] += 500
    far.requires_grad_(True)
    diff_iou_rotated_2d(b1, far).sum().backward()
    assert torch.equal(far.grad, torch.zeros_like(far))


def test_rotated_iou_loss_modes_weights_and_avg_factor():
    pred, target = _random_pairs(50, seed=1)
    iou = diff_iou_rotated_2d(pred, target).clamp(min=1e-6)
    w = torch.rand(50)
    for mode, expect in (("linear", 1 - iou), ("square", 1 - iou**2), ("log", -iou.log())):
        loss = RotatedIoULoss(loss_weight=2.0, mode=mode)
        assert torch.allclose(loss(pred, target), 2 * expect.mean(), atol=1e-6)
        got = loss(pred, target, weight=w, avg_factor=7.0)
        assert torch.allclose(got, 2 * (expect * w).sum() / (7.0 + torch.finfo(torch.float32).eps))
    assert torch.allclose(RotatedIoULoss(linear=True)(pred, target), (1 - iou).mean())
    # mmdet's shortcut: no positive weight is a zero that still reaches the predictions
    p = pred.clone().requires_grad_(True)
    zero = RotatedIoULoss()(p, target, weight=torch.zeros(50), avg_factor=3.0)
    assert zero.item() == 0 and zero.requires_grad
    with pytest.raises(ValueError, match="mode"):
        RotatedIoULoss(mode="exp")


def test_giou_loss_is_mmdets():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    # IoU 50/150, enclosing 150 -> GIoU 1/3; disjoint: IoU 0, enclosing 300, union 200
    assert torch.allclose(bbox_overlaps(a, b, aligned=True, mode="giou"), torch.tensor([1 / 3, -1 / 3]))
    assert torch.allclose(
        GIoULoss()(a, b, weight=torch.tensor([1.0, 0.0]), avg_factor=1.0), torch.tensor(2 / 3)
    )


# --------------------------------------------------------------------------- coder, points, targets
def test_coder_round_trip_and_angle_wrap():
    coder = DistanceAnglePointCoder("le90")
    boxes = torch.tensor([[50.0, 40.0, 30.0, 10.0, 0.4], [10.0, 10.0, 8.0, 20.0, -1.2]])
    points = torch.tensor([[52.0, 41.0], [9.0, 12.0]])
    dist = coder.encode(points, boxes)
    assert torch.allclose(dist[:, [0, 2]].sum(1), boxes[:, 2]) and torch.allclose(
        dist[:, [1, 3]].sum(1), boxes[:, 3]
    )
    assert torch.allclose(coder.decode(points, dist), boxes, atol=1e-5)
    turned = dist[:, [2, 3, 0, 1, 4]].clone()  # the frame turned by pi: sides swap
    turned[:, 4] += math.pi  # the same box; the angle comes back in [-pi/2, pi/2)
    assert torch.allclose(coder.decode(points, turned), boxes, atol=1e-5)
    clamped = coder.encode(points + 100, boxes, max_dis=16.0)
    assert clamped[:, :4].min() >= 0 and clamped[:, :4].max() <= 16.0 - 0.1 + 1e-6


def test_csl_coder_is_mmrotates():
    from rotdet.models.csl import CSLCoder

    coder = CSLCoder("le90", omega=1, window="gaussian", radius=1)
    angles = torch.tensor([[0.3], [-1.5], [math.pi / 2 - 1e-4]])
    labels = coder.encode(angles)
    assert labels.shape == (3, 180)
    # bin = trunc(deg + 90): 107, 4, 179; the window wraps round the circle
    assert labels.argmax(1).tolist() == [107, 4, 179] and labels[2, 0] == pytest.approx(math.exp(-0.5))
    assert torch.allclose(
        coder.decode(labels), torch.tensor([107.5, 4.5, 179.5]) * math.pi / 180 - math.pi / 2
    )
    assert CSLCoder("oc").coding_len == 90
    pulse = CSLCoder("le135", window="pulse").encode(torch.tensor([[0.0]]))
    assert pulse.sum() == 1 and pulse[0, 45] == 1


def test_points_are_mmdets_grid():
    pts = level_points([(2, 3)], [8], "cpu")[0]
    assert pts.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def _head(**kw) -> RotatedFCOSHead:
    return RotatedFCOSHead(
        num_classes=3,
        in_channels=8,
        feat_channels=8,
        stacked_convs=1,
        norm_cfg={"type": "GN", "num_groups": 4},
        **kw,
    )


def test_targets_rules():
    """Inside the rotated box (strictly), the level's regress range, centre sampling, smallest area."""
    head = _head(center_sampling=False)
    pts = level_points([(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], head.strides, "cpu")
    gts = GroundTruths.from_targets(
        [
            {
                "boxes": torch.tensor(
                    [[60.0, 60.0, 100.0, 20.0, math.pi / 4], [60.0, 60.0, 40.0, 40.0, 0.0]]
                ),
                "labels": [1, 2],
            }
        ],
        "cpu",
    )
    t = head.targets(pts, gts)
    labels, sides = t.labels[0], t.boxes[0]
    flat = torch.cat(pts)
    # a point inside both boxes whose distances fit level 0 takes the smaller one (area 1600 < 2000)
    i = int(((flat - torch.tensor([60.0, 60.0])).abs() < 5).all(1).nonzero()[0])
    assert labels[i] == 2
    assert torch.allclose(sides[i].sum(), torch.tensor(80.0), atol=1e-4)  # (l + r) + (t + b) = 40 + 40
    # the rotated box: a point on its long axis, outside the square, is the rotated box's
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    along = torch.tensor([60.0 + 36 * c, 60.0 + 36 * s])
    # (its largest side distance, ~90 px, is level 1's range: 64..128)
    n0 = pts[0].shape[0]
    j = n0 + int((pts[1] - along).norm(dim=1).argmin())
    assert labels[j] == 1
    # far from both: background; every label is a class or background
    assert labels[0] == 3 and set(labels.tolist()) <= {1, 2, 3}
    # centre sampling keeps only points within 1.5 strides of the centre along the box axes
    sampled = _head(center_sampling=True).targets(pts, gts).labels[0]
    assert sampled[j] == 3 and sampled[i] == 2
    # regress range: a 300-px box is too big for level 0 (max distance > 64)
    big = GroundTruths.from_targets(
        [{"boxes": torch.tensor([[64.0, 64.0, 300.0, 300.0, 0.0]]), "labels": [0]}], "cpu"
    )
    lab = head.targets(pts, big).labels[0]
    sizes = t.level_sizes
    assert (lab[: sizes[0] + sizes[1]] == 3).all() and (lab[sizes[0] + sizes[1] :] == 0).any()
    # norm_on_bbox: the targets are in stride units
    normed = _head(norm_on_bbox=True).targets(pts, gts).boxes[0]
    assert torch.allclose(normed[i] * 8, sides[i])


# --------------------------------------------------------------------------- config and layout
def test_configs_are_mmrotates():
    for name in CONFIGS:
        cfg = load_config(name)
        assert cfg["angle_version"] == "le90"
        head = cfg["model"]["bbox_head"]
        assert head["bbox_coder"] == {"type": "DistanceAnglePointCoder", "angle_version": "le90"}
        assert (head["center_sampling"], head["norm_on_bbox"], head["centerness_on_reg"]) == (
            True,
            True,
            True,
        )
        assert head["regress_ranges"][-1] == [512, 1e8]
        neck = cfg["model"]["neck"]
        assert (neck["add_extra_convs"], neck["relu_before_extra_convs"]) == ("on_output", True)
        assert cfg["model"]["test_cfg"]["nms"] == {"iou_thr": 0.1}
    kld = load_config(KLD)["model"]["bbox_head"]["loss_bbox"]
    assert kld == {"type": "GDLoss_v1", "loss_type": "kld", "fun": "log1p", "tau": 1.0, "loss_weight": 1.0}
    csl = load_config(CSL)["model"]["bbox_head"]
    assert csl["type"] == "CSLRFCOSHead" and csl["angle_coder"]["angle_version"] == "le90"
    assert (csl["angle_coder"]["radius"], csl["scale_angle"], csl["loss_angle"]["type"]) == (
        1,
        False,
        "SmoothFocalLoss",
    )
    sep = load_config(SEP)["model"]["bbox_head"]
    assert sep["separate_angle"] and sep["loss_bbox"]["type"] == "GIoULoss"
    assert sep["loss_angle"] == {"type": "L1Loss", "loss_weight": 0.2}
    with pytest.raises(ValueError, match="angle_version='le135' disagrees"):
        load_config(LE90, ["model.bbox_head.bbox_coder.angle_version=le135"])
    with pytest.raises(ValueError, match="GIoULoss"):
        build_model(load_config(LE90, [*tiny_overrides(), "model.bbox_head.separate_angle=true"]))


def _expected_layout(name: str) -> dict[str, list[int]]:
    """mmrotate 0.3.4's RotatedFCOS state-dict keys and shapes (recorded in the reference venv)."""
    record = json.loads((TESTS / "mmrotate_fcos_state_dict_keys.json").read_text())["configs"][name]
    seed = json.loads((TESTS / "mmrotate_state_dict_keys.json").read_text())
    expected = {}
    for group in record["groups"]:
        expected.update(seed["groups"][group])
    expected.update(record["extra"])
    return expected


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_layout_matches_mmrotate(name):
    expected = _expected_layout(name)
    model = build_model(load_config(name, ["model.backbone.pretrained=false"]))
    assert isinstance(model, RotatedFCOS) and isinstance(model.bbox_head, RotatedFCOSHead)
    ours = {rotdet_to_mmrotate_key(k): list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    state = {rotdet_to_mmrotate_key(k): torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    load_weights(model, state)  # strict: zero missing, zero unexpected
    assert float(model.bbox_head.scales[0].scale.detach()) == 0.5


# --------------------------------------------------------------------------- demo-size variant
def _batch():
    images = torch.randn(2, 3, 120, 128)  # padded to 128 x 128 by the detector
    targets = [
        {
            "boxes": torch.tensor([[30.0, 40.0, 40.0, 20.0, 0.3], [80.0, 60.0, 70.0, 50.0, 1.0]]),
            "labels": [0, 2],
        },
        {"boxes": torch.tensor([[60.0, 60.0, 100.0, 30.0, -0.4]]), "labels": [1]},
    ]
    metas = [
        {"img_shape": (120, 128, 3), "pad_shape": (120, 128, 3), "scale_factor": [1.0] * 4, "flip": False},
        {"img_shape": (100, 110, 3), "pad_shape": (128, 128, 3), "scale_factor": [0.5] * 4, "flip": False},
    ]
    return images, targets, metas


@pytest.mark.parametrize("name", [LE90, SEP, CSL])
def test_demo_size_variant_trains_and_predicts(name):
    torch.manual_seed(0)
    model = build_model(load_config(name, tiny_overrides()))
    images, targets, metas = _batch()
    model.train()
    losses = model.forward_train(images, targets, metas, per_level=True)
    expected = {"loss_cls", "loss_bbox", "loss_centerness"} | (
        {"loss_angle"} if name in (SEP, CSL) else set()
    )
    assert set(losses) == expected
    assert all(v.shape == (5,) and torch.isfinite(v).all() for v in losses.values())
    assert all(float(v.detach().sum()) > 0 for v in losses.values())
    assert float(losses["loss_bbox"][1].detach()) > 0  # the 100-px boxes are level 1's (64..128)
    sum_losses(losses).backward()
    head = model.bbox_head
    for p in (
        head.conv_reg.weight,
        head.conv_angle.weight,
        head.conv_centerness.weight,
        head.scales[0].scale,
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert (head.scale_angle is None) == (name == CSL)
    if head.scale_angle is not None:
        assert head.scale_angle.scale.grad is not None
    model.eval()
    cls, reg, ang, ctr = model(images)
    assert [tuple(c.shape) for c in cls] == [(2, 3, s, s) for s in (16, 8, 4, 2, 1)]
    assert [tuple(r.shape[1:2]) for r in reg] == [(4,)] * 5 and all(c.shape[1] == 1 for c in ctr)
    assert all(a.shape[1] == (180 if name == CSL else 1) for a in ang)
    low = TestConfig(nms_pre=50, score_thr=0.0, iou_thr=0.1, max_per_img=20)
    dets = model.predict(images, metas, cfg=low)
    assert len(dets) == 2 and all(isinstance(d, RotatedDetections) and 0 < len(d) <= 20 for d in dets)
    assert dets[0].angle_version == "le90" and (dets[0].boxes[:, 4].abs() <= math.pi / 2).all()
    # scores rank by class score x centre-ness; rescale divides by the scale factor
    cand = model.predict(images, metas, rescale=False, cfg=low, with_nms=False)[1]
    scaled = model.predict(images, metas, rescale=True, cfg=low, with_nms=False)[1]
    assert torch.allclose(scaled["boxes"][:, :4] * 0.5, cand["boxes"][:, :4])
    best = (cand["scores"] * cand["centerness"][:, None]).max()
    assert torch.allclose(dets[1].scores.max(), best)


def test_train_step_under_bfloat16_autocast():
    torch.manual_seed(0)
    model = build_model(load_config(LE90, tiny_overrides()))
    images, targets, metas = _batch()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.forward_train(images, targets, metas)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum_losses(losses).backward()


def test_no_ground_truth_gives_zero_box_losses():
    torch.manual_seed(0)
    model = build_model(load_config(LE90, tiny_overrides())).train()
    images = torch.randn(1, 3, 64, 64)
    losses = model.forward_train(images, [{"boxes": torch.zeros(0, 5), "labels": []}])
    assert float(losses["loss_bbox"]) == 0 and float(losses["loss_centerness"]) == 0
    assert float(losses["loss_cls"]) > 0
    sum_losses(losses).backward()


# --------------------------------------------------------------------------- mmrotate oracle (opt-in)
def _max_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max()) if a.size else 0.0


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_mmrotate_oracle(name):
    """Same weights and input as mmrotate 0.3.4: the points, targets, total losses, the raw head
    outputs and the detections; and mmcv's diff_iou_rotated_2d (values and gradients)."""
    folder = ORACLE_ROOT / name
    if not folder.is_dir():
        pytest.skip("mmrotate Rotated FCOS oracle dump not available")
    d = dict(np.load(folder / "oracle.npz"))
    assert json.loads((folder / "keys.json").read_text()) == _expected_layout(name)
    # the IoU and its gradients (mmcv's with the transcribed kernel sort)
    b1 = torch.from_numpy(d["diou.boxes1"]).requires_grad_(True)
    b2 = torch.from_numpy(d["diou.boxes2"]).requires_grad_(True)
    iou = diff_iou_rotated_2d(b1, b2)
    finite = torch.isfinite(iou)
    assert _max_err(iou.detach()[finite], d["diou.iou"][finite.numpy()]) < 1e-6
    torch.where(finite, iou, 0).sum().backward()
    assert _max_err(b1.grad, d["diou.grad1"]) < 1e-5 and _max_err(b2.grad, d["diou.grad2"]) < 1e-5

    model = build_model(load_config(name, ["model.backbone.pretrained=false"]))
    load_weights(model, folder / "model.pth")
    img = torch.from_numpy(d["img"])
    h, w = (int(v) for v in d["img_shape"][:2])
    metas = [{"img_shape": (h, w, 3), "pad_shape": (h, w, 3), "scale_factor": [1.0] * 4, "flip": False}]
    head = model.bbox_head
    model.train()
    target = {"boxes": torch.from_numpy(d["gt_bboxes"]), "labels": torch.from_numpy(d["gt_labels"])}
    losses = model.forward_train(img, [target], metas, per_level=True)
    for key, value in losses.items():
        # what mmdet's _parse_losses logs and sums (GDLoss_v1 returns an unreduced loss: its mean)
        ref = float(d[f"logvar.{key}"]) if f"logvar.{key}" in d else float(np.sum(d[f"loss.{key}"]))
        assert abs(float(value.detach().sum()) - ref) <= 1e-4 * max(1.0, abs(ref)), key
    grads = [k for k in d if k.startswith("grad.")]
    if grads:  # gradients of the total loss, the box loss's IoU backward included
        model.zero_grad()
        sum_losses(losses).backward()
        for key in grads:
            ref = d[key]
            ours = head.get_parameter(key.removeprefix("grad.")).grad
            assert _max_err(ours, ref) <= 1e-4 * max(1e-3, float(np.abs(ref).max())), key
    with torch.no_grad():
        feats = model.extract_feat(img)
        train_out = head(feats)
        sizes = [tuple(c.shape[-2:]) for c in train_out[0]]
        pts = head.points(sizes, "cpu")
        t = head.targets(pts, GroundTruths.from_targets([target], "cpu"))
    start = 0
    for i, n in enumerate(t.level_sizes):
        assert torch.equal(pts[i], torch.from_numpy(d[f"points.l{i}"]))
        assert np.array_equal(t.labels[0, start : start + n].numpy(), d[f"target.labels.l{i}"])
        assert _max_err(t.boxes[0, start : start + n], d[f"target.bbox.l{i}"]) < 1e-3
        # (CSL's targets are the encoded angles)
        assert _max_err(head.angle_targets(t.angles[0, start : start + n]), d[f"target.angle.l{i}"]) == 0
        assert _max_err(train_out[1][i], d[f"train.bbox_pred.l{i}"]) < 1e-4
        start += n
    model.eval()
    with torch.no_grad():
        outs = model(img)
    for i in range(5):
        for k, key in enumerate(("cls_score", "bbox_pred", "angle_pred", "centerness")):
            ref = d[f"head.{key}.l{i}"]
            assert _max_err(outs[k][i], ref) < 1e-4 * max(1.0, float(np.abs(ref).max())), (key, i)
    for variant in ("default", "low"):
        tc = json.loads(str(d[f"det.{variant}.cfg"]))
        cfg = TestConfig(tc["nms_pre"], tc["score_thr"], tc["nms"]["iou_thr"], tc["max_per_img"])
        dets = model.predict(img, metas, rescale=False, cfg=cfg)[0]
        ref = d[f"det.{variant}"]
        assert len(dets) == len(ref), variant
        ours = np.concatenate([dets.boxes, dets.scores[:, None], dets.labels[:, None].double()], 1)
        order_o, order_r = np.lexsort((-ours[:, 5], ours[:, 6])), np.lexsort((-ref[:, 5], ref[:, 6]))
        assert _max_err(ours[order_o], ref[order_r]) < 1e-2


# --------------------------------------------------------------------------- command line
def test_train_test_predict_bench_convert_cli(tmp_path):
    """``rotdet train / test / predict / bench / convert`` with the demo-size le90 variant on ToyDOTA."""
    from rotdet.cli import main
    from rotdet.data import ensure_toy_dota

    ensure_toy_dota(tmp_path / "toy" / "train", num_images=4, seed=0, size=(128, 128))
    ensure_toy_dota(tmp_path / "toy" / "val", num_images=2, seed=1, size=(128, 128))
    split = ["data.train.img_dir=train/images", "data.train.ann_dir=train/labelTxt"]
    split += ["data.val.img_dir=val/images", "data.val.ann_dir=val/labelTxt"]
    overrides = [
        f"data.root={tmp_path / 'toy'}",
        "data.classes=toy",
        *split,
        *tiny_overrides(num_classes=6),
        "data.img_scale=[128,128]",
        "data.samples_per_gpu=2",
        "data.workers_per_gpu=0",
        "max_epochs=1",
        "lr_config.warmup_iters=1",
    ]
    work = tmp_path / "work"
    assert main(["train", LE90, *overrides, "--work-dir", str(work), "--no-progress"]) == 0
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert any(r["mode"] == "train" and "loss_centerness" in r for r in records)
    out = tmp_path / "test"
    argv = ["test", LE90, str(work / "latest.pth"), *overrides, "--out", str(out), "--workers", "0"]
    assert main([*argv, "--no-progress"]) == 0
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["mAP"] <= 1.0
    image = tmp_path / "toy" / "val" / "images" / "T0000.png"
    pred = tmp_path / "pred"
    config = str(work / "config.yaml")
    assert (
        main(["predict", config, str(work / "latest.pth"), str(image), "--out", str(pred), "--device", "cpu"])
        == 0
    )
    assert (pred / "T0000.json").is_file()
    bench = tmp_path / "bench.json"
    argv = [
        "bench",
        config,
        "--img-size",
        "128",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--train",
    ]
    assert main([*argv, "--json", str(bench)]) == 0
    assert bench.is_file()
    # an mmrotate-named checkpoint of the model converts strictly
    model = build_model(load_config(config))
    mm = {rotdet_to_mmrotate_key(k): v for k, v in model.state_dict().items()}
    torch.save({"state_dict": mm, "meta": {"CLASSES": ["a"] * 6}}, tmp_path / "mm.pth")
    tiny = ["--cfg-options", *[o for o in overrides if o.startswith("model.") or o == "data.classes=toy"]]
    assert (
        main(["convert", str(tmp_path / "mm.pth"), str(tmp_path / "conv.pth"), "--config", LE90, *tiny]) == 0
    )
    assert (tmp_path / "conv.pth").is_file()


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from rotdet.models.fcos import _reduce_mean

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        # num_pos 3 on one process, 7 on the other: both average over the mean, 5 (mmdet's reduce_mean)
        value = _reduce_mean(torch.tensor(3.0 if rank == 0 else 7.0))
        Path(out, f"rank{rank}.txt").write_text(str(float(value)))
    finally:
        dist.destroy_process_group()


def test_num_pos_is_averaged_over_ddp_processes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the children need no fresh interpreter (no re-import of torch and rotdet)
    mp.start_processes(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    assert [float((tmp_path / f"rank{r}.txt").read_text()) for r in (0, 1)] == [5.0, 5.0]
