"""Merging patch detections and DOTA Task1 submission files."""

import zipfile

import cv2
import numpy as np
import pytest
import torch

from rotdet.data.dota import read_dota_txt
from rotdet.data.merge import merge_patch_detections, parse_patch_name, write_task1_submission
from rotdet.data.split import SplitConfig, poly_window_iof, sliding_windows, split_dataset
from rotdet.data.toy import TOY_CLASSES, make_toy_dota
from rotdet.structures import RotatedDetections, poly2obb_np


def test_parse_patch_name():
    assert parse_patch_name("P0001__1024__824___0") == ("P0001", 824, 0)
    assert parse_patch_name("P0001__2048__0___1648.png") == ("P0001", 0, 1648)
    assert parse_patch_name("P0004__1__0___1024") == ("P0004", 0, 1024)
    assert parse_patch_name("P0706") == ("P0706", 0, 0)


def test_split_then_merge_ground_truth_recovers_objects(tmp_path):
    make_toy_dota(tmp_path / "toy", 2, "small", seed=3)
    cfg = SplitConfig(sizes=[192], gaps=[64])
    split_dataset(
        [tmp_path / "toy" / "images"],
        [tmp_path / "toy" / "labelTxt"],
        tmp_path / "split",
        cfg,
        progress=False,
    )
    results = []
    for ann_file in sorted((tmp_path / "split" / "annfiles").glob("*.txt")):
        ann = read_dota_txt(ann_file)
        per_class = []
        for c in TOY_CLASSES:
            polys = ann.polygons[[n == c for n in ann.names]]
            obbs, _ = poly2obb_np(polys.reshape(-1, 8), "le90")
            per_class.append(np.concatenate([obbs, np.ones((len(obbs), 1), np.float32)], axis=1))
        results.append(
            RotatedDetections.from_per_class(per_class, image_id=ann_file.stem, classes=TOY_CLASSES)
        )
    merged = {d.image_id: d.per_class() for d in merge_patch_detections(results)}
    assert sorted(merged) == ["T0000", "T0001"]
    for img_id, per_class in merged.items():
        orig = read_dota_txt(tmp_path / "toy" / "labelTxt" / f"{img_id}.txt")
        h, w = cv2.imread(str(tmp_path / "toy" / "images" / f"{img_id}.png")).shape[:2]
        # the objects some window keeps (iof >= 0.7); the others (mostly outside the image) are lost
        windows = sliding_windows(w, h, cfg.sizes, cfg.gaps)
        in_some_window = (poly_window_iof(orig.polygons, windows) >= 0.7).any(axis=1)
        assert in_some_window.mean() > 0.8
        for c, cls in enumerate(TOY_CLASSES):
            sel = np.array([n == cls for n in orig.names], bool) & in_some_window
            want, _ = poly2obb_np(orig.polygons[sel].reshape(-1, 8), "le90")
            got = per_class[c]
            assert got.shape == (len(want), 6)  # each object once: the duplicates from overlaps are merged
            if len(want):
                d = np.abs(got[:, None, :4] - want[None, :, :4]).max(-1)
                assert (d.min(1) < 1e-3).all() and len(np.unique(d.argmin(1))) == len(want)


def test_merge_is_classwise_nms_at_0_1():
    box = [100.0, 100.0, 60.0, 20.0, 0.3]
    results = {
        "A__256__0___0": [np.array([box + [0.9]]), np.zeros((0, 6))],
        # the same object seen from a patch at x = 50: shifted back it overlaps -> suppressed
        "A__256__50___0": [
            np.array([[50.0, 100.0, 60.0, 20.0, 0.3, 0.8]]),
            np.array([[50.0, 100.0, 60, 20, 0.3, 0.7]]),
        ],
        "B__256__0___0": [torch.tensor([box + [0.5]]), np.zeros((0, 6))],
    }
    found = merge_patch_detections(
        RotatedDetections.from_per_class(per_class, image_id=name) for name, per_class in results.items()
    )
    merged = {d.image_id: d.per_class(2) for d in found}
    assert list(merged) == ["A", "B"]
    assert found[0].boxes.dtype == np.float64 and list(found[0].scores) == [0.9, 0.7]  # by descending score
    assert merged["A"][0].shape == (1, 6) and merged["A"][0][0, 5] == pytest.approx(0.9)
    np.testing.assert_allclose(merged["A"][1], [[100.0, 100.0, 60, 20, 0.3, 0.7]])  # other class kept
    assert merged["B"][0].shape == (1, 6)


def test_task1_submission_and_zip(tmp_path):
    merged = [
        RotatedDetections.from_per_class(per_class, image_id=name)
        for name, per_class in {
            "P0001": [np.array([[50.0, 40.0, 20.0, 10.0, 0.0, 0.75]]), np.zeros((0, 6))],
            "P0002": [np.zeros((0, 6)), np.array([[10.0, 10.0, 4.0, 4.0, 0.0, np.float32(0.3)]])],
        }.items()
    ]
    files, zip_path = write_task1_submission(tmp_path / "sub", merged, ["plane", "ship"], "le90")
    assert [f.name for f in files] == ["Task1_plane.txt", "Task1_ship.txt"]
    assert files[0].read_text() == "P0001 0.75 40.00 35.00 60.00 35.00 60.00 45.00 40.00 45.00\n"
    assert files[1].read_text().startswith(f"P0002 {float(np.float32(0.3))!r} 8.00 8.00 12.00 8.00")
    assert zip_path.name == "sub.zip"
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == ["Task1_plane.txt", "Task1_ship.txt"]
        assert zf.read("Task1_plane.txt").decode() == files[0].read_text()
