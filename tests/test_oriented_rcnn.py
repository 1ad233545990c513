"""Oriented R-CNN (``oriented_rcnn_r50_fpn_1x_dota_le90`` and its fp16 variant): config,
mmrotate's state-dict layout, the parts' rules, the demo-size variant's training and inference,
and -- opt-in -- the mmrotate 0.3.4 oracle dump.

The oracle dump is made by the reference venv's ``oracle/orcnn_dump.py`` (outside the repo), e.g.
``$REF/venv/bin/python -W ignore $REF/oracle/orcnn_dump.py --out DIR/oriented_rcnn_r50_fpn_1x_dota_le90
--seed 1 --img-h 384 --img-w 448 --num-gts 10 --train-steps 10``, and read from
``$ROTDET_ORACLE_DIR/oriented_rcnn_r50_fpn_1x_dota_le90`` (``ROTDET_ORACLE_DIR=DIR``); the comparison
is skipped when it is absent (CI). Its training draws (the two samplers' ``randperm``) are recorded
there and replayed here through the samplers' ``permutation``, so the losses are compared for the
same sampled anchors and RoIs.
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
from rotdet.models.assigners import MaxIoUAssigner
from rotdet.models.detectors import sum_losses
from rotdet.models.factory import build_model
from rotdet.models.mmrotate_import import rotdet_to_mmrotate_key
from rotdet.models.oriented_rcnn import OrientedRCNN
from rotdet.models.postprocess import TestConfig
from rotdet.models.roi_head import rois_of
from rotdet.ops import bbox_overlaps
from rotdet.ops.hbb_nms import batched_nms_hbb
from rotdet.structures.detections import RotatedDetections

NAME = "oriented_rcnn_r50_fpn_1x_dota_le90"
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
    """The demo-size variant: ResNet-18, a 32-channel neck, RPN and RoI features, 64-wide FCs."""
    return [
        "model.backbone.depth=18",
        "model.backbone.pretrained=false",
        "model.neck.in_channels=null",
        f"model.neck.out_channels={channels}",
        f"model.rpn_head.in_channels={channels}",
        f"model.rpn_head.feat_channels={channels}",
        f"model.roi_head.bbox_roi_extractor.out_channels={channels}",
        f"model.roi_head.bbox_head.in_channels={channels}",
        "model.roi_head.bbox_head.fc_out_channels=64",
        f"model.roi_head.bbox_head.num_classes={num_classes}",
    ]


def _batch():
    images = torch.randn(2, 3, 100, 128)  # padded to 128 x 128 by the detector
    targets = [
        {
            "boxes": torch.tensor([[40.0, 50.0, 48.0, 24.0, 0.3], [90.0, 40.0, 30.0, 30.0, 1.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.tensor([[30.0, 30.0, 36.0, 16.0, -0.4]]), "labels": torch.tensor([1])},
    ]
    metas = [
        {"img_shape": (100, 128, 3), "pad_shape": (100, 128, 3), "scale_factor": [1.0] * 4, "flip": False},
        {"img_shape": (60, 80, 3), "pad_shape": (64, 96, 3), "scale_factor": [0.5] * 4, "flip": False},
    ]
    return images, targets, metas


def test_config_is_mmrotates():
    cfg = load_config(NAME)
    model = cfg["model"]
    assert cfg["angle_version"] == "le90" and cfg["optimizer"]["lr"] == 0.005
    assert model["rpn_head"]["version"] == "le90"
    assert model["rpn_head"]["bbox_coder"] == {
        "type": "MidpointOffsetCoder",
        "angle_range": "le90",
        "target_means": [0.0] * 6,
        "target_stds": [1.0, 1.0, 1.0, 1.0, 0.5, 0.5],
    }
    coder = model["roi_head"]["bbox_head"]["bbox_coder"]
    assert (coder["angle_range"], coder["edge_swap"], coder["proj_xy"], coder["norm_factor"]) == (
        "le90",
        True,
        True,
        None,
    )
    assert model["neck"]["start_level"] == 0 and model["neck"]["add_extra_convs"] is False
    assert load_config("oriented_rcnn_r50_fpn_fp16_1x_dota_le90")["model"] == model
    with pytest.raises(ValueError, match="model.rpn_head.version='oc' disagrees"):
        load_config(NAME, ["model.rpn_head.version=oc"])
    with pytest.raises(ValueError, match="roi_head.bbox_head.bbox_coder.angle_range='le135' disagrees"):
        load_config(NAME, ["model.roi_head.bbox_head.bbox_coder.angle_range=le135"])


def _expected_layout() -> dict[str, list[int]]:
    """mmrotate 0.3.4's OrientedRCNN state-dict keys and shapes (recorded in the reference venv)."""
    record = json.loads((TESTS / "mmrotate_oriented_rcnn_state_dict_keys.json").read_text())["configs"][NAME]
    seed = json.loads((TESTS / "mmrotate_state_dict_keys.json").read_text())
    expected = {}
    for group in record["groups"]:
        expected.update(seed["groups"][group])
    expected.update(record["extra"])
    return expected


def test_state_dict_layout_matches_mmrotate():
    """Key for key and shape for shape mmrotate 0.3.4's OrientedRCNN; its checkpoints load strictly."""
    expected = _expected_layout()
    model = build_model(load_config(NAME, ["model.backbone.pretrained=false"]))
    assert isinstance(model, OrientedRCNN) and model.bbox_head is model.roi_head.bbox_head
    ours = {rotdet_to_mmrotate_key(k): list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    state = {rotdet_to_mmrotate_key(k): torch.zeros_like(v) for k, v in model.state_dict().items()}
    load_weights(model, state)
    assert model.roi_head.bbox_head.fc_cls.weight.abs().max() == 0


def max_iou_assign_hbb(anchors, gts, pos, neg, min_pos, **kwargs):
    """The RPN's assignment: the shared MaxIoUAssigner on mmdet's horizontal IoU."""
    assigner = MaxIoUAssigner(pos, neg, min_pos, iou_calculator="BboxOverlaps2D", **kwargs)
    return assigner.assign(anchors, gts).gt_inds


def test_hbb_assigner_follows_mmdets_rules():
    anchors = torch.tensor(
        [[0.0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 15, 15], [40, 40, 50, 50], [0, 0, 9, 10]]
    )
    gts = torch.tensor([[0.0, 0, 10, 10], [100, 100, 104, 104]])
    iou = bbox_overlaps(gts, anchors)
    assert torch.allclose(iou[0], torch.tensor([1.0, 1.0, 25 / 175, 0.0, 0.9]))
    gt_inds = max_iou_assign_hbb(anchors, gts, 0.7, 0.3, 0.3)
    # two equal best anchors both positive, 0.14 negative, 0.9 >= 0.7 positive; the second gt
    # overlaps nothing (best 0 < min_pos_iou): no low-quality match
    assert gt_inds.tolist() == [1, 1, 0, 0, 1]
    anchors[4] = torch.tensor([2.0, 2, 12, 12])
    low = max_iou_assign_hbb(anchors, torch.tensor([[4.0, 4, 16, 16]]), 0.7, 0.3, 0.3)
    # IoUs 0.17, 0.17, 0.69, 0, 0.36: the best (< 0.7) is a low-quality match, 0.36 is ignored
    assert low.tolist() == [0, 0, 1, 0, -1]


def test_both_stages_assign_with_the_one_max_iou_assigner():
    """The RPN and the RoI head build the same MaxIoUAssigner from their config sections, only the
    IoU differing (horizontal for the RPN's anchors, rotated for the proposals)."""
    model = build_model(load_config(NAME, tiny_overrides()))
    rpn, rcnn = model.rpn_head.train_cfg.assigner, model.roi_head.train_cfg.assigner
    assert isinstance(rpn, MaxIoUAssigner) and isinstance(rcnn, MaxIoUAssigner)
    assert (rpn.iou_calculator, rpn.pos_iou_thr, rpn.neg_iou_thr, rpn.min_pos_iou) == (
        "BboxOverlaps2D",
        0.7,
        0.3,
        0.3,
    )
    assert rpn.match_low_quality and rpn.gt_max_assign_all
    assert (rcnn.iou_calculator, rcnn.pos_iou_thr, rcnn.match_low_quality) == ("RBboxOverlaps2D", 0.5, False)


def test_batched_nms_keeps_levels_apart():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9.5], [0, 0, 10, 9.5], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert batched_nms_hbb(boxes, scores, torch.tensor([0, 0, 1, 1]), 0.8).tolist() == [0, 2, 3]
    assert batched_nms_hbb(boxes, scores, torch.tensor([0, 0, 0, 0]), 0.8).tolist() == [0, 3]


def test_demo_size_variant_trains_and_predicts():
    torch.manual_seed(0)
    model = build_model(load_config(NAME, tiny_overrides()))
    images, targets, metas = _batch()
    model.train()
    losses = model.forward_train(images, targets, metas, per_level=True)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "acc", "loss_bbox"}
    assert losses["loss_rpn_cls"].shape == (5,) and losses["loss_cls"].shape == ()
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert (
        float(losses["loss_rpn_bbox"].detach().sum()) > 0 and float(losses["loss_bbox"].detach()) > 0
    )  # positives
    sum_losses(losses).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n, p in trainable.items() if p.grad is None and not n.startswith("backbone")]
    assert missing == []  # RPN and RoI head both get gradients
    model.eval()
    out = model(images)
    assert [c.shape[-2:] for c in out["rpn"][0]] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert all(p.shape[1] == 6 and len(p) <= 2000 for p in out["proposals"])
    assert out["roi"][0].shape == (sum(len(p) for p in out["proposals"]), 4)
    low = TestConfig(score_thr=0.0, iou_thr=0.1, max_per_img=20)
    dets = model.predict(images, metas, cfg=low)
    assert len(dets) == 2 and all(isinstance(d, RotatedDetections) and 0 < len(d.boxes) <= 20 for d in dets)
    # rescale divides cx, cy, w, h by the scale factor
    raw = model.predict(images, metas, rescale=False, cfg=low)
    assert torch.allclose(dets[1].boxes[:, :4], raw[1].boxes[:, :4] / 0.5)


def test_losses_decrease_on_one_image():
    torch.manual_seed(0)
    model = build_model(load_config(NAME, tiny_overrides()))
    images, targets, metas = _batch()
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    totals = []
    for step in range(6):
        gen = torch.Generator().manual_seed(step)
        model.permutation = lambda n, device, gen=gen: torch.randperm(n, generator=gen)
        loss = sum_losses(model.forward_train(images[:1], targets[:1], metas[:1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(float(loss.detach()))
    assert totals[-1] < totals[0], totals


def test_image_without_ground_truths_trains():
    """mmdet's rule: every sampled anchor and RoI of such an image is a negative."""
    torch.manual_seed(0)
    model = build_model(load_config(NAME, tiny_overrides()))
    images, targets, metas = _batch()
    targets[1] = {"boxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.long)}
    model.train()
    losses = model.forward_train(images, targets, metas)
    assert all(torch.isfinite(v) for v in losses.values())
    sum_losses(losses).backward()
    alone = model.forward_train(images[1:], targets[1:], metas[1:])
    assert float(alone["loss_rpn_bbox"].detach()) == 0 and float(alone["loss_bbox"].detach()) == 0
    assert float(alone["loss_rpn_cls"].detach()) > 0 and float(alone["loss_cls"].detach()) > 0


def test_train_step_under_bfloat16_autocast():
    torch.manual_seed(0)
    model = build_model(load_config(NAME, tiny_overrides()))
    images, targets, metas = _batch()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.forward_train(images, targets, metas)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum_losses(losses).backward()


def test_num_classes_follow_the_data():
    cfg = load_config(NAME, ["data.classes=toy"])
    with pytest.raises(ValueError, match="set model.roi_head.bbox_head.num_classes=6"):
        resolve_data_config(cfg)
    unset = load_config(NAME, ["data.classes=toy", "model.roi_head.bbox_head.num_classes=null"])
    assert resolve_data_config(unset)["model"]["roi_head"]["bbox_head"]["num_classes"] == 6


def test_wrong_configs_are_refused():
    with pytest.raises(ValueError, match="expected 'OrientedRPNHead'"):
        build_model(load_config(NAME, [*tiny_overrides(), "model.rpn_head.type=RPNHead"]))
    with pytest.raises(ValueError, match="RBboxOverlaps2D"):
        build_model(
            load_config(
                NAME, [*tiny_overrides(), "model.train_cfg.rcnn.assigner.iou_calculator.type=BboxOverlaps2D"]
            )
        )
    rotated_rpn = load_config(NAME, tiny_overrides())
    rotated_rpn["model"]["train_cfg"]["rpn"]["assigner"]["iou_calculator"] = {"type": "RBboxOverlaps2D"}
    with pytest.raises(ValueError, match="assigns on horizontal boxes"):
        build_model(rotated_rpn)
    with pytest.raises(ValueError, match="ignore_iof_thr"):
        build_model(load_config(NAME, [*tiny_overrides(), "model.train_cfg.rpn.assigner.ignore_iof_thr=0.5"]))
    with pytest.raises(ValueError, match="sigmoid CrossEntropyLoss"):
        build_model(load_config(NAME, [*tiny_overrides(), "model.rpn_head.loss_cls.use_sigmoid=false"]))


# --------------------------------------------------------------------------- mmrotate oracle (opt-in)
def _max_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max()) if a.size else 0.0


class _Replay:
    """The oracle's recorded sampler draws, in call order (see the module docstring)."""

    def __init__(self, d: dict) -> None:
        self.sizes = list(zip(d["draw.n"].tolist(), d["draw.k"].tolist(), strict=True))
        self.draws = [torch.from_numpy(d[f"draw.{j}"]) for j in range(len(self.sizes))]
        self.used = 0

    def __call__(self, n: int, device: torch.device) -> torch.Tensor:
        assert n == self.sizes[self.used][0], (self.used, n, self.sizes)
        self.used += 1
        return self.draws[self.used - 1]


def _by_score(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort((a[:, 0], a[:, 1], -a[:, 5]))]


def _sorted_dets(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort((-a[:, 5], a[:, 6]))]


@pytest.mark.skipif(not ORACLE_DIR.is_dir(), reason="mmrotate Oriented R-CNN oracle dump not available")
def test_matches_mmrotate_oracle():
    """Same weights and input as mmrotate 0.3.4: anchors, raw RPN outputs, proposals, RoI head outputs,
    detections and, with the same draws, every loss."""
    d = dict(np.load(ORACLE_DIR / "oracle.npz"))
    assert json.loads((ORACLE_DIR / "keys.json").read_text()) == _expected_layout()
    model = build_model(load_config(NAME, ["model.backbone.pretrained=false"]))
    load_weights(model, ORACLE_DIR / "model.pth")
    img = torch.from_numpy(d["img"])
    h, w = (int(v) for v in d["img_shape"][:2])
    metas = [{"img_shape": (h, w, 3), "pad_shape": (h, w, 3), "scale_factor": [1.0] * 4, "flip": False}]
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(img)
        cls_scores, bbox_preds = model.rpn_head(feats)
        anchors = model.rpn_head.level_anchors([c.shape[-2:] for c in cls_scores], "cpu")
        for i in range(5):
            assert _max_err(anchors[i], d[f"anchors.l{i}"]) == 0
            assert _max_err(cls_scores[i], d[f"rpn.cls_score.l{i}"]) < 1e-4
            assert _max_err(bbox_preds[i], d[f"rpn.bbox_pred.l{i}"]) < 1e-4
        proposals = model.rpn_head.proposals(cls_scores, bbox_preds, metas)[0]
        # equal scores (common with random weights) may come in another order: compare by score,
        # then position
        assert _max_err(_by_score(proposals.numpy()), _by_score(d["proposals"])) < 1e-2  # pixels
        cls_score, bbox_pred = model.roi_head(feats, rois_of([torch.from_numpy(d["proposals"])]))
        assert _max_err(cls_score, d["roi.cls_score"]) < 1e-4
        assert _max_err(bbox_pred, d["roi.bbox_pred"]) < 1e-4
    for variant in ("default", "low"):
        tc = json.loads(str(d[f"det.{variant}.cfg"]))
        cfg = TestConfig(
            score_thr=tc["score_thr"], iou_thr=tc["nms"]["iou_thr"], max_per_img=tc["max_per_img"]
        )
        dets = model.predict(img, metas, cfg=cfg)[0]
        ref = d[f"det.{variant}"]
        ours = np.concatenate([dets.boxes, dets.scores[:, None], dets.labels[:, None].double()], 1)
        assert len(ours) == len(ref), variant
        assert _max_err(_sorted_dets(ours), _sorted_dets(ref)) < 1e-2, variant
    model.train()
    replay = _Replay(d)
    boxes, labels = torch.from_numpy(d["gt_bboxes"]), torch.from_numpy(d["gt_labels"])
    feats = model.extract_feat(img)
    cls_scores, bbox_preds = model.rpn_head(feats)
    losses = model.rpn_head.loss(cls_scores, bbox_preds, [boxes], metas, replay)
    proposals = model.rpn_head.proposals(cls_scores, bbox_preds, metas, model.rpn_head.proposal_cfg)[0]
    ref_proposals = d["train.proposals"]
    assert _max_err(_by_score(proposals.numpy()), _by_score(ref_proposals)) < 1e-2
    # the RoI head on the reference's own proposals: equal scores in another order would make the
    # same draw pick other RoIs
    losses.update(model.roi_head.loss(feats, [torch.from_numpy(ref_proposals)], [boxes], [labels], replay))
    assert replay.used == len(replay.draws)
    for key, value in losses.items():
        ref = d[f"loss.{key}"].reshape(value.shape)
        assert _max_err(value.detach(), ref) <= 1e-4 * max(1.0, float(np.abs(ref).max())), key


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.test_cfg.rpn.min_bbox_size=2", "min_bbox_size"),
        ("model.roi_head.bbox_roi_extractor.roi_layer.sample_num=0", "sampling_ratio 0"),
        ("model.roi_head.bbox_head.reg_class_agnostic=false", "reg_class_agnostic"),
    ],
)
def test_export_refuses_what_the_graph_does_not_restate(override, message):
    """What the static graph does not restate (none of it in mmrotate's configs) is refused in a line."""
    from rotdet.export.graph import CandidateGraph

    model = build_model(load_config(NAME, [*tiny_overrides(), override])).eval()
    with pytest.raises(ValueError, match=f"cannot export an Oriented R-CNN .*{message}"):
        CandidateGraph(model, 128, [0, 0, 0], [1, 1, 1], True, 100)


def test_cli_train_test_predict_bench_convert(tmp_path, capsys):
    """Every command a seed config has, on ToyDOTA with the demo-size variant."""
    from rotdet.cli import main
    from rotdet.data import ensure_toy_dota

    root = tmp_path / "toy"
    ensure_toy_dota(root / "train", num_images=2, seed=0, size=(128, 128))
    ensure_toy_dota(root / "val", num_images=1, seed=1, size=(128, 128))
    over = [
        *tiny_overrides(num_classes=6),
        f"data.root={root}",
        "data.classes=toy",
        "data.train={ann_dir: train/labelTxt, img_dir: train/images}",
        "data.val={ann_dir: val/labelTxt, img_dir: val/images}",
        "data.test={ann_dir: null, img_dir: val/images}",
        "data.img_scale=[128, 128]",
        "data.samples_per_gpu=2",
        "data.workers_per_gpu=0",
        "max_epochs=1",
        "lr_config.warmup_iters=1",
    ]
    work = tmp_path / "work"
    assert main(["train", NAME, *over, "--work-dir", str(work), "--no-progress"]) == 0
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert any("loss_rpn_cls" in r and "loss_bbox" in r for r in records if r["mode"] == "train")
    out = tmp_path / "test"
    args = [
        "test",
        NAME,
        str(work / "latest.pth"),
        *over,
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(args) == 0
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["mAP"] <= 1.0
    pred = tmp_path / "pred"
    image = root / "val" / "images" / "T0000.png"
    args = ["predict", str(work / "config.yaml"), str(work / "latest.pth"), str(image), "--out", str(pred)]
    assert main([*args, "--device", "cpu"]) == 0
    assert (pred / "T0000.json").is_file()
    bench = ["bench", NAME, "--img-size", "128", "--iters", "1", "--device", "cpu", "--train"]
    assert main([*bench, "--cfg-options", *over]) == 0
    # an mmrotate-named state dict converts, and the result loads strictly
    model = build_model(load_config(NAME, over))
    src, dst = tmp_path / "mm.pth", tmp_path / "rotdet.pth"
    torch.save({"state_dict": {rotdet_to_mmrotate_key(k): v for k, v in model.state_dict().items()}}, src)
    assert main(["convert", str(src), str(dst), "--config", NAME, "--cfg-options", *over]) == 0
    load_weights(build_model(load_config(NAME, over)), dst)
    capsys.readouterr()


def test_hbb_assigner_low_quality_matches_mmdets_loop():
    """The vectorised low-quality rule equals mmdet's loop over ground truths (later ones win)."""
    gen = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 60, (300, 2), generator=gen).float()
    anchors = torch.cat([xy, xy + torch.randint(4, 30, (300, 2), generator=gen).float()], dim=1)
    anchors = torch.cat([anchors, anchors[:50]])  # exact ties at the best IoU
    c = torch.randint(0, 60, (12, 2), generator=gen).float()
    gts = torch.cat([c, c + torch.randint(2, 40, (12, 2), generator=gen).float()], dim=1)
    iou = bbox_overlaps(gts, anchors)
    for assign_all in (True, False):
        expected = max_iou_assign_hbb(anchors, gts, 0.7, 0.3, 0.3, match_low_quality=False)
        best, first = iou.max(dim=1)
        for i in range(len(gts)):
            if best[i] >= 0.3:
                if assign_all:
                    expected[iou[i] == best[i]] = i + 1
                else:
                    expected[first[i]] = i + 1
        got = max_iou_assign_hbb(anchors, gts, 0.7, 0.3, 0.3, gt_max_assign_all=assign_all)
        assert torch.equal(got, expected)
