"""Export: parity of the full-size seed configs, and speed per 1024² window (PyTorch vs exports).

    python benchmarks/bench_export.py --parity              # the eight R50 seed configs, real DOTA images
    python benchmarks/bench_export.py --speed               # ATSS le90 and R3Det-ATSS, batch 1 and 4
    python benchmarks/bench_export.py --parity --speed      # both on ATSS le90 / R3Det-ATSS, one export
    python benchmarks/bench_export.py --speed --configs demo_atss_le90 --size 256 --repeats 2   # quick

Parity: each seed config at full size (ResNet-50, 256-channel heads, 1024² windows) with seeded
unit-scale weights, the classification bias set so that about ``--candidates`` class scores per
window pass the threshold; the model is exported to ONNX and ``.pt2`` and ``Detector.predict``
(sliced at 1024 / 200, merged) runs on the real DOTA images with PyTorch, ONNX Runtime and the
ExportedProgram. It prints the detections per runtime, whether every class has the same count and
the largest box / angle / score differences of the paired detections (the tests' rule).

Speed: per window, same run, same threads: ``end to end`` is one batch of windows through
``Detector._detect_batch`` (pipeline, network, candidates, NMS), ``graph`` (``--graph``) the network
+ candidate selection alone (eager ``CandidateGraph``, the ONNX Runtime session, the ``.pt2``
program); export
time and file size. ONNX Runtime's CUDA provider is added where the installed onnxruntime has it.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import head_convs  # noqa: E402
from common import append_record, print_table, time_call  # noqa: E402

from rotdet.configs import SEED_CONFIGS, load_config  # noqa: E402
from rotdet.engine import Detector  # noqa: E402
from rotdet.export import export_detector  # noqa: E402
from rotdet.export.exporter import build_graph  # noqa: E402
from rotdet.export.runtime import ExportedDetector  # noqa: E402
from rotdet.models.oriented_rcnn import OrientedRCNN  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repo
IMAGES = ["dota_samples/images/P0706.png", "demo/dota_demo.jpg"]
SPEED_CONFIGS = ["rotated_atss_obb_r50_fpn_1x_dota_le90", "r3det_atss_r50_fpn_1x_dota_oc"]


def seed_weights(model: nn.Module, seed: int) -> None:
    """Unit-scale random weights (as tests/test_export.py), the heads' regression damped."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, nn.Linear):  # Oriented R-CNN's RoI head
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight.shape[1]))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for conv in head_convs(model, "reg"):
            conv.weight.mul_(0.3)
        if isinstance(model, OrientedRCNN):
            model.roi_head.bbox_head.fc_reg.weight.mul_(0.3)


def calibrate(det: Detector, window: np.ndarray, candidates: int) -> float:
    """Shift the classification biases so that about ``candidates`` class scores of ``window``
    pass the threshold (a uniform shift changes neither the top-k nor R3Det's best anchors)."""
    graph = build_graph(det)
    with torch.no_grad():
        scores = graph(torch.from_numpy(np.ascontiguousarray(window))[None])[1]
    if graph.is_two_stage:
        return _calibrate_background(det.model.roi_head.bbox_head.fc_cls, scores[0].double(), candidates)
    logits = torch.logit(scores.double().clamp(1e-12, 1 - 1e-12)).flatten()
    thr = math.log(0.05 / 0.95)
    k = min(candidates, logits.numel() - 1)
    shift = thr - float(logits.topk(k + 1).values[-1]) - 1e-3
    with torch.no_grad():
        for conv in head_convs(det.model, "cls"):
            conv.bias.add_(shift)
    return shift


def _calibrate_background(fc_cls: nn.Linear, scores: torch.Tensor, candidates: int) -> float:
    """Oriented R-CNN's softmax: raise the background logit by ``d`` so that about ``candidates``
    of the proposals' class scores ``[P, C]`` pass 0.05. Its scores are then divided per proposal
    by ``1 - p_bg + p_bg * e^d`` (the RoI head's input does not change), so ``d`` is found on
    them by bisection without running the model again."""
    background = (1.0 - scores.sum(dim=1)).clamp(min=0.0)

    def passing(d: float) -> int:
        return int((scores / (1.0 - background + background * math.exp(d))[:, None] > 0.05).sum())

    lo, hi = -30.0, 30.0  # passing() falls with d
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if passing(mid) >= candidates else (lo, mid)
    with torch.no_grad():
        fc_cls.bias[-1] += lo
    return lo


def make_detector(name: str, size: int | None, threads: int) -> Detector:
    overrides = [f"data.img_scale=[{size},{size}]"] if size else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        det = Detector.from_config(load_config(name, overrides), device="cpu")
    seed_weights(det.model, 0)
    torch.set_num_threads(threads)
    return det


def compare(got, want) -> dict:
    """The tests' pairing: same count per class, paired by nearest box."""
    same, box, ang, score = True, 0.0, 0.0, 0.0
    for c in range(len(want.classes)):
        g, w = np.flatnonzero(got.labels == c), np.flatnonzero(want.labels == c)
        if len(g) != len(w):
            same = False
            continue
        if not len(w):
            continue
        gb, wb = got.boxes[g].astype(np.float64), want.boxes[w].astype(np.float64)
        dist = np.abs(gb[:, None, :4] - wb[None, :, :4]).max(axis=2)
        pair = dist.argmin(axis=1)
        same &= len(np.unique(pair)) == len(w)
        box = max(box, float(dist[np.arange(len(g)), pair].max()))
        ang = max(ang, float(np.abs(gb[:, 4] - wb[pair, 4]).max()))
        score = max(score, float(np.abs(got.scores[g] - want.scores[w][pair]).max()))
    return {"same_counts": same, "max_box_px": box, "max_angle_rad": ang, "max_score": score}


def export_all(det: Detector, tmp: Path, threads: int) -> tuple[dict, dict]:
    """ONNX and .pt2 exports of ``det`` in ``tmp``: ``({fmt: Detector}, {fmt: export time, size})``."""
    import onnxruntime as ort

    exports, info = {}, {}
    for fmt in ("onnx", "pt2"):
        start = time.perf_counter()
        export_detector(det, tmp / fmt, fmt=fmt)
        info[fmt] = {
            "export_s": time.perf_counter() - start,
            "size_mb": (tmp / fmt / f"model.{fmt}").stat().st_size / 2**20,
        }
        print(f"{det.cfg['name']}: {fmt} export {info[fmt]['export_s']:.1f} s", flush=True)
        exports[fmt] = ExportedDetector(tmp / fmt, "cpu", threads)  # ONNX Runtime: torch's threads
    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        exports["onnx-cuda"] = Detector.from_export(tmp / "onnx", device="cuda")
    return exports, info


def parity_rows(name: str, det: Detector, exports: dict, names: list[str], images: list, batch: int) -> list:
    rows = []
    for path, img in zip(names, images, strict=True):
        want = det.predict(img, batch_size=batch)
        for fmt, ex in exports.items():
            got = ex.predict(img, batch_size=batch)
            row = {"config": name, "image": Path(path).name, "runtime": fmt}
            row.update(detections=len(got), pytorch=len(want), **compare(got, want))
            rows.append(row)
            print_table([row], list(row))
    return rows


def speed_rows(name: str, det: Detector, exports: dict, info: dict, windows: list, args) -> list:
    rows = []
    graph = build_graph(det)
    cfg = det._test_cfg(None)
    for batch in (1, 4):
        patches = [windows[i % len(windows)] for i in range(batch)]
        stacked = np.stack(patches)
        x = torch.from_numpy(stacked)
        runners = {"pytorch": (det, lambda graph=graph, x=x: graph(x))}
        for key, ex in exports.items():
            runners[key] = (ex, lambda ex=ex, stacked=stacked: ex.runner(stacked))
        for key, (d, graph_fn) in runners.items():
            with torch.no_grad():
                e2e = time_call(
                    lambda d=d, patches=patches, cfg=cfg: d._detect_batch(patches, cfg), "cpu", args.repeats
                )
                net = time_call(graph_fn, "cpu", args.repeats) if args.graph else None
            row = {
                "config": name,
                "runtime": key,
                "batch": batch,
                "end_to_end_s_per_window": e2e / batch,
                "graph_s_per_window": net / batch if net is not None else None,
                **info.get(key.split("-")[0], {}),
            }
            rows.append(row)
            print_table([row], list(row))
    return rows


def run(args) -> tuple[list, list]:
    names = args.images.split(",")
    images = [cv2.imread(str(args.data / p)) for p in names]
    default = SEED_CONFIGS if args.parity and not args.speed else SPEED_CONFIGS
    parity, speed = [], []
    for name in args.configs.split(",") if args.configs else default:
        det = make_detector(name, args.size, args.threads)
        size = det.window_size
        demo = cv2.imread(str(args.data / IMAGES[1]))
        windows = [demo[y : y + size, x : x + size] for y, x in ((0, 0), (0, 500), (500, 0), (500, 500))]
        calibrate(det, windows[0], args.candidates)
        with tempfile.TemporaryDirectory() as tmp:
            exports, info = export_all(det, Path(tmp), args.threads)
            if args.parity:
                parity += parity_rows(name, det, exports, names, images, args.batch_size)
            if args.speed:
                speed += speed_rows(name, det, exports, info, windows, args)
    return parity, speed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parity", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--configs", default=None, help="comma-separated config names")
    parser.add_argument("--size", type=int, default=None, help="window size (default: the config's)")
    parser.add_argument(
        "--candidates", type=int, default=500, help="class scores over the threshold per window"
    )
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--images", default=",".join(IMAGES), help="parity images, relative to --data")
    parser.add_argument("--graph", action="store_true", help="also time the graph alone")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--data", type=Path, default=SHARED, help="the shared data folder (default: %(default)s)"
    )
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if not (args.parity or args.speed):
        parser.error("give --parity and/or --speed")
    parity, speed = run(args)
    for bench, rows in (("export_parity", parity), ("export_speed", speed)):
        if rows:
            print_table(rows, list(rows[0]))
            append_record(bench, rows, threads=args.threads)


if __name__ == "__main__":
    main()
