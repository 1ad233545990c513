"""Bad training images: the scan before training names every missing or unreadable image at once
(or leaves them out on request), and an image that fails to decode mid-epoch is skipped with its
name, up to a bound."""

from __future__ import annotations

import pytest
from tiny_model import TINY_MODEL

from rotdet.cli import main
from rotdet.configs import load_config
from rotdet.data import build_dataset, make_toy_dota
from rotdet.data.transforms import ImageReadError

RUN = [*TINY_MODEL, "data.samples_per_gpu=1", "data.workers_per_gpu=0"]


def _truncate(png) -> None:
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])  # header intact, no IEND


@pytest.fixture
def toy(tmp_path):
    make_toy_dota(tmp_path / "train", num_images=4, size=(128, 128))
    return tmp_path


def test_scan_before_training_names_every_bad_image_then_skips_them_on_request(toy, capsys):
    images = sorted((toy / "train" / "images").glob("*.png"))
    images[0].unlink()  # a label file without its image
    images[1].write_bytes(b"not an image at all")
    argv = ["train", "demo_atss_le90", f"data.root={toy.as_posix()}", *RUN, "--eval-interval", "0"]
    argv += ["--work-dir", str(toy / "w"), "--no-progress", "--max-iters", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("rotdet train: error: 2 of the 4 train images cannot be used")
    assert f"{images[0]}: no such image file" in err and f"{images[1]}: not a readable image" in err
    assert "--skip-invalid-images" in err
    assert main([*argv, "--skip-invalid-images"]) == 0
    log = (toy / "w" / "train.log").read_text()
    assert "left out 2 unusable image(s)" in log and images[1].name in log
    assert "2 images" in log  # the run trained on the two good ones


def test_image_failing_mid_epoch_is_skipped_with_its_name_up_to_a_bound(toy, caplog):
    from rotdet.engine.train import TrainOptions, train

    images = sorted((toy / "train" / "images").glob("*.png"))
    _truncate(images[2])  # passes the header scan; fails when decoded
    cfg = load_config("demo_atss_le90", [f"data.root={toy.as_posix()}", *RUN])
    opts = TrainOptions(work_dir=toy / "w", eval_interval=0, max_iters=4, progress=False, resume=None)
    with caplog.at_level("WARNING", logger="rotdet"):
        result = train(cfg, opts)
    assert result.iteration == 4
    skipped = [r.getMessage() for r in caplog.records if "skipped sample" in r.getMessage()]
    assert skipped and all(f"{images[2]}: truncated PNG" in m for m in skipped)
    # a dataset where more images fail than the bound: one clear error
    ds = build_dataset(cfg, "train")
    ds.skip_unreadable, ds.max_unreadable = True, 1
    _truncate(images[3])
    with pytest.raises(ImageReadError, match=r"2 image\(s\) could not be read while training .*PNG"):
        for i in range(len(ds)):
            ds[i]


def test_rotdet_test_names_missing_images_before_inference(tmp_path, capsys):
    make_toy_dota(tmp_path / "val", num_images=3, size=(128, 128))
    gone = sorted((tmp_path / "val" / "images").glob("*.png"))[1]
    gone.unlink()
    argv = ["test", "demo_atss_le90", str(tmp_path / "none.pth"), f"data.root={tmp_path.as_posix()}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"1 of the 3 val images cannot be used: {gone}: no such image file" in err
    assert "skip" not in err  # no option leaves images out of an evaluation


def test_too_many_unreadable_images_in_a_loader_worker_is_one_line_naming_them(toy):
    from rotdet.engine.train import Trainer, TrainOptions

    images = sorted((toy / "train" / "images").glob("*.png"))
    _truncate(images[0])
    cfg = load_config("demo_atss_le90", [f"data.root={toy.as_posix()}", *RUN, "data.workers_per_gpu=1"])
    opts = TrainOptions(work_dir=toy / "w", eval_interval=0, max_iters=4, progress=False, resume=None)
    trainer = Trainer(cfg, opts).build()
    trainer.train_set.max_unreadable = 0  # the first unreadable image is one too many
    with pytest.raises(ImageReadError) as info:
        trainer.train()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("1 image(s) could not be read while training") and str(images[0]) in message
