"""Rotated IoU / NMS speed and memory against shapely 2 (vectorised, STRtree-pruned) in the same run.

    python benchmarks/bench_ops.py                 # CPU at 1 and 2 threads, CUDA when present
    python benchmarks/bench_ops.py --quick         # small cases only
    python benchmarks/bench_ops.py --devices cuda --no-shapely --out /tmp/r.jsonl

Cases: pairwise IoU of 2,000 x 2,000 DOTA-like boxes (4-400 px in a 1024 px image, uniform angles);
assignment-scale IoU of anchors x 500 ground truths (one anchor per location of a 1024 px P3-P7
pyramid, 21,824, as ATSS, and nine per location, 196,416, as RetinaNet); NMS of 2,000 and 20,000
boxes; multiclass NMS of 15 classes x 2,000 candidates. shapely's baseline prunes pairs with an
STRtree, intersects the candidates with its vectorised functions and runs greedy NMS over them.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_record, print_table, time_call  # noqa: E402

from rotdet.ops import box_iou_rotated, multiclass_nms_rotated, nms_rotated  # noqa: E402

IMAGE = 1024.0


def dota_like_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    w = np.exp(rng.uniform(math.log(4), math.log(400), n))
    h = np.maximum(w / np.exp(rng.uniform(0, math.log(8), n)), 2.0)
    return np.stack(
        (rng.uniform(0, IMAGE, n), rng.uniform(0, IMAGE, n), w, h, rng.uniform(-math.pi / 2, math.pi / 2, n)),
        1,
    ).astype(np.float32)


def pyramid_anchors(per_location: int) -> np.ndarray:
    """Anchors of a 1024 px P3-P7 pyramid (mmdet layout): 1 square (ATSS) or 3 scales x 3 ratios."""
    out = []
    for stride in (8, 16, 32, 64, 128):
        size = int(IMAGE) // stride
        ys, xs = np.meshgrid(np.arange(size) * stride, np.arange(size) * stride, indexing="ij")
        if per_location == 1:
            shapes = [(4 * stride, 4 * stride)]
        else:
            shapes = [
                (4 * stride * 2 ** (s / 3) / math.sqrt(r), 4 * stride * 2 ** (s / 3) * math.sqrt(r))
                for r in (1.0, 0.5, 2.0)
                for s in range(3)
            ]
        for w, h in shapes:
            out.append(
                np.stack(
                    (xs.ravel(), ys.ravel(), np.full(xs.size, w), np.full(xs.size, h), np.zeros(xs.size)), 1
                )
            )
    return np.concatenate(out).astype(np.float32)


# ----------------------------------------------------------------------------------- shapely side


def _shapely():
    import shapely

    return shapely


def _polys(boxes: np.ndarray):
    shapely = _shapely()
    b = boxes.astype(np.float64)
    c, s = np.cos(b[:, 4]), np.sin(b[:, 4])
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) / 2
    lx, ly = signs[None, :, 0] * b[:, 2:3], signs[None, :, 1] * b[:, 3:4]
    xy = np.stack(
        (b[:, :1] + lx * c[:, None] - ly * s[:, None], b[:, 1:2] + lx * s[:, None] + ly * c[:, None]), -1
    )
    return shapely.polygons(xy)


def shapely_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    shapely = _shapely()
    pa, pb = _polys(a), _polys(b)
    ia, ib = shapely.STRtree(pb).query(pa, predicate="intersects")
    inter = shapely.area(shapely.intersection(pa[ia], pb[ib]))
    area_a, area_b = shapely.area(pa), shapely.area(pb)
    out = np.zeros((len(a), len(b)))
    out[ia, ib] = inter / (area_a[ia] + area_b[ib] - inter)
    return out


def shapely_nms(
    boxes: np.ndarray, scores: np.ndarray, thr: float, labels: np.ndarray | None = None
) -> list[int]:
    shapely = _shapely()
    polys = _polys(boxes)
    ia, ib = shapely.STRtree(polys).query(polys, predicate="intersects")
    pair = ia < ib
    if labels is not None:
        pair &= labels[ia] == labels[ib]
    ia, ib = ia[pair], ib[pair]
    inter = shapely.area(shapely.intersection(polys[ia], polys[ib]))
    areas = shapely.area(polys)
    over = inter / (areas[ia] + areas[ib] - inter) > thr
    ia, ib = ia[over], ib[over]
    neighbours: list[list[int]] = [[] for _ in range(len(boxes))]
    for i, j in zip(ia.tolist(), ib.tolist(), strict=True):
        neighbours[i].append(j)
        neighbours[j].append(i)
    order = np.lexsort((np.arange(len(scores)), -scores))
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for i in order.tolist():
        if not suppressed[i]:
            keep.append(i)
            suppressed[neighbours[i]] = True
    return keep


# ----------------------------------------------------------------------------------------- cases


def build_cases(quick: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    gts = dota_like_boxes(rng, 500)
    cases = [
        {
            "name": "iou 2000x2000",
            "kind": "iou",
            "a": dota_like_boxes(rng, 2000),
            "b": dota_like_boxes(rng, 2000),
        },
        {"name": "iou 21824 anchors x 500 gts", "kind": "iou", "a": pyramid_anchors(1), "b": gts},
        {"name": "nms 2000", "kind": "nms", "boxes": dota_like_boxes(rng, 2000), "scores": rng.random(2000)},
        {
            "name": "multiclass nms 15x2000",
            "kind": "mcnms",
            "boxes": dota_like_boxes(rng, 2000),
            "scores": rng.random((2000, 15)) ** 4,
        },
    ]
    if not quick:
        cases.insert(
            2, {"name": "iou 196416 anchors x 500 gts", "kind": "iou", "a": pyramid_anchors(9), "b": gts}
        )
        cases.insert(
            4,
            {
                "name": "nms 20000",
                "kind": "nms",
                "boxes": dota_like_boxes(rng, 20000),
                "scores": rng.random(20000),
            },
        )
    return cases


def run_ours(case: dict, device: str):
    if case["kind"] == "iou":
        a, b = torch.from_numpy(case["a"]).to(device), torch.from_numpy(case["b"]).to(device)
        return lambda: box_iou_rotated(a, b)
    boxes = torch.from_numpy(case["boxes"]).to(device)
    scores = torch.from_numpy(case["scores"].astype(np.float32)).to(device)
    if case["kind"] == "nms":
        return lambda: nms_rotated(boxes, scores, 0.1)
    return lambda: multiclass_nms_rotated(boxes, scores, score_thr=0.05, iou_thr=0.1, max_per_img=2000)


def run_shapely(case: dict):
    if case["kind"] == "iou":
        return lambda: shapely_iou(case["a"], case["b"])
    if case["kind"] == "nms":
        return lambda: shapely_nms(case["boxes"], case["scores"].astype(np.float32), 0.1)
    scores = case["scores"].astype(np.float32)
    n, c = scores.shape
    flat = scores.reshape(-1)
    valid = np.nonzero(flat > 0.05)[0]
    boxes = case["boxes"][valid // c]
    return lambda: shapely_nms(boxes, flat[valid], 0.1, labels=valid % c)[:2000]


def check(case: dict, ours, theirs) -> float | None:
    """Largest IoU difference, or 1.0 / 0.0 for NMS kept sets that differ / agree."""
    if case["kind"] == "iou":
        return float(np.abs(ours.float().cpu().numpy() - theirs).max())
    if case["kind"] == "nms":
        return float(ours.cpu().tolist() != theirs)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--devices", default="cpu,cuda", help="comma-separated: cpu, cuda (skipped if absent)"
    )
    parser.add_argument("--threads", default="1,2", help="CPU thread counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small cases only")
    parser.add_argument("--no-shapely", action="store_true", help="skip the shapely baseline")
    parser.add_argument("--out", type=Path, default=None, help="JSON-lines file to append to")
    args = parser.parse_args()

    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    rows = []
    for case in build_cases(args.quick):
        shapely_s = None
        theirs = None
        if not args.no_shapely:
            fn = run_shapely(case)
            theirs = fn()
            shapely_s = time_call(fn, "cpu", repeats=1, warmup=0)
        for device in devices:
            for threads in [int(t) for t in args.threads.split(",")] if device == "cpu" else [None]:
                if threads:
                    torch.set_num_threads(threads)
                fn = run_ours(case, device)
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                seconds = time_call(
                    fn, device, repeats=args.repeats if device == "cuda" else max(1, args.repeats // 2)
                )
                result = fn()
                label = f"{device}" + (f" x{threads}" if threads else "")
                rows.append(
                    {
                        "case": case["name"],
                        "device": label,
                        "ms": seconds * 1e3,
                        "shapely_ms": shapely_s * 1e3 if shapely_s else None,
                        "speedup": shapely_s / seconds if shapely_s else None,
                        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20
                        if device == "cuda"
                        else None,
                        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                        "check": check(case, result if case["kind"] != "mcnms" else None, theirs)
                        if theirs is not None and case["kind"] != "mcnms"
                        else None,
                    }
                )
                print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(rows, ["case", "device", "ms", "shapely_ms", "speedup", "peak_gpu_mb", "max_rss_mb", "check"])
    print("check: IoU cases = max |ours - shapely|; NMS cases = 0 if the kept lists are identical")
    append_record("ops", rows, out=args.out, args=vars(args) | {"out": str(args.out)})


if __name__ == "__main__":
    main()
