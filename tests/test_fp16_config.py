"""A config's ``fp16`` key (mmcv 1.x's ``fp16 = dict(loss_scale=...)``) turns on mixed precision:
its loss-scale forms as GradScaler arguments, the precision a training resolves to (fp16 on CUDA,
bf16 with a warning elsewhere, an explicit ``--amp`` winning), the scaler's state through a resume,
and the demo-size Oriented R-CNN of ``oriented_rcnn_r50_fpn_fp16_1x_dota_le90`` training on a CPU."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from test_oriented_rcnn import tiny_overrides
from tiny_model import TINY_MODEL

from rotdet.cli import main
from rotdet.configs import load_config
from rotdet.data import ensure_toy_dota
from rotdet.engine import trainer as trainer_module
from rotdet.engine.checkpoint import load_checkpoint
from rotdet.engine.runtime import LossScaling, config_loss_scaling, loss_scaling, resolve_train_amp
from rotdet.engine.trainer import Trainer, TrainOptions
from rotdet.models import build_model

FP16 = "oriented_rcnn_r50_fpn_fp16_1x_dota_le90"
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
TORCH_DEFAULTS = {"scale": 2.0**16, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    ensure_toy_dota(root / "train", num_images=2, seed=0, size=(128, 128))
    return root


def _settings(scaler: torch.amp.GradScaler) -> dict:
    return {
        "scale": scaler.get_scale(),
        "growth_factor": scaler.get_growth_factor(),
        "backoff_factor": scaler.get_backoff_factor(),
        "growth_interval": scaler.get_growth_interval(),
    }


def test_the_fp16_config_carries_mmcvs_key():
    cfg = load_config(FP16)
    assert cfg["fp16"] == {"loss_scale": "dynamic"}
    base = load_config("oriented_rcnn_r50_fpn_1x_dota_le90")
    assert "fp16" not in base and cfg["model"] == base["model"]
    # the loss scale may change form by override; null turns fp16 off
    assert load_config(FP16, ["fp16.loss_scale=512.0"])["fp16"] == {"loss_scale": 512.0}
    assert load_config(FP16, ["fp16.loss_scale={init_scale: 1024}"])["fp16"]["loss_scale"] == {
        "init_scale": 1024
    }
    assert load_config(FP16, ["fp16=null"])["fp16"] is None


def test_each_loss_scale_form_is_its_grad_scaler():
    """mmcv 1.7's Fp16OptimizerHook: 'dynamic' is GradScaler() (torch's defaults), a float a static
    scale (init_scale, and reset to it after every step), a mapping GradScaler's arguments; an
    fp16 mapping without loss_scale has mmcv's default, a static 512."""
    dynamic = loss_scaling("dynamic")
    assert dynamic == LossScaling({}, None)
    assert _settings(dynamic.grad_scaler("cpu")) == TORCH_DEFAULTS
    static = loss_scaling(512.0)
    assert static == LossScaling({"init_scale": 512.0}, 512.0) == loss_scaling(512)
    assert _settings(static.grad_scaler("cpu"))["scale"] == 512.0
    growth = {"growth_factor": 4.0, "backoff_factor": 0.25, "growth_interval": 10}
    custom = loss_scaling({"init_scale": 1024.0, **growth})
    assert custom == LossScaling({"init_scale": 1024.0, **growth}, None)
    assert _settings(custom.grad_scaler("cpu")) == {"scale": 1024.0, **growth}
    assert not loss_scaling({"enabled": False}).grad_scaler("cpu").is_enabled()
    assert not dynamic.grad_scaler("cpu", enabled=False).is_enabled()
    assert config_loss_scaling({"fp16": {}}) == static
    assert config_loss_scaling({"fp16": None}) is None and config_loss_scaling({}) is None


@pytest.mark.parametrize(
    ("fp16", "match"),
    [
        ({"loss_scale": "static"}, "must be 'dynamic', a positive number"),
        ({"loss_scale": True}, "must be 'dynamic', a positive number"),
        ({"loss_scale": -1.0}, "must be 'dynamic', a positive number"),
        ({"loss_scale": {"init_scal": 8.0}}, r"unknown keys \['init_scal'\]"),
        ({"loss_scale": {"growth_factor": 1.0}}, "growth_factor > 1"),
        ({"loss_scale": {"growth_interval": 2.5}}, "growth_interval must be an integer"),
        ({"loss_scale": "dynamic", "coalesce": True}, r"'fp16' has unknown keys \['coalesce'\]"),
        ("dynamic", "must be a mapping"),
    ],
)
def test_a_wrong_fp16_key_is_an_error_on_every_device(fp16, match):
    for device in (CPU, CUDA):  # no CUDA is needed to resolve (nor to refuse) a precision
        with pytest.raises(ValueError, match=match):
            resolve_train_amp(None, {"fp16": fp16}, device)


def test_a_static_scale_stays_after_a_skipped_step_a_dynamic_one_backs_off():
    for scaling, after in ((loss_scaling(512.0), 512.0), (loss_scaling({"init_scale": 512.0}), 256.0)):
        weight = torch.nn.Parameter(torch.ones(2))
        optimizer = torch.optim.SGD([weight], lr=0.1)
        scaler = scaling.grad_scaler("cpu")
        scaler.scale((weight * torch.tensor([1.0, float("inf")])).sum()).backward()
        scaler.step(optimizer)  # non-finite gradients: the step is skipped
        scaler.update(scaling.fixed_scale)
        assert scaler.get_scale() == after and torch.equal(weight.detach(), torch.ones(2))


def test_the_config_decides_the_precision_unless_amp_is_given():
    cfg = load_config(FP16)
    amp, warning = resolve_train_amp(None, cfg, CPU)
    assert amp == "bf16" and "needs CUDA" in warning and "bf16 instead" in warning
    assert resolve_train_amp(None, cfg, CUDA) == ("fp16", None)
    assert resolve_train_amp("none", cfg, CPU) == ("none", None)
    assert resolve_train_amp("bf16", cfg, CUDA) == ("bf16", None)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_train_amp("fp16", cfg, CPU)
    assert resolve_train_amp(None, load_config("oriented_rcnn_r50_fpn_1x_dota_le90"), CUDA) == ("none", None)
    assert TrainOptions().amp is None  # the Python API, like the CLI, defaults to the config's


def _tiny_fp16_cfg(toy_root: Path, *extra: str) -> dict:
    return load_config(
        FP16,
        [
            *tiny_overrides(num_classes=6),
            f"data.root={toy_root}",
            "data.classes=toy",
            "data.train={ann_dir: train/labelTxt, img_dir: train/images}",
            "data.img_scale=[128, 128]",
            "data.samples_per_gpu=2",
            "data.workers_per_gpu=0",
            "lr_config.warmup_iters=1",
            *extra,
        ],
    )


def test_tiny_oriented_rcnn_of_the_fp16_config_trains_in_bf16_on_a_cpu(toy_root, tmp_path):
    """Through the Python API: the step runs under bf16 autocast, one warning says why."""
    cfg = _tiny_fp16_cfg(toy_root)
    model = build_model(cfg)
    autocast_dtypes = []
    loss_batch = model.loss_batch

    def recording_loss_batch(batch):
        enabled = torch.is_autocast_enabled("cpu")
        autocast_dtypes.append(torch.get_autocast_dtype("cpu") if enabled else None)
        return loss_batch(batch)

    model.loss_batch = recording_loss_batch
    opts = TrainOptions(work_dir=tmp_path, device="cpu", max_iters=1, eval_interval=0, progress=False)
    trainer = Trainer(cfg, opts, model=model).build()
    assert trainer.amp == "bf16" and not trainer.scaler.is_enabled()
    result = trainer.train()
    assert result.iteration == 1 and autocast_dtypes == [torch.bfloat16]
    log = (tmp_path / "train.log").read_text()
    assert log.count("needs CUDA") == 1 and "(amp bf16)" in log


def test_cli_amp_none_overrides_the_configs_fp16(toy_root, tmp_path, capsys):
    over = [*tiny_overrides(num_classes=6), f"data.root={toy_root}", "data.classes=toy"]
    over += ["data.train={ann_dir: train/labelTxt, img_dir: train/images}", "data.img_scale=[128, 128]"]
    over += ["data.samples_per_gpu=2", "data.workers_per_gpu=0"]
    args = ["train", FP16, *over, "--work-dir", str(tmp_path), "--max-iters", "1", "--eval-interval", "0"]
    assert main([*args, "--no-progress", "--device", "cpu", "--amp", "none"]) == 0
    log = (tmp_path / "train.log").read_text()
    assert "needs CUDA" not in log and "(amp none)" in log
    capsys.readouterr()


@pytest.fixture
def fp16_on_the_cpu(monkeypatch):
    """The fp16 branch of the trainer without CUDA: the precision resolves to fp16 (with an enabled
    CPU GradScaler) and autocast is left off, since float16 kernels on a CPU take tens of seconds
    per step; what is tested is which scaler the config builds and what a resume restores."""
    monkeypatch.setattr(trainer_module, "resolve_train_amp", lambda amp, cfg, device: (amp or "fp16", None))
    monkeypatch.setattr(trainer_module, "autocast", lambda device, amp: contextlib.nullcontext())


def test_the_configs_loss_scale_is_saved_and_resumed(toy_root, tmp_path, fp16_on_the_cpu):
    cfg = load_config("demo_atss_le90", [f"data.root={toy_root}", *TINY_MODEL, "data.workers_per_gpu=0"])
    cfg["fp16"] = {"loss_scale": {"init_scale": 256.0, "growth_interval": 1}}  # doubles every good step
    opts = {"work_dir": tmp_path, "device": "cpu", "eval_interval": 0, "progress": False, "log_interval": 1}
    # a run without fp16 saves an empty scaler state: the fp16 resume starts from the config's scale
    Trainer(cfg, TrainOptions(**opts, amp="none", max_iters=1)).train()
    assert load_checkpoint(tmp_path / "latest.pth")["scaler"] == {}
    trainer = Trainer(cfg, TrainOptions(**opts, max_iters=3)).build()
    assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() == 256.0
    trainer.train()
    assert load_checkpoint(tmp_path / "latest.pth")["scaler"]["scale"] == 1024.0  # two steps
    assert "no loss-scale state" in (tmp_path / "train.log").read_text()
    trainer = Trainer(cfg, TrainOptions(**opts, max_iters=4)).build()
    assert trainer.iteration == 3 and trainer.scaler.get_scale() == 1024.0  # resumed, not the config's
    trainer.train()
    saved = load_checkpoint(tmp_path / "latest.pth")["scaler"]
    assert (saved["scale"], saved["growth_interval"]) == (2048.0, 1)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r["mode"] == "train"] == [1, 2, 3, 4]
