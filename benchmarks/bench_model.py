"""Model speed and memory: inference (end to end vs network forward) and training iterations.

    python benchmarks/bench_model.py                          # the two le90 configs, 1024 px, CUDA
    python benchmarks/bench_model.py --device cpu --size 256 --configs demo_atss_le90 --quick

Inference: images/s at each batch size and precision, end to end (network + anchors, decode,
score filter and rotated NMS: ``model.predict``) and the network forward alone, in the same run.
Training: one iteration at batch 2 (forward, losses, backward; no optimizer step), its peak memory,
and the network's own forward + backward in the same run, so that the rest (anchors, assignment,
targets, loss) shows as the difference.

Precisions: ``fp32`` (TF32 off), ``tf32`` (TF32 matmuls/convolutions), ``bf16`` (autocast, TF32
on). Random weights, except that the classification bias is shifted so that about ``--candidates``
class scores per image pass the test threshold, as a trained model gives on a crowded DOTA patch
(the counts of detections are printed). Ground truth for training: ``--gts`` DOTA-like rotated
boxes per image.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_record, print_table, time_call  # noqa: E402

from rotdet.configs import load_config  # noqa: E402
from rotdet.models.factory import build_model  # noqa: E402

DEFAULT_CONFIGS = "rotated_atss_obb_r50_fpn_1x_dota_le90,rotated_retinanet_obb_r50_fpn_1x_dota_le90"


def set_precision(precision: str) -> contextlib.AbstractContextManager:
    tf32 = precision in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if precision == "bf16":
        return torch.autocast(
            device_type="cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16
        )
    return contextlib.nullcontext()


def random_targets(
    rng: np.random.Generator, batch: int, size: int, num_gts: int, num_classes: int, device: str
) -> list[dict]:
    targets = []
    for _ in range(batch):
        w = np.exp(rng.uniform(math.log(8), math.log(300), num_gts))
        h = w / np.exp(rng.uniform(0, math.log(6), num_gts))
        boxes = np.stack(
            (
                rng.uniform(0, size, num_gts),
                rng.uniform(0, size, num_gts),
                w,
                h,
                rng.uniform(-1.5, 1.5, num_gts),
            ),
            1,
        )
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32, device=device),
                "labels": torch.tensor(rng.integers(0, num_classes, num_gts), device=device),
            }
        )
    return targets


def head_convs(model: torch.nn.Module, kind: str) -> list[torch.nn.Conv2d]:
    """The dense heads' last classification (``kind="cls"``: ``retina_cls``, ``odm_cls``...) or
    regression (``"reg"``) convolutions."""
    return [
        m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and name.split(".")[-1].endswith(f"_{kind}") and m.bias is not None
    ]


def _final_logits(out) -> list[torch.Tensor]:
    """Class logits of the last stage from ``model(images)`` (single stage or R3Det)."""
    if isinstance(out, dict):
        out = (
            out[sorted(k for k in out if k.startswith("sr"))[-1]]
            if any(k.startswith("sr") for k in out)
            else out["s0"]
        )
    return list(out[0])


@torch.no_grad()
def score_shift(model: torch.nn.Module, images: torch.Tensor, candidates: int, score_thr: float) -> float:
    """The logit shift of every classification bias after which about ``candidates`` class scores of
    the first image exceed ``score_thr``."""
    model.eval()
    logits = torch.cat([c[0].flatten() for c in _final_logits(model(images[:1]))])
    kth = logits.float().topk(min(candidates, logits.numel())).values[-1]
    return math.log(score_thr / (1 - score_thr)) - kth.item()


def is_cls_bias(key: str) -> bool:
    """Whether a state-dict key is the bias of a classification conv (``retina_cls``, ``atss_cls``...)."""
    parts = key.split(".")
    return len(parts) >= 2 and parts[-1] == "bias" and "cls" in parts[-2]


@torch.no_grad()
def calibrate_scores_(
    model: torch.nn.Module, images: torch.Tensor, candidates: int, score_thr: float
) -> None:
    """Shift every classification bias so that about ``candidates`` class scores of the first image
    exceed ``score_thr``: random weights then load the post-processing like a trained model on a
    crowded patch, instead of giving no detection (init bias) or all of them."""
    shift = score_shift(model, images, candidates, score_thr)
    for conv in head_convs(model, "cls"):
        conv.bias.add_(shift)


@torch.no_grad()
def calibrate_roi_scores_(
    model: torch.nn.Module, images: torch.Tensor, candidates: int, score_thr: float
) -> None:
    """Oriented R-CNN's :func:`calibrate_scores_`: the RoI head's softmax scores of the first image's
    proposals, its background logit (``fc_cls``'s last bias) moved by bisection until about
    ``candidates`` class scores exceed ``score_thr``."""
    model.eval()
    logits = model(images[:1])["roi"][0].float()
    lo, hi = -60.0, 60.0
    for _ in range(50):
        mid = (lo + hi) / 2
        shifted = torch.cat([logits[:, :-1], logits[:, -1:] + mid], dim=1)
        if int((shifted.softmax(dim=1)[:, :-1] > score_thr).sum()) > candidates:
            lo = mid
        else:
            hi = mid
    model.roi_head.bbox_head.fc_cls.bias[-1] += (lo + hi) / 2


def final_head_cfg(cfg: dict) -> tuple[int, float]:
    """``(num_classes, score_thr)`` of the head that makes the detections (Oriented R-CNN: the RoI head)."""
    model = cfg["model"]
    if "roi_head" in model:
        return model["roi_head"]["bbox_head"]["num_classes"], model["test_cfg"]["rcnn"]["score_thr"]
    return model["bbox_head"]["num_classes"], model["test_cfg"]["score_thr"]


def tensors_of(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, list | tuple):
        return [t for item in out for t in tensors_of(item)]
    return []


def train_step(model, images, targets, precision: str) -> None:
    with set_precision(precision):
        losses = model.forward_train(images, targets)
        total = sum(v.sum() for v in losses.values())
    total.backward()
    model.zero_grad(set_to_none=True)


def network_step(model, images, precision: str) -> None:
    """The network's own forward + backward: the same graph without anchors, targets and losses."""
    with set_precision(precision):
        total = sum(t.float().mean() for t in tensors_of(model(images)) if t.requires_grad)
    total.backward()
    model.zero_grad(set_to_none=True)


def bench_config(name: str, args, precisions: list[str], rng: np.random.Generator) -> list[dict]:
    device = args.device
    cfg = load_config(name, {"model.backbone.pretrained": False})
    model = build_model(cfg).to(device)
    probe = torch.randn(1, 3, args.size, args.size, device=device)
    num_classes, score_thr = final_head_cfg(cfg)
    calibrate = calibrate_roi_scores_ if "roi_head" in cfg["model"] else calibrate_scores_
    calibrate(model, probe, args.candidates, score_thr)
    rows = []
    for precision in precisions:
        model.eval()
        for batch in [int(b) for b in args.batches.split(",")]:
            images = torch.randn(batch, 3, args.size, args.size, device=device)
            with set_precision(precision), torch.no_grad():
                forward_s = time_call(functools.partial(model, images), device, args.repeats, warmup=2)
                e2e_s = time_call(functools.partial(model.predict, images), device, args.repeats, warmup=1)
                dets = model.predict(images)
            rows.append(
                {
                    "config": name,
                    "mode": "infer",
                    "precision": precision,
                    "batch": batch,
                    "forward_img_s": batch / forward_s,
                    "e2e_img_s": batch / e2e_s,
                    "e2e_over_forward": forward_s / e2e_s,
                    "dets_per_img": sum(len(d.scores) for d in dets) / batch,
                }
            )
            print_table(rows[-1:], list(rows[-1]))
        model.train()
        batch = args.train_batch
        images = torch.randn(batch, 3, args.size, args.size, device=device)
        targets = random_targets(rng, batch, args.size, args.gts, num_classes, device)
        net_s = time_call(functools.partial(network_step, model, images, precision), device, args.repeats, 2)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        step = functools.partial(train_step, model, images, targets, precision)
        step_s = time_call(step, device, args.repeats, warmup=2)
        rows.append(
            {
                "config": name,
                "mode": "train",
                "precision": precision,
                "batch": batch,
                "step_ms": step_s * 1e3,
                "network_fwd_bwd_ms": net_s * 1e3,
                "step_over_network": step_s / net_s,
                "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
            }
        )
        print_table(rows[-1:], list(rows[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batches", default="1,8", help="inference batch sizes")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,tf32,bf16")
    parser.add_argument("--gts", type=int, default=100, help="ground-truth boxes per training image")
    parser.add_argument(
        "--candidates", type=int, default=2000, help="class scores above the test threshold per image"
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="batch 1, fp32 only, 2 repeats")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.batches, args.precisions, args.repeats = "1", "fp32", 2
    device = args.device
    precisions = [p for p in args.precisions.split(",") if p == "fp32" or device == "cuda" or p == "bf16"]
    torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    rows = []

    for name in args.configs.split(","):
        rows += bench_config(name, args, precisions, rng)
        if device == "cuda":
            torch.cuda.empty_cache()

    print()
    infer = [r for r in rows if r["mode"] == "infer"]
    train = [r for r in rows if r["mode"] == "train"]
    print_table(
        infer,
        ["config", "precision", "batch", "forward_img_s", "e2e_img_s", "e2e_over_forward", "dets_per_img"],
    )
    print()
    print_table(
        train,
        ["config", "precision", "batch", "step_ms", "network_fwd_bwd_ms", "step_over_network", "peak_gb"],
    )
    append_record("model", rows, out=args.out, args=vars(args) | {"out": str(args.out)})


if __name__ == "__main__":
    main()
