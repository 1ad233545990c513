"""DOTA-scale evaluation timing: both protocols on a synthetic set (default: 15 classes, 600 images,
~180k ground truths, ~216k detections), in memory, and from files as whole processes side by side
with DOTA_devkit's ``dota_evaluation_task1``.

    python benchmarks/bench_eval.py [--images 600] [--gts-per-image 300] [--dets-per-image 360]
                                    [--devkit DIR] [--repeats 3] [--skip-in-memory] [--keep DIR]

Whole-process rows run, from the same Task1 and labelTxt files, in alternating processes (one round
of every tool, ``--repeats`` rounds, medians reported):

* ``python -m rotdet.cli eval TASK1 LABELTXT --protocol dota`` (what a user runs);
* the evaluation alone: the same command through :func:`rotdet.cli.eval.run_eval`
  without the rest of the command line (what ``rotdet eval`` costs once the CLI imports its
  commands lazily);
* with ``--devkit DIR``: DOTA_devkit's own ``voc_eval`` for the 15 classes as its ``main()`` calls
  it (VOC07, IoU 0.5), ``DIR`` being a DOTA_devkit checkout with its ``polyiou`` extension built
  (``swig -c++ -python polyiou.i && python setup.py build_ext --inplace``); never part of rotdet.

The mAPs of all whole-process rows must be the same double (checked; ``mAP`` column).
Prints a table and appends a record to benchmarks/results.jsonl (see benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]  # this checkout's rotdet

from common import append_record, print_table  # noqa: E402

from rotdet.data import DOTA_V1_CLASSES, write_task1_submission  # noqa: E402
from rotdet.evaluation import (  # noqa: E402
    GroundTruthImage,
    eval_dota_task1,
    eval_rbbox_map,
    evaluate_folder,
)
from rotdet.structures import RotatedDetections, obb2poly  # noqa: E402

# DOTA_devkit's dota_evaluation_task1.main() with the paths filled in; its result printed as a double.
DEVKIT_RUNNER = """\
import sys
sys.path.insert(0, {devkit!r})
from dota_evaluation_task1 import voc_eval
classnames = {classes!r}
total = 0
for classname in classnames:
    rec, prec, ap = voc_eval({detpath!r}, {annopath!r}, {imageset!r}, classname,
                             ovthresh=0.5, use_07_metric=True)
    total = total + ap
print("DEVKIT_MAP", repr(float(total / len(classnames))))
"""

# The evaluation's own entry: `rotdet eval` without importing the other commands.
LEAN_EVAL = """\
import argparse, sys
from rotdet.cli.eval import add_eval_arguments, run_eval
parser = argparse.ArgumentParser(prog="rotdet eval")
add_eval_arguments(parser)
sys.exit(run_eval(parser.parse_args()))
"""


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


def as_detections(merged, classes) -> list[RotatedDetections]:
    """The per-image detections of ``{image id: [[K_c, 6] per class]}``."""
    return [
        RotatedDetections.from_per_class(per_class, image_id=img, classes=classes, angle_version="le90")
        for img, per_class in merged.items()
    ]


def write_files(root: Path, classes, gts, merged) -> tuple[Path, Path, Path]:
    """Task1 files, a labelTxt folder (with the DOTA headers) and the devkit's image-set file."""
    task1 = root / "task1"
    write_task1_submission(task1, as_detections(merged, classes), classes, version="le90")
    label_dir = root / "labelTxt"
    label_dir.mkdir()
    for img, g in gts.items():
        lines = ["imagesource:GoogleEarth", "gsd:0.146343590398"] + [
            " ".join([*(f"{v:g}" for v in p), n, str(int(d))])
            for p, n, d in zip(g.polygons, g.names, g.difficult, strict=True)
        ]
        (label_dir / f"{img}.txt").write_text("".join(x + "\n" for x in lines))
    imageset = root / "imageset.txt"
    imageset.write_text("".join(f"{img}\n" for img in gts))
    return task1, label_dir, imageset


def _run(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def whole_process_rows(root: Path, task1: Path, label_dir: Path, imageset: Path, classes, args) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    tools: dict[str, tuple[list[str], callable]] = {}
    eval_args = [str(task1), str(label_dir), "--protocol", "dota", "--classes", "v1.0"]

    def rotdet_map(tag: str):
        return lambda _out: json.loads((root / f"{tag}.json").read_text())["mAP"]

    tools["rotdet eval, whole process (python -m rotdet.cli eval)"] = (
        [sys.executable, "-m", "rotdet.cli", "eval", *eval_args, "--json", str(root / "cli.json")],
        rotdet_map("cli"),
    )
    tools["evaluation alone, whole process (rotdet.cli.eval.run_eval)"] = (
        [sys.executable, "-c", LEAN_EVAL, *eval_args, "--json", str(root / "lean.json")],
        rotdet_map("lean"),
    )
    if args.devkit:
        script = root / "devkit_runner.py"
        script.write_text(
            DEVKIT_RUNNER.format(
                devkit=str(Path(args.devkit).resolve()),
                classes=list(classes),
                detpath=str(task1 / "Task1_{:s}.txt"),
                annopath=str(label_dir / "{:s}.txt"),
                imageset=str(imageset),
            )
        )

        def devkit_map(out: str) -> float:
            line = [x for x in out.splitlines() if x.startswith("DEVKIT_MAP ")][-1]
            return float(line.split()[1])

        tools["DOTA_devkit dota_evaluation_task1, whole process"] = (
            [sys.executable, "-W", "ignore", str(script)],
            devkit_map,
        )
    times: dict[str, list[float]] = {name: [] for name in tools}
    maps: dict[str, float] = {}
    for r in range(args.repeats):
        for name, (cmd, get_map) in tools.items():
            seconds, out = _run(cmd, env)
            times[name].append(seconds)
            maps[name] = get_map(out)
            print(f"  round {r + 1}: {name}: {seconds:.2f} s, mAP {maps[name]!r}", flush=True)
    rows = [
        {"case": name, "seconds": statistics.median(t), "runs": [round(x, 3) for x in t], "mAP": maps[name]}
        for name, t in times.items()
    ]
    if len(set(maps.values())) != 1:
        raise SystemExit(f"whole-process mAPs differ: {maps}")
    if args.devkit:
        devkit = rows[-1]["seconds"]
        for row in rows:
            row["devkit / this"] = devkit / row["seconds"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--gts-per-image", type=int, default=300)
    parser.add_argument("--dets-per-image", type=int, default=360)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--devkit", default=None, help="a DOTA_devkit checkout with polyiou built")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the whole-process runs")
    parser.add_argument("--skip-in-memory", action="store_true", help="only the whole-process rows")
    parser.add_argument("--keep", default=None, metavar="DIR", help="write the files here and keep them")
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

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        task1, label_dir, imageset = write_files(root, classes, gts, merged)
        if not args.skip_in_memory:
            det_results = [merged[img] for img in gts]
            timed("mmrotate eval_rbbox_map (in memory, obb IoU)", lambda: eval_rbbox_map(det_results, anns))
            timed(
                "dota Task1 (in memory, polygon IoU)",
                lambda: eval_dota_task1(as_detections(merged, classes), gts, classes),
            )
            timed("dota Task1 from files (in process)", lambda: evaluate_folder(task1, label_dir, classes))
            timed(
                "mmrotate from files (in process, --protocol mmrotate)",
                lambda: evaluate_folder(task1, label_dir, classes, protocol="mmrotate"),
            )
        rows += whole_process_rows(root, task1, label_dir, imageset, classes, args)
    print()
    print_table(rows, ["case", "seconds", "devkit / this", "mAP"])
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
