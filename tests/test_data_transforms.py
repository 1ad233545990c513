"""Transforms (resize, flips, normalize, pad), image loading and the Dataset / DataLoader batch."""

import cv2
import numpy as np
import pytest
import torch

from rotdet.data.dataset import DOTADataset, collate
from rotdet.data.dota import DotaAnnotation, write_dota_txt
from rotdet.data.toy import TOY_CLASSES, make_toy_dota
from rotdet.data.transforms import (
    IMG_NORM_CFG,
    ImageReadError,
    Normalize,
    Pad,
    RRandomFlip,
    RResize,
    apply_flip,
    load_image,
    train_pipeline_cfg,
)
from rotdet.structures import obb2poly_np, poly2obb_np


def _results(version="le90", h=200, w=300):
    rng = np.random.default_rng(1)
    obbs = np.stack(
        [
            rng.uniform(20, 280, 8),
            rng.uniform(20, 180, 8),
            rng.uniform(10, 60, 8),
            rng.uniform(4, 30, 8),
            rng.uniform(-1.5, 1.5, 8),
        ],
        axis=1,
    ).astype(np.float32)
    polys = obb2poly_np(obbs).astype(np.float32)
    obbs, keep = poly2obb_np(polys, version)
    return {
        "img": rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
        "gt_bboxes": obbs,
        "gt_polygons": polys[keep],
        "gt_labels": np.arange(len(obbs)),
    }


def _corner_sets(polys):
    return np.sort(np.round(np.asarray(polys, np.float64).reshape(-1, 4, 2), 2).view("f8,f8"), axis=1)


def test_rresize_keep_ratio_mmdet_rule():
    r = RResize((1024, 1024))(_results())
    assert r["img"].shape == (683, 1024, 3)  # 200 * 1024/300 + 0.5 -> 683
    sx, sy = 1024 / 300, 683 / 200
    np.testing.assert_array_equal(r["scale_factor"], np.array([sx, sy, sx, sy], np.float32))
    src = _results()
    np.testing.assert_allclose(r["gt_bboxes"][:, 0], src["gt_bboxes"][:, 0] * np.float32(sx), rtol=1e-6)
    np.testing.assert_allclose(
        r["gt_bboxes"][:, 2], src["gt_bboxes"][:, 2] * np.sqrt(np.float32(sx) * np.float32(sy)), rtol=1e-5
    )
    np.testing.assert_allclose(
        r["gt_polygons"][:, 1::2], src["gt_polygons"][:, 1::2] * np.float32(sy), rtol=1e-6
    )
    r2 = RResize((1333, 800))({"img": np.zeros((1000, 500, 3), np.uint8)})
    assert r2["img"].shape == (1333, 667, 3) and r2["img_shape"] == (1333, 667, 3)  # min(1333/1000, 800/500)


@pytest.mark.parametrize("version", ["oc", "le90", "le135"])
@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal"])
def test_flip_twice_is_identity_and_consistent(version, direction):
    src = _results(version)
    once = apply_flip({k: v.copy() for k, v in src.items()}, direction, version)
    # polygons and obbs stay the same rectangles after one flip
    assert np.allclose(
        _corner_sets(obb2poly_np(once["gt_bboxes"].astype(np.float64))).view("f8"),
        _corner_sets(once["gt_polygons"]).view("f8"),
        atol=0.02,
    )
    twice = apply_flip({k: v.copy() for k, v in once.items()}, direction, version)
    np.testing.assert_array_equal(twice["img"], src["img"])
    np.testing.assert_allclose(
        twice["gt_polygons"], src["gt_polygons"], rtol=0, atol=1e-4
    )  # W - (W - x - 1) - 1 in float32
    np.testing.assert_allclose(twice["gt_bboxes"], src["gt_bboxes"], rtol=0, atol=1e-5)
    if direction == "horizontal":
        np.testing.assert_array_equal(once["img"], src["img"][:, ::-1])
        np.testing.assert_allclose(once["gt_bboxes"][:, 0], 300 - src["gt_bboxes"][:, 0] - 1, rtol=1e-6)


def test_flip_probabilities_of_the_configs():
    gen = torch.Generator().manual_seed(0)
    obb = RRandomFlip([0.25, 0.25, 0.25], ["horizontal", "vertical", "diagonal"], "le90", generator=gen)
    draws = [obb.choose() for _ in range(4000)]
    for d in ("horizontal", "vertical", "diagonal", None):
        assert abs(draws.count(d) / 4000 - 0.25) < 0.03
    hbb = RRandomFlip(0.5, "horizontal", "oc", generator=gen)
    draws = [hbb.choose() for _ in range(2000)]
    assert abs(draws.count("horizontal") / 2000 - 0.5) < 0.04 and set(draws) == {"horizontal", None}
    cfg = train_pipeline_cfg("oc", hbb=True)
    assert cfg[2]["flip_ratio"] == 0.5 and train_pipeline_cfg("le90")[2]["flip_ratio"] == [0.25, 0.25, 0.25]


def test_normalize_and_pad():
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    r = Normalize(**IMG_NORM_CFG)({"img": img})
    want = (img[..., ::-1].astype(np.float32) - np.array(IMG_NORM_CFG["mean"])) / np.array(
        IMG_NORM_CFG["std"]
    )
    np.testing.assert_allclose(r["img"], want, atol=1e-5)
    p = Pad(32)(r)
    assert p["img"].shape == (64, 96, 3) and p["pad_shape"] == (64, 96, 3)
    assert (p["img"][50:] == 0).all() and (p["img"][:, 70:] == 0).all()


def test_load_image_formats_and_errors(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), rgb[..., 0])
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([rgb, np.full((20, 30), 7, np.uint8)]))
    cv2.imwrite(str(tmp_path / "a.tif"), rgb)
    cv2.imwrite(str(tmp_path / "a.jpg"), rgb)
    for name in ("gray.png", "rgba.png", "a.tif", "a.jpg"):
        assert load_image(tmp_path / name).shape == (20, 30, 3)
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "a.tif"), rgb)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    data = (tmp_path / "gray.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 20])
    for name in ("cut.jpg", "cut.png", "missing.png"):
        with pytest.raises(ImageReadError, match=name):
            load_image(tmp_path / name)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_dota(root, 3, "small", seed=1)
    write_dota_txt(root / "labelTxt" / "EMPTY.txt", DotaAnnotation.empty(), header=False)  # size 0
    cv2.imwrite(str(root / "images" / "EMPTY.png"), np.zeros((64, 64, 3), np.uint8))
    hard = DotaAnnotation(np.array([[1, 1, 30, 1, 30, 20, 1, 20]], np.float32), ["ship"], np.array([200]))
    write_dota_txt(root / "labelTxt" / "HARD.txt", hard)  # its only object is dropped (difficulty)
    cv2.imwrite(str(root / "images" / "HARD.png"), np.zeros((64, 64, 3), np.uint8))
    return root


def test_dataset_filtering(toy):
    train = DOTADataset(toy / "labelTxt", toy / "images", TOY_CLASSES, "le90")
    assert train.img_ids == ["T0000", "T0001", "T0002"]
    test = DOTADataset(toy / "labelTxt", toy / "images", TOY_CLASSES, "le90", test_mode=True)
    assert test.img_ids == ["HARD", "T0000", "T0001", "T0002"]  # size-0 files dropped in both modes
    images_only = DOTADataset(None, toy / "images", TOY_CLASSES, "le90", test_mode=True)
    assert len(images_only) == 5 and images_only[0]["gt_bboxes"].shape == (0, 5)


def test_dataloader_batch_shapes_and_metadata(toy):
    pipeline = train_pipeline_cfg("le90", img_scale=(256, 256))
    ds = DOTADataset(toy / "labelTxt", toy / "images", TOY_CLASSES, "le90", pipeline=pipeline)
    torch.manual_seed(0)
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
        batch = next(iter(loader))
        b, c, h, w = batch["img"].shape
        assert (b, c) == (2, 3) and h % 32 == 0 and w % 32 == 0 and max(h, w) == 256
        assert batch["img"].dtype == torch.float32
        for i in range(2):
            n = len(ds.get_ann_info(i)["labels"])
            assert batch["gt_bboxes"][i].shape == (n, 5) and batch["gt_labels"][i].shape == (n,)
            assert batch["gt_polygons"][i].shape == (n, 8) and batch["gt_labels"][i].dtype == torch.int64
            meta = batch["img_metas"][i]
            assert meta["id"] == ds.img_ids[i] and meta["filename"].endswith(".png")
            assert max(meta["img_shape"][:2]) == 256 and meta["batch_input_shape"] == (h, w)
            assert meta["flip_direction"] in ("horizontal", "vertical", "diagonal", None)
            assert meta["scale_factor"].shape == (4,)


def test_unreadable_image_error_or_skip(toy, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(toy, root)
    (root / "images" / "T0001.png").write_bytes(b"not an image")
    ds = DOTADataset(root / "labelTxt", root / "images", TOY_CLASSES, "le90", test_mode=True)
    with pytest.raises(ImageReadError, match="T0001.png"):
        ds[ds.img_ids.index("T0001")]
    ds = DOTADataset(
        root / "labelTxt", root / "images", TOY_CLASSES, "le90", test_mode=True, skip_unreadable=True
    )
    assert ds[ds.img_ids.index("T0001")]["img_metas"]["id"] == "T0002"
