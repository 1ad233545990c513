"""RotatedDetections: the one detections type, its JSON document and mmrotate's per-class lists."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from rotdet.evaluation import EvalInputError, eval_dota_task1
from rotdet.evaluation import read_detections_json as eval_read
from rotdet.structures import RotatedDetections, obb2poly, read_detections_json, write_detections_json
from rotdet.structures.detections import DetectionsFormatError, detections_from_json, detections_to_json

CLASSES = ("plane", "ship", "car")


def _example(seed: int = 0, k: int = 7, image_id: str = "P0001", dtype=np.float32) -> RotatedDetections:
    rng = np.random.default_rng(seed)
    boxes = np.c_[rng.uniform(20, 200, (k, 2)), rng.uniform(4, 40, (k, 2)), rng.uniform(-1.5, 1.5, k)]
    scores = np.sort(rng.random(k))[::-1]
    labels = rng.integers(0, len(CLASSES), k)
    return RotatedDetections(
        boxes.astype(dtype), scores.astype(dtype), labels, "le90", image_id, CLASSES, (256, 300)
    )


def test_json_round_trip_many_images_exact(tmp_path):
    dets = [_example(0, 7, "P0001"), _example(1, 0, "P0002"), _example(2, 3, "P0003")]
    path = write_detections_json(tmp_path / "d.json", dets)
    back = read_detections_json(path, dtype=np.float32)
    assert [d.image_id for d in back] == ["P0001", "P0002", "P0003"]
    for a, b in zip(dets, back, strict=True):
        for key in ("boxes", "scores", "labels", "polygons"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert (b.classes, b.angle_version, b.image_size) == (CLASSES, "le90", (256, 300))
        assert b.has_given_polygons  # written with the corners
    # the evaluation reads the same document (float64) through the same reader
    evald = eval_read(path)
    assert evald[0].boxes.dtype == np.float64
    np.testing.assert_array_equal(evald[0].boxes, dets[0].boxes.astype(np.float64))
    # without polygons the reader has none given and makes the boxes' corners
    bare = read_detections_json(write_detections_json(tmp_path / "b.json", dets, polygons=False))
    assert not bare[0].has_given_polygons
    np.testing.assert_allclose(bare[0].polygons, dets[0].polygons, atol=1e-4)


def test_single_image_write_json_read_json(tmp_path):
    found = _example(3)
    back = RotatedDetections.read_json(found.write_json(tmp_path / "one.json"))
    np.testing.assert_array_equal(back.boxes, found.boxes)
    assert back.boxes.dtype == np.float32 and back.image_id == "P0001"


def test_schema_errors_name_file_and_entry(tmp_path):
    doc = detections_to_json([_example(0)])
    doc["images"][0]["labels"][0] = 9
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(DetectionsFormatError, match=r"bad\.json: images\[0\] \(P0001\): label out of range"):
        read_detections_json(bad)
    with pytest.raises(EvalInputError, match="label out of range"):  # the evaluation's error type
        eval_read(bad)
    doc = detections_to_json([_example(0), _example(1)])
    doc["images"][1]["id"] = "P0001"
    with pytest.raises(DetectionsFormatError, match="appears twice"):
        detections_from_json(doc)
    with pytest.raises(ValueError, match="one document holds detections of one model"):
        detections_to_json([_example(0), _example(1).describe(angle_version="oc")])


def test_tensor_numpy_to_and_pickle():
    d = _example(4)
    t = d.to("cpu")
    assert t.is_tensor and isinstance(t.boxes, torch.Tensor) and t.labels.dtype == torch.int64
    torch.testing.assert_close(t.polygons, obb2poly(torch.from_numpy(d.boxes)))
    back = t.numpy()
    assert not back.is_tensor and back.classes == CLASSES
    np.testing.assert_array_equal(back.boxes, d.boxes)
    np.testing.assert_array_equal(back.polygons, d.polygons)
    # gathered across DDP ranks as Python objects
    again = pickle.loads(pickle.dumps(t))
    assert torch.equal(again.boxes, t.boxes) and again.image_id == "P0001"


def test_per_class_round_trip_and_order():
    d = _example(5, 12)
    per_class = d.per_class()
    assert len(per_class) == len(CLASSES) and sum(len(p) for p in per_class) == 12
    for c, rows in enumerate(per_class):
        np.testing.assert_array_equal(rows[:, :5], d.boxes[d.labels == c])
        assert (np.diff(rows[:, 5]) <= 0).all()  # each class by descending score, as mmrotate's
    back = RotatedDetections.from_per_class(per_class, image_id="x", classes=CLASSES)
    assert back.labels.tolist() == sorted(d.labels.tolist())  # class-major
    with pytest.raises(ValueError, match="2 class entries, expected 3"):
        RotatedDetections.from_per_class(per_class[:2], classes=CLASSES)


def test_select_cat_and_validation():
    a, b = _example(6, 4), _example(7, 3)
    both = RotatedDetections.cat([a, b])
    assert len(both) == 7 and both.image_id == a.image_id
    np.testing.assert_array_equal(both.boxes[4:], b.boxes)
    top = both.select(both.scores > 0.5)
    assert (top.scores > 0.5).all() and top.classes == CLASSES
    assert both.names == [CLASSES[i] for i in both.labels]
    with pytest.raises(ValueError, match="same length"):
        RotatedDetections(np.zeros((2, 5)), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        RotatedDetections(np.zeros((1, 5)), np.zeros(1), [3], classes=CLASSES)


def test_in_memory_detections_score_as_their_file(tmp_path):
    from rotdet.evaluation import GroundTruthImage

    d = _example(8, 20, dtype=np.float64)
    polys = obb2poly(torch.from_numpy(d.boxes)).numpy()
    gts = {"P0001": GroundTruthImage(polys[::2], [CLASSES[i] for i in d.labels[::2]], np.zeros(10, np.int64))}
    in_memory = eval_dota_task1([d], gts, CLASSES)
    from_file = eval_dota_task1(write_detections_json(tmp_path / "d.json", [d], polygons=False), gts, CLASSES)
    assert in_memory.map == from_file.map and in_memory.map > 0.3


def test_reading_detections_does_not_import_torch(tmp_path):
    path = write_detections_json(tmp_path / "d.json", [_example(9)])
    code = (
        "import sys; from rotdet.structures import read_detections_json; "
        f"d = read_detections_json({str(path)!r}); assert len(d[0]) == 7; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_image_meta_is_made_by_one_function():
    from rotdet.data import DOTADataset  # noqa: F401  (the dataset's samples use it)
    from rotdet.data.dataset import format_results
    from rotdet.models.detectors import default_metas
    from rotdet.structures import image_meta

    meta = image_meta(img_shape=(96, 128, 3))
    assert meta["ori_shape"] == meta["pad_shape"] == (96, 128, 3) and meta["flip"] is False
    np.testing.assert_array_equal(meta["scale_factor"], np.ones(4, np.float32))
    with pytest.raises(TypeError, match="unknown image meta key"):
        image_meta(img_shape=(1, 1, 3), imgshape=(1, 1))
    with pytest.raises(ValueError, match="needs img_shape"):
        image_meta(id="x")
    # the dataset's samples and the model's default metas are the same kind of dict
    results = {"img": np.zeros((8, 8, 3), np.float32), "img_shape": (8, 8, 3), "id": "P1", "gt_x": 1}
    sample_meta = format_results(results)["img_metas"]
    assert sample_meta == {
        **image_meta(img_shape=(8, 8, 3), id="P1"),
        "scale_factor": sample_meta["scale_factor"],
    }
    assert set(default_metas(torch.zeros(2, 3, 8, 8))[0]) == set(image_meta(img_shape=(8, 8, 3)))
