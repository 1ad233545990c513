"""Detectors built from every config: forward + backward, inference, batching, config loading and a
small overfitting run (CPU, tiny sizes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rotdet.configs import SEED_CONFIGS, list_configs, load_config
from rotdet.data import collate
from rotdet.models.assigners import ATSSAssigner, MaxIoUAssigner
from rotdet.models.detectors import R3Det, sum_losses
from rotdet.models.factory import build_model
from rotdet.models.heads import RotatedRetinaHead, TestConfig
from rotdet.ops import box_iou_rotated


@pytest.fixture(autouse=True)
def _flush_denormals():
    """Tiny random-init models produce denormal floats that slow the CPU down by 10-50x."""
    torch.set_flush_denormal(True)
    with torch.random.fork_rng():  # leave the global RNG state as it was
        yield
    torch.set_flush_denormal(False)


def tiny_overrides(name: str, channels: int = 32, num_classes: int = 3, stacked: int = 1) -> list[str]:
    """ResNet-18 backbone, narrow neck/heads, few classes."""
    out = [
        "model.backbone.depth=18",
        "model.backbone.pretrained=false",
        "model.neck.in_channels=null",
        f"model.neck.out_channels={channels}",
    ]
    heads = ["model.bbox_head"] + (["model.refine_heads.0"] if name.startswith("r3det") else [])
    for h in heads:
        out += [
            f"{h}.in_channels={channels}",
            f"{h}.feat_channels={channels}",
            f"{h}.num_classes={num_classes}",
        ]
        out += [f"{h}.stacked_convs={stacked}"]
    if name.startswith("r3det"):
        out.append(f"model.frm_cfgs.0.in_channels={channels}")
    return out


def rect_image(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A dark image with the rotated rectangles ``boxes`` filled bright."""
    h, w = size
    img = torch.full((3, h, w), -1.0)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    for cx, cy, bw, bh, a in boxes.tolist():
        dx, dy = xs - cx, ys - cy
        u = dx * math.cos(a) + dy * math.sin(a)
        v = -dx * math.sin(a) + dy * math.cos(a)
        img[:, (u.abs() <= bw / 2) & (v.abs() <= bh / 2)] = 2.0
    return img


def test_config_file_yaml_error_names_file_and_line(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nmodel:\n  type: [unclosed\n")
    with pytest.raises(ValueError, match=r"mine.yaml is not valid YAML.*line 3"):
        load_config(bad)


def test_config_names_and_loader_errors():
    names = list_configs()
    # HRSC2016 (mmrotate's), DIOR-R, DOTA v2.0, YOLO-OBB (rotdet's): see tests/test_data_formats.py
    dataset_configs = {
        "rotated_retinanet_hbb_r50_fpn_6x_hrsc_rr_oc",
        "rotated_retinanet_obb_r50_fpn_6x_hrsc_rr_le90",
        "rotated_atss_obb_r50_fpn_6x_hrsc_rr_le90",
        "rotated_atss_obb_r50_fpn_1x_dior_le90",
        "rotated_atss_obb_r50_fpn_1x_dota2_le90",
        "rotated_atss_obb_r50_fpn_1x_yolo_le90",
    }
    # mmrotate's KLD configs of the seed models: see tests/test_kld_configs.py
    kld_configs = {
        "rotated_retinanet_obb_kld_stable_r50_fpn_1x_dota_le90",
        "rotated_retinanet_obb_kld_stable_r50_adamw_fpn_1x_dota_le90",
        "rotated_retinanet_hbb_kld_stable_r50_fpn_1x_dota_oc",
        "r3det_kld_r50_fpn_1x_dota_oc",
    }
    from test_kfiou_configs import KFIOU_CONFIGS  # mmrotate's KFIoU configs

    issue16_configs = {"s2anet_r50_fpn_1x_dota_le135"} | kld_configs | set(KFIOU_CONFIGS)  # test_s2anet
    fcos_configs = {
        f"rotated_fcos_{v}r50_fpn_1x_dota_le90" for v in ("", "sep_angle_", "kld_", "csl_gaussian_")
    }
    issue16_configs |= fcos_configs  # tests/test_rotated_fcos.py
    # Oriented R-CNN and its fp16 variant: tests/test_oriented_rcnn.py
    issue16_configs |= {"oriented_rcnn_r50_fpn_1x_dota_le90", "oriented_rcnn_r50_fpn_fp16_1x_dota_le90"}
    assert set(SEED_CONFIGS) | {"demo_atss_le90"} | dataset_configs | issue16_configs == set(names)
    with pytest.raises(ValueError, match="rotated_atss_obb_r50_fpn_1x_dota_le90"):
        load_config("rotated_atss_obb_r50_fpn_1x_dota_le45")
    with pytest.raises(KeyError, match="model.backbone.dept"):
        load_config("rotated_atss_obb_r50_fpn_1x_dota_le90", ["model.backbone.dept=18"])
    with pytest.raises(KeyError, match="no item"):
        load_config("r3det_r50_fpn_1x_dota_oc", ["model.refine_heads.3.num_classes=2"])
    with pytest.raises(ValueError, match=r"override 'optimizer=\{type: SGD': the value is not valid YAML"):
        load_config("r3det_r50_fpn_1x_dota_oc", ["optimizer={type: SGD"])
    cfg = load_config("r3det_r50_fpn_1x_dota_oc", ["model.frm_cfgs.0.points=5", "optimizer.lr=0.01"])
    assert cfg["model"]["frm_cfgs"][0]["points"] == 5 and cfg["optimizer"]["lr"] == 0.01
    # the seed configs are mmrotate's
    le135 = load_config("rotated_retinanet_obb_r50_fpn_1x_dota_le135")["model"]["bbox_head"]
    assert le135["bbox_coder"]["norm_factor"] == 1 and le135["bbox_coder"]["proj_xy"] is True
    assert le135["assign_by_circumhbbox"] is None
    r3 = load_config("r3det_atss_r50_fpn_1x_dota_oc")["model"]
    assert (
        r3["bbox_head"]["assign_by_circumhbbox"] == "oc"
        and r3["train_cfg"]["s0"]["assigner"]["type"] == "ATSSObbAssigner"
    )
    assert r3["train_cfg"]["sr"][0]["assigner"]["pos_iou_thr"] == 0.6
    with pytest.raises(ValueError, match="do not match"):
        over = ["model.backbone.depth=18", "model.backbone.pretrained=false"]
        build_model(load_config("rotated_atss_obb_r50_fpn_1x_dota_le90", over))


@pytest.mark.parametrize("name", [*SEED_CONFIGS, "demo_atss_le90"])
def test_forward_backward_predict_every_config(name):
    torch.manual_seed(0)
    model = build_model(load_config(name, tiny_overrides(name)))
    assert isinstance(model, R3Det) == name.startswith("r3det")
    boxes = torch.tensor([[30.0, 40.0, 40.0, 20.0, 0.3], [70.0, 30.0, 26.0, 26.0, 1.0]])
    images = torch.randn(2, 3, 70, 96)  # padded to 96 x 96 by the detector
    targets = [
        {"boxes": boxes, "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    metas = [
        {"img_shape": (70, 96, 3), "pad_shape": (70, 96, 3), "scale_factor": [1.0] * 4, "flip": False},
        {"img_shape": (64, 60, 3), "pad_shape": (64, 64, 3), "scale_factor": [0.5] * 4, "flip": False},
    ]
    model.train()
    losses = model.forward_train(images, targets, metas, per_level=True)
    expected = {"loss_cls", "loss_bbox"}
    if name.startswith("r3det"):
        expected = {f"{s}.{k}" for s in ("s0", "sr0") for k in expected}
    assert set(losses) == expected and all(
        v.shape == (5,) and torch.isfinite(v).all() for v in losses.values()
    )
    total = sum_losses(losses)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    frozen_stem = model.backbone.frozen_stages >= 0  # seed configs: 1; the demo trains every stage
    assert (model.backbone.conv1.weight.grad is None) == frozen_stem
    model.eval()
    dets = model.predict(images, metas)
    assert len(dets) == 2
    for d in dets:
        assert d.boxes.shape[1] == 5 and d.scores.shape == d.labels.shape


ATSS_ASSIGNER = "{type: ATSSObbAssigner, topk: 9}"  # angle_version: the config's own
MAX_IOU_ASSIGNER = (
    "{type: MaxIoUAssigner, pos_iou_thr: 0.5, neg_iou_thr: 0.4, min_pos_iou: 0, ignore_iof_thr: -1}"
)


@pytest.mark.parametrize(
    "name, override",
    [
        ("rotated_retinanet_obb_r50_fpn_1x_dota_le90", f"model.train_cfg.assigner={ATSS_ASSIGNER}"),
        ("rotated_atss_obb_r50_fpn_1x_dota_le90", f"model.train_cfg.assigner={MAX_IOU_ASSIGNER}"),
        ("r3det_r50_fpn_1x_dota_oc", f"model.train_cfg.sr.0.assigner={ATSS_ASSIGNER}"),
        ("r3det_atss_r50_fpn_1x_dota_oc", f"model.train_cfg.s0.assigner={MAX_IOU_ASSIGNER}"),
    ],
)
def test_any_head_assigner_pairing_builds_and_trains(name, override):
    """Every head takes every assigner (one protocol): a RetinaNet head with ATSS, an ATSS head with
    MaxIoU, R3Det's refine head with ATSS build and train a step on a padded batch."""
    torch.manual_seed(0)
    model = build_model(load_config(name, [*tiny_overrides(name), override]))
    images = torch.randn(2, 3, 70, 96)
    targets = [
        {
            "boxes": torch.tensor([[30.0, 40.0, 40.0, 20.0, 0.3], [70.0, 30.0, 26.0, 26.0, 1.0]]),
            "labels": [0, 2],
        },
        {"boxes": torch.tensor([[20.0, 20.0, 24.0, 12.0, -0.4]]), "labels": [1]},
    ]
    metas = [
        {"img_shape": (70, 96, 3), "pad_shape": (70, 96, 3), "scale_factor": [1.0] * 4, "flip": False},
        {"img_shape": (40, 60, 3), "pad_shape": (64, 64, 3), "scale_factor": [0.5] * 4, "flip": False},
    ]
    model.train()
    losses = model.forward_train(images, targets, metas)
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(float(v.detach()) > 0 for k, v in losses.items() if "loss_bbox" in k)  # positives everywhere
    sum_losses(losses).backward()
    assert model.bbox_head.retina_cls.weight.grad is not None


def test_mmrotate_head_types_build_one_head():
    """``RotatedATSSHead`` (and the refine head) are config names of the one head class: the
    assigner makes a head ATSS's."""
    atss = build_model(load_config("r3det_atss_r50_fpn_1x_dota_oc", ["model.backbone.pretrained=false"]))
    assert type(atss.bbox_head) is RotatedRetinaHead and type(atss.refine_head[0]) is RotatedRetinaHead
    assert isinstance(atss.bbox_head.assigner, ATSSAssigner) and atss.refine_head[0].anchors_from_caller
    assert isinstance(atss.refine_head[0].assigner, MaxIoUAssigner)


def test_losses_float32_under_autocast():
    name = "rotated_retinanet_obb_r50_fpn_1x_dota_le90"
    model = build_model(load_config(name, tiny_overrides(name)))
    model.train()
    target = {"boxes": torch.tensor([[30.0, 30.0, 30.0, 14.0, 0.2]]), "labels": torch.tensor([1])}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.forward_train(torch.randn(1, 3, 64, 64), [target])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum_losses(losses).backward()


def test_zero_ground_truth_losses_finite():
    model = build_model(
        load_config("r3det_atss_r50_fpn_1x_dota_oc", tiny_overrides("r3det_atss_r50_fpn_1x_dota_oc"))
    )
    model.train()
    empty = {"boxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model.forward_train(torch.randn(1, 3, 64, 64), [empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["s0.loss_bbox"].item() == 0 and losses["sr0.loss_bbox"].item() == 0
    sum_losses(losses).backward()


def test_collate_batch_and_r3det_options():
    name = "r3det_r50_fpn_1x_dota_oc"
    over = [*tiny_overrides(name), "model.frm_cfgs.0.points=5", "model.frm_cfgs.0.mmcv_yx=false"]
    model = build_model(load_config(name, over))
    assert model.feat_refine_module[0].points == 5 and not model.feat_refine_module[0].mmcv_yx
    samples = []
    for h, w in ((64, 96), (96, 64)):
        samples.append(
            {
                "img": torch.randn(3, h, w),
                "img_metas": {
                    "img_shape": (h, w, 3),
                    "pad_shape": (h, w, 3),
                    "scale_factor": np.ones(4, np.float32),
                },
                "gt_bboxes": torch.tensor([[30.0, 30.0, 30.0, 12.0, 0.5]]),
                "gt_labels": torch.tensor([1]),
            }
        )
    batch = collate(samples)
    model.train()
    losses = model.loss_batch(batch)
    assert all(torch.isfinite(v) for v in losses.values())


def _found_boxes(model, images, targets) -> list[bool]:
    """Per ground truth: a detection of its class at score >= 0.3 overlaps it with IoU >= 0.5."""
    model.eval()
    found = []
    with torch.no_grad():
        dets = model.predict(images, cfg=TestConfig(score_thr=0.3))
    for det, tgt in zip(dets, targets, strict=True):
        for box, label in zip(tgt["boxes"], tgt["labels"], strict=True):
            sel = det.labels == label
            found.append(bool(sel.any()) and float(box_iou_rotated(box[None], det.boxes[sel]).max()) >= 0.5)
    return found


def test_tiny_model_overfits_two_images():
    """ATSS le90 with a narrow ResNet-18 learns two synthetic images: every box found (IoU 0.5).

    Another CPU's kernels (AVX512, AMX, another BLAS) take another trajectory, so the test asks for
    convergence within a generous budget (checked every 20 steps) instead of a fixed step count."""
    torch.manual_seed(0)
    name = "rotated_atss_obb_r50_fpn_1x_dota_le90"
    model = build_model(load_config(name, tiny_overrides(name, channels=64, num_classes=2, stacked=2)))
    b1 = torch.tensor([[30.0, 30.0, 36.0, 15.0, 0.4], [67.5, 67.5, 30.0, 18.0, -0.7]])
    b2 = torch.tensor([[48.0, 30.0, 42.0, 18.0, -0.2], [30.0, 72.0, 24.0, 15.0, 1.1]])
    images = torch.stack([rect_image(b1, (96, 96)), rect_image(b2, (96, 96))])
    targets = [{"boxes": b1, "labels": torch.tensor([0, 1])}, {"boxes": b2, "labels": torch.tensor([1, 0])}]
    assert not all(_found_boxes(model, images, targets))  # nothing to find before training
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    found: list[bool] = []
    for step in range(1, 241):
        model.train()
        loss = sum_losses(model.forward_train(images, targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 40 and step % 20 == 0 and all(found := _found_boxes(model, images, targets)):
            break
    assert all(found), (step, found)
