"""``rotdet bench``: inference (and optionally training) throughput and peak memory of a config.

Inference is timed as mmrotate's ``tools/analysis_tools/benchmark.py`` times it: ``model.predict``
on a batch of images, post-processing (NMS) included and the detections copied to the CPU, after
``warmup`` untimed iterations, with the device synchronised before the clock is read. The images
are random normal noise, i.e. already normalised inputs of ``img_size`` x ``img_size``: the data
pipeline is not part of the measurement.

Training iterations are :meth:`rotdet.engine.trainer.Trainer.run_step`, the step ``rotdet train``
runs (lr schedule, forward + loss, finite checks, backward, gradient clipping when the config clips,
optimizer step), on the same images with a few random rotated boxes per image as targets.

Without ``--checkpoint`` the weights are random: few boxes then pass the score threshold, so the
post-processing is cheaper than with a trained model. Pass a checkpoint for representative numbers.

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU (reset before each phase); on the CPU it
is the process's peak resident set size (``getrusage``), which only grows, so it covers everything
the process did up to that point.
"""

from __future__ import annotations

import math
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rotdet.engine.inference import Detector, default_device
from rotdet.engine.runtime import autocast, peak_memory_mib, resolve_amp
from rotdet.engine.trainer import Trainer, TrainOptions
from rotdet.models.detectors import default_metas
from rotdet.structures import regularize_obb

__all__ = ["benchmark", "synthetic_targets"]


def synthetic_targets(
    batch_size: int,
    img_size: int,
    num_classes: int,
    angle_version: str,
    boxes_per_image: int = 5,
    generator: torch.Generator | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Per image ``{"boxes": float32 [N, 5], "labels": int64 [N]}``: random rotated boxes inside an
    ``img_size`` square (sides 4-30 % of it, any angle, canonical in ``angle_version``)."""
    targets = []
    for _ in range(batch_size):
        u = torch.rand(boxes_per_image, 5, generator=generator, dtype=torch.float64)
        w = img_size * (0.04 + 0.26 * u[:, 2])
        h = w * (0.3 + 0.7 * u[:, 3])
        raw = torch.stack(
            [
                img_size * (0.15 + 0.7 * u[:, 0]),
                img_size * (0.15 + 0.7 * u[:, 1]),
                w,
                h,
                math.pi * (u[:, 4] - 0.5),
            ],
            dim=1,
        )
        labels = torch.randint(0, num_classes, (boxes_per_image,), generator=generator)
        targets.append({"boxes": regularize_obb(raw, angle_version).float(), "labels": labels})
    return targets


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], None], iters: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """``(seconds per iteration, peak memory MiB)`` of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _synchronize(device)
    elapsed = time.perf_counter() - start
    return elapsed / iters, peak_memory_mib(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _train_phase(
    detector: Detector,
    images: torch.Tensor,
    metas: list[dict],
    generator: torch.Generator,
    amp: str,
    iters: int,
    warmup: int,
) -> dict:
    """Time ``rotdet train``'s own step (:meth:`Trainer.run_step`: lr schedule, AMP, finite checks,
    clipping and the optimizer step as in a real run) on ``images`` with random rotated boxes."""
    model, dev = detector.model, images.device
    batch_size, img_size = images.shape[0], images.shape[-1]
    targets = synthetic_targets(
        batch_size, img_size, model.bbox_head.num_classes, detector.angle_version, generator=generator
    )
    batch = {
        "img": images,
        "img_metas": metas,
        "gt_bboxes": [t["boxes"].to(dev) for t in targets],
        "gt_labels": [t["labels"].to(dev) for t in targets],
    }
    trainer = Trainer(detector.cfg, TrainOptions(amp=amp), model=model)
    trainer.build_step(dev, total_iters=warmup + iters)

    def train_step() -> None:
        trainer.run_step(batch)

    model.train()
    seconds, peak = _timed(train_step, iters, warmup, dev)
    model.eval()
    return {
        "iters_per_s": 1 / seconds,
        "images_per_s": batch_size / seconds,
        "ms_per_iter": 1000 * seconds,
        "peak_memory_mib": peak,
    }


def benchmark(
    config: str | Path | dict,
    checkpoint: str | Path | None = None,
    batch_size: int = 1,
    img_size: int = 1024,
    iters: int = 50,
    warmup: int = 5,
    device: str | torch.device | None = None,
    train: bool = False,
    amp: str = "none",
    overrides: Sequence[str] | None = None,
    seed: int = 0,
    fast: bool = False,
) -> dict:
    """Measure a config; returns the numbers and the machine (the ``--json`` document)::

    {"config", "checkpoint", "batch_size", "img_size", "iters", "warmup", "amp", "fast",
     "torch_version", "cuda_version", "device", "device_name",
     "inference": {"images_per_s", "ms_per_iter", "peak_memory_mib"},
     "train": {"iters_per_s", "images_per_s", "ms_per_iter", "peak_memory_mib"}}  # with train
    """
    if iters < 1 or warmup < 0 or batch_size < 1 or img_size < 32:
        raise ValueError("need iters >= 1, warmup >= 0, batch_size >= 1 and img_size >= 32")
    if fast and train:
        raise ValueError("--fast folds the BatchNorms away: it is for inference; time training without it")
    dev = default_device(device)
    amp = resolve_amp(amp, dev)
    with warnings.catch_warnings():
        # Random weights are expected here (the module docstring says what they change).
        warnings.filterwarnings("ignore", message="no checkpoint given")
        detector = Detector.from_config(config, checkpoint, dev, overrides)
    if fast:
        detector.optimize()
    model = detector.model
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, img_size, img_size, generator=generator).to(dev)
    metas = default_metas(images)

    def predict_step() -> None:
        with autocast(dev, amp):
            outputs = model.predict(images, metas)
        for out in outputs:  # detections leave the device, as in every real use
            out.numpy()

    model.eval()
    seconds, peak = _timed(predict_step, iters, warmup, dev)
    result = {
        "config": detector.cfg.get("name", str(config)),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "batch_size": batch_size,
        "img_size": img_size,
        "iters": iters,
        "warmup": warmup,
        "amp": amp,
        "fast": fast,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "device": str(dev),
        "device_name": _device_name(dev),
        "inference": {
            "images_per_s": batch_size / seconds,
            "ms_per_iter": 1000 * seconds,
            "peak_memory_mib": peak,
        },
    }
    if train:
        result["train"] = _train_phase(detector, images, metas, generator, amp, iters, warmup)
    return result


def format_table(result: dict) -> str:
    """The numbers of :func:`benchmark` as a small text table."""
    r = result
    memory = "peak alloc MiB" if r["device"].startswith("cuda") else "peak RSS MiB"
    head = f"{'phase':<10} {'images/s':>10} {'ms/iter':>10} {memory:>16}"
    weights = "" if r["checkpoint"] else ", random weights"
    lines = [
        f"{r['config']} on {r['device']} ({r['device_name']}), torch {r['torch_version']}",
        f"batch {r['batch_size']}, {r['img_size']} px, amp {r['amp']}{', fast' if r.get('fast') else ''}, "
        f"{r['iters']} iterations after {r['warmup']} warm-up{weights}",
        head,
        "-" * len(head),
    ]
    for phase in ("inference", "train"):
        if phase in r:
            speed, ms, mib = r[phase]["images_per_s"], r[phase]["ms_per_iter"], r[phase]["peak_memory_mib"]
            lines.append(f"{phase:<10} {speed:>10.2f} {ms:>10.1f} {mib:>16.0f}")
    return "\n".join(lines)
