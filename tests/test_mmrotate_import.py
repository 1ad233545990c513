"""mmrotate checkpoint import: key mapping, safe loading, the ``convert`` CLI, and comparisons with
the mmrotate 0.3.4 oracle dumps (``$ROTDET_ORACLE_DIR``, e.g. ``$REF/out/s0``; skipped when unset or
absent, e.g. in CI).

Run the full oracle comparison (all eight configs, including NMS of the ``low`` detections) with
``ROTDET_ORACLE_FULL=1 pytest tests/test_mmrotate_import.py -s``; by default it compares raw head
outputs, anchors, R3Det's refine outputs, per-level losses and pre-NMS candidates.

MaxIoU's low-quality matching (``gt_max_assign_all``) breaks exact IoU ties as mmcv's float32
CPU kernel does (``low_quality_ties: float32``, the RetinaNet / R3Det configs' default: the tied
candidates are recomputed with an emulation of that kernel, see ``tests/test_assigners.py``). With
``low_quality_ties: exact`` rotdet assigns every anchor tied in exact arithmetic, and with trained
weights and small objects the first-stage losses then differ from mmrotate's by a few percent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rotdet.cli import main as cli_main
from rotdet.configs import SEED_CONFIGS, load_config
from rotdet.models.factory import build_model
from rotdet.models.heads import TestConfig
from rotdet.models.mmrotate_import import (
    load_mmrotate_checkpoint,
    load_weights,
    mmrotate_to_rotdet_key,
    mmrotate_to_rotdet_state_dict,
    rotdet_to_mmrotate_key,
)


@pytest.fixture(autouse=True)
def _isolated_rng():
    """Leave the global RNG state as it was (other test files draw from it)."""
    with torch.random.fork_rng():
        yield


KEYS_FILE = Path(__file__).with_name("mmrotate_state_dict_keys.json")
# Opt-in (a development aid, never part of CI): point ROTDET_ORACLE_DIR at the dumps, e.g. $REF/out/s0.
ORACLE_DIR = Path(os.environ.get("ROTDET_ORACLE_DIR") or "/nonexistent-rotdet-oracle")
FULL = os.environ.get("ROTDET_ORACLE_FULL") == "1"


def expected_mmrotate_layout(name: str) -> dict[str, list[int]]:
    """mmrotate 0.3.4's state-dict keys and shapes of a seed config (from the committed record)."""
    record = json.loads(KEYS_FILE.read_text())
    arch = record["configs"][name]
    layout = {}
    for group in arch["groups"]:
        layout.update(record["groups"][group])
    layout.update(arch["extra"])
    return layout


def small_r50_free_model(name: str):
    return build_model(load_config(name, ["model.backbone.pretrained=false"]))


# --------------------------------------------------------------------------- key layout (no oracle)
def test_key_mapping_round_trip():
    for k in [
        "neck.lateral_convs.2.conv.weight",
        "neck.fpn_convs.4.conv.bias",
        "bbox_head.retina_cls.weight",
    ]:
        assert rotdet_to_mmrotate_key(mmrotate_to_rotdet_key(k)) == k
    assert mmrotate_to_rotdet_key("neck.lateral_convs.0.conv.weight") == "neck.lateral_convs.0.weight"
    assert (
        mmrotate_to_rotdet_key("refine_head.0.cls_convs.0.conv.weight")
        == "refine_head.0.cls_convs.0.conv.weight"
    )


@pytest.mark.parametrize("name", SEED_CONFIGS)
def test_state_dict_layout_matches_mmrotate(name):
    """Every seed config's rotdet state dict is mmrotate's, key for key and shape for shape."""
    model = small_r50_free_model(name)
    ours = {rotdet_to_mmrotate_key(k): list(v.shape) for k, v in model.state_dict().items()}
    expected = expected_mmrotate_layout(name)
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}


def test_convert_cli_and_strictness(tmp_path):
    """A fake mmrotate checkpoint (our weights, mmrotate names, a meta) converts; a wrong one is refused."""
    cfg = load_config(
        "rotated_atss_obb_r50_fpn_1x_dota_le90",
        ["model.backbone.depth=18", "model.neck.in_channels=null", "model.backbone.pretrained=false"],
    )
    model = build_model(cfg)
    mm_state = {rotdet_to_mmrotate_key(k): v for k, v in model.state_dict().items()}
    meta = {
        "CLASSES": ("a", "b"),
        "epoch": 12,
        "config": "x = 1",
        "mmcv_version": "1.7.2",
        "seed": np.int64(3),
    }
    src = tmp_path / "mm.pth"
    torch.save({"state_dict": mm_state, "meta": meta, "optimizer": {"state": {}}}, src)
    state, got_meta = load_mmrotate_checkpoint(src)
    assert got_meta["epoch"] == 12 and set(state) == set(mm_state)
    dst = tmp_path / "rotdet.pth"
    rc = cli_main(
        [
            "convert",
            str(src),
            str(dst),
            "--config",
            "rotated_atss_obb_r50_fpn_1x_dota_le90",
            "--cfg-options",
            "model.backbone.depth=18",
            "model.neck.in_channels=null",
        ]
    )
    assert rc == 0
    out = torch.load(dst, weights_only=True)
    assert out["meta"]["CLASSES"] == ["a", "b"]
    for k, v in model.state_dict().items():
        assert torch.equal(out["state_dict"][k], v)
    other = build_model(cfg)
    assert load_weights(other, dst).meta["config"] == "rotated_atss_obb_r50_fpn_1x_dota_le90"
    assert all(
        torch.equal(a, b)
        for a, b in zip(other.state_dict().values(), model.state_dict().values(), strict=True)
    )
    # a missing and an unexpected key are both reported
    bad = dict(mm_state)
    bad.pop("bbox_head.retina_cls.bias")
    bad["bbox_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="missing: bbox_head.retina_cls.bias.*unexpected: bbox_head.extra"):
        mmrotate_to_rotdet_state_dict(bad, model)


def test_checkpoint_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": {"x": Evil()}}, path)
    with pytest.raises(ValueError, match="refusing"):
        load_mmrotate_checkpoint(path)


# --------------------------------------------------------------------------- oracle comparisons
def _max_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max()) if a.size else 0.0


def _angle_err(a, b) -> float:
    """Box differences with angles compared modulo 2 pi."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if not a.size:
        return 0.0
    d = np.abs(a - b)
    d[:, 4] = np.abs((a[:, 4] - b[:, 4] + np.pi) % (2 * np.pi) - np.pi)
    return float(d.max())


def compare_with_oracle(name: str, odir: Path, with_nms: bool) -> dict[str, float]:
    """Max absolute errors of rotdet vs the mmrotate dump in ``odir`` for config ``name``."""
    d = np.load(odir / "oracle.npz")
    model = small_r50_free_model(name)
    load_weights(model, odir / "model.pth")
    model.eval()
    img = torch.from_numpy(d["img"])
    h, w = img.shape[-2:]
    metas = [
        {
            "img_shape": (h, w, 3),
            "pad_shape": (h, w, 3),
            "scale_factor": np.ones(4, np.float32),
            "flip": False,
        }
    ]
    errs: dict[str, float] = {}
    is_r3det = hasattr(model, "refine_head")
    with torch.no_grad():
        feats = model.extract_feat(img)
        for i, f in enumerate(feats):
            if f"neck.l{i}" in d:
                errs["neck"] = max(errs.get("neck", 0.0), _max_err(f, d[f"neck.l{i}"]))
        cls, reg = model.bbox_head(feats)
        anchors = model.bbox_head.grid_anchors([tuple(c.shape[-2:]) for c in cls], img.device)
        for i in range(len(cls)):
            errs["cls_score"] = max(errs.get("cls_score", 0.0), _max_err(cls[i], d[f"head.cls_score.l{i}"]))
            errs["bbox_pred"] = max(errs.get("bbox_pred", 0.0), _max_err(reg[i], d[f"head.bbox_pred.l{i}"]))
            errs["anchors"] = max(errs.get("anchors", 0.0), _max_err(anchors[i], d[f"anchors.l{i}"]))
        if is_r3det:
            out = model(img)
            rois = out["rois0"]
            rcls, rreg = out["sr0"]
            for i in range(len(rcls)):
                errs["refine.rois"] = max(
                    errs.get("refine.rois", 0.0), _max_err(rois[i][0], d[f"refine0.rois.l{i}"])
                )
                errs["refine.cls_score"] = max(
                    errs.get("refine.cls_score", 0.0), _max_err(rcls[i], d[f"refine0.cls_score.l{i}"])
                )
                errs["refine.bbox_pred"] = max(
                    errs.get("refine.bbox_pred", 0.0), _max_err(rreg[i], d[f"refine0.bbox_pred.l{i}"])
                )
    # per-level training losses for the dump's ground truths
    model.train()
    with torch.no_grad():
        targets = [{"boxes": torch.from_numpy(d["gt_bboxes"]), "labels": torch.from_numpy(d["gt_labels"])}]
        losses = model.forward_train(img, targets, metas, per_level=True)
    for key in d.files:
        if key.startswith("loss."):
            ours = losses[key.removeprefix("loss.")]
            errs["loss(rel)"] = max(
                errs.get("loss(rel)", 0.0), _max_err(ours, d[key]) / max(float(np.abs(d[key]).max()), 1e-12)
            )
    model.eval()
    # Detections from the oracle's own raw outputs of the final head (so that 1e-6 differences of
    # near-tied scores cannot reorder the top-k): pre-NMS candidates, then NMS.
    prefix, head, anchors = ("head", model.bbox_head, None)
    if is_r3det:
        prefix, head = "refine0", model.refine_head[0]
        anchors = [torch.from_numpy(d[f"refine0.rois.l{i}"])[None] for i in range(len(feats))]
    raw_cls = [torch.from_numpy(d[f"{prefix}.cls_score.l{i}"]) for i in range(len(feats))]
    raw_reg = [torch.from_numpy(d[f"{prefix}.bbox_pred.l{i}"]) for i in range(len(feats))]
    for variant in ("default", "low"):
        cfg_json = json.loads(str(d[f"det.{variant}.cfg"]))
        cfg = TestConfig.from_cfg(cfg_json)
        cand = head.predict(raw_cls, raw_reg, metas, anchors=anchors, cfg=cfg, with_nms=False)[0]
        errs[f"{variant}.prenms_boxes"] = _angle_err(cand["boxes"], d[f"det.{variant}.prenms_bboxes"])
        errs[f"{variant}.prenms_scores"] = _max_err(cand["scores"], d[f"det.{variant}.prenms_scores"][:, :-1])
        if variant == "low" and not with_nms:
            continue
        det = head.predict(raw_cls, raw_reg, metas, anchors=anchors, cfg=cfg)[0]
        ref = d[f"det.{variant}"]
        errs[f"{variant}.count_diff"] = float(abs(len(det.boxes) - len(ref)))
        if len(det.boxes) == len(ref) and len(ref):
            # mmrotate groups by class (stable: within a class by descending score)
            order = torch.sort(det.labels, stable=True).indices
            ours = torch.cat([det.boxes, det.scores[:, None], det.labels[:, None].float()], 1)[order]
            errs[f"{variant}.labels_diff"] = float((ours[:, 6].numpy() != ref[:, 6]).sum())
            errs[f"{variant}.dets"] = _angle_err(ours[:, :5], ref[:, :5])
            errs[f"{variant}.scores"] = _max_err(ours[:, 5], ref[:, 5])
    return errs


TOLERANCES = {
    "neck": 2e-3,
    "cls_score": 1e-4,
    "bbox_pred": 1e-4,
    "anchors": 0.0,
    "refine.rois": 1e-2,
    "refine.cls_score": 1e-4,
    "refine.bbox_pred": 1e-4,
    "loss(rel)": 1e-4,
    "default.prenms_boxes": 1e-2,
    "default.prenms_scores": 1e-5,
    "low.prenms_boxes": 1e-2,
    "low.prenms_scores": 1e-5,
    "default.count_diff": 0,
    "default.labels_diff": 0,
    "default.dets": 1e-2,
    "default.scores": 1e-5,
    "low.count_diff": 0,
    "low.labels_diff": 0,
    "low.dets": 1e-2,
    "low.scores": 1e-5,
}


@pytest.mark.skipif(not ORACLE_DIR.is_dir(), reason="mmrotate oracle dumps not available")
@pytest.mark.parametrize(
    "name", SEED_CONFIGS if FULL else ["rotated_atss_obb_r50_fpn_1x_dota_le90", "r3det_r50_fpn_1x_dota_oc"]
)
def test_matches_mmrotate_oracle(name):
    odir = ORACLE_DIR / name
    if not (odir / "oracle.npz").is_file():
        pytest.skip(f"no oracle dump for {name}")
    torch.set_num_threads(2)
    errs = compare_with_oracle(name, odir, with_nms=FULL)
    print(name, json.dumps({k: float(f"{v:.3g}") for k, v in errs.items()}))
    bad = {k: v for k, v in errs.items() if v > TOLERANCES[k]}
    assert not bad, bad


def test_convert_bad_sources_give_one_line_on_stderr_and_write_nothing(tmp_path, capsys):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "meta": {}}, good)
    data = good.read_bytes()
    cases = {
        "empty.pth": (b"", "is empty (0 bytes)"),
        "cut.pth": (data[: len(data) // 2], "is truncated"),
        "text.pth": (b"hello, not weights\n", "is not a PyTorch checkpoint"),
    }
    for name, (content, expected) in cases.items():
        src = tmp_path / name
        src.write_bytes(content)
        dst = tmp_path / "out" / f"{name}.converted"
        argv = ["convert", str(src), str(dst), "--config", "rotated_atss_obb_r50_fpn_1x_dota_le90"]
        assert cli_main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and expected in captured.err and str(src) in captured.err
        assert len(captured.err.strip().splitlines()) == 1 and "weights_only=False" not in captured.err
        assert not dst.exists()
    assert (
        cli_main(
            ["convert", str(tmp_path / "nope.pth"), str(tmp_path / "x.pth"), "--config", "demo_atss_le90"]
        )
        == 2
    )
    assert "checkpoint not found" in capsys.readouterr().err


def test_convert_writes_into_a_missing_folder(tmp_path):
    cfg = load_config("demo_atss_le90")
    state = {rotdet_to_mmrotate_key(k): v for k, v in build_model(cfg).state_dict().items()}
    torch.save({"state_dict": state, "meta": {}}, tmp_path / "mm.pth")
    dst = tmp_path / "new" / "folder" / "demo.pth"
    assert cli_main(["convert", str(tmp_path / "mm.pth"), str(dst), "--config", "demo_atss_le90"]) == 0
    assert dst.is_file() and not list(dst.parent.glob(".*.tmp"))


def test_load_weights_strict_and_matching_modes(tmp_path):
    """One loader: strict refuses a checkpoint of another head; matching loads what fits."""
    base = ["model.backbone.depth=18", "model.neck.in_channels=null", "model.backbone.pretrained=false"]
    atss = build_model(load_config("rotated_atss_obb_r50_fpn_1x_dota_le90", base))
    retina = build_model(load_config("rotated_retinanet_obb_r50_fpn_1x_dota_le90", base))  # 9 anchors
    src = tmp_path / "mm.pth"
    torch.save({"state_dict": {rotdet_to_mmrotate_key(k): v for k, v in atss.state_dict().items()}}, src)
    with pytest.raises(ValueError, match=r"shape mismatch: bbox_head\.retina_cls\.bias \(15,\) vs \(135,\)"):
        load_weights(retina, src)
    report = load_weights(retina, src, strict=False)
    assert sorted(report.skipped) == sorted(
        k for k in ("bbox_head.retina_cls.weight", "bbox_head.retina_cls.bias",
                    "bbox_head.retina_reg.weight", "bbox_head.retina_reg.bias")
    )  # fmt: skip
    assert report.missing == sorted(k for k in retina.state_dict() if ".retina_" in k)
    assert torch.equal(
        retina.state_dict()["neck.fpn_convs.0.weight"], atss.state_dict()["neck.fpn_convs.0.weight"]
    )
    with pytest.raises(ValueError, match="no tensor matches"):
        load_weights(retina, {"state_dict": {"x": torch.zeros(1)}}, strict=False)
