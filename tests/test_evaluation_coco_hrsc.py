"""The COCO-style protocol (against pycocotools' recorded numbers) and HRSC2016's (mmrotate's
``HRSCDataset.evaluate``), and ``rotdet eval`` with them on every ground-truth format."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from rotdet.cli import main
from rotdet.data.classes import TOY_CLASSES
from rotdet.data.formats import read_ground_truth
from rotdet.data.toy import make_toy
from rotdet.evaluation import eval_rbbox_map
from rotdet.evaluation.coco import eval_coco
from rotdet.evaluation.hrsc import HRSC_IOU_THRS, eval_hrsc
from rotdet.structures import RotatedDetections, write_detections_json

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
from coco_oracle import make_case  # noqa: E402


def test_coco_equals_pycocotools():
    ref = json.loads((DATA / "coco_pycocotools.json").read_text())
    dets, anns = make_case()
    ids = list(range(1, len(anns) + 1))
    coco = eval_coco(dets, anns, max_dets=100, image_ids=ids)  # pycocotools' summary
    r = ref["pycocotools"]
    assert coco.map == pytest.approx(r["mAP"], abs=1e-12)
    assert coco.ap50 == pytest.approx(r["AP50"], abs=1e-12) and coco.ap75 == pytest.approx(
        r["AP75"], abs=1e-12
    )
    assert [c.ap for c in coco.classes] == pytest.approx(r["per_class"], abs=1e-12)
    assert coco.classes[3].num_gts == 0 and coco.classes[3].ap == -1  # left out of the means
    dense = eval_coco(dets, anns, max_dets=1000, image_ids=ids)  # mmdet's maxDets[-1]
    m = ref["mmdet"]
    assert dense.ap50 == pytest.approx(m["AP50"], abs=1e-12) and dense.ap75 == pytest.approx(
        m["AP75"], abs=1e-12
    )
    assert [c.ap for c in dense.classes] == pytest.approx(m["per_class"], abs=1e-12)
    assert coco.map == pytest.approx(m["mAP"], abs=1e-12)  # mmdet's mAP stays at 100 detections
    assert dense.ap50 != coco.ap50  # image 3 has 150 detections of class 0


def _ann(boxes, labels, difficulties=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 5)
    out = {"bboxes": boxes, "labels": np.asarray(labels, np.int64)}
    if difficulties is not None:
        out["difficulties"] = np.asarray(difficulties, np.int64)
    return out


def _dets(rows):
    return np.asarray(rows, np.float32).reshape(-1, 6)


def test_coco_rules():
    gt = [[50, 50, 40, 20, 0.5], [150, 50, 40, 20, -0.3]]
    perfect = [[_dets([[*g, 0.9] for g in gt])]]
    assert eval_coco(perfect, [_ann(gt, [0, 0])]).map == pytest.approx(1.0)
    # a duplicate ranked above the second true box: precision 2/3 at recall 1
    dup = [[_dets([[*gt[0], 0.9], [*gt[0], 0.8], [*gt[1], 0.7]])]]
    res = eval_coco(dup, [_ann(gt, [0, 0])])
    assert res.ap50 == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    # no detection at all: AP 0; a 28 x 20 box turned 90 degrees about its centre: IoU 400 / 720,
    # a match at 0.5 and 0.55 only
    assert eval_coco([[_dets([])]], [_ann(gt, [0, 0])]).map == 0
    turned = [[_dets([[50, 50, 28, 20, 0.5 + math.pi / 2, 0.9]])]]
    one = eval_coco(turned, [_ann([[50, 50, 28, 20, 0.5]], [0])])
    assert one.aps["0"] == pytest.approx(0.2) and one.ap50 == pytest.approx(1.0) and one.ap75 == 0
    # ignore_difficult: the detection of the difficult box is neither a TP nor an FP
    ign = eval_coco(dup, [_ann(gt, [0, 0], [1, 0])], ignore_difficult=True)
    assert ign.classes[0].num_gts == 1 and ign.map == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 detection entries for 1"):
        eval_coco(perfect * 2, [_ann(gt, [0, 0])])


def test_hrsc_protocol_is_mmrotates_mean_over_ten_thresholds():
    dets, anns = make_case(1)
    res = eval_hrsc(dets, anns, ["a", "b", "c", "d"])
    per = [eval_rbbox_map(dets, anns, thr, True, ["a", "b", "c", "d"]).map for thr in HRSC_IOU_THRS]
    assert res.map == pytest.approx(sum(per) / 10, abs=0) and len(res.aps) == 10
    assert list(res.aps) == ["AP50", "AP55", "AP60", "AP65", "AP70", "AP75", "AP80", "AP85", "AP90", "AP95"]
    assert res.aps["AP70"] == round(per[4], 3) and res.ap50.map == per[0]
    area = eval_hrsc(dets, anns, use_07_metric=False)
    assert area.metric == "area" and area.map != res.map
    assert "AP50" in res.table() and res.to_dict()["mAP"] == res.map


@pytest.fixture(scope="module")
def toy_gt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gt")
    for fmt in ("dota", "yolo-obb", "hrsc", "dior"):
        make_toy(root / fmt, fmt, 3, seed=2, size=(96, 96))
    return root


def _perfect_json(path: Path, ids, anns) -> Path:
    dets = [
        RotatedDetections(a["bboxes"], np.full(len(a["labels"]), 0.9), a["labels"], "le90", i, TOY_CLASSES)
        for i, a in zip(ids, anns, strict=True)
    ]
    return write_detections_json(path, dets, polygons=False)


@pytest.mark.parametrize(
    "fmt, gt",
    [
        ("dota", "dota/labelTxt"),
        ("yolo-obb", "yolo-obb/data.yaml"),
        ("hrsc", "hrsc/FullDataSet/Annotations"),
        ("dior", "dior/Annotations/Oriented Bounding Boxes"),
    ],
)
def test_eval_cli_protocols_on_every_format(toy_gt, tmp_path, capsys, fmt, gt):
    ids, anns = read_ground_truth(toy_gt / gt, fmt, TOY_CLASSES)
    assert ids == ["T0000", "T0001", "T0002"]
    dets = _perfect_json(tmp_path / "dets.json", ids, anns)
    for protocol in ("coco", "hrsc", "mmrotate"):
        out_json = tmp_path / f"{protocol}.json"
        args = [
            "eval",
            str(dets),
            str(toy_gt / gt),
            "--gt-format",
            fmt,
            "--protocol",
            protocol,
            "--json",
            str(out_json),
        ]
        assert main(args) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "mAP: 1.0000" in out, out
        assert json.loads(out_json.read_text())["mAP"] == pytest.approx(1.0)
    if fmt != "dota":
        assert main(["eval", str(dets), str(toy_gt / gt), "--gt-format", fmt]) == 2
        assert "the dota protocol reads labelTxt" in capsys.readouterr().err


def test_eval_gt_list_restricts_the_images(toy_gt, tmp_path, capsys):
    gt = toy_gt / "hrsc" / "FullDataSet" / "Annotations"
    ids, anns = read_ground_truth(gt, "hrsc", TOY_CLASSES)
    dets = _perfect_json(tmp_path / "d.json", ids[:2], anns[:2])
    (tmp_path / "test.txt").write_text("T0000\nT0001\n")
    args = ["eval", str(dets), str(gt), "--gt-format", "hrsc", "--protocol", "hrsc"]
    assert main([*args, "--gt-list", str(tmp_path / "test.txt")]) == 0
    assert "mAP: 1.0000" in capsys.readouterr().out
    assert main(args) == 0  # every XML: T0002's objects are missed
    assert "mAP: 1.0000" not in capsys.readouterr().out
