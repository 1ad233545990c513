"""What `rotdet test`, `train` and `predict` tell a user instead of misleading them: which split is
scored (and a warning on training data), every patch under --merge, hints that fit the command, and
no output written over an input."""

from __future__ import annotations

from rotdet.configs import load_config
from rotdet.data import build_dataset, make_toy_dota
from rotdet.engine.test import describe_split


def test_describe_split_warns_on_training_data():
    seed = load_config("rotated_atss_obb_r50_fpn_1x_dota_le90")  # mmrotate validates on trainval
    text = describe_split(seed, "val", "/data/dota")
    assert "/data/dota/trainval/images" in text and "warning: data.val is the training data" in text
    demo = load_config("demo_atss_le90")
    assert "warning" not in describe_split(demo, "val") and "val/images" in describe_split(demo, "val")


def test_filter_empty_gt_false_keeps_empty_patches_in_test_mode(tmp_path):
    make_toy_dota(tmp_path / "val", num_images=3, size=(128, 128))
    empty = sorted((tmp_path / "val" / "labelTxt").glob("*.txt"))[0]
    empty.write_text("")
    cfg = load_config("demo_atss_le90", [f"data.root={tmp_path.as_posix()}"])
    assert len(build_dataset(cfg, "val", test_mode=True)) == 2  # mmrotate's loading drops it
    cfg["data"]["filter_empty_gt"] = False  # what `rotdet test --merge` sets
    assert len(build_dataset(cfg, "val", test_mode=True)) == 3


def test_missing_val_folder_hints_eval_interval_in_train_only(tmp_path, capsys):
    from rotdet.cli import main

    make_toy_dota(tmp_path / "train", num_images=2, size=(128, 128))
    root = f"data.root={tmp_path.as_posix()}"
    assert main(["train", "demo_atss_le90", root, "--work-dir", str(tmp_path / "w"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "val" in err and "does not exist" in err and "--eval-interval 0" in err
    assert main(["test", "demo_atss_le90", str(tmp_path / "none.pth"), root]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--eval-interval" not in err


def test_predict_refuses_to_write_over_its_inputs(tmp_path, capsys):
    from rotdet.cli import main

    make_toy_dota(tmp_path / "scenes", num_images=1, size=(128, 128))
    images = tmp_path / "scenes" / "images"
    before = {p: p.read_bytes() for p in images.iterdir()}
    argv = ["predict", "demo_atss_le90", str(tmp_path / "none.pth"), str(images), "--out", str(images)]
    assert main(argv) == 2
    assert "would overwrite inputs" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in images.iterdir()} == before


def test_corrupt_checkpoints_json_is_one_line_naming_it(tmp_path):
    import pytest

    from rotdet.engine.checkpoint import CheckpointError, CheckpointManager

    (tmp_path / "checkpoints.json").write_text('{"best_metric": 0.5, ')
    with pytest.raises(CheckpointError, match=r"checkpoints\.json cannot be read.*delete it to resume"):
        CheckpointManager(tmp_path)


def test_resume_with_another_architectures_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys):
    from tiny_model import TINY_MODEL

    from rotdet.cli import main
    from rotdet.engine.checkpoint import save_checkpoint
    from rotdet.models.factory import build_model

    cfg = load_config("demo_atss_le90", TINY_MODEL)
    ckpt = tmp_path / "atss.pth"
    save_checkpoint(
        {"state_dict": build_model(cfg).state_dict(), "meta": {"config": cfg}, "optimizer": {}}, ckpt
    )
    work = tmp_path / "work"
    other = ["rotated_retinanet_obb_r50_fpn_1x_dota_le90", "model.backbone.pretrained=false"]
    argv = ["train", *other, "--resume", str(ckpt), "--work-dir", str(work), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err
    assert (
        "'demo_atss_le90' (RotatedRetinaNet, RotatedATSSHead, ResNet-18)" in err
        and "this run is config 'rotated_retinanet" in err
    )
    assert "missing" in err and "--load-from" in err
    assert not work.exists()
    # the same architecture with a wider head: the shapes that differ are named
    wider = ["demo_atss_le90", *TINY_MODEL, "model.bbox_head.feat_channels=48"]
    assert main(["train", *wider, "--resume", str(ckpt), "--work-dir", str(work), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "shape-mismatched" in err and "(32," in err and not work.exists()
    # test / predict (Detector.from_config) name the config the checkpoint was trained with too
    import pytest

    from rotdet.engine.checkpoint import CheckpointError
    from rotdet.engine.inference import Detector

    with pytest.raises(
        CheckpointError, match=r"atss\.pth does not fit .*trained with config 'demo_atss_le90'"
    ):
        Detector.from_config("demo_atss_le90", ckpt, "cpu", [*TINY_MODEL, "model.bbox_head.feat_channels=48"])
