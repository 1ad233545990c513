"""The Trainer and its hooks: events of two iterations, divergence never saved, a killed run's
checkpoint -> evaluation -> best sequence, log records and temporaries, Ctrl-C during evaluation."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from poisoned_model import PoisonAt
from tiny_model import TINY_MODEL

from rotdet.configs import load_config
from rotdet.data import ensure_toy_dota
from rotdet.engine.checkpoint import load_checkpoint
from rotdet.engine.hooks import Evaluator, HookBase, StopOnInterrupt
from rotdet.engine.logger import read_log, truncate_log
from rotdet.engine.train import NonFiniteLossError, Trainer, TrainOptions, train
from rotdet.models import build_model

TINY = [
    *TINY_MODEL,
    "data.samples_per_gpu=2",
    "data.workers_per_gpu=0",
    "max_epochs=2",
    "evaluation.interval=1",
    "lr_config.warmup_iters=2",
]  # 6 training images: 3 iterations per epoch


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    ensure_toy_dota(root / "train", num_images=6, seed=0, size=(128, 128))
    ensure_toy_dota(root / "val", num_images=2, seed=1, size=(128, 128))
    return root


def tiny_cfg(toy_root: Path, *extra: str) -> dict:
    return load_config("demo_atss_le90", [f"data.root={toy_root}", *TINY, *extra])


def options(work_dir: Path, **kwargs) -> TrainOptions:
    return TrainOptions(**{"work_dir": work_dir, "progress": False, "device": "cpu", **kwargs})


class Recorder(HookBase):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.outputs: list[dict] = []

    def before_train(self):
        self.events.append("before_train")

    def before_epoch(self):
        self.events.append("before_epoch")

    def after_step(self):
        self.events.append("after_step")
        self.outputs.append(dict(self.trainer.step_output))

    def after_epoch(self):
        self.events.append("after_epoch")

    def after_train(self):
        self.events.append("after_train")


class Killed(BaseException):
    """Stands for SIGKILL: no hook, no handler does anything about it (only the finally clauses)."""


class KillAt(HookBase):
    """Kill the run when ``when(trainer, record)`` holds: after a step, or as a log record is written."""

    def __init__(self, when) -> None:
        self.when = when

    def after_step(self):
        if self.when(self.trainer, None):
            raise Killed

    def write(self, record):
        if self.when(self.trainer, record):
            raise Killed


# ------------------------------------------------------------------------------------------ hooks


def test_hooks_see_two_iterations(toy_root, tmp_path):
    recorder = Recorder()
    trainer = Trainer(tiny_cfg(toy_root), options(tmp_path, max_iters=2, eval_interval=0, log_interval=1))
    trainer.build()
    trainer.register_hooks([recorder])
    result = trainer.train()
    assert recorder.events == ["before_train", "before_epoch", "after_step", "after_step", "after_train"]
    first = recorder.outputs[0]
    assert {"loss", "loss_cls", "loss_bbox", "lr", "grad_norm", "data_time"} <= set(first)
    assert first["loss"] == pytest.approx(first["loss_cls"] + first["loss_bbox"])
    assert all(isinstance(v, float) for v in first.values())
    assert (result.iteration, result.epoch) == (2, 0)
    records = read_log(tmp_path / "log.jsonl")  # the metrics writer: one record per iteration
    assert [(r["mode"], r["iter"]) for r in records] == [("train", 1), ("train", 2)]
    assert records[0]["loss"] == pytest.approx(first["loss"]) and records[0]["lr"] == first["lr"]
    # the checkpointer: stopped inside the epoch, latest.pth holds the position
    meta = load_checkpoint(tmp_path / "latest.pth")["meta"]
    assert (meta["iter"], meta["epoch_iter"], meta["epoch"]) == (2, 2, 0)


def test_run_step_is_one_iteration_on_an_injected_model(toy_root, tmp_path):
    cfg = tiny_cfg(toy_root)
    model = build_model(cfg)
    trainer = Trainer(cfg, options(tmp_path), model=model).build_step("cpu", total_iters=10)
    from rotdet.data import collate
    from rotdet.engine.data import build_dataset

    dataset = build_dataset(cfg, "train")
    batch = collate([dataset[0], dataset[1]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = trainer.run_step(batch)
    assert trainer.iteration == 1 and out["lr"] == pytest.approx(trainer.schedule(0, 0))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_truncate_log_keeps_what_the_resumed_state_has_done(tmp_path):
    path = tmp_path / "log.jsonl"
    records = [
        {"mode": "train", "epoch": 1, "iter": 3},
        {"mode": "val", "epoch": 1, "iter": 3},
        {"mode": "train", "epoch": 2, "iter": 5},
        {"mode": "val", "epoch": 2, "iter": 6},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"mode": "tr')  # a torn last line
    assert truncate_log(path, iteration=3, evaluated_epoch=1) == 3
    assert read_log(path) == records[:2]
    assert truncate_log(path, iteration=3, evaluated_epoch=1) == 0


# ------------------------------------------------------------------------------------- divergence


def test_nan_loss_of_an_injected_model_stops_naming_the_last_checkpoint(toy_root, tmp_path):
    cfg = tiny_cfg(toy_root)
    trainer = Trainer(cfg, options(tmp_path, eval_interval=0), model=PoisonAt(build_model(cfg), call=5))
    with pytest.raises(NonFiniteLossError, match=r"iteration 5 \(epoch 2\).*loss_bbox=nan") as err:
        trainer.train()
    assert f"last good checkpoint is {tmp_path / 'epoch_1.pth'}" in str(err.value)
    assert load_checkpoint(tmp_path / "latest.pth")["meta"]["iter"] == 3
    assert not (tmp_path / "epoch_2.pth").exists()


@pytest.mark.parametrize("call", [3, 6])  # the last step of epoch 1 / of epoch 2
def test_non_finite_gradients_are_never_applied_nor_saved(toy_root, tmp_path, call):
    """The poisoned checkpoint: a finite loss with NaN gradients in the last step of an epoch used to
    be applied and saved as epoch_N.pth and latest.pth; the next step then stopped on a NaN loss."""
    cfg = tiny_cfg(toy_root)
    model = PoisonAt(build_model(cfg), call=call, kind="grad")
    trainer = Trainer(cfg, options(tmp_path, eval_interval=0), model=model)
    with pytest.raises(NonFiniteLossError, match=rf"gradient norm at iteration {call} ") as err:
        trainer.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the step was not taken
    epoch = call // 3
    assert not (tmp_path / f"epoch_{epoch}.pth").exists()
    if call == 3:
        assert "no checkpoint was saved yet" in str(err.value)
        assert not (tmp_path / "latest.pth").exists()
        return
    good = tmp_path / "epoch_1.pth"
    assert f"last good checkpoint is {good}" in str(err.value)
    ckpt = load_checkpoint(tmp_path / "latest.pth")
    assert ckpt["meta"]["iter"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    resumed = train(cfg, options(tmp_path, eval_interval=0, resume=good))  # what the message says
    assert (resumed.epoch, resumed.iteration) == (2, 6)


def test_non_finite_weights_are_not_saved(toy_root, tmp_path):
    cfg = tiny_cfg(toy_root)
    model = PoisonAt(build_model(cfg), call=3, kind="weights")
    trainer = Trainer(cfg, options(tmp_path, eval_interval=0), model=model)
    with pytest.raises(NonFiniteLossError, match=r"weights are non-finite after iteration 3.*not saved"):
        trainer.train()
    assert not list(tmp_path.glob("*.pth"))


# ------------------------------------------------------------------------------ interrupted runs


def test_kill_between_checkpoint_and_evaluation_evaluates_on_rerun(toy_root, tmp_path):
    """Killed in the last epoch after epoch_2.pth and its mAP record were written, before best.pth
    and checkpoints.json: the rerun evaluates epoch 2 (once in the log), then finishes."""
    cfg = tiny_cfg(toy_root, "model.test_cfg.score_thr=0.0")

    def at_last_evaluation(trainer, record):
        return record is not None and record["mode"] == "val" and record["epoch"] == 2

    trainer = Trainer(cfg, options(tmp_path))
    trainer.build()
    trainer.register_hooks([KillAt(at_last_evaluation)])
    with pytest.raises(Killed):
        trainer.train()
    assert (tmp_path / "epoch_2.pth").is_file()
    assert json.loads((tmp_path / "checkpoints.json").read_text())["evaluated_epoch"] == 1
    best_epoch_before = json.loads((tmp_path / "checkpoints.json").read_text())["best_epoch"]

    result = train(cfg, options(tmp_path))
    assert (result.epoch, result.iteration) == (2, 6)  # nothing trained again
    assert result.last_map is not None and result.best_map is not None
    state = json.loads((tmp_path / "checkpoints.json").read_text())
    assert state["evaluated_epoch"] == 2 and best_epoch_before == 1
    assert load_checkpoint(tmp_path / "best.pth")["meta"]["epoch"] == state["best_epoch"]
    records = read_log(tmp_path / "log.jsonl")
    assert [r["epoch"] for r in records if r["mode"] == "val"] == [1, 2]
    again = train(cfg, options(tmp_path))  # a finished run has nothing left to do
    assert again.last_map is None and read_log(tmp_path / "log.jsonl") == records


def test_resume_after_kill_drops_the_log_records_of_the_killed_epoch(toy_root, tmp_path):
    cfg = tiny_cfg(toy_root)
    opts = options(tmp_path, eval_interval=0, log_interval=1)
    trainer = Trainer(cfg, opts)
    trainer.build()
    trainer.register_hooks([KillAt(lambda t, record: record is None and t.iteration == 5)])
    with pytest.raises(Killed):
        trainer.train()
    assert [r["iter"] for r in read_log(tmp_path / "log.jsonl")] == [1, 2, 3, 4, 5]
    assert load_checkpoint(tmp_path / "latest.pth")["meta"]["iter"] == 3  # the end of epoch 1
    train(cfg, opts)
    records = read_log(tmp_path / "log.jsonl")
    assert [r["iter"] for r in records] == [1, 2, 3, 4, 5, 6]  # 4 and 5 once, from the resumed run
    assert [r["epoch"] for r in records] == [1, 1, 1, 2, 2, 2]


def test_stale_temporaries_are_removed_at_start(toy_root, tmp_path):
    stale = [tmp_path / ".epoch_3.pth.k2j4h1.tmp", tmp_path / ".latest.pth.link.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1024)
    kept = tmp_path / "notes.tmp"  # not one of ours
    kept.write_text("mine")
    trainer = Trainer(tiny_cfg(toy_root), options(tmp_path, eval_interval=0))
    trainer.build()
    trainer.close()
    assert not any(p.exists() for p in stale) and kept.read_text() == "mine"
    assert ".epoch_3.pth.k2j4h1.tmp" in (tmp_path / "train.log").read_text()


def test_ctrl_c_during_evaluation_stops_at_once_and_the_rerun_evaluates(toy_root, tmp_path):
    cfg = tiny_cfg(toy_root, "max_epochs=1")

    def long_evaluation(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C in the middle of it
        for _ in range(600):
            time.sleep(0.1)
        raise AssertionError("the evaluation was not interrupted")

    trainer = Trainer(cfg, options(tmp_path))
    trainer.build()
    next(h for h in trainer.hooks if isinstance(h, Evaluator)).evaluate = long_evaluation
    handler = signal.getsignal(signal.SIGINT)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt, match="evaluation of epoch 1, which a rerun does first") as err:
        trainer.train()
    assert time.perf_counter() - start < 30
    assert str(tmp_path / "epoch_1.pth") in str(err.value)
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    result = train(cfg, options(tmp_path))
    assert result.last_map is not None and result.iteration == 3


def test_second_ctrl_c_aborts_with_a_message():
    hook = StopOnInterrupt()
    hook.trainer = SimpleNamespace(
        interrupted=False, epoch=0, resume_hint=lambda: "the last good checkpoint is w/epoch_4.pth"
    )
    hook.handle()
    assert hook.trainer.interrupted
    with pytest.raises(KeyboardInterrupt) as err:
        hook.handle()
    assert str(err.value) == "aborted by a second Ctrl-C; the last good checkpoint is w/epoch_4.pth"


def test_checkpoint_meta_records_the_weights_a_run_started_from(toy_root, tmp_path):
    """meta["weights"]: the backbone's pretrained file and the --load-from checkpoint, each with its
    SHA-256; a resumed run keeps the record of the run it continues."""
    import hashlib

    import torchvision

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    r18 = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), r18)
    cfg = tiny_cfg(toy_root, f"model.backbone.pretrained={r18.as_posix()}")
    train(cfg, options(tmp_path / "a", eval_interval=0, max_iters=1))
    first = load_checkpoint(tmp_path / "a" / "latest.pth")["meta"]["weights"]
    assert first == {
        "pretrained": [{"module": "backbone", "source": r18.as_posix(), "sha256": sha(r18)}],
        "load_from": None,
    }
    start = tmp_path / "a" / "latest.pth"
    train(tiny_cfg(toy_root), options(tmp_path / "b", eval_interval=0, max_iters=1, load_from=start))
    second = load_checkpoint(tmp_path / "b" / "latest.pth")["meta"]["weights"]
    assert second == {"pretrained": [], "load_from": {"source": str(start), "sha256": sha(start)}}
    train(cfg, options(tmp_path / "a", eval_interval=0, max_iters=2))  # resumes from a/latest.pth
    assert load_checkpoint(tmp_path / "a" / "latest.pth")["meta"]["weights"] == first
