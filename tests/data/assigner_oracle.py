"""Scenes for the assigner tests, and the script that records mmrotate 0.3.4's assignments of them.

``make_scene`` needs numpy only (the legacy ``RandomState`` stream is stable across numpy versions), so
the tests rebuild the very same inputs. Running this file needs the reference oracle's venv
(``../shared/reference/README.md``) and writes ``assigners_mmrotate.npz`` beside it::

    $REF/venv/bin/python -W ignore tests/data/assigner_oracle.py $REF/oracle

It runs mmrotate's ``ATSSObbAssigner`` and mmdet's ``MaxIoUAssigner(iou_calculator=RBboxOverlaps2D)``
on the CPU. mmcv 1.7.2 has no CPU ``points_in_polygons``; the oracle's port of the CUDA kernel's
per-entry rule is used, optionally with the CUDA launch limit (only the first 4096 * 512 entries of
the ``[anchors, gts]`` output are computed, the rest stay 0) to record both behaviours.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "assigners_mmrotate.npz"
STRIDES = (8, 16, 32, 64, 128)
CUDA_LIMIT = 4096 * 512

# name: (kind, image size, number of gts, angle version, assign_by_circumhbbox, seed)
SCENES = {
    "atss_le90": ("atss", 384, 40, "le90", None, 1),
    "atss_le135": ("atss", 384, 40, "le135", None, 2),
    "atss_hbb_oc": ("atss", 384, 40, "oc", "oc", 3),
    "atss_crowd_le90": ("atss", 384, 2000, "le90", None, 4),
    "atss_crowd_hbb_oc": ("atss", 384, 2000, "oc", "oc", 5),
    "retina_le90": ("retina", 128, 12, "le90", None, 6),
    "retina_hbb_oc": ("retina", 128, 12, "oc", "oc", 7),
    "retina_far_le135": ("retina", 128, 12, "le135", None, 9),
    "refine_oc": ("refine", 128, 12, "oc", None, 8),
}
ANGLE_RANGES = {
    "le90": (-math.pi / 2, math.pi / 2),
    "le135": (-math.pi / 4, 3 * math.pi / 4),
    "oc": (0, math.pi / 2),
}


def make_anchors(size: int, retina: bool) -> tuple[np.ndarray, list[int]]:
    """mmdet-style anchors (centre offset 0, theta 0) as float32 ``[N, 5]`` and per-level counts."""
    if retina:
        scales = [4 * 2 ** (i / 3) for i in range(3)]
        ratios = [1.0, 0.5, 2.0]
    else:
        scales, ratios = [4.0], [1.0]
    levels, counts = [], []
    for stride in STRIDES:
        n = size // stride
        shapes = []
        for r in ratios:  # ratio-major, as mmdet's AnchorGenerator
            for s in scales:
                shapes.append((stride * s / math.sqrt(r), stride * s * math.sqrt(r)))
        ys, xs = np.meshgrid(np.arange(n) * stride, np.arange(n) * stride, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        per_loc = np.zeros((centres.shape[0], len(shapes), 5))
        per_loc[:, :, :2] = centres[:, None]
        per_loc[:, :, 2:4] = np.asarray(shapes)[None]
        levels.append(per_loc.reshape(-1, 5))
        counts.append(levels[-1].shape[0])
    return np.concatenate(levels).astype(np.float32), counts


def make_scene(name: str) -> dict:
    """Anchors, level counts, gt boxes (obb) and labels of one named scene (float32, deterministic)."""
    kind, size, m, version, _, seed = SCENES[name]
    rng = np.random.RandomState(seed)
    anchors, counts = make_anchors(size, retina=kind != "atss")
    crowd = m > 100
    lo, hi = ANGLE_RANGES[version]
    cxcy = rng.uniform(0, size, (m, 2))
    wh = rng.uniform(3, 24, (m, 2)) if crowd else rng.uniform(4, 120, (m, 2))
    theta = rng.uniform(lo, hi, (m, 1))
    if version != "oc":  # le versions keep w >= h
        wh = np.sort(wh, axis=1)[:, ::-1]
    gts = np.concatenate([cxcy, wh, theta], 1)
    if name.startswith("retina_far"):
        # A gt far outside the image overlaps no anchor: with min_pos_iou = 0 mmdet gives it every
        # anchor through the low-quality matches.
        gts[m // 2] = [-500.0, -500.0, 30.0, 20.0, theta[m // 2, 0]]
    if kind == "retina":
        # Two gts with the same box tie on every anchor.
        gts[m // 3] = gts[m // 4]
    if kind == "refine":
        # R3Det's refine stage assigns decoded, rotated boxes: jitter the anchors.
        anchors = anchors.astype(np.float64)
        anchors[:, :2] += rng.normal(0, 4, (anchors.shape[0], 2))
        anchors[:, 2:4] *= np.exp(rng.normal(0, 0.2, (anchors.shape[0], 2)))
        anchors[:, 4] = rng.uniform(0, math.pi / 2, anchors.shape[0])
        anchors = anchors.astype(np.float32)
    labels = rng.randint(0, 15, m).astype(np.int64)
    return {"anchors": anchors, "counts": counts, "gts": gts.astype(np.float32), "labels": labels}


def _run_oracle(oracle_dir: str) -> None:  # pragma: no cover - runs in the reference venv only
    import torch

    sys.path.insert(0, oracle_dir)
    import mmrotate  # noqa: F401  (registers RBboxOverlaps2D)
    import mmrotate.core.bbox.assigners.atss_obb_assigner as atss_mod
    from common import points_in_polygons_cpu
    from mmrotate.core import build_assigner, obb2hbb

    def limited(points, polygons):
        out = points_in_polygons_cpu(points, polygons)
        flat = torch.arange(out.numel()).view_as(out)
        return out * (flat < CUDA_LIMIT)

    results = {}
    for name, (kind, _, _, version, circum, _) in SCENES.items():
        scene = make_scene(name)
        anchors = torch.from_numpy(scene["anchors"])
        gts = torch.from_numpy(scene["gts"])
        labels = torch.from_numpy(scene["labels"])
        gts_assign = obb2hbb(gts, circum) if circum is not None else gts
        results[f"{name}/gts_sum"] = np.float64(scene["gts"].astype(np.float64).sum())
        if kind == "atss":
            assigner = build_assigner(
                dict(
                    type="ATSSObbAssigner",
                    topk=9,
                    angle_version=version,
                    iou_calculator=dict(type="RBboxOverlaps2D"),
                )
            )
            # Below the limit (N * M < 4096 * 512) both settings agree; record the limited run only
            # where it matters.
            for limit in (
                (True, False) if len(scene["gts"]) * len(scene["anchors"]) > CUDA_LIMIT else (False,)
            ):
                atss_mod.points_in_polygons = limited if limit else points_in_polygons_cpu
                res = assigner.assign(anchors, scene["counts"], gts_assign, None, labels)
                key = f"{name}/limit{int(limit)}"
                pos = res.gt_inds > 0
                results[f"{key}/gt_inds"] = res.gt_inds.numpy().astype(np.int16)
                if len(scene["gts"]) > 100:  # crowded: only a checksum of the positives' IoUs
                    results[f"{key}/pos_overlaps_sum"] = np.float64(res.max_overlaps[pos].double().sum())
                else:
                    results[f"{key}/pos_overlaps"] = res.max_overlaps[pos].numpy()
                assert torch.equal(res.labels[pos], labels[res.gt_inds[pos] - 1])
                print(name, "limit" if limit else "exact", "positives", int(pos.sum()))
        else:
            thr = (0.6, 0.5) if kind == "refine" else (0.5, 0.4)
            assigner = build_assigner(
                dict(
                    type="MaxIoUAssigner",
                    pos_iou_thr=thr[0],
                    neg_iou_thr=thr[1],
                    min_pos_iou=0,
                    ignore_iof_thr=-1,
                    iou_calculator=dict(type="RBboxOverlaps2D"),
                )
            )
            res = assigner.assign(anchors, gts_assign, None, labels)
            results[f"{name}/gt_inds"] = res.gt_inds.numpy().astype(np.int16)
            # Max overlaps of the positives and of every 16th anchor (keeps the file small).
            sample = torch.arange(len(anchors)) % 16 == 0
            if not name.startswith("retina_far"):  # there every anchor is positive
                sample |= res.gt_inds > 0
            results[f"{name}/overlap_inds"] = torch.nonzero(sample).flatten().numpy().astype(np.int16)
            results[f"{name}/overlap_vals"] = res.max_overlaps[sample].numpy()
            assert torch.equal(res.labels[res.gt_inds > 0], labels[res.gt_inds[res.gt_inds > 0] - 1])
            print(name, "pos", int((res.gt_inds > 0).sum()), "neg", int((res.gt_inds == 0).sum()))
    np.savez_compressed(OUT, **results)
    print("wrote", OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":  # pragma: no cover
    _run_oracle(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/reference/oracle")
