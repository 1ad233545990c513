"""The training engine: schedule, checkpoints, resume, interruption, NaN stop, DDP, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tiny_model import TINY_MODEL

from rotdet.cli import main
from rotdet.configs import load_config
from rotdet.data import ensure_toy_dota
from rotdet.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from rotdet.engine.data import EpochSampler, build_dataset
from rotdet.engine.optim import LrSchedule, scaled_lr
from rotdet.engine.train import TrainOptions, train

TINY = [
    *TINY_MODEL,
    "data.samples_per_gpu=2",
    "data.workers_per_gpu=0",
    "max_epochs=2",
    "evaluation.interval=1",
    "lr_config.warmup_iters=2",
]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    ensure_toy_dota(root / "train", num_images=6, seed=0, size=(128, 128))
    ensure_toy_dota(root / "val", num_images=2, seed=1, size=(128, 128))
    return root


def tiny_cfg(toy_root: Path, *extra: str) -> dict:
    return load_config("demo_atss_le90", [f"data.root={toy_root}", *TINY, *extra])


# ----------------------------------------------------------------------------- schedule and sampler


def test_lr_schedule_matches_mmcv_rules():
    sched = LrSchedule(
        {"policy": "step", "warmup": "linear", "warmup_iters": 500, "warmup_ratio": 1 / 3, "step": [8, 11]},
        0.0025,
    )
    assert sched(0, 0) == pytest.approx(0.0025 / 3)
    assert sched(250, 0) == pytest.approx(0.0025 * (1 - 0.5 * (2 / 3)))
    assert sched(500, 0) == pytest.approx(0.0025)
    assert sched(10_000, 7) == pytest.approx(0.0025)
    assert sched(10_000, 8) == pytest.approx(0.00025)  # the 9th epoch (0-based 8)
    assert sched(10_000, 11) == pytest.approx(0.000025)
    # warm-up applies on top of a decayed lr too (mmcv computes warmup from the regular lr)
    assert sched(0, 8) == pytest.approx(0.00025 / 3)
    cos = LrSchedule({"policy": "cosine", "min_lr_ratio": 0.1}, 1.0, total_iters=100)
    assert (
        cos(0, 0) == pytest.approx(1.0)
        and cos(50, 0) == pytest.approx(0.55)
        and cos(100, 0) == pytest.approx(0.1)
    )
    assert scaled_lr(0.0025, 16, 2) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="unknown lr_config keys"):
        LrSchedule({"policy": "step", "stepz": [1]}, 0.1)


def test_epoch_sampler_shards_cover_the_dataset_and_resume_mid_epoch():
    full = EpochSampler(10, seed=3)
    full.set_epoch(2)
    order = list(full)
    assert sorted(order) == list(range(10))
    full.set_epoch(3)
    assert list(full) != order  # a new permutation each epoch
    shards = []
    for rank in range(3):
        s = EpochSampler(10, seed=3, rank=rank, world_size=3)
        s.set_epoch(2)
        shards.append(list(s))
    assert all(len(s) == 4 for s in shards)  # padded to 12 as DistributedSampler does
    assert set().union(*map(set, shards)) == set(range(10))
    part = EpochSampler(10, seed=3)
    part.set_epoch(2, start=4)
    assert list(part) == order[4:]


# ----------------------------------------------------------------------------------- checkpoints


def test_save_checkpoint_interrupted_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"state_dict": {"w": torch.ones(3)}, "meta": {"epoch": 1}}, path)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "meta": {"epoch": 2}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    ckpt = load_checkpoint(path)
    assert ckpt["meta"]["epoch"] == 1 and torch.equal(ckpt["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temporary file left behind


def test_sigkill_during_checkpoint_writes_never_corrupts(tmp_path):
    path = tmp_path / "latest.pth"
    script = textwrap.dedent(
        f"""
        import torch
        from rotdet.engine.checkpoint import save_checkpoint
        big = {{"w": torch.randn(2_000_000)}}
        i = 0
        while True:
            i += 1
            save_checkpoint({{"state_dict": big, "meta": {{"i": i}}}}, {str(path)!r})
            print(i, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # let it complete a few writes, then kill it mid-way through another
            assert proc.stdout.readline()
        time.sleep(0.03)
    finally:
        proc.kill()
        proc.wait()
    ckpt = load_checkpoint(path)
    assert ckpt["meta"]["i"] >= 3 and ckpt["state_dict"]["w"].numel() == 2_000_000


def test_checkpoint_manager_keeps_last_k_and_best(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    for epoch, metric in [(1, 0.3), (2, 0.5), (3, 0.4), (4, 0.45)]:
        mgr.save({"state_dict": {}, "meta": {"epoch": epoch}}, epoch)
        mgr.update_best({"state_dict": {}, "meta": {"epoch": epoch}}, epoch, metric)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pth")) == ["epoch_3.pth", "epoch_4.pth"]
    assert load_checkpoint(tmp_path / "best.pth")["meta"]["epoch"] == 2
    assert load_checkpoint(tmp_path / "latest.pth")["meta"]["epoch"] == 4
    assert latest_checkpoint(tmp_path) == tmp_path / "latest.pth"
    again = CheckpointManager(tmp_path, keep=2)  # a resumed run knows the best so far
    assert again.best_metric == 0.5 and again.best_epoch == 2


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found: .*missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_checkpoint(junk)


# ------------------------------------------------------------------------------------- training


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def test_resume_gives_identical_weights(toy_root, tmp_path):
    """2N iterations straight == N, stop, resume N (deterministic CPU; stop mid-epoch)."""
    cfg = tiny_cfg(toy_root)
    common = dict(deterministic=True, seed=7, progress=False, eval_interval=0, device="cpu")
    straight = train(cfg, TrainOptions(work_dir=tmp_path / "a", max_iters=4, **common))
    assert straight.iteration == 4
    first = train(cfg, TrainOptions(work_dir=tmp_path / "b", max_iters=2, **common))
    assert first.iteration == 2 and first.epoch == 0  # stopped inside epoch 1 (3 iterations/epoch)
    halfway = load_checkpoint(tmp_path / "b" / "latest.pth")
    assert (halfway["meta"]["iter"], halfway["meta"]["epoch_iter"]) == (2, 2)
    resumed = train(cfg, TrainOptions(work_dir=tmp_path / "b", max_iters=4, **common))
    assert resumed.iteration == 4
    a, b = _weights(tmp_path / "a" / "latest.pth"), _weights(tmp_path / "b" / "latest.pth")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the resumed iterations really trained (equality is not two unchanged models)
    assert any(not torch.equal(b[k], halfway["state_dict"][k]) for k in b if k.endswith("weight"))


def test_train_test_predict_end_to_end_cli(toy_root, tmp_path, capsys):
    work = tmp_path / "work"
    overrides = [f"data.root={toy_root}", *TINY]
    assert main(["train", "demo_atss_le90", *overrides, "--work-dir", str(work), "--no-progress"]) == 0
    for name in (
        "config.yaml",
        "log.jsonl",
        "curves.png",
        "epoch_1.pth",
        "epoch_2.pth",
        "latest.pth",
        "best.pth",
    ):
        assert (work / name).is_file(), name
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in records].count("val") == 2
    assert all(r["iter"] > 0 and "loss_cls" in r for r in records if r["mode"] == "train")
    assert any((work / "tensorboard").iterdir())
    ckpt = load_checkpoint(work / "best.pth")
    assert ckpt["meta"]["config"]["name"] == "demo_atss_le90" and "optimizer" not in ckpt

    out = tmp_path / "test"
    assert main(["test", "demo_atss_le90", str(work / "latest.pth"), *overrides, "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0
    assert (out / "results.json").is_file()
    fast = tmp_path / "test_fast"
    assert main(["test", "demo_atss_le90", str(work / "latest.pth"), *overrides, "--out", str(fast),
                 "--workers", "0", "--no-progress", "--fast"]) == 0  # fmt: skip
    fast_map = json.loads((fast / "metrics.json").read_text())["mAP"]
    assert fast_map == pytest.approx(metrics["mAP"], abs=0.02)  # the same model up to float rounding
    assert main(["test", "demo_atss_le90", str(work / "latest.pth"), *overrides, "--out", str(out),
                 "--workers", "0", "--no-progress", "--format-only"]) == 0  # fmt: skip
    assert len(list((out / "Task1").glob("Task1_*.txt"))) == 6 and (out / "Task1" / "Task1.zip").is_file()

    pred = tmp_path / "pred"
    image = toy_root / "val" / "images" / "T0000.png"
    config = str(work / "config.yaml")  # the work dir's resolved config serves predict as is
    assert (
        main(["predict", config, str(work / "latest.pth"), str(image), "--out", str(pred), "--device", "cpu"])
        == 0
    )
    assert (pred / "T0000.png").is_file() and (pred / "T0000.json").is_file()


def test_resume_from_finished_run_and_auto_resume(toy_root, tmp_path):
    opts = dict(work_dir=tmp_path, progress=False, eval_interval=0, device="cpu")
    train(tiny_cfg(toy_root), TrainOptions(max_iters=3, **opts))  # exactly one epoch
    more = train(tiny_cfg(toy_root), TrainOptions(**opts))  # resumes automatically at epoch 2
    assert (more.epoch, more.iteration) == (2, 6)
    assert json.loads((tmp_path / "checkpoints.json").read_text())["best_epoch"] is None


def test_user_errors_are_one_line(toy_root, tmp_path, capsys):
    assert main(["train", "no_such_config", "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown config 'no_such_config'" in err and "rotated_atss_obb_r50_fpn_1x_dota_le90" in err
    assert "Traceback" not in err
    assert main(["train", "demo_atss_le90", "optimizer.lrr=0.1", "--work-dir", str(tmp_path)]) == 2
    assert "optimizer has no 'lrr'" in capsys.readouterr().err
    assert (
        main(["train", "demo_atss_le90", f"data.root={tmp_path / 'nowhere'}", "--work-dir", str(tmp_path)])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    for sub in ("train/images", "train/labelTxt", "val/images", "val/labelTxt"):
        (empty / sub).mkdir(parents=True)
    assert main(["train", "demo_atss_le90", f"data.root={empty}", "--work-dir", str(tmp_path)]) == 2
    assert "dataset is empty" in capsys.readouterr().err
    assert main(["test", "demo_atss_le90", str(tmp_path / "none.pth"), f"data.root={toy_root}"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    weights_only = tmp_path / "w.pth"
    save_checkpoint({"state_dict": {}, "meta": {}}, weights_only)
    assert main(["train", "demo_atss_le90", *TINY, f"data.root={toy_root}", "--work-dir", str(tmp_path / "r"),
                 "--resume", str(weights_only), "--no-progress"]) == 2  # fmt: skip
    assert "--load-from" in capsys.readouterr().err


def test_build_dataset_names_missing_split(toy_root):
    cfg = tiny_cfg(toy_root)
    del cfg["data"]["val"]
    with pytest.raises(ValueError, match="no data.val section"):
        build_dataset(cfg, "val")


# ----------------------------------------------------------------------------- processes


def _run_cli(args: list[str], cwd: Path, env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, **kwargs)


def test_ctrl_c_saves_a_resumable_checkpoint(toy_root, tmp_path):
    work = tmp_path / "work"
    args = ["-m", "rotdet.cli", "train", "demo_atss_le90", f"data.root={toy_root}", *TINY, "max_epochs=50",
            "--work-dir", str(work), "--no-progress", "--eval-interval", "0"]  # fmt: skip
    proc = _run_cli(args, tmp_path, stderr=subprocess.PIPE, text=True)
    log = work / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    meta = load_checkpoint(work / "latest.pth")["meta"]
    assert meta["iter"] >= 6 and "interrupted" in err
    resumed = train(
        tiny_cfg(toy_root, "max_epochs=50"),
        TrainOptions(
            work_dir=work, max_iters=meta["iter"] + 1, progress=False, eval_interval=0, device="cpu"
        ),
    )
    assert resumed.iteration == meta["iter"] + 1


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_two_gloo_processes(toy_root, tmp_path):
    work = tmp_path / "ddp"
    args = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
            "-m", "rotdet.cli", "train", "demo_atss_le90", f"data.root={toy_root}", *TINY,
            "--work-dir", str(work), "--no-progress", "--device", "cpu"]  # fmt: skip
    proc = _run_cli(args, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    ckpt = load_checkpoint(work / "latest.pth")
    # 6 images, batch 2 per process, 2 processes: 2 iterations per epoch
    assert (ckpt["meta"]["epoch"], ckpt["meta"]["iter"]) == (2, 4)
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["mode"] == "val"] == [1, 2]  # one log, written by rank 0
    from rotdet.models import build_model

    model = build_model(tiny_cfg(toy_root))
    model.load_state_dict(ckpt["state_dict"])  # plain names: no DDP "module." prefix


def test_augmentation_does_not_depend_on_workers(toy_root):
    from rotdet.engine.data import build_train_loader

    cfg = tiny_cfg(toy_root, "data.train_flip.flip_ratio=[0.3, 0.3, 0.3]")
    dataset = build_dataset(cfg, "train")
    seen = []
    for workers in (0, 2):
        loader, sampler = build_train_loader(dataset, 2, workers, seed=5)
        batches = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            batches += [(b["img"], [m["flip_direction"] for m in b["img_metas"]]) for b in loader]
        seen.append(batches)
    for (img0, flips0), (img2, flips2) in zip(*seen, strict=True):
        assert flips0 == flips2 and torch.equal(img0, img2)
    flips = [f for _, fs in seen[0] for f in fs]
    assert len(set(flips)) > 1  # the flips really are random


def test_demo_command_small(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the defaults write data/toydota and work_dirs/demo here
    small = [o for o in TINY if not o.startswith(("max_epochs", "data.img_scale"))]
    args = [
        "demo",
        *small,
        "--num-train",
        "4",
        "--num-val",
        "2",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mAP on the held-out ToyDOTA scenes:" in out
    demo = tmp_path / "work_dirs" / "demo"
    pictures = sorted((demo / "detections").glob("*.png"))
    assert len(pictures) == 2 and all(p.stat().st_size > 0 for p in pictures)
    assert (demo / "curves.png").is_file() and (demo / "metrics.json").is_file()
    records = [json.loads(line) for line in (demo / "log.jsonl").read_text().splitlines()]
    assert any(r["mode"] == "val" for r in records)  # the mAP curve has a point
    assert (tmp_path / "data" / "toydota" / "val" / "toydota.json").is_file()


def test_fresh_start_archives_the_previous_run(toy_root, tmp_path):
    opts = dict(work_dir=tmp_path, progress=False, eval_interval=0, device="cpu", max_iters=3)
    train(tiny_cfg(toy_root), TrainOptions(**opts))
    before = load_checkpoint(tmp_path / "epoch_1.pth")["state_dict"]
    train(tiny_cfg(toy_root), TrainOptions(resume=None, seed=1, **opts))
    train(tiny_cfg(toy_root), TrainOptions(resume=None, seed=2, **opts))
    archived = sorted((tmp_path / "previous").iterdir())
    assert len(archived) == 2  # two fresh starts within the same second keep both earlier runs
    kept = load_checkpoint(archived[0] / "epoch_1.pth")["state_dict"]
    assert all(torch.equal(before[k], kept[k]) for k in before)
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1  # the new run's log only


def test_test_merge_evaluates_original_images_with_the_dota_protocol(tmp_path):
    from rotdet.data import SplitConfig, split_dataset
    from rotdet.models import build_model

    ensure_toy_dota(tmp_path / "orig", num_images=2, seed=3, size=(300, 200))
    split_dataset(
        [tmp_path / "orig" / "images"], [tmp_path / "orig" / "labelTxt"], tmp_path / "split",
        SplitConfig(sizes=[128], gaps=[32]), progress=False,
    )  # fmt: skip
    patches = sorted(p.stem for p in (tmp_path / "split" / "images").glob("*.png"))
    assert len(patches) > 2 and all("__128__" in p for p in patches)
    split = [
        "data.val.ann_dir=split/annfiles",
        "data.val.img_dir=split/images",
        "data.test.img_dir=split/images",
    ]
    overrides = [*TINY, f"data.root={tmp_path}", *split, "model.test_cfg.score_thr=0.0"]
    cfg = load_config("demo_atss_le90", overrides)
    ckpt = tmp_path / "model.pth"
    save_checkpoint({"state_dict": build_model(cfg).state_dict(), "meta": {"config": cfg}}, ckpt)
    out = tmp_path / "out"
    args = [
        "test",
        "demo_atss_le90",
        str(ckpt),
        *overrides,
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main([*args, "--merge"]) == 2  # the official protocol needs the original labels
    assert main([*args, "--merge", "--gt-dir", str(tmp_path / "orig" / "labelTxt")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "dota" and metrics["num_images"] == 2
    lines = (out / "Task1" / "Task1_small-vehicle.txt").read_text().splitlines()
    assert lines and {line.split()[0] for line in lines} <= {"T0000", "T0001"}  # merged back to originals


def test_load_from_skips_tensors_of_another_shape(toy_root, tmp_path):
    from rotdet.engine.train import load_pretrained
    from rotdet.models import build_model
    from rotdet.models.mmrotate_import import rotdet_to_mmrotate_key

    source = build_model(tiny_cfg(toy_root, "model.bbox_head.num_classes=3"))
    # mmrotate's names, as a released checkpoint has them
    state = {rotdet_to_mmrotate_key(k): v for k, v in source.state_dict().items()}
    save_checkpoint({"state_dict": state, "meta": {}}, tmp_path / "mm.pth")
    target = build_model(tiny_cfg(toy_root))  # 6 classes: the classification conv differs
    report = load_pretrained(target, tmp_path / "mm.pth")
    assert sorted(report["skipped"]) == ["bbox_head.retina_cls.bias", "bbox_head.retina_cls.weight"]
    loaded = target.state_dict()
    assert torch.equal(loaded["backbone.conv1.weight"], source.state_dict()["backbone.conv1.weight"])
    with pytest.raises(CheckpointError, match="no tensor matches"):
        save_checkpoint({"state_dict": {"foo": torch.zeros(1)}, "meta": {}}, tmp_path / "other.pth")
        load_pretrained(target, tmp_path / "other.pth")


def test_overrides_between_options_reach_the_config(toy_root, tmp_path):
    work = tmp_path / "w"
    args = ["train", "demo_atss_le90", *TINY, "--work-dir", str(work), f"data.root={toy_root}",
            "--no-progress", "max_epochs=1", "--eval-interval", "0"]  # fmt: skip
    assert main(args) == 0
    assert load_checkpoint(work / "latest.pth")["meta"]["epoch"] == 1  # the later max_epochs=1 won
    with pytest.raises(SystemExit):
        main(["train", "demo_atss_le90", "--bogus"])
