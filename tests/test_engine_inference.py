"""Inference engine: Detector (whole images, sliding windows, checkpoints), Detections I/O, drawing,
and the ``rotdet predict`` / ``rotdet bench`` commands. A tiny untrained model on CPU, 128 px."""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import torch
import yaml
from tiny_model import TINY_MODEL

from rotdet.cli import main as cli_main
from rotdet.configs import load_config
from rotdet.data import (
    DOTADataset,
    SplitConfig,
    collate,
    ensure_toy_dota,
    make_toy_image,
    merge_patch_detections,
    sliding_windows,
    split_image,
    test_pipeline_cfg,
)
from rotdet.data.visualize import draw_detections
from rotdet.engine import Detections, Detector
from rotdet.engine.checkpoint import CheckpointError, save_checkpoint
from rotdet.evaluation.io import read_detections_json
from rotdet.models.mmrotate_import import rotdet_to_mmrotate_key

# ResNet-18, 32-channel neck and head, 128 px; every box scores above 0 but few reach NMS, so an
# untrained model gives detections and the tests stay fast.
TINY = [
    *TINY_MODEL,
    "model.test_cfg.score_thr=0.0",
    "model.test_cfg.nms_pre=10",
    "model.test_cfg.max_per_img=10",
]


@pytest.fixture(autouse=True)
def _flush_denormals():
    """Tiny random-init models produce denormal floats that slow the CPU down by 10-50x."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def tiny_cfg() -> dict:
    return load_config("demo_atss_le90", TINY)


@pytest.fixture(scope="module")
def detector(tiny_cfg) -> Detector:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        with pytest.warns(UserWarning, match="untrained"):
            return Detector.from_config(tiny_cfg, device="cpu")


def _per_class(det: Detections, num_classes: int) -> list[np.ndarray]:
    """``[K_c, 6]`` (box, score) per class, by descending score, as merge_patch_detections gives."""
    rows = np.concatenate([det.boxes, det.scores[:, None]], axis=1)
    return [rows[det.labels == c] for c in range(num_classes)]


def _write_png(path, img: np.ndarray) -> None:
    assert cv2.imwrite(str(path), img)


def test_whole_image_matches_the_dataset_pipeline(detector, tiny_cfg, tmp_path):
    img, _ = make_toy_image(3, size=(120, 90))  # fits in one 128 window; resized by 128/120
    _write_png(tmp_path / "scene.png", img)
    ds = DOTADataset(
        None,
        tmp_path,
        classes=tiny_cfg["data"]["classes"],
        version="le90",
        pipeline=test_pipeline_cfg(tiny_cfg["data"]["img_scale"]),
        test_mode=True,
    )
    batch = collate([ds[0]])
    assert tuple(batch["img"].shape[-2:]) == (96, 128)
    expected = detector.model.predict(batch["img"], batch["img_metas"])[0]

    found = detector.predict(tmp_path / "scene.png")
    assert len(found) > 0 and found.image_id == "scene" and found.image_size == (90, 120)
    np.testing.assert_array_equal(found.boxes, expected.boxes.numpy())
    np.testing.assert_array_equal(found.scores, expected.scores.numpy())
    np.testing.assert_array_equal(found.labels, expected.labels.numpy())
    assert found.classes == tuple(tiny_cfg["data"]["classes"]) and found.angle_version == "le90"

    from_array = detector.predict(img)
    np.testing.assert_array_equal(from_array.boxes, found.boxes)

    # A higher score threshold keeps exactly the detections above it.
    thr = float(np.median(found.scores))
    fewer = detector.predict(img, score_thr=thr)
    keep = found.scores > thr
    assert 0 < len(fewer) < len(found)
    np.testing.assert_array_equal(fewer.boxes, found.boxes[keep])


def test_sliding_windows_match_split_then_merge(detector, tiny_cfg, tmp_path, monkeypatch):
    img, _ = make_toy_image(5, size=(400, 100))  # 100 < 128: every window is padded
    path = tmp_path / "big.png"
    _write_png(path, img)
    size, gap, num_classes = 128, 32, len(tiny_cfg["data"]["classes"])

    # Reference: rotdet split's patches, each run alone through the dataset's test pipeline, merged.
    split_cfg = SplitConfig(sizes=[size], gaps=[gap])
    for sub in ("images", "annfiles", ".done"):  # split_dataset makes these before split_image runs
        (tmp_path / "split" / sub).mkdir(parents=True)
    assert split_image(path, None, tmp_path / "split", split_cfg)["ok"]
    patches = DOTADataset(
        None,
        tmp_path / "split" / "images",
        classes=tiny_cfg["data"]["classes"],
        version="le90",
        pipeline=test_pipeline_cfg(tiny_cfg["data"]["img_scale"]),
        test_mode=True,
    )
    assert len(patches) == len(sliding_windows(400, 100, [size], [gap])) == 4
    patch_results = []
    for i in range(len(patches)):
        batch = collate([patches[i]])
        out = detector.model.predict(batch["img"], batch["img_metas"])[0]
        assert out.image_id == patches.img_ids[i]  # the model names its detections after the meta's id
        patch_results.append(out)
    (merged,) = merge_patch_detections(patch_results)
    assert merged.image_id == "big"
    reference = merged.per_class(num_classes)

    batch_sizes = []
    original_predict = detector.model.predict

    def recording_predict(images, metas=None, **kwargs):
        batch_sizes.append(images.shape[0])
        return original_predict(images, metas, **kwargs)

    monkeypatch.setattr(detector.model, "predict", recording_predict)
    found = detector.predict(path, size=size, gap=gap, batch_size=3)
    assert batch_sizes == [3, 1]

    assert found.image_size == (100, 400) and len(found) > 10
    assert (np.diff(found.scores) <= 0).all()
    for c, (mine, ref) in enumerate(zip(_per_class(found, num_classes), reference, strict=True)):
        assert mine.shape == ref.shape, f"class {c}"
        # batches of 4 vs 1 patch may round the convolutions differently
        np.testing.assert_allclose(mine, ref, rtol=1e-5, atol=1e-4)


def test_detections_json_and_dota_txt_round_trip(detector, tmp_path):
    img, _ = make_toy_image(7, size=(100, 100))
    found = detector.predict(img)
    assert len(found) > 0
    np.testing.assert_allclose(
        found.polygons.reshape(-1, 4, 2).mean(axis=1), found.boxes[:, :2], atol=1e-3
    )  # polygons are the boxes' corners

    back = Detections.read_json(found.write_json(tmp_path / "d.json"))
    for key in ("boxes", "scores", "labels", "polygons"):
        np.testing.assert_array_equal(getattr(back, key), getattr(found, key))
    assert (back.classes, back.image_size, back.angle_version) == (
        found.classes,
        found.image_size,
        found.angle_version,
    )
    (as_eval_input,) = read_detections_json(tmp_path / "d.json")  # rotdet eval reads these files
    np.testing.assert_array_equal(as_eval_input.scores, found.scores.astype(np.float64))

    lines = found.write_dota_txt(tmp_path / "d.txt").read_text().splitlines()
    assert len(lines) == len(found)
    tokens = [line.split() for line in lines]
    assert all(len(t) == 10 for t in tokens)
    np.testing.assert_array_equal(np.array([t[:8] for t in tokens], np.float32), found.polygons)
    assert [t[8] for t in tokens] == found.names
    np.testing.assert_array_equal(np.array([t[9] for t in tokens], np.float32), found.scores)
    assert len(found.select(found.scores > found.scores[0] / 2)) <= len(found)


def test_checkpoints_rotdet_mmrotate_and_mismatch(detector, tiny_cfg, tmp_path):
    img, _ = make_toy_image(9, size=(110, 110))
    expected = detector.predict(img)
    state = detector.model.state_dict()

    ckpt = save_checkpoint({"state_dict": state, "meta": {"config": tiny_cfg}}, tmp_path / "tiny.pth")
    restored = Detector.from_checkpoint(ckpt, device="cpu")
    np.testing.assert_array_equal(restored.predict(img).boxes, expected.boxes)

    # mmrotate's key names (FPN convs under ".conv"), a bare state dict: needs from_config.
    mm = save_checkpoint({rotdet_to_mmrotate_key(k): v for k, v in state.items()}, tmp_path / "mm.pth")
    assert any(".conv.weight" in k and k.startswith("neck.") for k in torch.load(mm, weights_only=True))
    np.testing.assert_array_equal(
        Detector.from_config(tiny_cfg, mm, "cpu").predict(img).boxes, expected.boxes
    )
    with pytest.raises(CheckpointError, match="mm.pth carries no config.*from_config"):
        Detector.from_checkpoint(mm)

    with pytest.raises(
        CheckpointError, match=r"tiny\.pth does not fit config 'demo_atss_le90'.*shape mismatch"
    ):
        Detector.from_config("demo_atss_le90", ckpt, "cpu", [*TINY, "model.bbox_head.feat_channels=16"])
    with pytest.raises(CheckpointError, match=r"tiny\.pth does not fit.*missing: backbone\.layer1\.2"):
        Detector.from_config("demo_atss_le90", ckpt, "cpu", [*TINY, "model.backbone.depth=34"])
    with pytest.raises(CheckpointError, match="not found"):
        Detector.from_config(tiny_cfg, tmp_path / "missing.pth")


def test_draw_detections_marks_the_boxes():
    img = np.full((128, 160, 3), 90, np.uint8)
    poly = np.array([[40, 50, 100, 50, 100, 90, 40, 90]], np.float32)
    drawn = draw_detections(img, poly, [2], [0.87], class_names=["a", "b", "plane"])
    assert drawn.shape == img.shape and drawn.dtype == np.uint8
    assert (img == 90).all()  # the input is left alone
    assert (drawn[70, 40] != 90).any() and (drawn[50, 70] != 90).any()  # on the left / top edges
    assert (drawn[70, 70] == 90).all() and (drawn[120, 150] == 90).all()  # inside and far away
    assert (drawn[35:48, 40:90] != 90).any()  # the caption above the box
    skipped = draw_detections(img, poly, [2], [0.5], class_names=["a", "b", "plane"], score_thr=0.6)
    assert (skipped == img).all()


def test_predict_cli_writes_outputs_and_reports_failures(detector, tiny_cfg, tmp_path, capsys):
    ensure_toy_dota(tmp_path / "toy", num_images=1, seed=0, size=(256, 256))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really an image")
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg))
    ckpt = save_checkpoint({"state_dict": detector.model.state_dict(), "meta": {}}, tmp_path / "w.pth")
    out = tmp_path / "pred"

    args = ["predict", str(cfg_path), str(ckpt), str(tmp_path / "toy" / "images"), str(tmp_path / "bad")]
    rc = cli_main([*args, "--out", str(out), "--device", "cpu", "--size", "256"])  # one window each
    captured = capsys.readouterr()
    assert rc == 1
    assert "broken.png" in captured.err and "T0000.png: " in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["T0000.json", "T0000.png", "T0000.txt"]
    src = cv2.imread(str(tmp_path / "toy" / "images" / "T0000.png"))
    drawn = cv2.imread(str(out / "T0000.png"))
    assert drawn.shape == src.shape and (drawn != src).any()
    (dets,) = read_detections_json(out / "T0000.json")
    assert dets.image_id == "T0000"
    boxes = dets.boxes
    assert len(boxes) > 0 and len((out / "T0000.txt").read_text().splitlines()) == len(boxes)
    expected = detector.predict(src, size=256)
    np.testing.assert_allclose(boxes, expected.boxes, rtol=1e-5, atol=1e-4)

    fast_out = tmp_path / "pred_fast"
    rc = cli_main([*args[:4], "--out", str(fast_out), "--device", "cpu", "--size", "256", "--fast"])
    assert rc == 0 and "T0000.png: " in capsys.readouterr().out
    (fast,) = read_detections_json(fast_out / "T0000.json")
    top = min(len(fast.boxes), len(boxes), 5)
    assert top > 0
    np.testing.assert_allclose(fast.scores[:top], dets.scores[:top], rtol=1e-4, atol=1e-4)

    rc = cli_main(["predict", str(cfg_path), str(tmp_path / "nope.pth"), str(tmp_path / "toy" / "images")])
    captured = capsys.readouterr()
    assert rc == 2 and "checkpoint not found" in captured.err and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1
    rc = cli_main(["predict", "no_such_config", str(ckpt), str(tmp_path / "toy" / "images")])
    assert rc == 2 and "unknown config 'no_such_config'" in capsys.readouterr().err


def test_bench_cli_cpu(tmp_path, capsys):
    out = tmp_path / "bench.json"
    overrides = [o for o in TINY if "test_cfg" not in o]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "untrained" warning noise from the benchmark
        rc = cli_main(
            ["bench", "demo_atss_le90", "--img-size", "128", "--iters", "2", "--warmup", "1",
             "--device", "cpu", "--train", "--json", str(out), "--cfg-options", *overrides]
        )  # fmt: skip
    assert rc == 0
    table = capsys.readouterr().out
    assert "inference" in table and "train" in table and "random weights" in table
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["torch_version"] == torch.__version__
    assert result["inference"]["images_per_s"] > 0 and result["inference"]["peak_memory_mib"] > 0
    assert result["train"]["iters_per_s"] > 0 and result["img_size"] == 128

    assert cli_main(["bench", "demo_atss_le90", "--device", "cpu", "--amp", "fp16"]) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err

    rc = cli_main(
        ["bench", "demo_atss_le90", "--img-size", "128", "--iters", "1", "--warmup", "0",
         "--device", "cpu", "--fast", "--json", str(out), "--cfg-options", *overrides]
    )  # fmt: skip
    assert rc == 0 and ", fast," in capsys.readouterr().out and json.loads(out.read_text())["fast"] is True
    assert cli_main(["bench", "demo_atss_le90", "--device", "cpu", "--fast", "--train"]) == 2
    assert "--fast folds the BatchNorms away" in capsys.readouterr().err
