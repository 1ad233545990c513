"""S2A-Net (``s2anet_r50_fpn_1x_dota_le135``): config, mmrotate's state-dict layout, the demo-size
variant's training step and inference, and -- opt-in -- the mmrotate 0.3.4 oracle dump.

The oracle dump is made by ``tests/data/s2anet_oracle.py`` (the reference venv) into
``$ROTDET_ORACLE_DIR/s2anet_r50_fpn_1x_dota_le135``; the comparison is skipped when it is absent (CI).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rotdet.configs import load_config
from rotdet.data.build import resolve_data_config
from rotdet.models import load_weights
from rotdet.models.detectors import sum_losses
from rotdet.models.factory import build_model
from rotdet.models.heads import RotatedRetinaHead, TestConfig
from rotdet.models.mmrotate_import import rotdet_to_mmrotate_key
from rotdet.models.s2anet import ODMRefineHead, S2ANet

NAME = "s2anet_r50_fpn_1x_dota_le135"
TESTS = Path(__file__).parent
ORACLE_DIR = Path(os.environ.get("ROTDET_ORACLE_DIR") or "/nonexistent-rotdet-oracle") / NAME


@pytest.fixture(autouse=True)
def _isolated_rng():
    """Tiny random-init models give denormal floats (slow on a CPU); leave the global RNG as it was."""
    torch.set_flush_denormal(True)
    with torch.random.fork_rng():
        yield
    torch.set_flush_denormal(False)


def tiny_overrides(channels: int = 32, num_classes: int = 3) -> list[str]:
    """The demo-size variant: ResNet-18, 32-channel neck and heads (the ODM head's oriented
    convolution: 4 filters x 8 turns), one conv per tower, 3 classes."""
    out = [
        "model.backbone.depth=18",
        "model.backbone.pretrained=false",
        "model.neck.in_channels=null",
        f"model.neck.out_channels={channels}",
        f"model.align_cfgs.channels={channels}",
    ]
    for head in ("model.fam_head", "model.odm_head"):
        out += [
            f"{head}.in_channels={channels}",
            f"{head}.feat_channels={channels}",
            f"{head}.num_classes={num_classes}",
            f"{head}.stacked_convs=1",
        ]
    return out


def _batch():
    images = torch.randn(2, 3, 70, 96)  # padded to 96 x 96 by the detector
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
    return images, targets, metas


def test_config_is_mmrotates():
    cfg = load_config(NAME)
    assert cfg["angle_version"] == "le135"
    model = cfg["model"]
    for head in ("fam_head", "odm_head"):
        coder = model[head]["bbox_coder"]
        assert (coder["angle_range"], coder["norm_factor"], coder["edge_swap"], coder["proj_xy"]) == (
            "le135",
            1,
            False,
            True,
        )
        assert model[head]["assign_by_circumhbbox"] is None and model[head]["stacked_convs"] == 2
        assert model[head]["loss_bbox"] == {"type": "SmoothL1Loss", "beta": 0.11, "loss_weight": 1.0}
    assert model["fam_head"]["anchor_generator"]["scales"] == [4]
    for stage in ("fam_cfg", "odm_cfg"):
        assigner = model["train_cfg"][stage]["assigner"]
        assert (assigner["type"], assigner["pos_iou_thr"], assigner["neg_iou_thr"]) == (
            "MaxIoUAssigner",
            0.5,
            0.4,
        )
    # one head's coder is its own (no shared YAML node): an override changes that head only
    over = load_config(NAME, ["model.odm_head.bbox_coder.target_stds=[0.1, 0.1, 0.2, 0.2, 0.1]"])["model"]
    assert over["fam_head"]["bbox_coder"]["target_stds"] == [1.0] * 5
    with pytest.raises(ValueError, match="model.odm_head.bbox_coder.angle_range='le90' disagrees"):
        load_config(NAME, ["model.odm_head.bbox_coder.angle_range=le90"])


def _expected_layout() -> dict[str, list[int]]:
    """mmrotate 0.3.4's S2ANet state-dict keys and shapes (recorded in the reference venv)."""
    record = json.loads((TESTS / "mmrotate_s2anet_state_dict_keys.json").read_text())["configs"][NAME]
    seed = json.loads((TESTS / "mmrotate_state_dict_keys.json").read_text())
    expected = {}
    for group in record["groups"]:
        expected.update(seed["groups"][group])
    expected.update(record["extra"])
    return expected


def test_state_dict_layout_matches_mmrotate():
    """Key for key and shape for shape mmrotate 0.3.4's S2ANet."""
    expected = _expected_layout()
    model = build_model(load_config(NAME, ["model.backbone.pretrained=false"]))
    assert isinstance(model, S2ANet) and type(model.fam_head) is RotatedRetinaHead
    assert isinstance(model.odm_head, ODMRefineHead) and model.bbox_head is model.odm_head
    ours = {rotdet_to_mmrotate_key(k): list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    assert model.state_dict()["odm_head.or_conv.indices"].dtype == torch.int32
    # a checkpoint in mmrotate's names loads strictly (and the int32 index table with it)
    state = {rotdet_to_mmrotate_key(k): torch.zeros_like(v) for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="or_conv.indices"):  # a wrong index table is refused
        load_weights(model, state)
    state["odm_head.or_conv.indices"] = model.state_dict()["odm_head.or_conv.indices"].clone()
    load_weights(model, state)
    assert model.odm_head.odm_cls.weight.abs().max() == 0


def test_demo_size_variant_trains_and_predicts():
    torch.manual_seed(0)
    model = build_model(load_config(NAME, tiny_overrides()))
    images, targets, metas = _batch()
    model.train()
    losses = model.forward_train(images, targets, metas, per_level=True)
    assert set(losses) == {"fam.loss_cls", "fam.loss_bbox", "odm.loss_cls", "odm.loss_bbox"}
    assert all(v.shape == (5,) and torch.isfinite(v).all() for v in losses.values())
    assert all(float(v.detach().sum()) > 0 for v in losses.values())  # positives in both stages
    sum_losses(losses).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n, p in trainable.items() if p.grad is None and not n.startswith("backbone")]
    assert missing == []  # fam, align conv and odm (its oriented conv too) all get gradients
    assert model.odm_head.or_conv.weight.grad.abs().sum() > 0
    assert model.align_conv.ac[0].deform_conv.weight.grad.abs().sum() > 0
    model.eval()
    out = model(images)
    assert [r.shape for r in out["rois"]] == [
        (2, h * w, 5) for h, w in [(12, 12), (6, 6), (3, 3), (2, 2), (1, 1)]
    ]
    low = TestConfig(nms_pre=50, score_thr=0.0, iou_thr=0.1, max_per_img=20)
    dets = model.predict(images, metas, cfg=low)
    assert len(dets) == 2 and all(0 < len(d.boxes) <= 20 for d in dets)
    # the detections are the ODM head's outputs decoded on the rois
    cand = model.predict(images, metas, rescale=False, cfg=low, with_nms=False)[0]
    odm_cls = torch.cat([c[0].permute(1, 2, 0).reshape(-1, 3) for c in out["odm"][0]]).sigmoid()
    top = torch.sort(cand["scores"].flatten(), descending=True).values[:5]
    assert torch.allclose(top, torch.sort(odm_cls.flatten(), descending=True).values[:5])


def test_train_step_under_bfloat16_autocast():
    torch.manual_seed(0)
    model = build_model(load_config(NAME, tiny_overrides()))
    images, targets, metas = _batch()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.forward_train(images, targets, metas)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum_losses(losses).backward()


def test_num_classes_of_both_heads_follow_the_data():
    cfg = load_config(NAME, ["data.classes=toy"])
    with pytest.raises(ValueError, match="model.fam_head.num_classes is 15 but data.classes has 6"):
        resolve_data_config(cfg)
    fixed = load_config(NAME, ["data.classes=toy", "model.fam_head.num_classes=6"])
    with pytest.raises(ValueError, match="set model.odm_head.num_classes=6"):
        resolve_data_config(fixed)
    unset = load_config(
        NAME, ["data.classes=toy", "model.fam_head.num_classes=null", "model.odm_head.num_classes=null"]
    )
    model = resolve_data_config(unset)["model"]
    assert model["fam_head"]["num_classes"] == model["odm_head"]["num_classes"] == 6


def test_wrong_s2anet_configs_are_refused():
    with pytest.raises(ValueError, match="expected 'ODMRefineHead'"):
        build_model(load_config(NAME, [*tiny_overrides(), "model.odm_head.type=RotatedRetinaRefineHead"]))
    with pytest.raises(ValueError, match="align_cfgs.channels \\(256\\)"):
        build_model(load_config(NAME, [*tiny_overrides(), "model.align_cfgs.channels=256"]))
    with pytest.raises(ValueError, match="one anchor per location"):
        build_model(
            load_config(NAME, [*tiny_overrides(), "model.fam_head.anchor_generator.ratios=[1.0, 0.5]"])
        )
    with pytest.raises(ValueError, match="multiple of 8"):
        build_model(load_config(NAME, [*tiny_overrides(), "model.odm_head.feat_channels=36"]))


# --------------------------------------------------------------------------- mmrotate oracle (opt-in)
def _max_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max()) if a.size else 0.0


@pytest.mark.skipif(not ORACLE_DIR.is_dir(), reason="mmrotate S2A-Net oracle dump not available")
def test_matches_mmrotate_oracle():
    """Same weights and input as mmrotate 0.3.4: raw FAM outputs, rois, ODM outputs, per-level
    losses, the candidates before NMS and the detections."""
    d = dict(np.load(ORACLE_DIR / "oracle.npz"))
    assert json.loads((ORACLE_DIR / "keys.json").read_text()) == _expected_layout()
    model = build_model(load_config(NAME, ["model.backbone.pretrained=false"]))
    load_weights(model, ORACLE_DIR / "model.pth")
    img = torch.from_numpy(d["img"])
    h, w = (int(v) for v in d["img_shape"][:2])
    metas = [{"img_shape": (h, w, 3), "pad_shape": (h, w, 3), "scale_factor": [1.0] * 4, "flip": False}]
    model.train()
    target = {"boxes": torch.from_numpy(d["gt_bboxes"]), "labels": torch.from_numpy(d["gt_labels"])}
    losses = model.forward_train(img, [target], metas, per_level=True)
    for key, value in losses.items():
        ref = d[f"loss.{key}"]
        assert _max_err(value.detach(), ref) <= 1e-4 * max(1.0, float(np.abs(ref).max())), key
    model.eval()
    with torch.no_grad():
        out = model(img)
    for i in range(5):
        assert _max_err(out["fam"][0][i], d[f"fam.cls_score.l{i}"]) < 1e-3
        assert _max_err(out["fam"][1][i], d[f"fam.bbox_pred.l{i}"]) < 1e-4
        assert _max_err(out["rois"][i][0], d[f"rois.l{i}"]) < 1e-2  # pixels, up to 1024
        assert _max_err(out["odm"][0][i], d[f"odm.cls_score.l{i}"]) < 1e-3
        assert _max_err(out["odm"][1][i], d[f"odm.bbox_pred.l{i}"]) < 1e-4
    for variant in ("default", "low"):
        if f"det.{variant}" not in d:
            continue
        tc = json.loads(str(d[f"det.{variant}.cfg"]))
        cfg = TestConfig(tc["nms_pre"], tc["score_thr"], tc["nms"]["iou_thr"], tc["max_per_img"])
        cand = model.predict(img, metas, rescale=False, cfg=cfg, with_nms=False)[0]
        assert _max_err(cand["boxes"], d[f"det.{variant}.prenms_bboxes"]) < 1e-2
        assert _max_err(cand["scores"], d[f"det.{variant}.prenms_scores"][:, :-1]) < 1e-5
        dets = model.predict(img, metas, rescale=False, cfg=cfg)[0]
        ref = d[f"det.{variant}"]
        assert len(dets.boxes) == len(ref)
        ours = np.concatenate([dets.boxes, dets.scores[:, None], dets.labels[:, None].double()], 1)
        order_o, order_r = np.lexsort((-ours[:, 5], ours[:, 6])), np.lexsort((-ref[:, 5], ref[:, 6]))
        assert _max_err(ours[order_o], ref[order_r]) < 1e-2


def test_deform_conv2d_gather_is_torchvisions_deform_conv2d():
    """The exported graph's deformable convolution (gathers and a matrix product) gives
    torchvision's kernel's values, points near and beyond every border included."""
    from torchvision.ops import deform_conv2d

    from rotdet.ops.align_conv import deform_conv2d_gather

    g = torch.Generator().manual_seed(0)
    for h, w in ((7, 9), (12, 5)):
        x = torch.randn(2, 5, h, w, generator=g)
        weight = torch.randn(4, 5, 3, 3, generator=g)
        offsets = torch.randn(2, 18, h, w, generator=g) * 4
        offsets[0, 0, 0, 0], offsets[0, 1, 0, 1] = -0.5, -1.0  # on the -1 border exactly
        offsets[1, 0, h - 1, 0] = 1.0  # on the H border exactly
        want = deform_conv2d(x, offsets, weight, padding=(1, 1))
        torch.testing.assert_close(deform_conv2d_gather(x, offsets, weight, 1), want, rtol=1e-5, atol=1e-5)
