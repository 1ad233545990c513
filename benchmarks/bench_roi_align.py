"""Rotated RoI Align speed at Oriented R-CNN's sizes, ours against mmcv 1.7.2's CPU kernel in the same run.

    python benchmarks/bench_roi_align.py                    # ours only (mmcv is not a dependency)
    PYTHONPATH=. $REF/venv/bin/python -W ignore benchmarks/bench_roi_align.py --threads 1
                                                            # ... beside mmcv, in the reference venv

Cases, on a 1024 x 1024 image's FPN (strides 4-32, 256 channels), 7 x 7 bins, 2 x 2 samples,
``clockwise=True`` (the Oriented R-CNN config's ``RotatedSingleRoIExtractor``):

* test: 2,000 proposals of one image, forward;
* train: 2 images x 512 sampled RoIs, forward + backward to the features.

RoIs are DOTA-like (4-400 px, aspect up to 8, any angle, centres anywhere in the image), mapped to
levels by the extractor's ``finest_scale`` rule; mmcv is timed on the same per-level RoI sets. The
``max_abs_diff`` column compares ours with mmcv (outputs, and the features' gradients).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_record, print_table, time_call  # noqa: E402

from rotdet.models.roi_extractor import RotatedSingleRoIExtractor  # noqa: E402

IMAGE = 1024
STRIDES = (4, 8, 16, 32)
CHANNELS = 256
EXTRACTOR = dict(
    type="RotatedSingleRoIExtractor",
    roi_layer=dict(type="RoIAlignRotated", out_size=7, sample_num=2, clockwise=True),
    out_channels=CHANNELS,
    featmap_strides=list(STRIDES),
)


def dota_like_rois(rng: np.random.Generator, n: int, batch: int) -> torch.Tensor:
    w = np.exp(rng.uniform(math.log(4), math.log(400), n))
    h = np.maximum(w / np.exp(rng.uniform(0, math.log(8), n)), 2.0)
    rois = np.stack(
        [
            np.repeat(np.arange(batch), n // batch),
            rng.uniform(0, IMAGE, n),
            rng.uniform(0, IMAGE, n),
            w,
            h,
            rng.uniform(-math.pi / 2, math.pi / 2, n),
        ],
        1,
    )
    return torch.from_numpy(rois).float()


def mmcv_extractor() -> Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """mmcv's CPU op applied level by level (the extractor's loop), or None without mmcv."""
    try:
        from mmcv.ops import roi_align_rotated as mmcv_op
    except ImportError:
        return None

    def run(feats: list[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        out = feats[0].new_zeros(rois.shape[0], CHANNELS, 7, 7)
        for i, stride in enumerate(STRIDES):
            inds = torch.nonzero(levels == i).flatten()
            if inds.numel():
                out[inds] = mmcv_op(feats[i], rois[inds], (7, 7), 1 / stride, 2, True, True)
        return out

    return run


def run_case(name: str, batch: int, num_rois: int, backward: bool, repeats: int, mmcv_run) -> list[dict]:
    rng = np.random.default_rng(0)
    feats = [torch.randn(batch, CHANNELS, IMAGE // s, IMAGE // s) for s in STRIDES]
    rois = dota_like_rois(rng, num_rois, batch)
    ext = RotatedSingleRoIExtractor.from_config(EXTRACTOR)
    levels = ext.map_roi_levels(rois, len(STRIDES))
    grad = torch.randn(num_rois, CHANNELS, 7, 7)

    def step(fn: Callable[[list[torch.Tensor]], torch.Tensor]) -> Callable[[], tuple[torch.Tensor, list]]:
        def call() -> tuple[torch.Tensor, list]:
            leaves = [f.detach().requires_grad_(backward) for f in feats]
            out = fn(leaves)
            if backward:
                (out * grad).sum().backward()
            return out.detach(), [f.grad for f in leaves]

        return call

    impls = {"ours": step(lambda f: ext(f, rois))}
    if mmcv_run is not None:
        impls["mmcv"] = step(lambda f: mmcv_run(f, rois, levels))
    rows, results = [], {}
    for impl, fn in impls.items():
        results[impl] = fn()
        seconds = time_call(fn, "cpu", repeats=repeats, warmup=0)
        rows.append(
            {
                "case": name,
                "threads": torch.get_num_threads(),
                "rois": num_rois,
                "per_level": "/".join(str(int((levels == i).sum())) for i in range(len(STRIDES))),
                "impl": impl,
                "ms": seconds * 1e3,
            }
        )
    if "mmcv" in results:
        (out_a, grads_a), (out_b, grads_b) = results["ours"], results["mmcv"]
        diff = (out_a - out_b).abs().max().item()
        if backward:
            # a level without RoIs: zeros in ours (mmrotate's graph rule), no gradient from the bare op
            grads_b = [torch.zeros_like(a) if b is None else b for a, b in zip(grads_a, grads_b, strict=True)]
            diff = max(diff, *((a - b).abs().max().item() for a, b in zip(grads_a, grads_b, strict=True)))
        for row in rows:
            row["max_abs_diff"] = diff
        rows[0]["speedup_vs_mmcv"] = rows[1]["ms"] / rows[0]["ms"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU thread counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the test case only, one repeat")
    parser.add_argument("--no-mmcv", action="store_true", help="skip mmcv even where it is installed")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    mmcv_run = None if args.no_mmcv else mmcv_extractor()
    cases = [("test fwd", 1, 2000, False)] + ([] if args.quick else [("train fwd+bwd", 2, 1024, True)])
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, batch, num_rois, backward in cases:
            rows += run_case(name, batch, num_rois, backward, 1 if args.quick else args.repeats, mmcv_run)
            print_table(rows[-2:], list(rows[-1]))
    print()
    columns = ["case", "threads", "rois", "per_level", "impl", "ms", "speedup_vs_mmcv", "max_abs_diff"]
    print_table(rows, columns)
    extra = {"mmcv": None}
    if mmcv_run is not None:
        import mmcv

        extra["mmcv"] = mmcv.__version__
    append_record("roi_align", rows, args.out, **extra)


if __name__ == "__main__":
    main()
