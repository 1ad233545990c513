"""Assigners: hand-built cases, equality with straightforward dense implementations, and equality with
the assignments mmrotate 0.3.4 / mmdet 2.28.2 themselves computed (``tests/data/assigners_mmrotate.npz``,
recorded by ``tests/data/assigner_oracle.py`` in the reference venv)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rotdet.models.assigners import (
    MMCV_CUDA_INSIDE_LIMIT,
    Assigner,
    AssignResult,
    ATSSAssigner,
    MaxIoUAssigner,
    assign_targets_boxes,
    assigner_from_config,
    mmcv_box_iou_rotated_float32,
    mmrotate_gt_polygons,
    rbbox_overlaps,
)
from rotdet.ops import bbox_overlaps, points_in_polygons
from rotdet.structures import obb2hbb, obb2poly, obb2xyxy

DATA = Path(__file__).resolve().parent / "data"
_spec = importlib.util.spec_from_file_location("assigner_oracle", DATA / "assigner_oracle.py")
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)
_spec = importlib.util.spec_from_file_location("mmcv_iou_oracle", DATA / "mmcv_iou_oracle.py")
mmcv_oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mmcv_oracle)
MMCV_IOU = np.load(DATA / "mmcv_iou_float32.npz")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ----------------------------------------------------------------------------- dense references
def dense_atss(anchors, counts, gts, topk, version, limit):
    """mmrotate's ATSSObbAssigner written out with full N x M matrices (lowest index wins distance ties)."""
    n, m = anchors.shape[0], gts.shape[0]
    overlaps = rbbox_overlaps(anchors, gts)  # [N, M]
    dist = (anchors[:, None, :2] - gts[None, :, :2]).pow(2).sum(-1).sqrt()
    cands, start = [], 0
    for n_l in counts:
        order = torch.sort(dist[start : start + n_l], dim=0, stable=True).indices
        cands.append(order[: min(topk, n_l)] + start)
        start += n_l
    cand = torch.cat(cands)  # [K, M]
    cols = torch.arange(m)
    cand_iou = overlaps[cand, cols]
    thr = cand_iou.mean(0) + cand_iou.std(0)
    inside = points_in_polygons(anchors[:, :2], mmrotate_gt_polygons(gts, version))
    if limit:
        flat = torch.arange(n * m).view(n, m)
        inside &= flat < MMCV_CUDA_INSIDE_LIMIT
    is_pos = (cand_iou >= thr[None]) & inside[cand, cols]
    claimed = torch.full((n, m), -math.inf, dtype=overlaps.dtype)
    pos_rows, pos_cols = cand[is_pos], cols.expand_as(cand)[is_pos]
    claimed[pos_rows, pos_cols] = overlaps[pos_rows, pos_cols]
    best, arg = claimed.max(dim=1)
    return torch.where(best > -math.inf, arg + 1, torch.zeros_like(arg))


def dense_max_iou(
    anchors,
    gts,
    pos,
    neg,
    min_pos,
    assign_all=True,
    low_quality=True,
    ignore=None,
    overlaps_of=rbbox_overlaps,
):
    """mmdet's MaxIoUAssigner.assign_wrt_overlaps, step by step on the full M x N matrix of
    ``overlaps_of(gts, anchors)`` (mmrotate's RBboxOverlaps2D, or mmdet's horizontal bbox_overlaps)."""
    overlaps = overlaps_of(gts, anchors).clone()  # [M, N]
    if ignore is not None:
        overlaps[:, ignore] = -1
    n = anchors.shape[0]
    gt_inds = torch.full((n,), -1, dtype=torch.long)
    max_ov, argmax = overlaps.max(dim=0)
    gt_max, gt_argmax = overlaps.max(dim=1)
    if isinstance(neg, tuple):
        gt_inds[(max_ov >= neg[0]) & (max_ov < neg[1])] = 0
    else:
        gt_inds[(max_ov >= 0) & (max_ov < neg)] = 0
    p = max_ov >= pos
    gt_inds[p] = argmax[p] + 1
    if low_quality:
        for i in range(gts.shape[0]):
            if gt_max[i] >= min_pos:
                if assign_all:
                    gt_inds[overlaps[i] == gt_max[i]] = i + 1
                else:
                    gt_inds[gt_argmax[i]] = i + 1
    return gt_inds, max_ov


def max_iou_of_case(case, **kwargs):
    """The MaxIoUAssigner of a ``dense_max_iou`` case (``pos``, ``neg``, ``min_pos``, ...)."""
    return MaxIoUAssigner(
        case["pos"],
        case["neg"],
        min_pos_iou=case["min_pos"],
        gt_max_assign_all=case.get("assign_all", True),
        match_low_quality=case.get("low_quality", True),
        **kwargs,
    )


def random_scene(seed, size=384, m=40, retina=False, small=False, version="le90"):
    rng = np.random.RandomState(seed)
    anchors, counts = oracle.make_anchors(size, retina)
    lo, hi = oracle.ANGLE_RANGES[version]
    wh = rng.uniform(3, 24, (m, 2)) if small else rng.uniform(4, 120, (m, 2))
    gts = np.concatenate([rng.uniform(0, size, (m, 2)), wh, rng.uniform(lo, hi, (m, 1))], 1)
    return torch.from_numpy(anchors), counts, torch.from_numpy(gts.astype(np.float32))


def line_anchors(xs, y=0.0, size=16.0):
    xs = torch.as_tensor(xs, dtype=torch.float32)
    return torch.stack(
        [
            xs,
            torch.full_like(xs, y),
            torch.full_like(xs, size),
            torch.full_like(xs, size),
            torch.zeros_like(xs),
        ],
        1,
    )


def box(cx, cy, w, h, t=0.0):
    return [float(cx), float(cy), float(w), float(h), float(t)]


# ---------------------------------------------------------------------- equality with mmrotate
ORACLE = np.load(DATA / "assigners_mmrotate.npz")


@pytest.mark.parametrize("name", list(oracle.SCENES))
def test_equals_mmrotate(name):
    kind, _, _, version, circum, _ = oracle.SCENES[name]
    scene = oracle.make_scene(name)
    assert scene["gts"].astype(np.float64).sum() == ORACLE[f"{name}/gts_sum"]  # same inputs
    anchors = torch.from_numpy(scene["anchors"])
    gts = torch.from_numpy(scene["gts"])
    labels = torch.from_numpy(scene["labels"])
    gts_assign = assign_targets_boxes(gts, circum)
    if kind == "atss":
        limits = (True, False) if f"{name}/limit1/gt_inds" in ORACLE else (False, True)
        for limit in limits:
            key = (
                f"{name}/limit{int(limit)}"
                if f"{name}/limit{int(limit)}/gt_inds" in ORACLE
                else f"{name}/limit0"
            )
            res = ATSSAssigner(9, version, mmcv_cuda_inside_limit=limit).assign(
                anchors, scene["counts"], gts_assign, labels
            )
            expected = torch.from_numpy(ORACLE[f"{key}/gt_inds"].astype(np.int64))
            assert torch.equal(res.gt_inds, expected), (name, limit, (res.gt_inds != expected).sum())
            pos = res.gt_inds > 0
            if f"{key}/pos_overlaps" in ORACLE:
                np.testing.assert_allclose(
                    res.max_overlaps[pos].numpy(), ORACLE[f"{key}/pos_overlaps"], atol=2e-5
                )
            else:
                total = res.max_overlaps[pos].double().sum().item()
                assert total == pytest.approx(float(ORACLE[f"{key}/pos_overlaps_sum"]), abs=1e-3)
            assert (res.max_overlaps[~pos] == -1e8).all()  # mmrotate's -INF for the rest
            assert torch.equal(res.labels[pos], labels[res.gt_inds[pos] - 1])
            assert (res.labels[~pos] == -1).all()
    else:
        pos_thr, neg_thr = (0.6, 0.5) if kind == "refine" else (0.5, 0.4)
        res = MaxIoUAssigner(pos_thr, neg_thr).assign(anchors, gts_assign, labels)
        expected = torch.from_numpy(ORACLE[f"{name}/gt_inds"].astype(np.int64))
        assert torch.equal(res.gt_inds, expected), (name, (res.gt_inds != expected).sum())
        inds = torch.from_numpy(ORACLE[f"{name}/overlap_inds"].astype(np.int64))
        np.testing.assert_allclose(res.max_overlaps[inds].numpy(), ORACLE[f"{name}/overlap_vals"], atol=2e-5)
        pos = res.gt_inds > 0
        assert torch.equal(res.labels[pos], labels[res.gt_inds[pos] - 1])


def test_oracle_scenes_exercise_the_rules():
    """The recorded scenes are not trivial: the CUDA limit drops positives, the far gt takes all."""
    for name in ("atss_crowd_le90", "atss_crowd_hbb_oc"):
        limited = (ORACLE[f"{name}/limit1/gt_inds"] > 0).sum()
        exact = (ORACLE[f"{name}/limit0/gt_inds"] > 0).sum()
        assert limited < 0.6 * exact
    far = oracle.SCENES["retina_far_le135"][2] // 2
    assert (ORACLE["retina_far_le135/gt_inds"] == far + 1).sum() > 2000
    for name in ("retina_le90", "retina_hbb_oc", "refine_oc"):
        inds = ORACLE[f"{name}/gt_inds"]
        assert (inds > 0).any() and (inds == 0).any() and (inds == -1).any()


# ----------------------------------------------------------------- memory-efficient == dense
@pytest.mark.parametrize(
    ("seed", "m", "small", "version"),
    [(10, 30, False, "le90"), (11, 60, False, "le135"), (12, 350, True, "oc"), (13, 800, True, "le90")],
)
def test_atss_equals_dense_reference(seed, m, small, version):
    anchors, counts, gts = random_scene(seed, m=m, small=small, version=version)
    for limit in (True, False):
        res = ATSSAssigner(9, version, mmcv_cuda_inside_limit=limit).assign(anchors, counts, gts)
        expected = dense_atss(anchors, counts, gts, 9, version, limit)
        assert torch.equal(res.gt_inds, expected), (limit, (res.gt_inds != expected).sum())
        assert res.labels is None


def test_atss_chunked_distances_match(monkeypatch):
    """Tiny distance chunks (many GT chunks per level) give the same candidates."""
    import rotdet.models.assigners as mod

    anchors, counts, gts = random_scene(21, m=120, small=True)
    full = ATSSAssigner(9, "le90").candidates(anchors, counts, gts)
    monkeypatch.setattr(mod, "_DIST_ELEMS_PER_CHUNK", 1000)
    assert torch.equal(ATSSAssigner(9, "le90").candidates(anchors, counts, gts), full)
    assert full.shape == (120, 45)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pos": 0.5, "neg": 0.4, "min_pos": 0.0},
        {"pos": 0.6, "neg": 0.5, "min_pos": 0.0},
        {"pos": 0.5, "neg": 0.4, "min_pos": 0.3},
        {"pos": 0.5, "neg": (0.1, 0.4), "min_pos": 0.0},
        {"pos": 0.5, "neg": 0.4, "min_pos": 0.0, "assign_all": False},
        {"pos": 0.5, "neg": 0.4, "min_pos": 0.0, "low_quality": False},
    ],
)
def test_max_iou_equals_dense_reference(kwargs):
    anchors, _, gts = random_scene(30, size=128, m=25, retina=True)
    gts[5] = torch.tensor(box(-400, -400, 20, 10))  # overlaps nothing
    gts[7] = gts[3]  # duplicate: ties everywhere
    # the dense reference's ties are exact-IoU ties
    res = max_iou_of_case(kwargs, low_quality_ties="exact").assign(anchors, gts)
    expected, max_ov = dense_max_iou(anchors, gts, **kwargs)
    assert torch.equal(res.gt_inds, expected)
    assert torch.equal(res.max_overlaps, max_ov)


MAX_IOU_CASES = [
    {"pos": 0.5, "neg": 0.4, "min_pos": 0.0},
    {"pos": 0.7, "neg": 0.3, "min_pos": 0.3},
    {"pos": 0.7, "neg": 0.3, "min_pos": 0.3, "assign_all": False},
    {"pos": 0.5, "neg": (0.1, 0.4), "min_pos": 0.0},
    {"pos": 0.5, "neg": 0.4, "min_pos": 0.0, "assign_all": False},
    {"pos": 0.5, "neg": 0.4, "min_pos": 0.0, "low_quality": False},
]


def horizontal_scene(seed, n=400, m=30):
    """Integer xyxy anchors and ground truths (exact IoU ties are common), duplicated anchors and
    ground truths, and a ground truth overlapping nothing."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 96, (n, 2), generator=gen).float()
    anchors = torch.cat([xy, xy + torch.randint(4, 40, (n, 2), generator=gen).float()], dim=1)
    anchors = torch.cat([anchors, anchors[: n // 8]])  # equal anchors: ties at a best IoU
    c = torch.randint(0, 96, (m, 2), generator=gen).float()
    gts = torch.cat([c, c + torch.randint(2, 48, (m, 2), generator=gen).float()], dim=1)
    gts[3] = gts[1]  # duplicate ground truths: the later one takes their low-quality anchors
    gts[5] = torch.tensor([-500.0, -500, -490, -490])  # overlaps nothing (best IoU 0)
    return anchors, gts


@pytest.mark.parametrize("kwargs", MAX_IOU_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_max_iou_horizontal_equals_dense_reference(kwargs, seed):
    """The RPN's case: the shared rules on mmdet's horizontal IoU give what the step-by-step dense
    reference gives on the full horizontal overlap matrix, ties and tie-order rules included; and so
    do the circumscribed boxes of rotated ground truths, as the RPN assigns them."""
    scenes = [horizontal_scene(seed)]
    anchors_r, _, gts_r = random_scene(40 + seed, size=128, m=25, retina=True)
    scenes.append((obb2xyxy(anchors_r, "le90"), obb2xyxy(gts_r, "le90")))
    for anchors, gts in scenes:
        for low_quality_ties in ("exact", "float32"):  # the same for horizontal IoU
            assigner = max_iou_of_case(
                kwargs, low_quality_ties=low_quality_ties, iou_calculator={"type": "BboxOverlaps2D"}
            )
            res = assigner.assign(anchors, gts)
            expected, max_ov = dense_max_iou(anchors, gts, **kwargs, overlaps_of=bbox_overlaps)
            assert torch.equal(res.gt_inds, expected)
            assert torch.equal(res.max_overlaps, max_ov)
        assert (expected > 0).any()
    iou = bbox_overlaps(scenes[0][1], scenes[0][0])
    best = iou.max(dim=1, keepdim=True).values
    assert ((iou == best) & (best > 0)).sum(dim=1).max() > 1  # ties at a best IoU are tested


def test_horizontal_iou_is_one_formula():
    """A pair's horizontal IoU has the same bits in the matrix and alone (the sparse pairs of the
    assigner are the dense reference's numbers)."""
    anchors, gts = horizontal_scene(2)
    anchors = anchors + torch.rand(anchors.shape, generator=torch.Generator().manual_seed(0))
    dense = bbox_overlaps(gts, anchors)
    rows, cols = torch.meshgrid(torch.arange(gts.shape[0]), torch.arange(anchors.shape[0]), indexing="ij")
    assert torch.equal(
        bbox_overlaps(gts[rows.flatten()], anchors[cols.flatten()], aligned=True), dense.flatten()
    )
    assert dense[1].max() > 0 and dense[5].max() == 0


def test_max_iou_refuses_boxes_of_the_other_calculator():
    anchors, gts = horizontal_scene(3)
    with pytest.raises(ValueError, match=r"takes \[\*, 5\] boxes"):
        MaxIoUAssigner(0.5, 0.4).assign(anchors, gts)
    with pytest.raises(ValueError, match=r"takes \[\*, 4\] boxes"):
        MaxIoUAssigner(0.5, 0.4, iou_calculator="BboxOverlaps2D").assign(*random_scene(3, 128)[::2])
    with pytest.raises(ValueError, match="iou_calculator must be one of"):
        MaxIoUAssigner(0.5, 0.4, iou_calculator="BboxOverlaps3D")
    with pytest.raises(ValueError, match="only its type"):
        MaxIoUAssigner(0.5, 0.4, iou_calculator={"type": "BboxOverlaps2D", "scale": 512.0})
    with pytest.raises(ValueError, match="ignore_iof_thr > 0 needs"):
        MaxIoUAssigner(0.5, 0.4, ignore_iof_thr=0.5, iou_calculator="BboxOverlaps2D")
    cfg = {
        "type": "MaxIoUAssigner",
        "pos_iou_thr": 0.7,
        "neg_iou_thr": 0.3,
        "iou_calculator": {"type": "BboxOverlaps2D"},
    }
    assert assigner_from_config(cfg).iou_calculator == "BboxOverlaps2D"


def test_max_iou_ignore_regions_equal_dense_reference():
    anchors, _, gts = random_scene(31, size=128, m=10, retina=True)
    ignore_boxes = torch.tensor([box(40, 40, 50, 30, 0.3), box(100, 20, 20, 20)])
    for wrt_candidates in (True, False):
        assigner = MaxIoUAssigner(
            0.5, 0.4, ignore_iof_thr=0.5, ignore_wrt_candidates=wrt_candidates, low_quality_ties="exact"
        )
        res = assigner.assign(anchors, gts, gt_boxes_ignore=ignore_boxes)
        iof = (
            rbbox_overlaps(anchors, ignore_boxes, mode="iof").amax(1)
            if wrt_candidates
            else rbbox_overlaps(ignore_boxes, anchors, mode="iof").amax(0)
        )
        ignored = iof > 0.5
        assert ignored.any()
        expected, max_ov = dense_max_iou(anchors, gts, 0.5, 0.4, 0.0, ignore=ignored)
        assert torch.equal(res.gt_inds, expected)
        assert torch.equal(res.max_overlaps, max_ov)


def test_max_iou_all_anchors_ignored():
    anchors = line_anchors([0.0, 20.0])
    gts = torch.tensor([box(0, 0, 16, 16), box(300, 300, 5, 5)])
    res = MaxIoUAssigner(0.5, 0.4, ignore_iof_thr=0.1).assign(
        anchors, gts, gt_boxes_ignore=torch.tensor([box(10, 0, 60, 60)])
    )
    expected, _ = dense_max_iou(anchors, gts, 0.5, 0.4, 0.0, ignore=torch.tensor([True, True]))
    assert torch.equal(res.gt_inds, expected)
    assert (res.max_overlaps == -1).all()


# ------------------------------------------------------------------------------ hand-built cases
@pytest.mark.parametrize("device", DEVICES)
def test_no_ground_truth_and_no_anchors(device):
    anchors = line_anchors([0.0, 8.0, 16.0]).to(device)
    none = torch.zeros(0, 5, device=device)
    labels = torch.zeros(0, dtype=torch.long, device=device)
    for res in (
        ATSSAssigner(9).assign(anchors, [3], none, labels),
        MaxIoUAssigner(0.5, 0.4).assign(anchors, none, labels),
    ):
        assert isinstance(res, AssignResult) and res.num_gts == 0
        assert res.gt_inds.tolist() == [0, 0, 0] and res.labels.tolist() == [-1, -1, -1]
        assert res.max_overlaps.tolist() == [0.0, 0.0, 0.0]
        assert res.gt_inds.device.type == device
    gts = torch.tensor([box(0, 0, 10, 10)], device=device)
    for res in (ATSSAssigner(9).assign(none, [0], gts), MaxIoUAssigner(0.5, 0.4).assign(none, gts)):
        assert res.gt_inds.shape == (0,) and res.num_gts == 1 and res.labels is None


def test_atss_gt_with_no_candidate_centre_inside():
    # Anchor centres on an 8-pixel grid; a 3 x 3 gt between them contains none.
    xs = torch.arange(0, 64, 8.0)
    anchors = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    anchors = torch.cat([anchors, torch.full((64, 2), 32.0), torch.zeros(64, 1)], 1)
    gts = torch.tensor([box(20, 20, 3, 3), box(44, 44, 10, 10)])
    res = ATSSAssigner(9, "le90").assign(anchors, [64], gts, torch.tensor([3, 5]))
    assert not (res.gt_inds == 1).any()
    # The second gt contains the centre (40, 40) and (48, 48) and gets positives.
    assert (res.gt_inds == 2).sum() >= 1
    assert set(res.labels[res.gt_inds == 2].tolist()) == {5}


def test_atss_anchor_claimed_by_two_gts():
    anchors = line_anchors([0.0, 8.0, 16.0, 24.0, 32.0, 40.0, 48.0, 56.0, 64.0, 72.0], size=16)
    # Both gts have anchor 4 (centre (32, 0)) among their candidates, above their thresholds and
    # inside them: IoU 0.64 with gt 0, 1 with gt 1, so gt 1 takes it.
    gts = torch.tensor([box(32, 0, 20, 20), box(32, 0, 16, 16)])
    assigner = ATSSAssigner(topk=3, angle_version="le90")
    cand = assigner.candidates(anchors, [10], gts)
    assert cand.tolist() == [[4, 3, 5], [4, 3, 5]]
    res = assigner.assign(anchors, [10], gts)
    assert res.gt_inds.tolist() == [0, 0, 0, 0, 2, 0, 0, 0, 0, 0]
    assert res.max_overlaps[4].item() == 1.0
    # The same gts in the other order: still the better match wins.
    res = assigner.assign(anchors, [10], gts.flip(0))
    assert res.gt_inds[4].item() == 1
    # Identical gts tie exactly: the lower index wins.
    res = assigner.assign(anchors, [10], torch.tensor([box(32, 0, 16, 16), box(32, 0, 16, 16)]))
    assert res.gt_inds.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]


def test_atss_more_gts_than_anchors_on_a_level():
    # Level 2 has 4 anchors (fewer than topk = 9, where mmrotate's topk would crash): all are candidates.
    level1 = line_anchors(torch.arange(0, 96, 8.0), size=16)
    level2 = line_anchors([0.0, 32.0, 64.0, 96.0], size=64)
    anchors = torch.cat([level1, level2])
    g = torch.Generator().manual_seed(0)
    gts = torch.cat(
        [
            torch.rand(20, 1, generator=g) * 96,
            torch.rand(20, 1, generator=g) * 4 - 2,
            torch.full((20, 2), 20.0),
            torch.zeros(20, 1),
        ],
        1,
    )
    assigner = ATSSAssigner(9, "le90")
    cand = assigner.candidates(anchors, [12, 4], gts)
    assert cand.shape == (20, 13)
    assert (cand[:, 9:].sort(dim=1).values == torch.arange(12, 16)).all()
    res = assigner.assign(anchors, [12, 4], gts)
    assert torch.equal(res.gt_inds, dense_atss(anchors, [12, 4], gts, 9, "le90", True))
    assert (res.gt_inds > 0).any()


def test_atss_distance_ties_take_lowest_index():
    # The gt centre is 4 px from anchors 0 and 1 on the line, and from 2 and 3 on the next row:
    # topk=3 must take the tied anchors in index order.
    anchors = line_anchors([0.0, 8.0])
    anchors = torch.cat([anchors, line_anchors([0.0, 8.0], y=8.0)])
    gts = torch.tensor([box(4, 4, 10, 10)])
    cand = ATSSAssigner(topk=3).candidates(anchors, [4], gts)
    assert cand[0].tolist() == [0, 1, 2]
    cand = ATSSAssigner(topk=2).candidates(anchors, [4], gts)
    assert cand[0].tolist() == [0, 1]


def test_atss_single_candidate_gives_no_positive():
    # One anchor per level: the unbiased std of one IoU is NaN, so mmrotate gives no positive.
    anchors = line_anchors([0.0])
    res = ATSSAssigner(9).assign(anchors, [1], torch.tensor([box(0, 0, 16, 16)]))
    assert res.gt_inds.tolist() == [0]


def test_atss_threshold_is_mean_plus_unbiased_std():
    anchors, counts, gts = random_scene(40, m=5)
    assigner = ATSSAssigner(9, "le90", mmcv_cuda_inside_limit=False)
    res = assigner.assign(anchors, counts, gts)
    cand = assigner.candidates(anchors, counts, gts)
    assert cand.shape == (5, 45)
    for g in range(5):
        ious = rbbox_overlaps(anchors[cand[g]], gts[g : g + 1])[:, 0]
        thr = ious.mean() + ious.std(unbiased=True)
        inside = points_in_polygons(anchors[cand[g], :2], mmrotate_gt_polygons(gts[g : g + 1], "le90"))[:, 0]
        ok = (ious >= thr) & inside
        assert ok.any()
        # Every qualifying candidate is positive, for g or for a gt matching it at least as well.
        assert (res.gt_inds[cand[g][ok]] > 0).all()
        assert (res.max_overlaps[cand[g][ok]] >= ious[ok]).all()
        # g wins only qualifying candidates.
        won = cand[g][res.gt_inds[cand[g]] == g + 1]
        assert set(won.tolist()) <= set(cand[g][ok].tolist())


def test_atss_mmcv_cuda_inside_limit():
    # A 1024^2 image: 21,824 anchors. With 100 gts, entries a * 100 + g >= 2,097,152 are never computed
    # by mmcv's kernel, i.e. anchors from 20,972 on (levels P5 end, P6, P7) are never inside.
    anchors, counts = oracle.make_anchors(1024, retina=False)
    anchors = torch.from_numpy(anchors)
    assert anchors.shape[0] == 21824
    small = [box(20 + 10 * i, 20, 6, 6) for i in range(99)]
    gts = torch.tensor([*small, box(700, 700, 600, 500, 0.1)])  # the big gt is matched on P6/P7
    exact = ATSSAssigner(9, "le90", mmcv_cuda_inside_limit=False).assign(anchors, counts, gts)
    quirk = ATSSAssigner(9, "le90").assign(anchors, counts, gts)
    big_exact = torch.nonzero(exact.gt_inds == 100).flatten()
    assert big_exact.numel() > 0 and (big_exact * 100 + 99 >= MMCV_CUDA_INSIDE_LIMIT).all()
    assert not (quirk.gt_inds == 100).any()
    assert torch.equal(quirk.gt_inds[:20000], exact.gt_inds[:20000])


def test_max_iou_thresholds_and_low_quality():
    anchors = line_anchors([0.0, 4.0, 8.0, 12.0, 40.0, 200.0], size=16)
    # IoU with gt 0 at (0, 0, 16, 16): 1, 0.6, 1/3, 1/7, 0, 0 -> pos, pos, neg, neg, neg, neg.
    gts = torch.tensor([box(0, 0, 16, 16), box(40, 0, 40, 40)])  # gt 1: best IoU 0.16 at anchor 4
    res = MaxIoUAssigner(0.5, 0.4).assign(anchors, gts, torch.tensor([7, 9]))
    assert res.gt_inds.tolist() == [1, 1, 0, 0, 2, 0]
    assert res.labels.tolist() == [7, 7, -1, -1, 9, -1]
    # Without low-quality matching gt 1 gets nothing; with min_pos_iou above its best neither.
    assert MaxIoUAssigner(0.5, 0.4, match_low_quality=False).assign(anchors, gts).gt_inds.tolist() == [
        1,
        1,
        0,
        0,
        0,
        0,
    ]
    assert MaxIoUAssigner(0.5, 0.4, min_pos_iou=0.2).assign(anchors, gts).gt_inds.tolist() == [
        1,
        1,
        0,
        0,
        0,
        0,
    ]
    # A best IoU in [neg, pos) is ignored (-1): anchors 1 and 2 (0.6 and 1/3) with pos 0.7, neg 0.3.
    res = MaxIoUAssigner(0.7, 0.3, match_low_quality=False).assign(anchors, gts)
    assert res.gt_inds.tolist() == [1, -1, -1, 0, 0, 0]
    assert res.max_overlaps[1].item() == pytest.approx(0.6, abs=1e-6)


def test_max_iou_low_quality_later_gt_overwrites_and_far_gt_takes_all():
    anchors = line_anchors([0.0, 100.0, 200.0], size=16)
    # Gts 0 and 1 mirror each other about anchor 0, their best match (IoU 0.43, in [0.4, 0.5)):
    # mmdet's loop over gts leaves it to gt 1.
    gts = torch.tensor([box(-6.4, 0, 16, 16), box(6.4, 0, 16, 16)])
    res = MaxIoUAssigner(0.5, 0.4).assign(anchors, gts)
    assert res.gt_inds.tolist() == [2, 0, 0]
    assert MaxIoUAssigner(0.5, 0.4, match_low_quality=False).assign(anchors, gts).gt_inds.tolist() == [
        -1,
        0,
        0,
    ]
    # A gt overlapping no anchor has best IoU 0 >= min_pos_iou 0: every anchor ties and is taken.
    far = torch.cat([gts, torch.tensor([box(-900, -900, 10, 10)])])
    res = MaxIoUAssigner(0.5, 0.4).assign(anchors, far)
    assert res.gt_inds.tolist() == [3, 3, 3]
    # gt_max_assign_all=False: only the first anchor at the best.
    res = MaxIoUAssigner(0.5, 0.4, gt_max_assign_all=False).assign(anchors, far)
    assert res.gt_inds.tolist() == [3, 0, 0]


def test_assign_targets_boxes_and_polygons():
    gts = torch.tensor([box(50, 60, 40, 10, 0.4), box(10, 10, 8, 30, 1.2)])
    assert assign_targets_boxes(gts, None) is gts
    for version in ("oc", "le90", "le135"):
        assert torch.equal(assign_targets_boxes(gts, version), obb2hbb(gts, version))
        polys = mmrotate_gt_polygons(gts, version)
        torch.testing.assert_close(polys, obb2poly(gts, version), atol=1e-4, rtol=0)
    assert torch.equal(mmrotate_gt_polygons(gts, "oc"), obb2poly(gts, "oc"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    anchors, counts, gts = random_scene(50, m=400, small=True)
    for limit in (True, False):
        a = ATSSAssigner(9, "le90", mmcv_cuda_inside_limit=limit)
        cpu = a.assign(anchors, counts, gts)
        gpu = a.assign(anchors.cuda(), counts, gts.cuda())
        assert torch.equal(cpu.gt_inds, gpu.gt_inds.cpu())
    anchors, _, gts = random_scene(51, size=128, m=25, retina=True)
    cpu = MaxIoUAssigner(0.5, 0.4).assign(anchors, gts)
    gpu = MaxIoUAssigner(0.5, 0.4).assign(anchors.cuda(), gts.cuda())
    assert torch.equal(cpu.gt_inds, gpu.gt_inds.cpu())


def test_thresholds_are_inclusive():
    # MaxIoU: IoU exactly 0.5 (16 x 16 anchor in a 16 x 32 gt) is positive; exactly 0.4 is not negative.
    anchors = line_anchors([0.0, 100.0], size=16)
    for gt_h, expected in ((32.0, [1, 0]), (40.0, [-1, 0])):
        gts = torch.tensor([box(0, 0, 16, gt_h)])
        res = MaxIoUAssigner(0.5, 0.4, match_low_quality=False).assign(anchors, gts)
        assert res.gt_inds.tolist() == expected
    # ATSS: three candidates with the same IoU 1/16 (std 0): IoU == threshold is positive.
    anchors = line_anchors(torch.arange(0, 80, 8.0), size=16)
    res = ATSSAssigner(topk=3, angle_version="le90").assign(anchors, [10], torch.tensor([box(32, 0, 64, 64)]))
    assert res.gt_inds.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert (res.max_overlaps[3:6] == 1 / 16).all()


# ------------------------------------------------------------------------ whole batch at once
def _padded(gt_list):
    g = max(len(x) for x in gt_list)
    boxes = torch.zeros(len(gt_list), g, 5)
    valid = torch.zeros(len(gt_list), g, dtype=torch.bool)
    for i, x in enumerate(gt_list):
        boxes[i, : len(x)] = x
        valid[i, : len(x)] = True
    return boxes, valid


def test_atss_batch_equals_image_by_image():
    """Images with different ground-truth counts (one with none) padded to one batch give each
    image's own assignment, mmcv's inside limit included (it depends on the image's own count)."""
    anchors, counts = oracle.make_anchors(1024, retina=False)
    anchors = torch.from_numpy(anchors)
    _, _, many = random_scene(41, size=1024, m=130, small=True)
    many[-1] = torch.tensor(box(700, 700, 600, 500, 0.1))  # matched on P6/P7: cut by the limit
    _, _, few = random_scene(42, size=1024, m=7)
    gt_list = [many, torch.zeros(0, 5), few]
    boxes, valid = _padded(gt_list)
    for limit in (True, False):
        assigner = ATSSAssigner(9, "le90", mmcv_cuda_inside_limit=limit)
        gt_inds, max_ov = assigner.assign_batch(anchors[None].expand(3, -1, -1), counts, boxes, valid)
        for i, gts in enumerate(gt_list):
            single = assigner.assign(anchors, counts, gts)
            assert torch.equal(gt_inds[i], single.gt_inds), (limit, i)
            if len(gts):
                assert torch.equal(max_ov[i], single.max_overlaps)
        assert (gt_inds[0] > 0).any() and (gt_inds[2] > 0).any() and not (gt_inds[1] != 0).any()
    # the limit cuts the big ground truth's positives (gt_inds from the last loop: no limit)
    quirk = ATSSAssigner(9, "le90").assign_batch(anchors[None], counts, boxes[:1], valid[:1])[0]
    assert (gt_inds[0] == 130).any() and not (quirk[0] == 130).any()


@pytest.mark.parametrize("assign_all", [True, False])
def test_max_iou_batch_equals_image_by_image(assign_all):
    """Per-image anchors (as R3Det's refined boxes), different counts, a ground truth overlapping
    nothing, duplicates and ignored anchors: the batch gives each image's own assignment."""
    scenes = [random_scene(50 + i, size=128, m=m, retina=True) for i, m in enumerate((12, 1, 9))]
    anchors = torch.stack([s[0] for s in scenes])
    anchors[1, :, :2] += 3.0  # the images' anchors differ
    gt_list = [scenes[0][2], scenes[1][2], scenes[2][2]]
    gt_list[0][4] = torch.tensor(box(-400, -400, 20, 10))  # overlaps nothing: takes every anchor
    gt_list[2][5] = gt_list[2][2]  # duplicate
    boxes, valid = _padded(gt_list)
    ignored = torch.zeros(anchors.shape[:2], dtype=torch.bool)
    ignored[2, ::7] = True
    ignored[1] = True  # every anchor of image 1 ignored
    assigner = MaxIoUAssigner(
        0.5, 0.4, min_pos_iou=0.0, gt_max_assign_all=assign_all, low_quality_ties="exact"
    )
    gt_inds, max_ov = assigner.assign_batch(anchors, [anchors.shape[1]], boxes, valid, ignored=ignored)
    for i, gts in enumerate(gt_list):
        exp_inds, exp_ov = dense_max_iou(
            anchors[i], gts, 0.5, 0.4, 0.0, assign_all=assign_all, ignore=ignored[i]
        )
        assert torch.equal(gt_inds[i], exp_inds), i
        assert torch.equal(max_ov[i], exp_ov), i


@pytest.mark.parametrize("version", ["le90", "le135", "oc"])
def test_atss_under_bfloat16_autocast_is_the_float32_assignment(version):
    """Training with --amp bf16 must not change the targets: mmrotate's le90/le135 polygons come
    from a matmul, which autocast would run in bfloat16 (corners rounded to whole pixels)."""
    anchors, counts, gts = random_scene(61, size=384, m=60, version=version)
    gts[:, :2] += 0.37  # off the bfloat16 grid
    expected = ATSSAssigner(9, version).assign(anchors, counts, gts).gt_inds
    with torch.autocast("cpu", dtype=torch.bfloat16):
        polys = mmrotate_gt_polygons(gts, version)
        got = ATSSAssigner(9, version).assign(anchors, counts, gts).gt_inds
    assert polys.dtype == torch.float32
    assert torch.equal(got, expected)


# ------------------------------------------------------------------------ one protocol, anchor validity
def subset_assignment(assigner, anchors, counts, gt_list, anchor_valid):
    """Each image's taking-part anchors assigned alone with mmdet's single-image call (what mmdet's
    ``get_targets`` does with its ``inside_flags``), ``-1`` elsewhere: the reference for
    ``anchor_valid``."""
    gt_inds = torch.full(anchor_valid.shape, -1, dtype=torch.long)
    max_ov = torch.zeros(anchor_valid.shape)
    for i, gts in enumerate(gt_list):
        idx = anchor_valid[i].nonzero()[:, 0]
        level_counts = [int(v.sum()) for v in anchor_valid[i].split(counts)]
        if isinstance(assigner, ATSSAssigner):
            res = assigner.assign(anchors[i][idx], level_counts, gts)
        else:
            res = assigner.assign(anchors[i][idx], gts)
        gt_inds[i, idx] = res.gt_inds
        max_ov[i, idx] = res.max_overlaps
    return gt_inds, max_ov


def validity_masks(counts, batch_sizes, seed):
    """Anchor-validity masks ``[B, N]`` of the kinds a batch meets: all valid, random (a few levels
    keep fewer than ``topk`` anchors), one level emptied, none valid."""
    g = torch.Generator().manual_seed(seed)
    n = sum(counts)
    masks = [torch.ones(n, dtype=torch.bool), torch.rand(n, generator=g) < 0.5]
    coarse = torch.ones(n, dtype=torch.bool)
    coarse[sum(counts[:-2]) :] = torch.rand(counts[-2] + counts[-1], generator=g) < 0.1  # < 9 left
    coarse[sum(counts[:-3]) : sum(counts[:-2])] = False  # a level with no anchor at all
    masks += [coarse, torch.zeros(n, dtype=torch.bool)]
    return torch.stack([masks[i % len(masks)] for i in range(batch_sizes)])


@pytest.mark.parametrize("limit", [True, False])
def test_atss_anchor_valid_equals_the_valid_anchors_alone(limit):
    """Padding anchors folded into the batch: the same assignment as each image's valid anchors
    alone -- candidates per level among them (fewer than topk on some levels: a shorter threshold
    row), mmcv's inside limit on their own indices (crowded image), -1 for the others."""
    anchors, counts = oracle.make_anchors(1024, retina=False)
    anchors = torch.from_numpy(anchors)
    _, _, many = random_scene(71, size=1024, m=130, small=True)
    many[-1] = torch.tensor(box(700, 700, 600, 500, 0.1))
    _, _, few = random_scene(72, size=1024, m=9)
    gt_list = [many, few, few[:3], many[:40], torch.zeros(0, 5)]
    boxes, valid = _padded(gt_list)
    anchor_valid = validity_masks(counts, len(gt_list), seed=3)
    anchor_valid[3, :20000] = True  # crowded, mostly valid: the limit cuts on ranks, not indices
    batch_anchors = anchors[None].expand(len(gt_list), -1, -1)
    assigner = ATSSAssigner(9, "le90", mmcv_cuda_inside_limit=limit)
    gt_inds, max_ov = assigner.assign_batch(batch_anchors, counts, boxes, valid, anchor_valid)
    exp_inds, exp_ov = subset_assignment(assigner, batch_anchors, counts, gt_list, anchor_valid)
    assert torch.equal(gt_inds, exp_inds)
    for i, gts in enumerate(gt_list):
        if len(gts):
            assert torch.equal(max_ov[i][anchor_valid[i]], exp_ov[i][anchor_valid[i]]), i
    assert all((gt_inds[i] > 0).any() for i in range(3))
    # every image full: the same as no mask at all (no grouping of the threshold rows)
    full = torch.ones_like(anchor_valid)
    assert torch.equal(
        assigner.assign_batch(batch_anchors, counts, boxes, valid, full)[0],
        assigner.assign_batch(batch_anchors, counts, boxes, valid)[0],
    )


@pytest.mark.parametrize("assign_all", [True, False])
def test_max_iou_anchor_valid_equals_the_valid_anchors_alone(assign_all):
    """The same for MaxIoU: low-quality matches (including a ground truth overlapping no valid
    anchor, which then takes every valid one) see the valid anchors only."""
    scenes = [random_scene(80 + i, size=128, m=m, retina=True) for i, m in enumerate((12, 5, 9, 3))]
    anchors = torch.stack([s[0] for s in scenes])
    counts = scenes[0][1]
    gt_list = [s[2] for s in scenes]
    gt_list[1][0] = torch.tensor(box(-400, -400, 20, 10))  # overlaps nothing
    anchor_valid = validity_masks(counts, 4, seed=4)
    anchor_valid[2] = anchors[2, :, 0] < 60  # gt 0 of image 2 may overlap no valid anchor
    boxes, valid = _padded(gt_list)
    assigner = MaxIoUAssigner(0.5, 0.4, min_pos_iou=0.0, gt_max_assign_all=assign_all)
    gt_inds, max_ov = assigner.assign_batch(anchors, counts, boxes, valid, anchor_valid)
    exp_inds, exp_ov = subset_assignment(assigner, anchors, counts, gt_list, anchor_valid)
    assert torch.equal(gt_inds, exp_inds)
    assert torch.equal(max_ov[anchor_valid], exp_ov[anchor_valid])
    assert (gt_inds[0] > 0).any() and (gt_inds[3] == -1).all()


@pytest.mark.parametrize("make", [lambda: ATSSAssigner(9, "le90"), lambda: MaxIoUAssigner(0.5, 0.4)])
def test_one_protocol_without_ground_truths(make):
    """Both assigners answer the same call, also with no ground truth in the whole batch."""
    assigner = make()
    assert isinstance(assigner, Assigner)
    anchors, counts, _ = random_scene(90, size=128)
    anchors = anchors[None].expand(2, -1, -1)
    anchor_valid = torch.ones(anchors.shape[:2], dtype=torch.bool)
    anchor_valid[1, ::3] = False
    none = torch.zeros(2, 0, 5), torch.zeros(2, 0, dtype=torch.bool)
    gt_inds, max_ov = assigner.assign_batch(anchors, counts, *none, anchor_valid)
    assert torch.equal(gt_inds, torch.where(anchor_valid, 0, -1)) and max_ov.shape == gt_inds.shape
    assert not assigner.assign_batch(anchors, counts, *none)[0].any()


# ------------------------------------------------------------- low-quality tie rule (mmcv's float32)
def test_mmcv_float32_iou_equals_mmcv_to_the_bit():
    """The emulation of mmcv 1.7.2's CPU kernel gives mmcv's own float32 IoUs (recorded by
    tests/data/mmcv_iou_oracle.py) exactly, for overlaps, nested, identical and grid boxes."""
    a, b = mmcv_oracle.pairs()
    ours = mmcv_box_iou_rotated_float32(torch.from_numpy(a), torch.from_numpy(b))
    assert ours.dtype == torch.float32
    expected = torch.from_numpy(MMCV_IOU["pair_iou"])
    assert (expected > 0).sum() > 1500 and (expected == 0).sum() > 100  # both kinds exercised
    assert torch.equal(ours, expected), (ours != expected).sum()
    # float32, not exact: the identical pairs are not all exactly 1 (mmcv rounds them too)
    exact = rbbox_overlaps(torch.from_numpy(a), torch.from_numpy(b), aligned=True)
    assert (ours != exact).any()
    iof = mmcv_box_iou_rotated_float32(torch.from_numpy(a), torch.from_numpy(b), mode="iof")
    assert (iof >= ours - 1e-3).all() and (iof > ours * 1.5).any()  # over area1 alone


def _tie_case(rng: np.random.Generator):
    """A small rotated ground truth (5-12 px) inside four equal 32 px anchors (stride 8) of a
    1024 px image, and two far anchors: the same IoU with each of the four."""
    xs = torch.tensor([504.0, 512.0])
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    anchors = torch.cat([grid, torch.full((4, 2), 32.0), torch.zeros(4, 1)], 1)
    far = line_anchors([100.0, 140.0], y=100.0, size=32)  # overlap nothing
    anchors = torch.cat([far, anchors])
    length = rng.uniform(5, 12)
    cx, cy = rng.uniform(506, 510, 2)
    gt = torch.tensor([box(cx, cy, length, length / 2, rng.uniform(-1.5, 1.5))])
    return anchors, gt


def test_exact_rule_assigns_every_tied_anchor_float32_rule_fewer():
    rng = np.random.default_rng(0)
    broken = 0
    for _ in range(12):
        anchors, gt = _tie_case(rng)
        exact_iou = rbbox_overlaps(gt, anchors)[0]
        assert torch.equal(exact_iou[2:], exact_iou[2:3].expand(4)) and exact_iou[2] > 0  # an exact tie
        exact = MaxIoUAssigner(0.5, 0.4, low_quality_ties="exact").assign(anchors, gt)
        assert exact.gt_inds.tolist() == [0, 0, 1, 1, 1, 1]
        f32 = MaxIoUAssigner(0.5, 0.4).assign(anchors, gt)  # the default
        mmcv_iou = mmcv_box_iou_rotated_float32(gt.expand(6, 5), anchors)
        kept = (mmcv_iou == mmcv_iou.max()).tolist()
        assert f32.gt_inds.tolist() == [1 if k else 0 for k in kept]
        assert torch.equal(f32.max_overlaps, exact.max_overlaps)  # only the low-quality choice differs
        broken += sum(kept) < 4
    assert broken >= 2  # rounding breaks some of these ties (4 of the 12)


def test_float32_rule_takes_mmcvs_anchors():
    """Small ground truths on a RetinaNet grid: the float32 rule takes exactly the anchors mmdet's
    low-quality matching takes on mmcv's own IoUs (recorded); the exact rule differs for many (more
    anchors where mmcv's rounding breaks a tie, fewer where it makes one: the 1:1 and 1:2 anchors of a
    location differ in area by a rounding that mmcv's float32 union absorbs and exact IoUs keep)."""
    anchors = torch.from_numpy(mmcv_oracle.anchors())
    gts = torch.from_numpy(mmcv_oracle.tie_cases())
    expected = [set() for _ in range(len(gts))]
    for g, a in zip(MMCV_IOU["tie_gt"].tolist(), MMCV_IOU["tie_anchor"].tolist(), strict=True):
        expected[g].add(a)
    differ = 0
    for rule in ("float32", "exact"):
        assigner = MaxIoUAssigner(1.1, 0.4, low_quality_ties=rule)  # no threshold match: low quality only
        for i, gt in enumerate(gts):
            taken = set(torch.nonzero(assigner.assign(anchors, gt[None]).gt_inds == 1).flatten().tolist())
            if rule == "float32":
                assert taken == expected[i], i
            else:
                differ += taken != expected[i]
    assert differ > len(gts) // 3


@pytest.mark.parametrize("name", [n for n, s in oracle.SCENES.items() if s[0] != "atss"])
def test_exact_rule_equals_mmrotate_without_ties(name):
    """The recorded mmrotate MaxIoU assignments (large ground truths: no ties there) are also those
    of the exact rule (test_equals_mmrotate checks the default, float32)."""
    kind, _, _, _, circum, _ = oracle.SCENES[name]
    scene = oracle.make_scene(name)
    gts = assign_targets_boxes(torch.from_numpy(scene["gts"]), circum)
    pos_thr, neg_thr = (0.6, 0.5) if kind == "refine" else (0.5, 0.4)
    res = MaxIoUAssigner(pos_thr, neg_thr, low_quality_ties="exact").assign(
        torch.from_numpy(scene["anchors"]), gts
    )
    assert torch.equal(res.gt_inds, torch.from_numpy(ORACLE[f"{name}/gt_inds"].astype(np.int64)))


@pytest.mark.parametrize("assign_all", [True, False])
def test_float32_rule_batch_equals_image_by_image(assign_all):
    anchors, gt = _tie_case(np.random.default_rng(3))
    other = gt.clone()
    other[0, :2] += torch.tensor([0.37, -0.21])
    boxes, valid = _padded([gt, torch.cat([other, gt])])
    assigner = MaxIoUAssigner(0.5, 0.4, gt_max_assign_all=assign_all, low_quality_ties="float32")
    both = anchors[None].expand(2, -1, -1)
    gt_inds, _ = assigner.assign_batch(both, [anchors.shape[0]], boxes, valid)
    assert torch.equal(gt_inds[0], assigner.assign(anchors, gt).gt_inds)
    assert torch.equal(gt_inds[1], assigner.assign(anchors, torch.cat([other, gt])).gt_inds)


def test_low_quality_ties_from_config():
    cfg = {"type": "MaxIoUAssigner", "pos_iou_thr": 0.5, "neg_iou_thr": 0.4}
    assert assigner_from_config(cfg).low_quality_ties == "float32"  # mmrotate's rule by default
    assert assigner_from_config({**cfg, "low_quality_ties": "exact"}).low_quality_ties == "exact"
    with pytest.raises(ValueError, match="low_quality_ties must be one of"):
        MaxIoUAssigner(0.5, 0.4, low_quality_ties="round")
