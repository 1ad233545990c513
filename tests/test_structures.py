"""Tests of rotdet.structures: conversions between rotated boxes / polygons / hbbs and flips / rescales.

Expected values are hand-computed or come from small independent references written here from
mmrotate 0.3.4's documented semantics; round trips check the geometry (same rectangle).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rotdet.structures import (
    ANGLE_VERSIONS,
    best_begin_point,
    conversions,
    convert_version,
    flip_obb,
    flip_poly,
    hbb2obb,
    obb2hbb,
    obb2poly,
    obb2poly_np,
    obb2xyxy,
    poly2obb,
    poly2obb_np,
    regularize_obb,
    rescale_obb,
)

PI = math.pi
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABEL_FILES = sorted((DATA_DIR / "dota_samples" / "labelTxt").glob("*.txt"))


# ----------------------------------------------------------------------------------------- helpers
def rect_corners(cx, cy, w, h, theta) -> np.ndarray:
    """Independent reference: the 4 corners of a rectangle, clockwise on screen, w along theta."""
    cx, cy, w, h, theta = (np.asarray(a, dtype=np.float64) for a in (cx, cy, w, h, theta))
    u = np.stack([np.cos(theta), np.sin(theta)], -1)
    v = np.stack([-np.sin(theta), np.cos(theta)], -1)
    c = np.stack([cx, cy], -1)
    signs = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    pts = [c + (sw * w / 2)[..., None] * u + (sh * h / 2)[..., None] * v for sw, sh in signs]
    return np.stack(pts, -2).reshape(*c.shape[:-1], 8)


def random_obbs(rng: np.random.Generator, n: int, min_side: float = 3.0) -> np.ndarray:
    return np.stack(
        [
            rng.uniform(0, 1000, n),
            rng.uniform(0, 1000, n),
            rng.uniform(min_side, 300, n),
            rng.uniform(min_side, 300, n),
            rng.uniform(-2 * PI, 2 * PI, n),
        ],
        axis=1,
    )


def cyclic_error(a, b, allow_reverse: bool = False) -> np.ndarray:
    """Per row, the max coordinate error between polygons a and b over cyclic vertex re-orderings."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4, 2)
    candidates = [np.roll(b, k, axis=1) for k in range(4)]
    if allow_reverse:
        candidates += [np.roll(b[:, ::-1], k, axis=1) for k in range(4)]
    return np.min([np.abs(a - c).max(axis=(1, 2)) for c in candidates], axis=0)


def in_range(theta, version: str, oc_low_closed: bool = False) -> np.ndarray:
    theta = np.asarray(theta, dtype=np.float64)
    if version == "oc":
        return ((theta >= 0) if oc_low_closed else (theta > 0)) & (theta <= PI / 2 + 1e-6)
    low = -PI / 2 if version == "le90" else -PI / 4
    return (theta >= low - 1e-6) & (theta < low + PI)


def ref_poly2obb(p, version: str) -> list[float]:
    """Scalar reference of the torch poly2obb semantics (mmrotate poly2obb_oc / le90 / le135)."""
    x1, y1, x2, y2, x3, y3, x4, y4 = (float(c) for c in p)
    e1, e2 = math.hypot(x1 - x2, y1 - y2), math.hypot(x2 - x3, y2 - y3)
    if version == "oc":
        t = math.atan2(-(x2 - x1), y2 - y1)
        w, h = (e2, e1) if math.floor(t / (PI / 2)) % 2 == 0 else (e1, e2)
        return [(x1 + x2 + x3 + x4) / 4, (y1 + y2 + y3 + y4) / 4, w, h, t % (PI / 2)]
    t = math.atan2(y2 - y1, x2 - x1) if e1 > e2 else math.atan2(y4 - y1, x4 - x1)
    low = -PI / 2 if version == "le90" else -PI / 4
    return [(x1 + x3) / 2, (y1 + y3) / 2, max(e1, e2), min(e1, e2), (t - low) % PI + low]


def ref_best_begin_point(poly) -> list[float]:
    """Straightforward Python reference of mmrotate's get_best_begin_point_single."""
    pts = [(float(poly[2 * i]), float(poly[2 * i + 1])) for i in range(4)]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    dst = [(min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys))]
    best, best_k = 1e8, 0
    for k in range(4):
        cost = 0.0
        for j in range(4):
            px, py = pts[(k + j) % 4]
            cost += math.sqrt((px - dst[j][0]) ** 2 + (py - dst[j][1]) ** 2)
        if cost < best:
            best, best_k = cost, k
    out = [c for j in range(4) for c in pts[(best_k + j) % 4]]
    return out + [float(c) for c in poly[8:]]


# --------------------------------------------------------------------------------------- obb2poly
def test_obb2poly_hand_values():
    obbs = torch.tensor([[10.0, 20.0, 8.0, 4.0, 0.0], [10.0, 20.0, 8.0, 4.0, PI / 2]], dtype=torch.float64)
    expected = [[6, 18, 14, 18, 14, 22, 6, 22], [12, 16, 12, 24, 8, 24, 8, 16]]
    torch.testing.assert_close(obb2poly(obbs), torch.tensor(expected, dtype=torch.float64))
    np.testing.assert_allclose(obb2poly_np(obbs.numpy()), expected, atol=1e-12)


def test_obb2poly_matches_reference_batched_and_dtypes():
    rng = np.random.default_rng(0)
    obbs = random_obbs(rng, 24).reshape(2, 3, 4, 5)
    expected = rect_corners(*np.moveaxis(obbs, -1, 0))
    out = obb2poly(torch.from_numpy(obbs))
    assert out.shape == (2, 3, 4, 8) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-9)
    out32 = obb2poly(torch.from_numpy(obbs).float())
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), expected, atol=1e-3)
    np_out = obb2poly_np(obbs.astype(np.float32))
    assert np_out.dtype == np.float32 and np_out.shape == (2, 3, 4, 8)


# ------------------------------------------------------------------------------- poly2obb (torch)
@pytest.mark.parametrize("version", ANGLE_VERSIONS)
def test_poly2obb_torch_roundtrip_and_invariants(version):
    rng = np.random.default_rng(1)
    obbs = random_obbs(rng, 300)
    polys = rect_corners(*obbs.T)
    out = poly2obb(torch.from_numpy(polys), version)
    assert out.shape == (300, 5) and out.dtype == torch.float64
    assert cyclic_error(obb2poly(out).numpy(), polys).max() < 1e-9
    # QUIRK: the torch oc path yields [0, pi/2), the np path (0, pi/2].
    assert in_range(out[:, 4], version, oc_low_closed=True).all()
    if version == "oc":
        assert (out[:, 4] < PI / 2).all()
    else:
        assert (out[:, 2] >= out[:, 3]).all()
    # Anticlockwise input describes the same rectangle.
    reversed_polys = polys.reshape(-1, 4, 2)[:, ::-1].reshape(-1, 8).copy()
    out_rev = poly2obb(torch.from_numpy(reversed_polys), version)
    assert cyclic_error(obb2poly(out_rev).numpy(), polys).max() < 1e-9


@pytest.mark.parametrize("version", ANGLE_VERSIONS)
def test_poly2obb_torch_matches_scalar_reference(version):
    rng = np.random.default_rng(2)
    quads = rng.uniform(0, 100, (200, 8))  # general quadrilaterals: semantics, not geometry
    axis_aligned = np.array(
        [[0, 0, 10, 0, 10, 5, 0, 5], [0, 0, 5, 0, 5, 10, 0, 10], [3, 3, 3, 9, 1, 9, 1, 3.0]]
    )
    polys = np.concatenate([quads, axis_aligned, rect_corners(*random_obbs(rng, 50).T)])
    out = poly2obb(torch.from_numpy(polys), version).numpy()
    expected = np.array([ref_poly2obb(p, version) for p in polys])
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)
    # Leading shape and dtype are kept.
    batched = poly2obb(torch.from_numpy(polys[:12]).float().reshape(3, 4, 8), version)
    assert batched.shape == (3, 4, 5) and batched.dtype == torch.float32


def test_poly2obb_torch_axis_aligned_hand_values():
    poly = torch.tensor([[0.0, 0.0, 10.0, 0.0, 10.0, 5.0, 0.0, 5.0]])
    torch.testing.assert_close(poly2obb(poly, "oc"), torch.tensor([[5.0, 2.5, 10.0, 5.0, 0.0]]))  # QUIRK: 0
    torch.testing.assert_close(poly2obb(poly, "le90"), torch.tensor([[5.0, 2.5, 10.0, 5.0, 0.0]]))
    torch.testing.assert_close(poly2obb(poly, "le135"), torch.tensor([[5.0, 2.5, 10.0, 5.0, 0.0]]))


# ---------------------------------------------------------------------------------- poly2obb (np)
@pytest.mark.parametrize("version", ANGLE_VERSIONS)
def test_poly2obb_np_roundtrip_and_invariants(version):
    rng = np.random.default_rng(3)
    polys = rect_corners(*random_obbs(rng, 300).T).astype(np.float32)
    obbs, keep = poly2obb_np(polys, version)
    assert keep.all() and obbs.shape == (300, 5) and obbs.dtype == np.float32
    assert cyclic_error(obb2poly_np(obbs.astype(np.float64)), polys).max() < 2e-3
    assert in_range(obbs[:, 4], version).all()
    if version == "oc":
        assert (obbs[:, 4] > 0).all()
    else:
        assert (obbs[:, 2] >= obbs[:, 3]).all()


def _square_30() -> np.ndarray:
    return rect_corners(50.0, 50.0, 10.0, 10.0, PI / 6).reshape(1, 8).astype(np.float32)


@pytest.mark.parametrize(
    ("poly", "version", "expected"),
    [
        # 10 wide, 5 tall, axis-aligned.
        ([0, 0, 10, 0, 10, 5, 0, 5], "oc", [5, 2.5, 5, 10, PI / 2]),
        ([0, 0, 10, 0, 10, 5, 0, 5], "le90", [5, 2.5, 10, 5, 0]),
        ([0, 0, 10, 0, 10, 5, 0, 5], "le135", [5, 2.5, 10, 5, 0]),
        # 5 wide, 10 tall.
        ([0, 0, 5, 0, 5, 10, 0, 10], "oc", [2.5, 5, 10, 5, PI / 2]),
        ([0, 0, 5, 0, 5, 10, 0, 10], "le90", [2.5, 5, 10, 5, -PI / 2]),
        ([0, 0, 5, 0, 5, 10, 0, 10], "le135", [2.5, 5, 10, 5, PI / 2]),
        # Exact square (side 10, edge p1p2 at atan2(3, 4)): le135 ties the edges and uses p1->p4.
        ([50, 50, 58, 56, 52, 64, 44, 58], "le135", [51, 57, 10, 10, math.atan2(4, -3)]),
    ],
)
def test_poly2obb_np_hand_values(poly, version, expected):
    obbs, keep = poly2obb_np(np.array([poly], dtype=np.float32), version)
    assert keep.tolist() == [True]
    np.testing.assert_allclose(obbs[0], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("w", "h", "version", "expected"),
    [
        # Square at 30 degrees: OpenCV >= 4.13 / 5.x returns angle -60; the canonical (OpenCV 4.5.1
        # .. 4.12) form is 30, and le90 must give pi/6 (mmrotate on those OpenCVs), not -pi/3.
        (10, 10, "le90", [50, 50, 10, 10, PI / 6]),
        (10, 10, "oc", [50, 50, 10, 10, PI / 6]),
        (20, 10, "le90", [50, 50, 20, 10, PI / 6]),
        (20, 10, "oc", [50, 50, 20, 10, PI / 6]),
        (10, 20, "le90", [50, 50, 20, 10, -PI / 3]),
        (10, 20, "oc", [50, 50, 10, 20, PI / 6]),
    ],
)
def test_poly2obb_np_rotated_hand_values(w, h, version, expected):
    poly = rect_corners(50.0, 50.0, w, h, PI / 6).reshape(1, 8).astype(np.float32)
    obbs, keep = poly2obb_np(poly, version)
    assert keep.tolist() == [True]
    np.testing.assert_allclose(obbs[0], expected, atol=1e-4)


def _as_opencv_451(real_min_area_rect):
    """Wrap cv2.minAreaRect so that it answers like OpenCV 4.5.1 .. 4.12: angle in (0, 90]."""

    def fake(points):
        (cx, cy), (w, h), a = real_min_area_rect(points)
        if a <= 0:  # [-90, 0) -> [0, 90): the other edge, so swap
            a, w, h = a + 90, h, w
        if a == 0:  # 0 is excluded: the edge at 0 is the other one at 90
            a, w, h = 90.0, h, w
        return (cx, cy), (w, h), a

    return fake


@pytest.mark.parametrize("version", ["oc", "le90"])
def test_poly2obb_np_independent_of_opencv_angle_range(version, monkeypatch):
    rng = np.random.default_rng(4)
    obbs = random_obbs(rng, 100)
    obbs[:20, 3] = obbs[:20, 2]  # squares: where the raw le90 rule would depend on OpenCV
    obbs[20:30, 4] = rng.integers(-4, 4, 10) * PI / 2  # axis-aligned
    polys = np.concatenate([rect_corners(*obbs.T), _square_30()]).astype(np.float32)
    native = poly2obb_np(polys, version)
    monkeypatch.setattr(conversions.cv2, "minAreaRect", _as_opencv_451(cv2.minAreaRect))
    emulated = poly2obb_np(polys, version)
    np.testing.assert_array_equal(native[1], emulated[1])
    np.testing.assert_allclose(native[0], emulated[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("version", ANGLE_VERSIONS)
def test_poly2obb_np_drops_degenerate(version):
    polys = np.array(
        [
            [0, 0, 10, 0, 10, 5, 0, 5],  # fine
            [0, 0, 10, 0, 10, 1.5, 0, 1.5],  # too thin
            [0, 0, 5, 5, 10, 10, 15, 15],  # collinear: QUIRK, le135 only checks edge lengths and keeps it
            [3, 3, 3, 3, 3, 3, 3, 3],  # a point
            [0, 0, np.nan, 0, 10, 5, 0, 5],  # not finite
            [100, 100, 110, 110, 100, 120, 90, 110],  # fine (diamond)
        ],
        dtype=np.float32,
    )
    obbs, keep = poly2obb_np(polys, version)
    assert keep.tolist() == [True, False, version == "le135", False, False, True]
    assert obbs.shape == (int(keep.sum()), 5)
    for row, i in zip(obbs, np.flatnonzero(keep), strict=True):
        single, _ = poly2obb_np(polys[i : i + 1], version)
        np.testing.assert_array_equal(row, single[0])
    empty, empty_keep = poly2obb_np(np.zeros((0, 8)), version)
    assert empty.shape == (0, 5) and empty.dtype == np.float32 and empty_keep.shape == (0,)


def _read_dota_polys(path: Path) -> np.ndarray:
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) < 9:  # "imagesource:..." / "gsd:..." header lines
            continue
        rows.append([float(f) for f in fields[:8]])
    return np.array(rows, dtype=np.float32).reshape(-1, 8)


@pytest.mark.skipif(not LABEL_FILES, reason=f"no DOTA sample labels under {DATA_DIR}")
@pytest.mark.parametrize("version", ANGLE_VERSIONS)
def test_poly2obb_np_real_dota_labels(version):
    total = 0
    for path in LABEL_FILES:
        polys = _read_dota_polys(path)
        obbs, keep = poly2obb_np(polys, version)
        assert obbs.shape == (int(keep.sum()), 5)
        assert np.isfinite(obbs).all() and in_range(obbs[:, 4], version).all()
        kept = polys[keep]
        total += len(kept)
        if version == "le135":  # edges, not minAreaRect
            p = kept.reshape(-1, 4, 2).astype(np.float64)
            e1 = np.linalg.norm(p[:, 0] - p[:, 1], axis=1)
            e2 = np.linalg.norm(p[:, 1] - p[:, 2], axis=1)
            assert (np.minimum(e1, e2)[keep[keep]] >= 2 - 1e-4).all()
            np.testing.assert_allclose(obbs[:, :2], (p[:, 0] + p[:, 2]) / 2, atol=1e-3)
            np.testing.assert_allclose(obbs[:, 2], np.maximum(e1, e2), rtol=1e-5)
            np.testing.assert_allclose(obbs[:, 3], np.minimum(e1, e2), rtol=1e-5)
            continue
        rects = [cv2.minAreaRect(p.reshape(4, 2)) for p in polys]
        expected_keep = [min(size) >= 2 for _, size, _ in rects]
        assert keep.tolist() == expected_keep
        boxes = np.array([cv2.boxPoints(r).reshape(8) for r, k in zip(rects, keep, strict=True) if k])
        errors = cyclic_error(obb2poly_np(obbs.astype(np.float64)), boxes, allow_reverse=True)
        assert (errors < 1e-2).all(), errors.max()
    assert total > 0


# --------------------------------------------------------------------------------- obb2xyxy / hbb
@pytest.mark.parametrize("version", ANGLE_VERSIONS)
def test_obb2xyxy_and_obb2hbb_circumscribe(version):
    rng = np.random.default_rng(5)
    raw = random_obbs(rng, 200)
    raw[:10, 4] = [0, PI / 2, -PI / 2, -PI / 4, 3 * PI / 4, PI, PI / 4, -PI / 4, 3 * PI / 4, 0]
    raw[:5, 3] = raw[:5, 2]  # squares
    obbs = regularize_obb(torch.from_numpy(raw), version)  # the oc formula is only valid in range
    corners = obb2poly(obbs).reshape(-1, 4, 2)
    xyxy = obb2xyxy(obbs, version)
    assert xyxy.shape == (200, 4)
    expected = torch.cat([corners.amin(1), corners.amax(1)], dim=1)
    torch.testing.assert_close(xyxy, expected, atol=1e-9, rtol=0)  # contains and touches the corners

    hbb = obb2hbb(obbs, version)
    hbb_corners = obb2poly(hbb).reshape(-1, 4, 2)
    torch.testing.assert_close(
        torch.cat([hbb_corners.amin(1), hbb_corners.amax(1)], 1), xyxy, atol=1e-9, rtol=0
    )
    allowed = {"oc": [PI / 2], "le90": [0.0, -PI / 2], "le135": [0.0, PI / 2]}[version]
    assert np.isin(hbb[:, 4].numpy(), allowed).all()
    if version != "oc":
        assert (hbb[:, 2] >= hbb[:, 3]).all()
        assert ((hbb[:, 4] == 0) == (xyxy[:, 2] - xyxy[:, 0] >= xyxy[:, 3] - xyxy[:, 1])).all()
    torch.testing.assert_close(hbb2obb(xyxy, version), hbb, atol=1e-9, rtol=0)
    # numpy in, numpy out
    np_hbb = obb2hbb(obbs.numpy(), version)
    assert isinstance(np_hbb, np.ndarray)
    np.testing.assert_allclose(np_hbb, hbb.numpy())


def test_obb2xyxy_oc_keeps_mmrotate_abs_free_formula():
    # QUIRK: an oc box outside (0, pi/2] gets a negative extent, exactly as mmrotate computes it.
    obb = torch.tensor([[0.0, 0.0, 10.0, 2.0, 3 * PI / 4]], dtype=torch.float64)
    ex = math.cos(3 * PI / 4) * 10 + math.sin(3 * PI / 4) * 2
    ey = math.sin(3 * PI / 4) * 10 + math.cos(3 * PI / 4) * 2
    torch.testing.assert_close(
        obb2xyxy(obb, "oc"), torch.tensor([[-ex / 2, -ey / 2, ex / 2, ey / 2]]).double()
    )
    torch.testing.assert_close(obb2hbb(obb, "oc"), torch.tensor([[0.0, 0.0, ey, ex, PI / 2]]).double())
    # le90 uses abs(): the true circumscribed box.
    assert (obb2xyxy(obb, "le90")[0, 2:] > 0).all()


@pytest.mark.parametrize(
    ("xyxy", "version", "expected"),
    [
        ([0, 0, 10, 4], "oc", [5, 2, 4, 10, PI / 2]),
        ([0, 0, 10, 4], "le90", [5, 2, 10, 4, 0]),
        ([0, 0, 10, 4], "le135", [5, 2, 10, 4, 0]),
        ([0, 0, 4, 10], "oc", [2, 5, 10, 4, PI / 2]),
        ([0, 0, 4, 10], "le90", [2, 5, 10, 4, -PI / 2]),
        ([0, 0, 4, 10], "le135", [2, 5, 10, 4, PI / 2]),
        ([0, 0, 6, 6], "le90", [3, 3, 6, 6, 0]),
    ],
)
def test_hbb2obb_hand_values(xyxy, version, expected):
    out = hbb2obb(torch.tensor([xyxy], dtype=torch.float64), version)
    torch.testing.assert_close(out, torch.tensor([expected], dtype=torch.float64))


# ------------------------------------------------------------------------------------ regularize
BOUNDARY_ANGLES = [0.0, PI / 2, -PI / 2, -PI / 4, 3 * PI / 4, PI, -PI, PI / 4, 2.5, -3.0, 7.0]


@pytest.mark.parametrize("version", ANGLE_VERSIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_regularize_boundaries_invariants_and_idempotence(version, dtype):
    rows = [[5.0, 7.0, w, h, a] for a in BOUNDARY_ANGLES for w, h in [(10, 4), (4, 10), (6, 6)]]
    obbs = torch.tensor(rows, dtype=dtype)
    out = regularize_obb(obbs, version)
    assert out.dtype == dtype
    t = out[:, 4].double().numpy()
    if version == "oc":
        assert ((t > 0) & (t <= float(torch.tensor(PI / 2, dtype=dtype)))).all()
    else:
        low = float(torch.tensor(-PI / 2 if version == "le90" else -PI / 4, dtype=dtype))
        high = float(torch.tensor(PI / 2 if version == "le90" else 3 * PI / 4, dtype=dtype))
        assert ((t >= low) & (t < high)).all(), t
        assert (out[:, 2] >= out[:, 3]).all()
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert cyclic_error(obb2poly(out.double()).numpy(), obb2poly(obbs.double()).numpy()).max() < tol
    torch.testing.assert_close(regularize_obb(out, version), out, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("obb", "version", "expected"),
    [
        ([10, 4, PI / 2], "le90", [10, 4, -PI / 2]),
        ([4, 10, 0], "le90", [10, 4, -PI / 2]),
        ([6, 6, PI / 2], "le90", [6, 6, -PI / 2]),
        ([10, 4, 3 * PI / 4], "le135", [10, 4, -PI / 4]),
        ([4, 10, 0], "le135", [10, 4, PI / 2]),
        ([4, 10, PI / 4], "le135", [10, 4, 3 * PI / 4 - PI]),
        ([10, 4, 0], "oc", [4, 10, PI / 2]),
        ([10, 4, PI / 2], "oc", [10, 4, PI / 2]),
        ([10, 4, -PI / 2], "oc", [10, 4, PI / 2]),
        ([10, 4, PI], "oc", [4, 10, PI / 2]),
        ([10, 4, -PI / 6], "oc", [4, 10, PI / 3]),
        ([10, 4, -1e-20], "oc", [4, 10, PI / 2]),
        ([10, 4, -PI / 2 - 1e-17], "le90", [10, 4, -PI / 2]),
    ],
)
def test_regularize_hand_values(obb, version, expected):
    out = regularize_obb(torch.tensor([[1.0, 2.0, *obb]], dtype=torch.float64), version)
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0, *expected]], dtype=torch.float64))


def test_convert_version_roundtrip_and_numpy():
    rng = np.random.default_rng(6)
    obbs = regularize_obb(random_obbs(rng, 100), "le90")
    assert isinstance(obbs, np.ndarray)
    oc = convert_version(obbs, "le90", "oc")
    le135 = convert_version(oc, "oc", "le135")
    back = convert_version(le135, "le135", "le90")
    polys = obb2poly_np(obbs)
    for other in (oc, le135, back):
        assert cyclic_error(obb2poly_np(other), polys).max() < 1e-9
    np.testing.assert_allclose(back, obbs, atol=1e-9)
    with pytest.raises(ValueError):
        convert_version(obbs, "le45", "oc")
    with pytest.raises(ValueError):
        regularize_obb(obbs, "xyz")


# ----------------------------------------------------------------------------------------- flips
@pytest.mark.parametrize(
    ("obb", "direction", "version", "expected"),
    [
        ([10, 20, 8, 4, 0.3], "horizontal", "oc", [189, 20, 4, 8, PI / 2 - 0.3]),
        ([10, 20, 8, 4, PI / 2], "horizontal", "oc", [189, 20, 8, 4, PI / 2]),
        ([10, 20, 8, 4, 0.3], "vertical", "oc", [10, 79, 4, 8, PI / 2 - 0.3]),
        ([10, 20, 8, 4, 0.3], "horizontal", "le90", [189, 20, 8, 4, -0.3]),
        ([10, 20, 8, 4, -PI / 2], "vertical", "le90", [10, 79, 8, 4, -PI / 2]),
        ([10, 20, 8, 4, -PI / 4], "horizontal", "le135", [189, 20, 8, 4, PI / 4]),
        ([10, 20, 8, 4, 0.3], "diagonal", "le135", [189, 79, 8, 4, 0.3]),
        ([10, 20, 8, 4, 0.3], "diagonal", "oc", [189, 79, 8, 4, 0.3]),
    ],
)
def test_flip_obb_hand_values(obb, direction, version, expected):
    out = flip_obb(np.array([obb], dtype=np.float64), (100, 200, 3), direction, version)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out[0], expected, atol=1e-12)


def test_flip_poly_hand_values_and_winding():
    poly = torch.tensor([[0.0, 0.0, 10.0, 0.0, 10.0, 5.0, 0.0, 5.0]])
    horizontal = flip_poly(poly, (100, 200), "horizontal")
    torch.testing.assert_close(horizontal, torch.tensor([[199.0, 0, 199, 5, 189, 5, 189, 0]]))
    diagonal = flip_poly(poly, (100, 200), "diagonal")
    torch.testing.assert_close(diagonal, torch.tensor([[199.0, 99, 189, 99, 189, 94, 199, 94]]))

    def signed_area(p):  # > 0: clockwise on screen (y down)
        x, y = p[..., 0::2], p[..., 1::2]
        return (x * y.roll(-1, -1) - x.roll(-1, -1) * y).sum(-1)

    for direction in ("horizontal", "vertical", "diagonal"):
        assert signed_area(flip_poly(poly, (100, 200), direction)) > 0


OBB_ROWS = st.lists(
    st.tuples(
        st.floats(0, 800),
        st.floats(0, 600),
        st.floats(1, 300),
        st.floats(1, 300),
        st.floats(-7, 7),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(
    rows=OBB_ROWS,
    version=st.sampled_from(ANGLE_VERSIONS),
    direction=st.sampled_from(("horizontal", "vertical", "diagonal")),
)
def test_flip_properties(rows, version, direction):
    arr = np.array([r[:5] for r in rows], dtype=np.float64)
    square = np.array([r[5] for r in rows])
    arr[square, 3] = arr[square, 2]
    shape = (600, 800)
    obbs = regularize_obb(torch.from_numpy(arr), version)
    flipped = flip_obb(obbs, shape, direction, version)
    # The flipped box is exactly the flipped corner set.
    expected_polys = flip_poly(obb2poly(obbs), shape, direction)
    assert cyclic_error(obb2poly(flipped).numpy(), expected_polys.numpy()).max() < 1e-6
    # In-range boxes stay in range.
    assert in_range(flipped[:, 4].numpy(), version).all()
    if version != "oc":
        assert (flipped[:, 2] >= flipped[:, 3]).all()
    # Flipping twice is the identity (same rectangle; parameters up to the canonical form).
    twice = flip_obb(flipped, shape, direction, version)
    assert cyclic_error(obb2poly(twice).numpy(), obb2poly(obbs).numpy()).max() < 1e-6
    torch.testing.assert_close(twice[:, :2], obbs[:, :2], atol=1e-9, rtol=0)
    polys = obb2poly(obbs)
    torch.testing.assert_close(flip_poly(flip_poly(polys, shape, direction), shape, direction), polys)
    # numpy and torch agree.
    np.testing.assert_array_equal(flip_obb(obbs.numpy(), shape, direction, version), flipped.numpy())


def test_rescale_obb():
    obbs = torch.tensor([[10.0, 20.0, 8.0, 4.0, 0.3]])
    torch.testing.assert_close(rescale_obb(obbs, (2.0, 0.5)), torch.tensor([[20.0, 10.0, 8.0, 4.0, 0.3]]))
    torch.testing.assert_close(
        rescale_obb(obbs, np.array([2, 2, 2, 2], dtype=np.float32)),
        torch.tensor([[20.0, 40.0, 16.0, 8.0, 0.3]]),
    )
    rng = np.random.default_rng(7)
    arr = random_obbs(rng, 50)
    out = rescale_obb(arr, 1.5)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(obb2poly_np(out), obb2poly_np(arr) * 1.5, atol=1e-9)
    np.testing.assert_array_equal(arr, random_obbs(np.random.default_rng(7), 50))  # input untouched


# ------------------------------------------------------------------------------ best begin point
def test_best_begin_point_matches_reference():
    rng = np.random.default_rng(8)
    random_quads = rng.uniform(0, 100, (150, 8))
    rects = rect_corners(*random_obbs(rng, 100).T)
    integer_quads = rng.integers(0, 4, (150, 8)).astype(np.float64)  # many exact ties
    base = np.array([0, 0, 10, 0, 10, 10, 0, 10.0]).reshape(4, 2)
    rotations = np.stack([np.roll(base, k, 0).reshape(8) for k in range(4)])
    polys = np.concatenate([random_quads, rects, integer_quads, rotations, rotations[:, ::-1]])
    expected = np.array([ref_best_begin_point(p) for p in polys])
    np.testing.assert_array_equal(best_begin_point(polys), expected)
    np.testing.assert_array_equal(best_begin_point(torch.from_numpy(polys)).numpy(), expected)
    f32 = polys.astype(np.float32)
    np.testing.assert_array_equal(best_begin_point(f32), np.array([ref_best_begin_point(p) for p in f32]))
    with_score = np.concatenate([polys, rng.uniform(0, 1, (len(polys), 1))], axis=1)
    np.testing.assert_array_equal(best_begin_point(with_score), [ref_best_begin_point(p) for p in with_score])
    for rot in rotations:
        assert best_begin_point(rot[None]).tolist() == [[0, 0, 10, 0, 10, 10, 0, 10]]


# ------------------------------------------------------------------------------- empty / invalid
@pytest.mark.parametrize("version", ANGLE_VERSIONS)
def test_empty_inputs(version):
    e5, e8, e4 = torch.zeros(0, 5), torch.zeros(0, 8), torch.zeros(0, 4)
    assert poly2obb(e8, version).shape == (0, 5)
    assert obb2poly(e5).shape == (0, 8)
    assert obb2poly_np(np.zeros((0, 5))).shape == (0, 8)
    assert obb2xyxy(e5, version).shape == (0, 4)
    assert obb2hbb(e5, version).shape == (0, 5)
    assert hbb2obb(e4, version).shape == (0, 5)
    assert regularize_obb(e5, version).shape == (0, 5)
    assert best_begin_point(e8).shape == (0, 8)
    assert flip_obb(e5, (10, 10), "horizontal", version).shape == (0, 5)
    assert flip_poly(np.zeros((0, 8)), (10, 10), "vertical").shape == (0, 8)
    assert rescale_obb(e5, (2, 2)).shape == (0, 5)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        poly2obb(torch.zeros(3, 5), "oc")
    with pytest.raises(ValueError):
        obb2poly(torch.zeros(3, 8))
    with pytest.raises(ValueError):
        poly2obb_np(np.zeros((2, 8)), "le45")
    with pytest.raises(ValueError):
        flip_obb(torch.zeros(1, 5), (10, 10), "sideways", "oc")
    with pytest.raises(TypeError):
        obb2xyxy([[0, 0, 1, 1, 0]], "le90")
