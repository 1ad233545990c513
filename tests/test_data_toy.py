"""ToyDOTA: deterministic bytes per seed, both flavours, classes and geometry as promised."""

import hashlib

import cv2
import numpy as np

from rotdet.cli import main as cli_main
from rotdet.data.dota import read_dota_txt
from rotdet.data.toy import TOY_CLASSES, ensure_toy_dota, make_toy_dota, make_toy_image


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_byte_identical_per_seed(tmp_path):
    make_toy_dota(tmp_path / "a", 3, "small", seed=7)
    assert cli_main(["make-toy", "--out", str(tmp_path / "b"), "-n", "3", "--seed", "7"]) == 0
    make_toy_dota(tmp_path / "c", 3, "small", seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_small_scenes(tmp_path):
    ids = make_toy_dota(tmp_path, 6, "small", seed=0)
    names, diffs = [], []
    for i in ids:
        img = cv2.imread(str(tmp_path / "images" / f"{i}.png"))
        assert 256 <= img.shape[0] <= 512 and 256 <= img.shape[1] <= 512
        ann = read_dota_txt(tmp_path / "labelTxt" / f"{i}.txt", classes=TOY_CLASSES)
        assert len(ann) > 0
        names += ann.names
        diffs += ann.difficulties.tolist()
    assert set(names) == set(TOY_CLASSES) and len(TOY_CLASSES) >= 6
    assert names.count("small-vehicle") > 30  # dense parking lots


def test_large_scene_geometry():
    img, ann = make_toy_image(0, "large")
    assert min(img.shape[:2]) >= 3000
    p = ann.polygons.reshape(-1, 4, 2).astype(np.float64)
    e1 = np.linalg.norm(p[:, 1] - p[:, 0], axis=1)
    e2 = np.linalg.norm(p[:, 2] - p[:, 1], axis=1)
    long, short = np.maximum(e1, e2), np.minimum(e1, e2)
    assert long.min() < 12 and long.max() > 250  # scales from ~8 to ~400 px
    assert (long / short).max() > 6  # elongated objects
    assert (ann.difficulties == 1).any()
    h, w = img.shape[:2]
    outside = (p[..., 0] < 0) | (p[..., 0] > w) | (p[..., 1] < 0) | (p[..., 1] > h)
    assert outside.any()  # some objects cross the border


def test_browse_draws_samples(tmp_path):
    make_toy_dota(tmp_path / "toy", 2, "small", seed=2)
    out = tmp_path / "drawn"
    toy = tmp_path / "toy"
    rc = cli_main(
        ["browse", "--ann-dir", str(toy / "labelTxt"), "--img-dir", str(toy / "images"),
         "--out", str(out), "-n", "1", "--classes", "toy", "--version", "le135"]
    )  # fmt: skip
    assert rc == 0 and [p.name for p in out.iterdir()] == ["T0000.png"]
    drawn = cv2.imread(str(out / "T0000.png"))
    src = cv2.imread(str(tmp_path / "toy" / "images" / "T0000.png"))
    assert drawn.shape == src.shape and (drawn != src).any()


def test_ensure_toy_dota_generates_once(tmp_path):
    ids = ensure_toy_dota(tmp_path, 2, "small", seed=4)
    stamp = (tmp_path / "images" / "T0000.png").stat().st_mtime_ns
    assert ensure_toy_dota(tmp_path, 2, "small", seed=4) == ids == ["T0000", "T0001"]
    assert (tmp_path / "images" / "T0000.png").stat().st_mtime_ns == stamp  # not regenerated
    assert ensure_toy_dota(tmp_path, 3, "small", seed=4) == ["T0000", "T0001", "T0002"]
