"""Splitting: window arithmetic and coverage, polygon/window iof against shapely, the object rules,
patch files (names, padding, labels), resume, atomic writes and unreadable images."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from rotdet.cli import main as cli_main
from rotdet.data.dota import DotaAnnotation, read_dota_txt, write_dota_txt
from rotdet.data.split import (
    SPLIT_PRESETS,
    SplitConfig,
    clip_polygons,
    poly_window_iof,
    polygon_area,
    sliding_windows,
    split_dataset,
    window_objects,
)


def _shapely_iof(poly: np.ndarray, win) -> float:
    p = shapely.Polygon(np.asarray(poly, np.float64).reshape(4, 2))
    return shapely.box(*win).intersection(p).area / p.area


@pytest.mark.parametrize(
    "width,height,sizes,gaps",
    [
        (1111, 1182, [512], [100]),
        (712, 557, [1024], [200]),
        (5000, 300, [1024], [200]),
        (3000, 3100, [2048, 1024, 682], [1000, 500, 333]),
    ],
)
def test_windows_cover_every_pixel(width, height, sizes, gaps):
    win = sliding_windows(width, height, sizes, gaps)
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in win:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    for size in sizes:  # per size, the last window ends at the border (or the image is smaller)
        w = win[win[:, 2] - win[:, 0] == size]
        assert w[:, 2].max() == max(width, size) and w[:, 3].max() == max(height, size)


def test_window_arithmetic_matches_mmrotate_rules():
    win = sliding_windows(1111, 1182, [512], [100])
    # step 412; last start moved to L - size; x-major order
    assert sorted(set(win[:, 0].tolist())) == [0, 412, 599] and sorted(set(win[:, 1].tolist())) == [
        0,
        412,
        670,
    ]
    assert win[:3].tolist() == [[0, 0, 512, 512], [0, 412, 512, 924], [0, 670, 512, 1182]]
    # 1300 x 500, 1024 windows: starts 0 and 824 -> 276; both only 49% inside the image, under 0.6,
    # so the fallback keeps the windows within 0.01 of the best rate (both)
    assert sliding_windows(1300, 500, [1024], [200])[:, 0].tolist() == [0, 276]
    # 3000 x 700: 1024 windows are 68% inside (kept), 2048 windows 34% (dropped, as others pass)
    win = sliding_windows(3000, 700, [1024, 2048], [200, 1000])
    assert win[:, 0].tolist() == [0, 824, 1648, 1976] and ((win[:, 2] - win[:, 0]) == 1024).all()
    # the ms preset rescales windows, not the image
    assert SPLIT_PRESETS["ms"].window_sizes() == ([2048, 1024, 682], [1000, 500, 333])
    assert SPLIT_PRESETS["ss"].window_sizes() == ([1024], [200])


def test_tiny_image_keeps_best_windows():
    win = sliding_windows(100, 80, [1024], [200])
    assert win.tolist() == [[0, 0, 1024, 1024]]


quad_coord = st.floats(-50, 350, allow_nan=False, width=32)


@settings(max_examples=150, deadline=None)
@given(
    cx=st.floats(0, 300),
    cy=st.floats(0, 300),
    w=st.floats(1, 200),
    h=st.floats(1, 200),
    t=st.floats(0, 3.2),
    win=st.tuples(st.integers(0, 200), st.integers(0, 200), st.integers(1, 200), st.integers(1, 200)),
)
def test_iof_of_rotated_rectangles_matches_shapely(cx, cy, w, h, t, win):
    c, s = np.cos(t), np.sin(t)
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    poly = np.stack(
        [cx + corners[:, 0] * c - corners[:, 1] * s, cy + corners[:, 0] * s + corners[:, 1] * c], 1
    )
    poly = poly.reshape(8).astype(np.float32)
    window = (win[0], win[1], win[0] + win[2], win[1] + win[3])
    got = poly_window_iof(poly[None], np.array([window]))[0, 0]
    assert got == pytest.approx(_shapely_iof(poly, window), abs=1e-6)


@settings(max_examples=150, deadline=None)
@given(pts=st.lists(st.tuples(quad_coord, quad_coord), min_size=4, max_size=4))
def test_clip_of_simple_quadrilaterals_matches_shapely(pts):
    """Convex and non-convex (but simple) quadrilaterals: exact intersection areas."""
    poly = shapely.Polygon(pts)
    if not poly.is_valid or poly.area < 1e-3:
        return  # self-intersecting or degenerate: see the next test
    rect = (20.0, 40.0, 260.0, 200.0)
    clipped, count = clip_polygons(np.array(pts, np.float64)[None], np.array([rect]))
    assert polygon_area(clipped)[0] == pytest.approx(
        shapely.box(*rect).intersection(poly).area, rel=1e-9, abs=1e-6
    )


def test_polygon_area_is_shapely_bit_for_bit():
    polys = (np.random.default_rng(0).random((2000, 4, 2)) * 3000).astype(np.float32)
    np.testing.assert_array_equal(
        polygon_area(polys), shapely.area(shapely.polygons(polys.astype(np.float64)))
    )


def test_self_intersecting_polygon_uses_signed_ring_area():
    bowtie = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], np.float64)  # two lobes of opposite turn
    assert polygon_area(bowtie[None])[0] == 0.0
    clipped, _ = clip_polygons(bowtie[None], np.array([[0, 0, 5, 10]]))
    assert polygon_area(clipped)[0] == pytest.approx(25.0)  # only the left lobe remains


def test_object_rules_inside_cut_and_dropped():
    ann = DotaAnnotation(
        np.array(
            [
                [10, 10, 50, 10, 50, 30, 10, 30],  # inside window 0
                [90, 10, 130, 10, 130, 30, 90, 30],  # 75% in window 0: kept, cut -> difficulty 2
                [100, 40, 160, 40, 160, 60, 100, 60],  # 1/3 in window 0: not kept there
            ],
            np.float32,
        ),
        ["plane", "ship", "bridge"],
        np.array([1, 0, 0]),
    )
    windows = np.array([[0, 0, 120, 120], [60, 0, 180, 120]])
    iof = poly_window_iof(ann.polygons, windows)
    np.testing.assert_allclose(iof, [[1, 0], [0.75, 1], [1 / 3, 1]])
    w0, w1 = window_objects(ann, windows)
    assert w0.names == ["plane", "ship"] and w0.difficulties.tolist() == [1, 2]
    np.testing.assert_array_equal(w0.polygons[0], ann.polygons[0])
    assert w1.names == ["ship", "bridge"] and w1.difficulties.tolist() == [0, 0]
    np.testing.assert_array_equal(w1.polygons[0], ann.polygons[1] - np.array([60, 0] * 4, np.float32))


def _scene(tmp_path, w=300, h=260):
    img_dir, ann_dir = tmp_path / "images", tmp_path / "labelTxt"
    img_dir.mkdir()
    ann_dir.mkdir()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(img_dir / "P0001.png"), img)
    ann = DotaAnnotation(
        np.array([[10, 10, 40, 10, 40, 30, 10, 30], [150, 100, 190, 100, 190, 120, 150, 120]], np.float32),
        ["plane", "ship"],
        np.array([0, 1]),
    )
    write_dota_txt(ann_dir / "P0001.txt", ann)
    return img_dir, ann_dir, img, ann


def test_split_files_names_padding_and_labels(tmp_path):
    img_dir, ann_dir, img, ann = _scene(tmp_path)
    cfg = SplitConfig(sizes=[200], gaps=[50])
    out = tmp_path / "out"
    summary = split_dataset([img_dir], [ann_dir], out, cfg, progress=False)
    names = sorted(p.stem for p in (out / "images").glob("*.png"))
    assert names == ["P0001__200__0___0", "P0001__200__0___60", "P0001__200__100___0", "P0001__200__100___60"]
    assert summary == {
        "images": 1,
        "patches": 4,
        "skipped": 0,
        "failed": [],
        "skipped_label_lines": 0,
        "orphan_labels": [],
    }
    patch = cv2.imread(str(out / "images" / "P0001__200__100___60.png"))
    assert patch.shape == (200, 200, 3)
    np.testing.assert_array_equal(patch, img[60:260, 100:300])
    first = read_dota_txt(out / "annfiles" / "P0001__200__0___0.txt")
    assert first.names == ["plane", "ship"] and first.difficulties.tolist() == [0, 1]
    shifted = read_dota_txt(out / "annfiles" / "P0001__200__100___60.txt")
    np.testing.assert_array_equal(shifted.polygons[0], ann.polygons[1] - np.array([100, 60] * 4, np.float32))
    assert (out / "annfiles" / "P0001__200__0___0.txt").read_text().splitlines()[0] == (
        "10.0 10.0 40.0 10.0 40.0 30.0 10.0 30.0 plane 0"
    )
    # padding: a window larger than the image is padded bottom/right with the BGR value
    out2 = tmp_path / "out2"
    split_dataset([img_dir], None, out2, SplitConfig(sizes=[512], gaps=[100]), progress=False)
    patch = cv2.imread(str(out2 / "images" / "P0001__512__0___0.png"))
    assert patch.shape == (512, 512, 3) and patch[300:, :].reshape(-1, 3).tolist()[0] == [104, 116, 124]
    assert (out2 / "annfiles" / "P0001__512__0___0.txt").read_text() == ""  # test split: empty labels


def test_resume_atomic_and_unreadable(tmp_path):
    img_dir, ann_dir, _, _ = _scene(tmp_path)
    (img_dir / "P0002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    cfg = SplitConfig(sizes=[200], gaps=[50])
    s1 = split_dataset([img_dir], [ann_dir], out, cfg, progress=False)
    assert s1["images"] == 2 and len(s1["failed"]) == 1 and "P0002" in s1["failed"][0]
    s2 = split_dataset([img_dir], [ann_dir], out, cfg, progress=False)
    assert s2["skipped"] == 1 and s2["patches"] == 4
    assert not list(out.rglob("*.tmp"))  # only renamed, complete files
    marker = json.loads((out / ".done" / "P0001.json").read_text())
    assert len(marker["names"]) == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "P0001.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="two images named 'P0001'"):
        split_dataset([img_dir, tmp_path / "other"], None, out, cfg, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        split_dataset([img_dir], [ann_dir], out, SplitConfig(sizes=[100], gaps=[50]), progress=False)


def test_split_real_sample_and_cli(tmp_path, shared_data):
    out = tmp_path / "out"
    rc = cli_main(
        [
            "split",
            "--img-dirs", str(shared_data / "dota_samples" / "images"),
            "--ann-dirs", str(shared_data / "dota_samples" / "labelTxt"),
            "--out", str(out), "--sizes", "1024", "--gaps", "200", "--nproc", "2", "--quiet",
        ]
    )  # fmt: skip
    assert rc == 0
    names = sorted(p.stem for p in (out / "images").iterdir())
    assert names == [
        "P0706__1024__0___0", "P0706__1024__0___158", "P0706__1024__87___0", "P0706__1024__87___158",
        "P1888__1024__0___0",
    ]  # fmt: skip
    # P1888 (712x557) sits in one padded window with all its objects, none cut
    orig = read_dota_txt(shared_data / "dota_samples" / "labelTxt" / "P1888.txt")
    patch = read_dota_txt(out / "annfiles" / "P1888__1024__0___0.txt")
    np.testing.assert_array_equal(patch.polygons, orig.polygons)
    assert patch.difficulties.tolist() == orig.difficulties.tolist()


def test_cli_module_runs():
    r = subprocess.run(
        [sys.executable, "-m", "rotdet.cli", "split", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "--preset" in r.stdout
