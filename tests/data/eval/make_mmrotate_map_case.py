"""Regenerate ``mmrotate_map_case.npz``: a random detection set and mmrotate 0.3.4's mAP on it.

Run with the reference oracle's venv (see ../shared/reference/README.md); the test suite only reads
the committed npz::

    /work/ref/venv/bin/python -W ignore tests/data/eval/make_mmrotate_map_case.py
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ORACLE = Path("/work/ref/oracle/iou_nms.py")


def make_case(seed: int, ties: bool, num_imgs: int = 12, num_classes: int = 5):
    rng = np.random.default_rng(seed)
    gts, gt_labels, gt_img, gt_ignore = [], [], [], []
    dets, det_labels, det_img = [], [], []
    for img in range(num_imgs):
        n = int(rng.integers(0, 30))
        xy = rng.uniform(20, 480, (n, 2))
        wh = np.stack([rng.uniform(8, 60, n), rng.uniform(4, 30, n)], 1)
        th = rng.uniform(-np.pi / 2, np.pi / 2, n)
        g = np.concatenate([xy, wh, th[:, None]], 1)
        lab = rng.integers(0, num_classes - 1, n)  # the last class never has ground truths
        gts.append(g)
        gt_labels.append(lab)
        gt_img.append(np.full(n, img))
        gt_ignore.append(rng.random(n) < 0.15)
        for k in range(n):
            for _ in range(int(rng.integers(0, 4))):  # 0..3 detections per object: duplicates
                d = g[k] + rng.normal(0, 1, 5) * np.array([3, 3, 3, 2, 0.15])
                d[2:4] = np.abs(d[2:4]) + 1
                dets.append(d)
                det_labels.append(lab[k] if rng.random() < 0.9 else rng.integers(0, num_classes))
                det_img.append(img)
            if rng.random() < 0.1:  # an exact copy: IoU 1
                dets.append(g[k].copy())
                det_labels.append(lab[k])
                det_img.append(img)
        for _ in range(int(rng.integers(0, 8))):  # background false positives
            dets.append(
                np.r_[rng.uniform(20, 480, 2), rng.uniform(8, 60), rng.uniform(4, 30), rng.uniform(-1.5, 1.5)]
            )
            det_labels.append(rng.integers(0, num_classes))
            det_img.append(img)
    dets = np.array(dets, np.float32).reshape(-1, 5)
    if ties:  # scores on a coarse grid, so that many tie
        scores = (rng.integers(1, 21, len(dets)) / 20).astype(np.float32)
    else:  # distinct scores: the result does not depend on how numpy's argsort orders ties
        scores = rng.permutation(len(dets)).astype(np.float32) / len(dets) + np.float32(0.001)
    return {
        "det_bboxes": np.concatenate([dets, scores[:, None]], 1).astype(np.float32),
        "det_labels": np.array(det_labels, np.int64),
        "det_img": np.array(det_img, np.int64),
        "gt_bboxes": np.concatenate(gts).astype(np.float32),
        "gt_labels": np.concatenate(gt_labels).astype(np.int64),
        "gt_img": np.concatenate(gt_img).astype(np.int64),
        "gt_ignore": np.concatenate(gt_ignore),
        "num_classes": np.array(num_classes),
        "num_imgs": np.array(num_imgs),
    }


def main() -> None:
    out = {"numpy_version": np.array(np.__version__)}
    for name, seed, ties in (("distinct", 1, False), ("ties", 0, True)):
        run_case(name, make_case(seed, ties), out)
    np.savez_compressed(HERE / "mmrotate_map_case.npz", **out)
    print({k: v for k, v in out.items() if k.endswith("mAP")})


def run_case(name: str, case: dict, out: dict) -> None:
    out.update({f"{name}.in.{k}": v for k, v in case.items()})
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.npz"
        np.savez(src, **case)
        for tag, extra in (("07", []), ("area", ["--no-07"])):
            for thr in ("0.5", "0.7"):
                dst = Path(tmp) / f"out_{tag}_{thr}.npz"
                cmd = [
                    sys.executable,
                    "-W",
                    "ignore",
                    str(ORACLE),
                    "map",
                    "--in",
                    str(src),
                    "--out",
                    str(dst),
                ]
                subprocess.run([*cmd, "--iou-thr", thr, *extra], check=True)
                res = np.load(dst)
                for key in ("mAP", "ap", "recall", "num_gts", "num_dets"):
                    out[f"{name}.{tag}_{thr}.{key}"] = res[key]
                if thr == "0.5":
                    for k in range(int(case["num_classes"])):
                        out[f"{name}.{tag}_{thr}.precision.c{k}"] = res[f"precision.c{k}"]
                        out[f"{name}.{tag}_{thr}.recall.c{k}"] = res[f"recall.c{k}"]


if __name__ == "__main__":
    main()
