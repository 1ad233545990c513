"""PolyRandomRotate: equal to mmrotate 0.3.4's on recorded cases (``data/rotate_oracle.py``), and its
rules checked directly (draws, 90-degree classes, auto_bound sizes, the border filter, dropped
samples and the dataset's redraw)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rotdet.data.dataset import RotatedDataset
from rotdet.data.rotate import PolyRandomRotate, rotate_results
from rotdet.data.transforms import TRANSFORMS, build_pipeline

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
from rotate_oracle import CALLS, CASES, make_case  # noqa: E402

RECORDED = DATA / "poly_random_rotate.npz"


@pytest.mark.skipif(
    not RECORDED.is_file(), reason="mmrotate's outputs not recorded (tests/data/rotate_oracle.py)"
)
@pytest.mark.parametrize("name", list(CASES))
def test_equal_to_mmrotate_on_recorded_cases(name):
    ref = np.load(RECORDED)
    version, kwargs, _, seed = CASES[name]
    img, boxes, labels = make_case(name)
    t = PolyRandomRotate(version=version, generator=np.random.RandomState(seed), **kwargs)
    for k in range(CALLS):
        key = f"{name}/{k}"
        results = {
            "img": img.copy(),
            "img_shape": img.shape,
            "gt_bboxes": boxes.copy(),
            "gt_labels": labels.copy(),
        }
        out = t(results)
        assert results["rotate_angle"] == ref[f"{key}/angle"] and results["rotate"] == ref[f"{key}/rotate"], (
            key
        )
        assert (out is None) == bool(ref[f"{key}/dropped"]), key
        if out is None:
            continue
        assert tuple(out["img_shape"]) == tuple(ref[f"{key}/img_shape"]), key
        np.testing.assert_array_equal(out["img"], ref[f"{key}/img"], err_msg=key)
        np.testing.assert_array_equal(out["gt_labels"], ref[f"{key}/gt_labels"], err_msg=key)
        np.testing.assert_allclose(out["gt_bboxes"], ref[f"{key}/gt_bboxes"], rtol=0, atol=1e-5, err_msg=key)


def _results(h=60, w=80):
    rng = np.random.RandomState(0)
    boxes = np.array(
        [[20, 30, 20, 10, 0.3], [60, 20, 30, 8, -0.7], [40, 40, 4, 3, 0.1], [79.5, 10, 20, 10, 0.0]],
        np.float32,
    )
    return {
        "img": rng.randint(0, 256, (h, w, 3)).astype(np.uint8),
        "img_shape": (h, w, 3),
        "gt_bboxes": boxes,
        "gt_labels": np.array([0, 1, 2, 0]),
        "gt_polygons": np.zeros((4, 8), np.float32),
    }


def test_not_rotating_still_filters_small_and_outside_boxes():
    r = _results()
    out = PolyRandomRotate(rotate_ratio=0.0)(r)
    assert out["rotate"] is False and out["rotate_angle"] == 0
    np.testing.assert_array_equal(out["img"], _results()["img"])  # identity warp
    # the 4 x 3 px box (sides <= 5) goes; the one centred at x = 79.5 stays (centre inside: < 80)
    assert out["gt_labels"].tolist() == [0, 1, 0]
    np.testing.assert_allclose(out["gt_bboxes"], _results()["gt_bboxes"][[0, 1, 3]], atol=1e-4)
    assert out["gt_polygons"].shape == (3, 8)


def test_auto_bound_sizes_and_quarter_turns():
    for angle, shape in (
        (90, (80, 60, 3)),
        (-180, (60, 80, 3)),
        (30, (round(60 * 0.866 + 80 * 0.5), round(60 * 0.5 + 80 * 0.866), 3)),
    ):
        out = rotate_results(_results(), angle, "le90", auto_bound=True)
        assert out["img_shape"] == shape and out["img"].shape == shape
    # boxes turn about the centre: +90 degrees (OpenCV's counter-clockwise) sends (x, y) to (y, W - x)
    out = rotate_results(_results(), 90, "le90", auto_bound=True)
    np.testing.assert_allclose(out["gt_bboxes"][0, :2], [30, 80 - 20], atol=1e-4)
    np.testing.assert_allclose(out["gt_bboxes"][0, 2:4], [20, 10], atol=1e-4)
    # without auto_bound the canvas keeps its size and boxes that leave it are dropped
    out = rotate_results(_results(), 90, "le90", auto_bound=False)
    assert out["img_shape"] == (60, 80, 3) and len(out["gt_bboxes"]) < 3


def test_draws_as_mmrotate_with_a_numpy_generator():
    for seed in range(20):
        t = PolyRandomRotate(rotate_ratio=0.6, angles_range=45, generator=np.random.RandomState(seed))
        ref = np.random.RandomState(seed)
        rotate = ref.rand() < 0.6
        expected = 45 * (2 * ref.rand() - 1) if rotate else 0
        assert t.draw([0]) == (rotate, expected)
    # the 90-degree list is shuffled in place: its order carries over to the next sample
    t = PolyRandomRotate(rotate_ratio=1.0, rect_classes=[3], generator=np.random.RandomState(1))
    ref, order = np.random.RandomState(1), [90, 180, -90, -180]
    for _ in range(6):
        ref.rand(), ref.rand()
        ref.shuffle(order)
        assert t.draw([0, 3]) == (True, order[0])


def test_rect_classes_and_value_mode_with_torch_draws():
    torch.manual_seed(0)
    rect = PolyRandomRotate(rotate_ratio=1.0, rect_classes=[2])
    angles = {rect.draw([0, 2])[1] for _ in range(60)}
    assert angles == {90, 180, -90, -180}
    plain = {round(rect.draw([0, 1])[1], 6) for _ in range(20)}
    assert len(plain) == 20 and all(-180 < a < 180 for a in plain)
    value = PolyRandomRotate(rotate_ratio=1.0, mode="value", angles_range=[15, -30])
    assert {value.draw([0])[1] for _ in range(40)} == {15, -30}
    with pytest.raises(ValueError, match="expects angles_range to be an int"):
        PolyRandomRotate(angles_range=[1, 2])
    with pytest.raises(ValueError, match="non-empty list of int"):
        PolyRandomRotate(mode="value", angles_range=[])
    assert TRANSFORMS["RRandomRotate"] is PolyRandomRotate


def test_dropped_sample_is_redrawn_by_the_dataset():
    ann_tiny = {"bboxes": np.array([[30, 30, 4, 4, 0]], np.float32), "labels": np.array([0]),
                "polygons": np.zeros((1, 8), np.float32), "difficulties": np.zeros(1, np.int64)}  # fmt: skip
    ann_ok = {"bboxes": np.array([[30, 30, 20, 10, 0]], np.float32), "labels": np.array([1]),
              "polygons": np.zeros((1, 8), np.float32), "difficulties": np.zeros(1, np.int64)}  # fmt: skip

    def load(results):
        results.update(img=np.zeros((64, 64, 3), np.uint8), img_shape=(64, 64, 3), ori_shape=(64, 64, 3))
        return results

    pipeline = build_pipeline([load, {"type": "PolyRandomRotate", "rotate_ratio": 0.0}])
    infos = [{"id": "tiny", "filename": "-", "ann": ann_tiny}, {"id": "ok", "filename": "-", "ann": ann_ok}]
    ds = RotatedDataset(infos, ["a", "b"], "le90", pipeline=pipeline)
    assert pipeline(dict(infos[0], gt_bboxes=ann_tiny["bboxes"], gt_labels=ann_tiny["labels"])) is None
    assert ds[0]["gt_labels"].tolist() == [1]  # sample 0 has no box left: another one is given
    test = RotatedDataset(infos, ["a", "b"], "le90", pipeline=pipeline, test_mode=True)
    with pytest.raises(ValueError, match="dropped test sample 0"):
        test[0]
    only_tiny = RotatedDataset(infos[:1], ["a", "b"], "le90", pipeline=pipeline)
    with pytest.raises(ValueError, match="no box survives"):
        only_tiny[0]


def test_angle_sign_matches_opencv():
    # a box along x turned by +30 degrees (counter-clockwise on screen) points up-right: theta -30 deg
    r = _results()
    r["gt_bboxes"] = np.array([[40, 30, 30, 6, 0]], np.float32)
    r["gt_labels"] = np.array([0])
    out = rotate_results(r, 30, "le90")
    assert out["gt_bboxes"][0, 4] == pytest.approx(-math.pi / 6, abs=1e-5)


def test_warp_is_opencv4s_fixed_point_bilinear():
    import cv2

    from rotdet.data.rotate import warp_affine_linear

    rng = np.random.RandomState(3)
    img = rng.randint(0, 256, (41, 57, 3)).astype(np.uint8)
    m = cv2.getRotationMatrix2D((27.5, 19.5), 33.3, 1)
    mine = warp_affine_linear(img, m, (57, 41))
    theirs = cv2.warpAffine(img, m, (57, 41), flags=cv2.INTER_LINEAR)
    diff = np.abs(mine.astype(int) - theirs.astype(int))
    if cv2.__version__.startswith("4."):
        assert diff.max() == 0
    else:  # OpenCV 5 interpolates at full precision
        assert diff.max() <= 6 and diff.mean() < 1.5
    gray = warp_affine_linear(img[..., 0], m, (57, 41))
    np.testing.assert_array_equal(gray, mine[..., 0])
    np.testing.assert_array_equal(warp_affine_linear(img, np.eye(2, 3), (57, 41)), img)
    as_float = warp_affine_linear(img.astype(np.float32), m, (57, 41))  # other dtypes: OpenCV's own
    assert as_float.dtype == np.float32 and as_float.shape == (41, 57, 3)
