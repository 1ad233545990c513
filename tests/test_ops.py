"""Rotated IoU, NMS and point-in-polygon against exact float64 references (shapely) and by properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely_reference import greedy_nms, iou_aligned, iou_matrix, random_dota_boxes

import rotdet.ops.nms as nms_module
from rotdet.ops import (
    batched_nms_rotated,
    box_iou_rotated,
    multiclass_nms_rotated,
    nms_rotated,
    points_in_polygons,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PI = math.pi


def t32(x, device="cpu"):
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)


# --------------------------------------------------------------------------------------------- IoU


@pytest.mark.parametrize("device", DEVICES)
def test_iou_random_pairs_match_shapely(device):
    rng = np.random.default_rng(0)
    a = random_dota_boxes(rng, 12_000)
    b = random_dota_boxes(rng, 12_000)
    # Move most partners close so that the pairs overlap in all sorts of ways.
    near = rng.random(12_000) < 0.8
    b[near, :2] = a[near, :2] + rng.normal(0, 1, (near.sum(), 2)).astype(np.float32) * a[near, 2:3] / 2
    b[near, 2:4] = a[near, 2:4] * rng.uniform(0.5, 1.5, (near.sum(), 2)).astype(np.float32)
    got = box_iou_rotated(t32(a, device), t32(b, device), aligned=True).cpu().numpy()
    want = iou_aligned(a, b)
    assert got.dtype == np.float32
    assert (want > 0).sum() > 6_000
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    got_iof = box_iou_rotated(t32(a, device), t32(b, device), mode="iof", aligned=True).cpu().numpy()
    np.testing.assert_allclose(got_iof, iou_aligned(a, b, mode="iof"), atol=1e-4, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["iou", "iof"])
def test_iou_matrix_matches_shapely(device, mode):
    rng = np.random.default_rng(1)
    a = random_dota_boxes(rng, 150, image=512)
    b = random_dota_boxes(rng, 170, image=512)
    got = box_iou_rotated(t32(a, device), t32(b, device), mode=mode).cpu().numpy()
    want = iou_matrix(a, b, mode=mode)
    assert got.shape == (150, 170) and (want > 0).sum() > 500
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def _adversarial_pairs() -> list[tuple[list[float], list[float]]]:
    pairs = []
    for theta in (0.0, 0.3, PI / 2, -PI / 2, -PI / 4, 3 * PI / 4, PI):
        pairs.append(([50, 60, 40, 20, theta], [50, 60, 40, 20, theta]))  # identical
        pairs.append(([50, 60, 40, 20, theta], [52, 61, 10, 5, theta + 0.7]))  # nested
        pairs.append(([50, 60, 40, 20, theta], [50, 60, 40, 20, theta + PI]))  # same rectangle, +pi
        pairs.append(
            ([50, 60, 40, 20, theta], [50, 60, 20, 40, theta + PI / 2])
        )  # same rectangle, w/h swapped
        pairs.append(([50, 60, 40, 20, theta], [50, 60, 20, 40, theta - PI / 2]))
        pairs.append(([50, 60, 40, 20, theta], [50, 60, 40, 20, theta + PI / 2]))  # a cross
    pairs += [
        ([0, 0, 2, 2, 0], [2, 0, 2, 2, 0]),  # touching edges
        ([0, 0, 2, 2, 0], [2, 2, 2, 2, 0]),  # touching corners
        ([0, 0, 2, 2, 0], [1.5, 0, 1, 2, 0]),  # collinear edges, half overlap
        ([0, 0, 4, 2, 0], [1, 0, 2, 2, 0]),  # shared top and bottom lines, same direction
        ([0, 0, 2, 2, 0], [0, 2, 2, 2, PI]),  # touching, one given upside down
        ([0, 0, 2, 2, PI / 4], [0, 0, 2, 2, -PI / 4]),  # equal squares at 45 and -45 degrees
        ([100, 100, 50, 0.01, 0.2], [100, 100.002, 60, 0.01, 0.2]),  # very thin, parallel
        ([100, 100, 50, 0.01, 0.2], [101, 100, 50, 0.01, 1.3]),  # very thin, crossing
        ([10, 10, 0.5, 0.5, 0.1], [10.2, 10.1, 0.5, 0.5, 0.9]),  # tiny
        ([3000, 3000, 5000, 5000, 0.3], [3000, 3000, 5000, 4000, 0.35]),  # huge
        ([3000, 3000, 5000, 5000, 0.3], [3500, 2800, 10, 4, 1.0]),  # huge vs small inside
        ([3000, 3000, 5000, 5000, 0.0], [500.5, 3000, 2, 2, 0.0]),  # small across a huge box's edge
    ]
    return pairs


@pytest.mark.parametrize("device", DEVICES)
def test_iou_adversarial_cases_match_shapely(device):
    a, b = (np.array(side, dtype=np.float32) for side in zip(*_adversarial_pairs(), strict=True))
    got = box_iou_rotated(t32(a, device), t32(b, device), aligned=True).cpu().numpy()
    np.testing.assert_allclose(got, iou_aligned(a, b), atol=1e-4, rtol=0)
    got_t = box_iou_rotated(t32(b, device), t32(a, device), aligned=True).cpu().numpy()
    np.testing.assert_allclose(got_t, got, atol=1e-5, rtol=0)
    full = box_iou_rotated(t32(a, device), t32(b, device)).cpu().numpy()
    np.testing.assert_allclose(np.diagonal(full), got, atol=1e-6, rtol=0)


def test_iou_exact_on_shared_boundaries():
    boxes = t32([[0, 0, 2, 2, 0], [2, 0, 2, 2, 0], [0, 0, 2, 2, 0], [1, 0, 2, 2, 0]])
    iou = box_iou_rotated(boxes, boxes)
    assert iou[0, 0] == 1 and iou[1, 1] == 1  # identical: shared edges counted once
    assert iou[0, 1] == 0 and iou[1, 0] == 0  # touching along an edge
    assert iou[0, 3] == pytest.approx(1 / 3, abs=1e-7)  # collinear top and bottom edges


@pytest.mark.parametrize("device", DEVICES)
def test_iou_degenerate_boxes_give_zero_not_nan(device):
    good = [10, 10, 4, 4, 0.2]
    bad = [
        [10, 10, 0, 4, 0.2],
        [10, 10, 4, 0, 0.2],
        [10, 10, -4, 4, 0.2],
        [10, 10, 4, -4, 0.2],
        [10, 10, 0, 0, 0],
    ]
    a = t32([good] * len(bad) + bad, device)
    b = t32(bad + [good] * len(bad), device)
    for mode in ("iou", "iof"):
        aligned = box_iou_rotated(a, b, mode=mode, aligned=True)
        full = box_iou_rotated(a, b, mode=mode)
        assert torch.isfinite(full).all() and torch.isfinite(aligned).all()
        assert (aligned == 0).all()
        assert (full[:, len(bad) :][: len(bad)] > 0).all()  # good vs good still overlaps
        assert (full[len(bad) :] == 0).all() and (full[:, : len(bad)] == 0).all()


def test_iou_empty_and_dtype():
    a = torch.zeros(0, 5)
    b = t32([[1, 1, 2, 2, 0]])
    assert box_iou_rotated(a, b).shape == (0, 1)
    assert box_iou_rotated(b, a).shape == (1, 0)
    assert box_iou_rotated(a, a, aligned=True).shape == (0,)
    assert box_iou_rotated(b.double(), b.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="mode"):
        box_iou_rotated(b, b, mode="giou")
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        box_iou_rotated(torch.zeros(3, 4), b)
    with pytest.raises(ValueError, match="aligned"):
        box_iou_rotated(b, torch.cat([b, b]), aligned=True)


def test_iou_chunked_path_matches_single_pass(monkeypatch):
    import rotdet.ops.iou as iou_module

    rng = np.random.default_rng(2)
    a, b = t32(random_dota_boxes(rng, 300, image=300)), t32(random_dota_boxes(rng, 200, image=300))
    expected = box_iou_rotated(a, b)
    monkeypatch.setattr(iou_module, "_PAIRS_PER_CHUNK", {"cpu": 7})
    monkeypatch.setattr(iou_module, "_MASK_ELEMS_PER_BLOCK", 1000)
    torch.testing.assert_close(box_iou_rotated(a, b), expected, rtol=0, atol=0)


_coord = st.floats(-500, 500, allow_nan=False, width=32)
_size = st.floats(0.5, 300, allow_nan=False, width=32)
_angle = st.floats(-4, 4, allow_nan=False, width=32)
_box = st.tuples(_coord, _coord, _size, _size, _angle)


@settings(max_examples=150, deadline=None)
@given(a=_box, b=_box, rotation=st.floats(-PI, PI), shift=st.tuples(_coord, _coord))
def test_iou_properties(a, b, rotation, shift):
    ta, tb = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    iou_ab = box_iou_rotated(ta, tb).item()
    assert 0.0 <= iou_ab <= 1.0
    assert box_iou_rotated(tb, ta).item() == pytest.approx(iou_ab, abs=1e-9)
    assert box_iou_rotated(ta, ta).item() == pytest.approx(1.0, abs=1e-12)
    assert box_iou_rotated(ta, tb, mode="iof").item() >= iou_ab - 1e-12

    def move(box: torch.Tensor) -> torch.Tensor:
        c, s = math.cos(rotation), math.sin(rotation)
        x, y = box[0, 0].item(), box[0, 1].item()
        return torch.tensor(
            [
                [
                    c * x - s * y + shift[0],
                    s * x + c * y + shift[1],
                    box[0, 2],
                    box[0, 3],
                    box[0, 4] + rotation,
                ]
            ],
            dtype=torch.float64,
        )

    assert box_iou_rotated(move(ta), move(tb)).item() == pytest.approx(iou_ab, abs=1e-9)
    want = iou_aligned(ta.numpy(), tb.numpy())[0]
    assert iou_ab == pytest.approx(want, abs=1e-9)


# --------------------------------------------------------------------------------------------- NMS


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("iou_thr", [0.1, 0.5, 0.8])
def test_nms_equals_bruteforce_greedy(device, iou_thr):
    rng = np.random.default_rng(int(iou_thr * 10))
    boxes = random_dota_boxes(rng, 400, image=400, max_size=150)
    scores = rng.integers(0, 30, 400).astype(np.float32)  # many ties
    keep = nms_rotated(t32(boxes, device), t32(scores, device), iou_thr)
    assert keep.dtype == torch.int64 and keep.device.type == device
    assert keep.cpu().tolist() == greedy_nms(boxes, scores, iou_thr)


def test_nms_multi_block_path(monkeypatch):
    rng = np.random.default_rng(5)
    boxes = random_dota_boxes(rng, 700, image=500, max_size=120)
    scores = rng.random(700).astype(np.float32)
    for prune, rounds_per_check, merged in ((True, 1, False), (False, 2, False), (False, 3, True)):
        tuning = nms_module._Tuning(8, 64, prune, rounds_per_check, merged_search=merged)
        monkeypatch.setitem(nms_module._TUNING, "cpu", tuning)
        assert nms_rotated(t32(boxes), t32(scores), 0.1).tolist() == greedy_nms(boxes, scores, 0.1)


@pytest.mark.parametrize(
    "tuning",
    [
        nms_module._TUNING_DEFAULT,
        nms_module._Tuning(128, 256, prune_edges=False, rounds_per_check=2, merged_search=True),
        nms_module._Tuning(128, 256, prune_edges=False, rounds_per_check=2, merged_search=False),
    ],
    ids=["gpu", "gpu-small-blocks", "gpu-small-blocks-separate-searches"],
)
def test_nms_gpu_tuning_on_cpu(monkeypatch, tuning):
    """The GPU's way (big blocks, no edge pruning, a check every other round, one overlap search
    per block) on the CPU: same result, also for class-wise NMS and for a long suppression chain
    (many rounds)."""
    monkeypatch.setitem(nms_module._TUNING, "cpu", tuning)
    rng = np.random.default_rng(11)
    boxes = random_dota_boxes(rng, 900, image=500, max_size=120)
    scores = rng.random(900).astype(np.float32)
    labels = rng.integers(0, 3, 900)
    for iou_thr in (0.1, 0.5):
        assert nms_rotated(t32(boxes), t32(scores), iou_thr).tolist() == greedy_nms(boxes, scores, iou_thr)
    got = batched_nms_rotated(t32(boxes), t32(scores), torch.as_tensor(labels), 0.1)
    assert got.tolist() == greedy_nms(boxes, scores, 0.1, labels=labels)
    chain = t32([[i * 7.0, 0, 10, 10, 0] for i in range(301)])
    assert nms_rotated(chain, t32(np.linspace(1, 0.5, 301)), 0.1).tolist() == list(range(0, 301, 2))
    cluster = t32([[50, 50, 20, 10, 0.3]] * 600 + [[200, 50, 20, 10, 0.3]] * 5)  # identical boxes
    assert nms_rotated(cluster, t32(np.linspace(1, 0.5, 605)), 0.1).tolist() == [0, 600]


def test_nms_long_suppression_chain():
    # Each box overlaps only its neighbours, with descending scores: greedy keeps every other box,
    # which takes many rounds of the parallel resolution.
    n = 60
    boxes = t32([[i * 7.0, 0, 10, 10, 0] for i in range(n)])
    scores = t32(np.linspace(1, 0.5, n))
    assert nms_rotated(boxes, scores, 0.1).tolist() == list(range(0, n, 2))


def test_nms_threshold_is_strict_and_ties_are_stable():
    # Two 3x1 boxes shifted by 1: intersection 2, union 4, IoU exactly 0.5.
    boxes = t32([[0, 0, 3, 1, 0], [1, 0, 3, 1, 0]])
    assert nms_rotated(boxes, t32([0.9, 0.8]), 0.5).tolist() == [0, 1]  # IoU == thr: kept
    assert nms_rotated(boxes, t32([0.9, 0.8]), 0.49).tolist() == [0]
    assert nms_rotated(boxes, t32([0.7, 0.7]), 0.49).tolist() == [0]  # tie: lower index first
    assert nms_rotated(boxes.flip(0), t32([0.7, 0.7]), 0.49).tolist() == [0]


def test_nms_dense_cluster_and_empty():
    boxes = t32([[10, 10, 20, 10, 0.3]] * 3000)
    scores = torch.rand(3000, generator=torch.Generator().manual_seed(0))
    assert nms_rotated(boxes, scores, 0.1).tolist() == [int(scores.argmax())]
    assert nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.1).shape == (0,)
    with pytest.raises(ValueError, match="scores"):
        nms_rotated(boxes, scores[:5], 0.1)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_nms_never_suppresses_across_classes(device):
    rng = np.random.default_rng(7)
    boxes = random_dota_boxes(rng, 300, image=300, max_size=120)
    scores = rng.random(300).astype(np.float32)
    labels = rng.integers(0, 4, 300)
    keep = batched_nms_rotated(
        t32(boxes, device), t32(scores, device), torch.as_tensor(labels, device=device), 0.1
    )
    assert keep.cpu().tolist() == greedy_nms(boxes, scores, 0.1, labels=labels)
    # Only equality of ids matters, not their values (ids could be image * classes + class).
    odd_ids = torch.as_tensor(labels * 1_000_003 - 7, device=device)
    assert (
        batched_nms_rotated(t32(boxes, device), t32(scores, device), odd_ids, 0.1).tolist() == keep.tolist()
    )
    # Identical boxes of different classes all survive.
    same = t32([[5, 5, 4, 4, 0]] * 3, device)
    keep = batched_nms_rotated(
        same, t32([0.5, 0.6, 0.7], device), torch.tensor([0, 1, 2], device=device), 0.1
    )
    assert keep.cpu().tolist() == [2, 1, 0]


def test_multiclass_nms_semantics():
    boxes = t32([[10, 10, 8, 4, 0], [10.5, 10, 8, 4, 0], [40, 40, 8, 4, 0.5]])
    scores = t32([[0.9, 0.05], [0.8, 0.6], [0.05, 0.3]])  # 0.05 == score_thr is filtered out
    dets, labels, inds = multiclass_nms_rotated(boxes, scores, score_thr=0.05, iou_thr=0.1, max_per_img=100)
    assert labels.tolist() == [0, 1, 1]
    assert inds.tolist() == [0, 3, 5]  # flattened n * C + c
    torch.testing.assert_close(dets[:, 5], t32([0.9, 0.6, 0.3]))
    torch.testing.assert_close(dets[:, :5], boxes[[0, 1, 2]])
    dets, labels, _ = multiclass_nms_rotated(boxes, scores, 0.05, 0.1, max_per_img=2)
    assert dets.shape == (2, 6) and labels.tolist() == [0, 1]
    # One box per class, and score factors applied after the threshold.
    per_class = torch.cat([boxes, boxes + t32([100, 0, 0, 0, 0])], dim=1)
    dets, labels, _ = multiclass_nms_rotated(per_class, scores, 0.05, 0.1, score_factors=t32([0.5, 0.5, 2.0]))
    assert labels.tolist() == [1, 0, 1]
    torch.testing.assert_close(dets[:, 5], t32([0.6, 0.45, 0.3]))
    assert dets[0, 0] == 140 and dets[2, 0] == 110.5  # the class-1 boxes of candidates 2 and 1
    empty, labels, inds = multiclass_nms_rotated(boxes, scores, 0.95, 0.1)
    assert empty.shape == (0, 6) and labels.shape == (0,) and inds.shape == (0,)


# ------------------------------------------------------------------------------- point in polygon


def _kernel_reference(point, poly) -> bool:
    """Scalar walk of mmcv's kernel rules (see rotdet.ops.points), in numpy float32."""
    f = np.float32
    px, py = f(point[0]), f(point[1])
    v = [(f(poly[2 * k]), f(poly[2 * k + 1])) for k in range(4)]
    count = 0
    for i in range(4):
        (sx, sy), (tx, ty) = v[i], v[i - 1]
        if py < min(sy, ty) or py > max(sy, ty):
            continue
        if (sx == px and sy == py) or (tx == px and ty == py):
            break
        if (sy < py) != (ty < py):
            with np.errstate(all="ignore"):
                x = f(sx + f(f(f(py - sy) * f(tx - sx)) / f(ty - sy)))
            if x == px:
                break
            if x > px:
                count += 1
    return count % 2 == 1


@pytest.mark.parametrize("device", DEVICES)
def test_points_in_polygons_matches_kernel_rules_on_boundaries(device):
    rng = np.random.default_rng(3)
    # Integer vertices and integer points: many points sit on edges and vertices.
    polys = rng.integers(0, 12, (40, 8)).astype(np.float32)
    points = rng.integers(-1, 13, (300, 2)).astype(np.float32)
    got = points_in_polygons(t32(points, device), t32(polys, device)).cpu().numpy()
    want = np.array([[_kernel_reference(p, q) for q in polys] for p in points])
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, want)
    aligned = points_in_polygons(t32(points[:40], device), t32(polys, device), aligned=True).cpu().numpy()
    np.testing.assert_array_equal(aligned, np.diagonal(want[:40]))


def test_points_in_polygons_interior_matches_shapely():
    rng = np.random.default_rng(4)
    from shapely_reference import obb_corners

    boxes = random_dota_boxes(rng, 50, image=200, max_size=80)
    polys = obb_corners(boxes).reshape(-1, 8).astype(np.float32)
    points = rng.uniform(0, 200, (2000, 2)).astype(np.float32)
    got = points_in_polygons(t32(points), t32(polys)).numpy()
    shapes = shapely.polygons(polys.reshape(-1, 4, 2).astype(np.float64))
    want = shapely.contains_xy(
        shapes[None, :], points[:, None, 0].astype(np.float64), points[:, None, 1].astype(np.float64)
    )
    far = (
        shapely.distance(
            shapely.boundary(shapes)[None, :], shapely.points(points.astype(np.float64))[:, None]
        )
        > 1e-3
    )
    np.testing.assert_array_equal(got[far], want[far])
    assert got.sum() > 100


def test_points_in_polygons_documented_example_and_boundary_rule():
    # The example in mmcv's documentation of the op.
    points = t32([[300, 300], [400, 400], [100, 100], [300, 250], [100, 0]])
    polygons = t32(
        [
            [200, 200, 400, 400, 500, 200, 400, 100],
            [400, 400, 500, 500, 600, 300, 500, 200],
            [300, 300, 600, 700, 700, 700, 700, 100],
        ]
    )
    expected = [[0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert points_in_polygons(points, polygons).int().tolist() == expected
    # A square's boundary: the walk stops on the left edge (v0-v3, walked first), on the right edge
    # and on every vertex before any crossing is counted, so those points are outside; a point on
    # the bottom edge meets no crossing (outside) while one on the top edge is crossed once by the
    # right edge before its own edge is reached (inside).
    square = t32([[0, 0, 10, 0, 10, 10, 0, 10]])
    points = t32([[5, 5], [0, 5], [10, 5], [5, 0], [5, 10], [0, 0], [10, 0], [10, 10], [0, 10]])
    got = points_in_polygons(points, square)[:, 0].tolist()
    assert got == [True, False, False, False, True, False, False, False, False]
    assert got == [_kernel_reference(p, square[0].numpy()) for p in points.numpy()]
    with pytest.raises(ValueError, match=r"\[P, 2\]"):
        points_in_polygons(torch.zeros(3), square)


# ------------------------------------------------------------------------------ Triton fast path


def test_triton_path_is_chosen_only_where_it_can_run(monkeypatch):
    pytest.importorskip("triton")
    from rotdet.ops import _triton_iou

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("ROTDET_DISABLE_TRITON", raising=False)
    assert not _triton_iou.available(torch.device("cpu"))
    assert _triton_iou.available(torch.device("cuda"))
    monkeypatch.setenv("ROTDET_DISABLE_TRITON", "1")
    assert not _triton_iou.available(torch.device("cuda"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("ROTDET_DISABLE_TRITON")
    assert _triton_iou.available(torch.device("cpu"))


def test_triton_kernel_passes_the_iou_and_nms_tests_under_the_interpreter():
    """The CUDA fast path, run by Triton's CPU interpreter, must pass the same IoU and NMS tests."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys
    from pathlib import Path

    # (the GPU tuning of NMS is tested without the interpreter: with it, its big blocks take minutes)
    skipped = ("chunked", "properties", "dense_cluster", "triton", "points", "gpu_tuning")
    selection = " and ".join(f"not {name}" for name in skipped)
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("ROTDET_DISABLE_TRITON", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", selection],
        cwd=Path(__file__).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
