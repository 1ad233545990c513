"""DOTA-scale evaluation timing: both protocols on a synthetic set (default: 15 classes, 500 images,
~100k ground truths, ~200k detections), with and without file I/O.

    python benchmarks/bench_eval.py [--images 500] [--gts-per-image 200] [--dets-per-image 400]

Prints a table and appends a record to benchmarks/results.jsonl (see benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import append_record, print_table  # noqa: E402

from rotdet.data import DOTA_V1_CLASSES, write_task1_submission  # noqa: E402
from rotdet.evaluation import (  # noqa: E402
    GroundTruthImage,
    eval_dota_task1,
    eval_rbbox_map,
    evaluate_folder,
)
from rotdet.structures import obb2poly  # noqa: E402


def make_set(num_images: int, gts_per_image: int, dets_per_image: int, seed: int = 0):
    """Synthetic DOTA-like images (4000 px): objects of 8..120 px, half the detections near an
    object (jittered, sometimes twice), the rest anywhere; 10% of the objects difficult."""
    rng = np.random.default_rng(seed)
    classes = DOTA_V1_CLASSES
    gts, merged, anns = {}, {}, []
    for i in range(num_images):
        n = int(rng.poisson(gts_per_image))
        size = (
            np.exp(rng.uniform(np.log(8), np.log(120), (n, 1))) * np.c_[np.ones(n), rng.uniform(0.25, 1, n)]
        )
        obb = np.c_[rng.uniform(0, 4000, (n, 2)), size, rng.uniform(-np.pi / 2, np.pi / 2, n)]
        labels = rng.integers(0, len(classes), n)
        polys = obb2poly(torch.from_numpy(obb)).numpy()
        img = f"P{i:04d}"
        gts[img] = GroundTruthImage(
            np.round(polys), [classes[k] for k in labels], (rng.random(n) < 0.1).astype(np.int64)
        )
        anns.append({"bboxes": obb.astype(np.float32), "labels": labels})
        m = int(rng.poisson(dets_per_image))
        near = rng.integers(0, max(n, 1), m // 2)
        d_near = obb[near] + rng.normal(0, 1, (len(near), 5)) * np.r_[2, 2, 2, 1, 0.05]
        d_near[:, 2:4] = np.abs(d_near[:, 2:4]) + 1
        lab_near = labels[near]
        k = m - len(near)
        d_far = np.c_[rng.uniform(0, 4000, (k, 2)), rng.uniform(8, 120, (k, 2)), rng.uniform(-1.5, 1.5, k)]
        dets = np.r_[d_near, d_far]
        det_labels = np.r_[lab_near, rng.integers(0, len(classes), k)]
        scores = rng.random(len(dets)).astype(np.float32)
        merged[img] = [
            np.c_[dets[det_labels == c], scores[det_labels == c]].astype(np.float32)
            for c in range(len(classes))
        ]
    return classes, gts, merged, anns


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--gts-per-image", type=int, default=200)
    parser.add_argument("--dets-per-image", type=int, default=400)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    classes, gts, merged, anns = make_set(args.images, args.gts_per_image, args.dets_per_image)
    num_gts = sum(len(g.names) for g in gts.values())
    num_dets = sum(sum(len(d) for d in v) for v in merged.values())
    print(
        f"{args.images} images, {num_gts} ground truths, {num_dets} detections, "
        f"{torch.get_num_threads()} torch thread(s) "
        f"(made in {time.perf_counter() - t0:.1f} s)"
    )
    rows = []

    def timed(case: str, fn):
        start = time.perf_counter()
        res = fn()
        rows.append({"case": case, "seconds": time.perf_counter() - start, "mAP": res.map})
        print(f"  {case}: {rows[-1]['seconds']:.2f} s, mAP {res.map:.4f}", flush=True)

    det_results = [merged[img] for img in gts]
    timed("mmrotate eval_rbbox_map (in memory, obb IoU)", lambda: eval_rbbox_map(det_results, anns))
    timed(
        "dota Task1 (in memory, polygon IoU)",
        lambda: eval_dota_task1(merged, gts, classes, angle_version="le90"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_task1_submission(tmp / "task1", merged, classes, version="le90")
        label_dir = tmp / "labelTxt"
        label_dir.mkdir()
        for img, g in gts.items():
            lines = [
                " ".join([*(f"{v:g}" for v in p), n, str(int(d))])
                for p, n, d in zip(g.polygons, g.names, g.difficult, strict=True)
            ]
            (label_dir / f"{img}.txt").write_text("".join(x + "\n" for x in lines))
        timed(
            "dota Task1 from files (rotdet eval)", lambda: evaluate_folder(tmp / "task1", label_dir, classes)
        )
        timed(
            "mmrotate from files (rotdet eval --protocol mmrotate)",
            lambda: evaluate_folder(tmp / "task1", label_dir, classes, protocol="mmrotate"),
        )
    print()
    print_table(rows, ["case", "seconds", "mAP"])
    if not args.no_record:
        append_record(
            "eval",
            rows,
            images=args.images,
            ground_truths=num_gts,
            detections=num_dets,
            torch_threads=torch.get_num_threads(),
        )


if __name__ == "__main__":
    main()
