"""MaxIoU's low-quality tie rule: ``low_quality_ties: exact`` against ``float32`` (mmcv's rounding).

    python benchmarks/bench_tie_rule.py --part ties --mmcv-python /work/ref/venv/bin/python
    python benchmarks/bench_tie_rule.py --part train

Two parts:

* ``ties``: single small ground truths (DOTA-like: 6-30 px vehicles, axis-aligned with integer-ish
  coordinates as the ``_hbb`` configs assign them, or rotated with float parameters) on a 1024 px
  RetinaNet anchor grid. For each, the anchors low-quality matching assigns under each rule, and
  -- with ``--mmcv-python``, an interpreter that imports mmcv 1.7.2 -- under mmdet's rule on mmcv's
  own ``box_iou_rotated`` (anchors whose IoU equals the ground truth's best): mean count per ground
  truth and the share of ground truths whose anchor set equals mmcv's.
* ``train``: a demo-size Rotated RetinaNet (ResNet-18, narrow head, 256 px, MaxIoU assigner) trained
  on small-object ToyDOTA under each rule, same seed and schedule: mAP on the held-out split and
  positive anchors per training image (MaxIoU on fixed anchors does not depend on the weights, so
  the count is taken on the resized training labels without flips).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_record, print_table  # noqa: E402

from rotdet.configs import load_config  # noqa: E402
from rotdet.data import ensure_toy_dota  # noqa: E402
from rotdet.engine.data import build_dataset  # noqa: E402
from rotdet.engine.train import TrainOptions, train  # noqa: E402
from rotdet.models.anchors import AnchorGenerator  # noqa: E402
from rotdet.models.assigners import LOW_QUALITY_TIE_RULES, MaxIoUAssigner, assign_targets_boxes  # noqa: E402

# mmcv's IoUs of aligned pairs, run by the reference interpreter (reads/writes .npy files).
_MMCV_SCRIPT = """
import sys, numpy as np, torch
from mmcv.ops import box_iou_rotated
d = np.load(sys.argv[1])
iou = box_iou_rotated(torch.from_numpy(d["gt"]), torch.from_numpy(d["anchor"]), aligned=True)
np.save(sys.argv[2], iou.numpy())
"""

RETINA_ANCHORS = {"octave_base_scale": 4, "scales_per_octave": 3, "ratios": [1.0, 0.5, 2.0]}
STRIDES = [8, 16, 32, 64, 128]
GROUPS = ("axis-aligned, whole px", "axis-aligned, float", "rotated")


def retina_anchors(size: int) -> tuple[torch.Tensor, list[int]]:
    """``[N, 5]`` RetinaNet anchors of a ``size`` px square image (levels concatenated) and the
    count per level."""
    gen = AnchorGenerator(STRIDES, **RETINA_ANCHORS)
    sizes = [(size // s, size // s) for s in STRIDES]
    levels = gen.grid_anchors(sizes)
    return torch.cat(levels), [lv.shape[0] for lv in levels]


def sample_gts(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``[count, 5]`` float32 small ground truths in a 1024 px image and the group of each: 0
    axis-aligned from integer corners (half-pixel centres, whole sizes), 1 axis-aligned with float
    parameters (the circumscribed box of a rotated label), 2 rotated."""
    rng = np.random.default_rng(seed)
    length = rng.uniform(6, 30, count)
    gts = np.zeros((count, 5), np.float32)
    group = np.arange(count) % 3
    gts[:, 0:2] = rng.uniform(16, 1008, (count, 2))
    gts[:, 2], gts[:, 3] = length, length / rng.uniform(1.5, 2.5, count)
    whole = group == 0
    gts[whole, 0:2] = np.round(gts[whole, 0:2] * 2) / 2
    gts[whole, 2:4] = np.round(gts[whole, 2:4])
    gts[group == 2, 4] = rng.uniform(-np.pi / 2, np.pi / 2, int((group == 2).sum()))
    return gts, group


def rule_sets(gt: torch.Tensor, anchors: torch.Tensor, rule: str) -> set[int]:
    """Anchors low-quality matching gives the single ground truth ``gt [5]`` (no IoU threshold
    reached: ``pos_iou_thr`` above 1)."""
    assigner = MaxIoUAssigner(pos_iou_thr=1.1, neg_iou_thr=0.4, min_pos_iou=0, low_quality_ties=rule)
    result = assigner.assign(anchors, gt[None])
    return set(torch.nonzero(result.gt_inds == 1).flatten().tolist())


def mmcv_sets(gts: np.ndarray, anchors: torch.Tensor, mmcv_python: str) -> list[set[int]]:
    """mmdet's low-quality anchors of each ground truth on mmcv's float32 IoUs."""
    pair_gt, pair_anchor, owner, index = [], [], [], []
    x1 = anchors[:, 0] - anchors[:, 2] / 2
    x2 = anchors[:, 0] + anchors[:, 2] / 2
    y1 = anchors[:, 1] - anchors[:, 3] / 2
    y2 = anchors[:, 1] + anchors[:, 3] / 2
    for i, gt in enumerate(gts):
        r = float(np.hypot(gt[2], gt[3])) / 2  # every anchor that can overlap (the others give 0)
        near = torch.nonzero((x1 <= gt[0] + r) & (x2 >= gt[0] - r) & (y1 <= gt[1] + r) & (y2 >= gt[1] - r))
        near = near.flatten()
        pair_gt.append(np.repeat(gt[None], len(near), 0))
        pair_anchor.append(anchors[near].numpy())
        owner.append(np.full(len(near), i))
        index.append(near.numpy())
    pair_gt, pair_anchor = np.concatenate(pair_gt), np.concatenate(pair_anchor)
    pair_gt[:, 2:4] = pair_gt[:, 2:4].clip(min=1e-3)  # RBboxOverlaps2D's clamp
    pair_anchor[:, 2:4] = pair_anchor[:, 2:4].clip(min=1e-3)
    owner, index = np.concatenate(owner), np.concatenate(index)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/pairs.npz", gt=pair_gt.astype(np.float32), anchor=pair_anchor.astype(np.float32))
        script = Path(tmp) / "mmcv_iou.py"
        script.write_text(_MMCV_SCRIPT)
        subprocess.run(
            [mmcv_python, "-W", "ignore", str(script), f"{tmp}/pairs.npz", f"{tmp}/iou.npy"], check=True
        )
        iou = np.load(f"{tmp}/iou.npy")
    sets = []
    for i in range(len(gts)):
        mine = owner == i
        best = iou[mine].max()
        sets.append(set(index[mine][iou[mine] == best].tolist()) if best > 0 else set())
    return sets


def run_ties(count: int, seed: int, mmcv_python: str | None) -> list[dict]:
    anchors, _ = retina_anchors(1024)
    gts, group = sample_gts(count, seed)
    ours = {
        rule: [rule_sets(torch.from_numpy(gt), anchors, rule) for gt in gts] for rule in LOW_QUALITY_TIE_RULES
    }
    ref = mmcv_sets(gts, anchors, mmcv_python) if mmcv_python else None
    rows = []
    for g, kind in enumerate(GROUPS):
        idx = np.nonzero(group == g)[0]
        row = {"ground truths": kind, "n": len(idx)}
        for rule in LOW_QUALITY_TIE_RULES:
            row[f"{rule} anchors/gt"] = float(np.mean([len(ours[rule][i]) for i in idx]))
            if ref is not None:
                row[f"{rule} = mmcv"] = float(np.mean([ours[rule][i] == ref[i] for i in idx]))
        if ref is not None:
            row["mmcv anchors/gt"] = float(np.mean([len(ref[i]) for i in idx]))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ training
def retina_demo_cfg(root: Path, rule: str, epochs: int, batch: int = 4) -> dict:
    """demo_atss_le90 turned into a Rotated RetinaNet (mmrotate's anchors and MaxIoU assigner)."""
    cfg = load_config(
        "demo_atss_le90",
        [
            f"data.root={root}",
            "model.bbox_head.type=RotatedRetinaHead",
            "model.bbox_head.feat_channels=64",
            "model.bbox_head.stacked_convs=2",
            "model.neck.out_channels=64",
            "model.bbox_head.in_channels=64",
            f"data.samples_per_gpu={batch}",
            "data.workers_per_gpu=0",
            f"max_epochs={epochs}",
            f"evaluation.interval={epochs}",
            "lr_config.warmup_iters=20",
        ],
    )
    head = cfg["model"]["bbox_head"]
    head["anchor_generator"].update(RETINA_ANCHORS)
    cfg["model"]["train_cfg"]["assigner"] = {
        "type": "MaxIoUAssigner",
        "pos_iou_thr": 0.5,
        "neg_iou_thr": 0.4,
        "min_pos_iou": 0,
        "ignore_iof_thr": -1,
        "low_quality_ties": rule,
    }
    cfg["name"] = f"tie_rule_{rule}"
    return cfg


def positives_per_image(cfg: dict) -> float:
    """Mean positive anchors per training image (labels resized to the config's scale, no flip)."""
    cfg = {**cfg, "data": {**cfg["data"], "train_flip": {"flip_ratio": 0.0, "direction": "horizontal"}}}
    dataset = build_dataset(cfg, "train")
    head = cfg["model"]["bbox_head"]
    gen = AnchorGenerator(head["anchor_generator"]["strides"], **RETINA_ANCHORS)
    assign = {k: v for k, v in cfg["model"]["train_cfg"]["assigner"].items() if k != "type"}
    assigner = MaxIoUAssigner(**assign)
    totals = []
    for i in range(len(dataset)):
        sample = dataset[i]
        h, w = (-(-n // 32) * 32 for n in sample["img"].shape[-2:])  # padded to size_divisor
        strides = head["anchor_generator"]["strides"]
        anchors = torch.cat(gen.grid_anchors([(-(-h // s), -(-w // s)) for s in strides]))
        gts = assign_targets_boxes(sample["gt_bboxes"], None)
        totals.append(int((assigner.assign(anchors, gts).gt_inds > 0).sum()))
    return float(np.mean(totals))


def run_train(work: Path, num_train: int, epochs: int, seed: int, batch: int, amp: str) -> list[dict]:
    root = work / "toy"
    ensure_toy_dota(root / "train", num_images=num_train, seed=0)
    ensure_toy_dota(root / "val", num_images=max(num_train // 4, 4), seed=1)
    rows = []
    for rule in LOW_QUALITY_TIE_RULES:
        cfg = retina_demo_cfg(root, rule, epochs, batch)
        start = time.perf_counter()
        result = train(
            cfg, TrainOptions(work_dir=work / rule, seed=seed, deterministic=True, progress=False, amp=amp)
        )
        rows.append(
            {
                "rule": rule,
                "mAP": result.last_map,
                "positives/img": positives_per_image(cfg),
                "iters": result.iteration,
                "train s": round(time.perf_counter() - start),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["ties", "train", "both"], default="both")
    parser.add_argument("--cases", type=int, default=400, help="ground truths for the tie count")
    parser.add_argument("--mmcv-python", default=os.environ.get("ROTDET_MMCV_PYTHON"))
    parser.add_argument("--train-images", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--amp", default="none", help="none, bf16, auto (TrainOptions.amp)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    if args.part in ("ties", "both"):
        rows = run_ties(args.cases, args.seed, args.mmcv_python)
        print_table(rows, list(rows[0]))
        append_record("tie_rule_counts", rows, cases=args.cases, mmcv=bool(args.mmcv_python))
    if args.part in ("train", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            work = args.work_dir or Path(tmp)
            rows = run_train(work, args.train_images, args.epochs, args.seed, args.batch, args.amp)
        print_table(rows, list(rows[0]))
        append_record(
            "tie_rule_train",
            rows,
            train_images=args.train_images,
            epochs=args.epochs,
            seed=args.seed,
            batch=args.batch,
            amp=args.amp,
        )


if __name__ == "__main__":
    main()
