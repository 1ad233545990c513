"""CPU inference side by side with mmrotate 0.3.4: one image, 1 thread, same config, same weights.

    python benchmarks/bench_infer_cpu.py --ref-python /work/ref/venv/bin/python \\
        [--configs NAME ...] [--height 512 --width 640] [--rounds 3] [--repeats 5] [--threads 1] \\
        [--candidates 2000] [--rotdet-fast] [--mmrotate-fuse-conv-bn]

For each config, mmrotate's own ``build_detector`` + ``init_weights`` (seed 0) makes the random
weights, saved as a bare state dict, which rotdet loads (``Detector.from_config(config, weights)``);
both get the same normalised input tensor (a seeded random image) and its metadata. With
``--candidates N`` every classification bias of those weights is shifted by one logit offset so that
about N class scores of that input pass the test threshold (what a trained model gives on a crowded
DOTA patch; random weights otherwise give no candidate at all, and the post-processing is never
exercised). ``--rotdet-fast`` runs rotdet's ``--fast`` path (:meth:`rotdet.Detector.optimize`:
BatchNorms folded, channels-last); ``--mmrotate-fuse-conv-bn`` runs mmrotate's own fast path (mmcv's
``fuse_conv_bn``, the ``--fuse-conv-bn`` of its ``tools/test.py``). Then, in
alternating processes (``--rounds`` rounds, the order swapped every round), each side times
``--repeats`` calls after two warm-up calls:

* mmrotate: ``model.simple_test(img, img_metas, rescale=True)`` (network, decoding, NMS);
* rotdet: ``model.predict(img, metas, rescale=True)`` (the same work).

The reported times are medians over all timed calls of all rounds, of the wall clock and of the
process's CPU time (the fairer figure on a machine shared with other jobs, where waiting for a core
inflates the wall clock; equal to it on an idle one); the detections of both sides
are compared (count, labels, largest box / score difference). The mmrotate side runs in the
reference venv (``--ref-python``, see ``../shared/reference``; a development aid, never part of
rotdet); without it only rotdet is timed (with its own random weights).

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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CONFIGS = (
    "rotated_atss_obb_r50_fpn_1x_dota_le90",
    "rotated_retinanet_obb_r50_fpn_1x_dota_le90",
    "r3det_r50_fpn_1x_dota_oc",
)

# Runs in the reference venv (mmcv, mmdet, mmrotate; no rotdet). argv: mode config_source weights
# input out repeats threads. mode "init" writes the weights, "time" times simple_test.
MMROTATE_WORKER = r"""
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
mode, source, weights, inp, out, repeats, threads, fuse = sys.argv[1:9]
import numpy as np, torch
torch.set_num_threads(int(threads))
import mmrotate
from mmcv import Config
from mmrotate.models import build_detector

def strip(d):
    if isinstance(d, dict):
        ic = d.get("init_cfg")
        ics = ic if isinstance(ic, list) else [ic]
        if any(isinstance(x, dict) and x.get("type") == "Pretrained" for x in ics):
            d["init_cfg"] = None
        if "pretrained" in d:
            d["pretrained"] = None
        for v in d.values():
            strip(v)
    elif isinstance(d, (list, tuple)):
        for v in d:
            strip(v)

cfg = Config.fromfile(os.path.join(os.path.dirname(mmrotate.__file__), ".mim", source))
strip(cfg._cfg_dict)
torch.manual_seed(0); np.random.seed(0)
model = build_detector(cfg.model)
if mode == "init":
    model.init_weights()
    torch.save(model.state_dict(), weights)
    sys.exit(0)
model.load_state_dict(torch.load(weights, map_location="cpu"))
model.eval()
if fuse == "1":
    from mmcv.cnn import fuse_conv_bn
    model = fuse_conv_bn(model)
img = torch.from_numpy(np.load(inp))
h, w = img.shape[-2:]
metas = [dict(filename="random.png", ori_filename="random.png", ori_shape=(h, w, 3), img_shape=(h, w, 3),
              pad_shape=(h, w, 3), scale_factor=np.ones(4, np.float32), flip=False,
              flip_direction=None, batch_input_shape=(h, w))]
times, cpu = [], []
with torch.no_grad():
    for k in range(2 + int(repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        res = model.simple_test(img, metas, rescale=True)
        if k >= 2:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
per_class = res[0]
rows = [np.c_[d[:, :6], np.full(len(d), c)] for c, d in enumerate(per_class)]
dets = np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 7))
np.save(out + ".npy", dets)
json.dump({"times": times, "cpu": cpu, "torch": torch.__version__}, open(out, "w"))
"""

ROTDET_WORKER = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
name, weights, inp, out, repeats, threads, fuse = sys.argv[1:8]
import numpy as np, torch
torch.set_num_threads(int(threads))
from rotdet import Detector
torch.manual_seed(0)
det = Detector.from_config(name, weights if weights != "-" else None, device="cpu")
if fuse == "1":
    det.optimize()
model = det.model
img = torch.from_numpy(np.load(inp))
h, w = img.shape[-2:]
metas = [{"img_shape": (h, w, 3), "ori_shape": (h, w, 3), "pad_shape": (h, w, 3),
          "scale_factor": np.ones(4, np.float32), "flip": False}]
times, cpu = [], []
with torch.no_grad():
    for k in range(2 + int(repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        res = model.predict(img, metas, rescale=True)
        if k >= 2:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
r = res[0]
# mmrotate's layout: grouped by class (each class by descending score).
order = torch.sort(r.labels, stable=True).indices
dets = torch.cat([r.boxes, r.scores[:, None], r.labels[:, None].float()], 1)[order]
np.save(out + ".npy", dets.double().numpy())
json.dump({"times": times, "cpu": cpu, "torch": torch.__version__}, open(out, "w"))
"""


def make_input(name: str, height: int, width: int, path: Path) -> None:
    """A seeded random BGR image through the config's normalisation, ``[1, 3, H, W]`` float32."""
    import numpy as np

    from rotdet.configs import load_config

    cfg = load_config(name)
    norm = cfg["data"]["img_norm"]
    rng = np.random.RandomState(0)
    coarse = np.kron(rng.uniform(0, 255, (height // 32 + 1, width // 32 + 1, 3)), np.ones((32, 32, 1)))
    img = np.clip(coarse[:height, :width] + rng.uniform(-40, 40, (height, width, 3)), 0, 255)
    rgb = img.astype(np.float32)  # taken as RGB already (to_rgb only swaps channels)
    x = (rgb - np.array(norm["mean"], np.float32)) / np.array(norm["std"], np.float32)
    np.save(path, np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32))


def shift_scores(name: str, weights: Path, inp: Path, candidates: int) -> float:
    """Shift the classification biases of the state dict at ``weights`` (in place, the file) so that
    about ``candidates`` class scores of the input at ``inp`` pass the config's score threshold;
    returns the shift. The shift is found with rotdet's model on those weights (the same logits as
    mmrotate's, see tests/test_mmrotate_import.py)."""
    import numpy as np
    import torch
    from bench_model import is_cls_bias, score_shift

    from rotdet import Detector
    from rotdet.configs import load_config

    det = Detector.from_config(name, str(weights), device="cpu")
    thr = load_config(name)["model"]["test_cfg"]["score_thr"]
    shift = score_shift(det.model, torch.from_numpy(np.load(inp)), candidates, thr)
    state = torch.load(weights, map_location="cpu")
    keys = [k for k in state if is_cls_bias(k)]
    if not keys:
        raise RuntimeError(f"{name}: no classification bias in the state dict")
    for k in keys:
        state[k] = state[k] + shift
    torch.save(state, weights)
    return shift


def _env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _run(cmd: list[str], env: dict, pythonpath: str | None = None) -> None:
    if pythonpath:
        env = {**env, "PYTHONPATH": pythonpath}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} ... failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def compare(ours, ref) -> dict:
    import numpy as np

    out = {"dets_rotdet": len(ours), "dets_mmrotate": len(ref)}
    if len(ours) == len(ref) and len(ref):
        d = np.abs(ours - ref)
        d[:, 4] = np.abs((ours[:, 4] - ref[:, 4] + np.pi) % (2 * np.pi) - np.pi)
        out.update(
            labels_equal=bool((ours[:, 6] == ref[:, 6]).all()),
            max_box_diff=float(d[:, :5].max()),
            max_score_diff=float(d[:, 5].max()),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--ref-python", default=None, help="python of the mmrotate 0.3.4 reference venv")
    parser.add_argument("--ref-pythonpath", default=None, help="PYTHONPATH for --ref-python (if any)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--candidates",
        type=int,
        default=0,
        help="shift the class biases so that about this many class scores pass score_thr (0: keep the init)",
    )
    parser.add_argument("--rotdet-fast", action="store_true", help="rotdet's --fast (Detector.optimize)")
    parser.add_argument(
        "--mmrotate-fuse-conv-bn", action="store_true", help="mmrotate with mmcv's fuse_conv_bn"
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl")
    args = parser.parse_args()
    if args.candidates and not args.ref_python:
        parser.error("--candidates shifts mmrotate's init weights: it needs --ref-python")
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]  # this checkout's rotdet
    import numpy as np

    from rotdet.configs import load_config

    env = _env(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.configs:
            source = load_config(name)["source"]
            inp = tmp / f"{name}.input.npy"
            make_input(name, args.height, args.width, inp)
            weights = tmp / f"{name}.pth"
            sides = {"rotdet": [sys.executable, "-c", ROTDET_WORKER, name]}
            if args.ref_python:
                ref = [args.ref_python, "-W", "ignore", "-c", MMROTATE_WORKER]
                init = [*ref, "init", source, str(weights), str(inp), "-", "0", str(args.threads), "0"]
                _run(init, env, args.ref_pythonpath)
                if args.candidates:
                    shift_scores(name, weights, inp, args.candidates)
                sides["mmrotate"] = [*ref, "time", source]
            times = {s: [] for s in sides}
            cpu = {s: [] for s in sides}
            dets = {}
            for r in range(args.rounds):
                for side in sides if r % 2 == 0 else list(sides)[::-1]:
                    out = tmp / f"{name}.{side}.json"
                    w = str(weights) if args.ref_python else "-"
                    fast = args.rotdet_fast if side == "rotdet" else args.mmrotate_fuse_conv_bn
                    fuse = "1" if fast else "0"
                    tail = [w, str(inp), str(out), str(args.repeats), str(args.threads), fuse]
                    _run([*sides[side], *tail], env, args.ref_pythonpath if side == "mmrotate" else None)
                    res = json.loads(out.read_text())
                    times[side] += res["times"]
                    cpu[side] += res["cpu"]
                    dets[side] = np.load(str(out) + ".npy")
                    print(
                        f"  {name} round {r + 1} {side}: {statistics.median(res['times']):.3f} s "
                        f"(CPU {statistics.median(res['cpu']):.3f} s)",
                        flush=True,
                    )
            row = {
                "config": name,
                "rotdet s": statistics.median(times["rotdet"]),
                "rotdet CPU s": statistics.median(cpu["rotdet"]),
            }
            if "mmrotate" in sides:
                row["mmrotate s"] = statistics.median(times["mmrotate"])
                row["mmrotate CPU s"] = statistics.median(cpu["mmrotate"])
                row["rotdet / mmrotate"] = row["rotdet s"] / row["mmrotate s"]
                row["CPU ratio"] = row["rotdet CPU s"] / row["mmrotate CPU s"]
                row.update(compare(dets["rotdet"], dets["mmrotate"]))
            rows.append(row)
    from common import append_record, print_table

    print()
    columns = ["config", "rotdet s", "mmrotate s", "rotdet / mmrotate", "rotdet CPU s", "mmrotate CPU s"]
    print_table(rows, [*columns, "CPU ratio", "dets_rotdet", "dets_mmrotate"])
    for row in rows:
        print(row["config"], {k: v for k, v in row.items() if k.startswith(("labels", "max_"))})
    if not args.no_record:
        append_record(
            "infer_cpu",
            rows,
            image=[args.height, args.width],
            threads=args.threads,
            candidates=args.candidates,
            rotdet_fast=args.rotdet_fast,
            mmrotate_fuse_conv_bn=args.mmrotate_fuse_conv_bn,
            rounds=args.rounds,
            repeats=args.repeats,
        )


if __name__ == "__main__":
    main()
