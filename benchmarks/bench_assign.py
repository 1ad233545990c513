"""Assigner time and extra memory: rotdet's candidate-only assigners against full-matrix versions.

    python benchmarks/bench_assign.py                   # CPU, and CUDA when present
    python benchmarks/bench_assign.py --quick           # fewer ground-truth counts, ATSS only
    python benchmarks/bench_assign.py --devices cuda --out /tmp/r.jsonl
    python benchmarks/bench_assign.py --cases rpn --gts 10 100 300 --threads 1

Scene: a 1024 x 1024 patch, anchors of a P3-P7 pyramid in mmdet's layout (ATSS: one 4-stride square
per location, 21,824 anchors; RetinaNet: 3 scales x 3 ratios, 196,416; Oriented R-CNN's RPN: horizontal
anchors of a P2-P6 pyramid, scale 8, 3 ratios, 261,888, assigned to the ground truths' circumscribed
horizontal boxes with mmdet's horizontal IoU), and M DOTA-like ground truths (4-100 px, any angle).
"dense" is ATSS written the way mmrotate 0.3.4's ``ATSSObbAssigner`` is: N x M IoU, distance, inside
and -inf-filled matrices; for MaxIoU (rotated or horizontal) it is mmdet's full M x N overlap matrix.
"ours" is :mod:`rotdet.models.assigners`. Both give the same assignment (checked here).

Extra memory is the peak over the call minus what was in use before it: on CUDA from
``torch.cuda.max_memory_allocated``; on the CPU, in a fresh subprocess per measurement (so no memory
freed by an earlier call is reused), the peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` once the inputs are built) minus the resident set at that point.

CPU times on a shared machine swing widely with other load, more so with several threads: prefer
``--threads 1`` there and compare ours and dense within one run only.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_record, print_table, time_call  # noqa: E402

from rotdet.models.assigners import (  # noqa: E402
    MMCV_CUDA_INSIDE_LIMIT,
    ATSSAssigner,
    MaxIoUAssigner,
    mmrotate_gt_polygons,
    rbbox_overlaps,
)
from rotdet.ops import bbox_overlaps, points_in_polygons  # noqa: E402
from rotdet.structures.conversions import obb2xyxy  # noqa: E402

IMAGE = 1024
STRIDES = (8, 16, 32, 64, 128)
CASES = {"atss": "ATSS topk 9", "retina": "MaxIoU 0.5/0.4", "rpn": "RPN MaxIoU 0.7/0.3 hbb"}


def anchors_1024(retina: bool) -> tuple[torch.Tensor, list[int]]:
    """mmdet-layout anchors (location-major, shapes inner, theta 0) and their per-level counts."""
    levels, counts = [], []
    for stride in STRIDES:
        n = IMAGE // stride
        if retina:
            shapes = [
                (4 * stride * 2 ** (s / 3) / math.sqrt(r), 4 * stride * 2 ** (s / 3) * math.sqrt(r))
                for r in (1.0, 0.5, 2.0)
                for s in range(3)
            ]
        else:
            shapes = [(4.0 * stride, 4.0 * stride)]
        ys, xs = torch.meshgrid(torch.arange(n) * stride, torch.arange(n) * stride, indexing="ij")
        centres = torch.stack([xs.flatten(), ys.flatten()], 1).double()
        wh = torch.tensor(shapes, dtype=torch.float64)
        level = torch.cat(
            [
                centres[:, None].expand(-1, len(shapes), 2),
                wh[None].expand(centres.shape[0], -1, 2),
                torch.zeros(centres.shape[0], len(shapes), 1, dtype=torch.float64),
            ],
            2,
        ).reshape(-1, 5)
        levels.append(level)
        counts.append(level.shape[0])
    return torch.cat(levels).float(), counts


def rpn_anchors_1024() -> torch.Tensor:
    """Oriented R-CNN's RPN anchors (mmdet's AnchorGenerator: strides 4-64, scale 8, ratios 0.5, 1, 2),
    xyxy ``[261888, 4]``, location-major."""
    levels = []
    for stride in (4, 8, 16, 32, 64):
        h_ratios = torch.tensor([0.5, 1.0, 2.0]).sqrt()
        ws, hs = stride * 8 / h_ratios, stride * 8 * h_ratios
        base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=1)
        ys, xs = torch.meshgrid(torch.arange(IMAGE // stride), torch.arange(IMAGE // stride), indexing="ij")
        shifts = (torch.stack([xs.flatten(), ys.flatten()] * 2, dim=1) * stride).float()
        levels.append((shifts[:, None] + base[None]).reshape(-1, 4))
    return torch.cat(levels)


def ground_truths(m: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    w = np.exp(rng.uniform(math.log(4), math.log(100), m))
    h = np.maximum(w / np.exp(rng.uniform(0, math.log(6), m)), 2.0)
    centres = rng.uniform(0, IMAGE, (m, 2))
    theta = rng.uniform(-math.pi / 2, math.pi / 2, m)
    boxes = np.concatenate([centres, np.stack([w, h, theta], 1)], 1)
    return torch.from_numpy(boxes.astype(np.float32))


def dense_atss(anchors, counts, gts, topk=9, version="le90", limit=True):
    """ATSS as mmrotate computes it: every matrix is N x M (or topk*levels x M)."""
    n, m = anchors.shape[0], gts.shape[0]
    overlaps = rbbox_overlaps(anchors, gts)
    dist = (anchors[:, None, :2] - gts[None, :, :2]).pow(2).sum(-1).sqrt()
    cands, start = [], 0
    for n_l in counts:
        cands.append(dist[start : start + n_l].topk(min(topk, n_l), dim=0, largest=False).indices + start)
        start += n_l
    cand = torch.cat(cands)
    cols = torch.arange(m, device=anchors.device)
    cand_iou = overlaps[cand, cols]
    thr = cand_iou.mean(0) + cand_iou.std(0)
    inside = points_in_polygons(anchors[:, :2], mmrotate_gt_polygons(gts, version)).float()
    if limit:
        flat = torch.arange(n * m, device=anchors.device).view(n, m)
        inside = inside * (flat < MMCV_CUDA_INSIDE_LIMIT)
    is_pos = (cand_iou >= thr[None]) & inside[cand, cols].bool()
    flat_idx = (cand + cols * n).reshape(-1)
    claimed = torch.full_like(overlaps, -1e8).t().contiguous().view(-1)
    index = flat_idx[is_pos.reshape(-1)]
    claimed[index] = overlaps.t().contiguous().view(-1)[index]
    best, arg = claimed.view(m, -1).t().max(dim=1)
    return torch.where(best != -1e8, arg + 1, torch.zeros_like(arg))


def dense_max_iou(anchors, gts, pos=0.5, neg=0.4, min_pos=0.0, overlaps_of=rbbox_overlaps):
    """mmdet's MaxIoUAssigner on the full M x N overlap matrix."""
    overlaps = overlaps_of(gts, anchors)
    gt_inds = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    max_ov, argmax = overlaps.max(dim=0)
    gt_max, _ = overlaps.max(dim=1)
    gt_inds[(max_ov >= 0) & (max_ov < neg)] = 0
    p = max_ov >= pos
    gt_inds[p] = argmax[p] + 1
    for i in range(gts.shape[0]):
        if gt_max[i] >= min_pos:
            gt_inds[overlaps[i] == gt_max[i]] = i + 1
    return gt_inds


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def extra_memory_mb(fn, device: str) -> tuple[float | None, object]:
    """Peak memory of ``fn()`` above what was in use before it, in MB, and its result."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20, out
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return None, fn()
    before = _rss_kib("VmRSS")
    out = fn()
    peak = _rss_kib("VmHWM")
    if before is None or peak is None:
        return None, out
    return (peak - before) / 1024, out


def make_case(kind: str, m: int, impl: str, device: str):
    """The function to time for one case (a key of ``CASES``), with its inputs on ``device``."""
    if kind == "rpn":
        anchors, gts = rpn_anchors_1024().to(device), obb2xyxy(ground_truths(m), "le90").to(device)
        if impl == "ours":
            assigner = MaxIoUAssigner(0.7, 0.3, 0.3, iou_calculator="BboxOverlaps2D")
            return lambda: assigner.assign(anchors, gts).gt_inds
        return lambda: dense_max_iou(anchors, gts, 0.7, 0.3, 0.3, overlaps_of=bbox_overlaps)
    retina = kind == "retina"
    anchors, counts = anchors_1024(retina)
    anchors, gts = anchors.to(device), ground_truths(m).to(device)
    if retina:
        if impl == "ours":
            return lambda: MaxIoUAssigner(0.5, 0.4).assign(anchors, gts).gt_inds
        return lambda: dense_max_iou(anchors, gts)
    if impl == "ours":
        return lambda: ATSSAssigner(9, "le90").assign(anchors, counts, gts).gt_inds
    return lambda: dense_atss(anchors, counts, gts)


def cpu_memory_in_subprocess(kind: str, m: int, impl: str, threads: int | None) -> float | None:
    """Extra peak RSS (MB) of one call, measured in a fresh interpreter."""
    cmd = [sys.executable, __file__, "--worker", f"{kind},{m},{impl}"]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["extra_MB"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gts", nargs="+", type=int, default=None)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None, help="default: all")
    parser.add_argument("--no-dense", action="store_true", help="skip the full-matrix baselines")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        kind, m, impl = args.worker.split(",")
        mem, _ = extra_memory_mb(make_case(kind, int(m), impl, "cpu"), "cpu")
        print(json.dumps({"extra_MB": mem}))
        return
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    gt_counts = args.gts or ([100, 1000] if args.quick else [100, 300, 1000])

    rows = []
    for device in devices:
        repeats = 5 if device.startswith("cuda") else 2
        for kind in args.cases or (["atss"] if args.quick else list(CASES)):
            case = CASES[kind]
            for m in gt_counts:
                results = {}
                for impl in ("ours",) if args.no_dense else ("ours", "dense"):
                    fn = make_case(kind, m, impl, device)
                    if device.startswith("cuda"):
                        mem, out = extra_memory_mb(fn, device)
                    else:
                        mem, out = cpu_memory_in_subprocess(kind, m, impl, args.threads), fn()
                    results[impl] = out
                    seconds = time_call(fn, device, repeats=repeats, warmup=0)
                    rows.append(
                        {
                            "case": case,
                            "device": device,
                            "threads": None if device.startswith("cuda") else torch.get_num_threads(),
                            "anchors": {"atss": 21824, "retina": 196416, "rpn": 261888}[kind],
                            "gts": m,
                            "impl": impl,
                            "ms": seconds * 1e3,
                            "extra_MB": mem,
                            "positives": int((out > 0).sum()),
                        }
                    )
                    print_table(rows[-1:], list(rows[-1]))
                if "dense" in results:
                    same = torch.equal(results["ours"], results["dense"])
                    rows[-1]["same_as_ours"] = same
                    rows[-2]["same_as_ours"] = same
    print()
    columns = [
        "case",
        "device",
        "threads",
        "anchors",
        "gts",
        "impl",
        "ms",
        "extra_MB",
        "positives",
        "same_as_ours",
    ]
    print_table(rows, columns)
    append_record("bench_assign", rows, out=args.out, quick=args.quick)


if __name__ == "__main__":
    main()
