"""Evaluation: polygon IoU, mmrotate's eval_rbbox_map and the official DOTA Task1 protocol, I/O, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch

from rotdet.cli import main as cli_main
from rotdet.data import DOTA_V1_CLASSES, write_task1_submission
from rotdet.evaluation import (
    ClassDetections,
    EvalInputError,
    GroundTruthImage,
    average_precision_mmdet,
    average_precision_voc,
    eval_dota_task1,
    eval_rbbox_map,
    polygon_iou,
    polygon_iou_aligned,
    read_detections_json,
    read_labeltxt_folder,
)
from rotdet.structures import RotatedDetections, write_detections_json

DATA = Path(__file__).resolve().parent / "data" / "eval"


# ------------------------------------------------------------------------------ polygon IoU
def _star_quads(rng, n, convex):
    """Simple quadrilaterals: 4 vertices sorted by angle around a centre (gaps < pi keep the
    centre inside, so the polygon is simple); equal radii give convex ones."""
    out = []
    while len(out) < n:
        ang = np.sort(rng.uniform(0, 2 * np.pi, 4))
        if np.diff(np.r_[ang, ang[0] + 2 * np.pi]).max() >= np.pi * 0.95:
            continue
        r = np.full(4, rng.uniform(5, 60)) if convex else rng.uniform(3, 60, 4)
        c = rng.uniform(0, 2000, 2)
        out.append((c + np.stack([r * np.cos(ang), r * np.sin(ang)], 1)).reshape(8))
    return np.array(out)


def _shapely_iou(a, b):
    pa, pb = shapely.polygons(a.reshape(-1, 4, 2)), shapely.polygons(b.reshape(-1, 4, 2))
    inter = shapely.area(shapely.intersection(pa, pb))
    return inter / (shapely.area(pa) + shapely.area(pb) - inter)


@pytest.mark.parametrize("convex", [True, False])
def test_polygon_iou_matches_shapely(convex):
    rng = np.random.default_rng(3 if convex else 4)
    a = _star_quads(rng, 3000, convex)
    b = _star_quads(rng, 3000, convex)
    # Move b next to a (overlapping most of the time) and reverse half of them (clockwise input).
    b = b - np.tile(b.reshape(-1, 4, 2).mean(1), 4) + np.tile(a.reshape(-1, 4, 2).mean(1), 4)
    b = b + np.tile(rng.normal(0, 8, (len(b), 2)), 4)
    b[::2] = b[::2].reshape(-1, 4, 2)[:, ::-1].reshape(-1, 8)
    ref = _shapely_iou(a, b)
    assert shapely.is_valid(shapely.polygons(b.reshape(-1, 4, 2))).all()
    if not convex:
        hull = shapely.area(shapely.convex_hull(shapely.polygons(a.reshape(-1, 4, 2))))
        assert (hull - shapely.area(shapely.polygons(a.reshape(-1, 4, 2))) > 1).mean() > 0.25
    assert (ref > 0.1).mean() > 0.3 and (ref == 0).mean() > 0.002
    np.testing.assert_allclose(polygon_iou_aligned(a, b), ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(polygon_iou_aligned(b, a), ref, rtol=0, atol=1e-9)
    dense = polygon_iou(a[:50], b[:60])
    np.testing.assert_allclose(
        dense, _shapely_iou(np.repeat(a[:50], 60, 0), np.tile(b[:60], (50, 1))).reshape(50, 60), atol=1e-9
    )


def test_polygon_iou_edge_cases():
    sq = np.array([[0.0, 0, 10, 0, 10, 10, 0, 10]])
    assert polygon_iou_aligned(sq, sq)[0] == 1.0
    assert polygon_iou_aligned(sq, sq[:, [6, 7, 4, 5, 2, 3, 0, 1]])[0] == 1.0  # either orientation
    assert polygon_iou_aligned(sq, sq + np.tile([10.0, 0], 4))[0] == 0.0  # sharing an edge
    assert polygon_iou_aligned(sq, sq + np.tile([10.0, 10], 4))[0] == 0.0  # sharing a corner
    assert polygon_iou_aligned(sq, sq + np.tile([5.0, 0], 4))[0] == pytest.approx(1 / 3, abs=1e-15)
    # Self-intersecting "bowtie": the devkit's signed-triangle sum integrates the product of winding
    # numbers (lobes +1 and -1, shoelace area 0). With the left half-square only the +1 lobe counts:
    # inter 1, union 0 + 2 - 1 = 1 -> IoU 1 (DOTA_devkit's polyiou gives 0.9999999999999999).
    bowtie = np.array([[0.0, 0, 2, 2, 2, 0, 0, 2]])
    half = np.array([[0.0, 0, 1, 0, 1, 2, 0, 2]])
    assert polygon_iou_aligned(bowtie, half)[0] == pytest.approx(1.0, abs=1e-12)
    assert polygon_iou_aligned(bowtie[:, [0, 1, 2, 3, 6, 7, 4, 5]], half)[0] == pytest.approx(0.0, abs=1e-12)
    # Zero union (two degenerate polygons): NaN, as the devkit's C++ division.
    line = np.array([[0.0, 0, 5, 0, 10, 0, 5, 0]])
    assert math.isnan(polygon_iou_aligned(line, line)[0])


# ------------------------------------------------------------------------ average precision
def test_eleven_point_thresholds_quirk():
    # recall reaches exactly 3/10 = 0.3 but np.arange's third threshold is 0.30000000000000004.
    rec = np.array([0.1, 0.2, 0.3])
    prec = np.ones(3)
    assert average_precision_voc(rec, prec, True) == pytest.approx(3 / 11, abs=1e-15)
    assert average_precision_mmdet(rec, prec.astype(np.float32), "11points") == np.float32(3) / np.float32(11)
    assert average_precision_voc(rec, prec, False) == pytest.approx(0.3, abs=1e-15)
    assert average_precision_mmdet(rec, prec.astype(np.float32), "area") == np.float32(0.3)
    # Empty curve and NaN recall (no positives): AP 0.
    assert average_precision_voc(np.zeros(0), np.zeros(0), True) == 0.0
    assert average_precision_voc(np.full(2, np.nan), np.zeros(2), True) == 0.0


# ------------------------------------------------------------------ hand-made cases, both protocols
def _rect_poly(x1, y1, x2, y2):
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def _rect_obb(x1, y1, x2, y2):
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0.0]


def _both(gt_rects, difficult, det_rects, det_scores, iou_thr=0.5, use_07=True):
    """Evaluate one image, one class by both protocols; returns (dota AP, mmrotate AP)."""
    gts = {
        "img": GroundTruthImage(
            np.array([_rect_poly(*r) for r in gt_rects], float).reshape(-1, 8),
            ["a"] * len(gt_rects),
            np.array(difficult, np.int64),
        )
    }
    dets = {
        "a": ClassDetections(
            ["img"] * len(det_rects),
            np.array(det_scores, float),
            np.array([_rect_poly(*r) for r in det_rects], float).reshape(-1, 8),
        )
    }
    dota = eval_dota_task1(dets, gts, ["a"], iou_thr=iou_thr, use_07_metric=use_07)
    det_arr = np.array(
        [[*_rect_obb(*r), s] for r, s in zip(det_rects, det_scores, strict=True)], np.float32
    ).reshape(-1, 6)
    ann = {
        "bboxes": np.array([_rect_obb(*r) for r in gt_rects], np.float32).reshape(-1, 5),
        "labels": np.zeros(len(gt_rects), np.int64),
    }
    mm = eval_rbbox_map([[det_arr]], [ann], iou_thr=iou_thr, use_07_metric=use_07)
    return dota, mm


GT2 = [(0, 0, 10, 10), (100, 100, 120, 110)]


def test_perfect_detections():
    dota, mm = _both(GT2, [0, 0], GT2, [0.9, 0.8])
    # The devkit adds 1 / 11 eleven times in float64, one by one: 1.0000000000000002, reproduced.
    # (Not Python's sum(): from Python 3.12 it compensates rounding and gives exactly 1.0.)
    expected = 0.0
    for _ in range(11):
        expected = expected + 1 / 11
    assert dota.map == expected == 1.0000000000000002
    assert mm.map == 1.0  # float32 sum then / 11
    assert dota.classes[0].recall == 1.0 and dota.classes[0].num_gts == 2


def test_duplicate_is_false_positive():
    dets = [GT2[0], (0.5, 0, 10.5, 10), GT2[1]]  # a duplicate of the first, ranked second
    dota, mm = _both(GT2, [0, 0], dets, [0.9, 0.8, 0.7])
    # tp 1 0 1: recall .5 .5 1, precision 1 .5 2/3 -> 11-point (6 * 1 + 5 * 2/3) / 11
    expected = (6 + 5 * (2 / 3)) / 11
    assert dota.map == pytest.approx(expected, abs=1e-12)
    assert mm.map == pytest.approx(expected, abs=1e-6)
    dota, mm = _both(GT2, [0, 0], dets, [0.9, 0.8, 0.7], use_07=False)
    assert dota.map == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)  # area
    assert mm.map == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-6)


def test_polygon_protocol_vs_obb_protocol_on_a_skewed_object():
    """DOTA scores against the labelled quadrilateral, mmrotate against its obb (minAreaRect): a
    detection equal to the obb of a skewed parallelogram matches in mmrotate's protocol only.
    (A convex quadrilateral fills at least half of its minimal rectangle, so at IoU 0.5 the two
    cannot disagree this way; at 0.7 they do.)"""
    from rotdet.structures import obb2poly, poly2obb_np

    quad = np.array([0, 0, 100, 0, 300, 20, 200, 20], np.float64)
    obbs, keep = poly2obb_np(quad[None], "le90")
    assert keep.all()
    obb = obbs[0].astype(np.float64)
    det_poly = obb2poly(torch.from_numpy(obb[None])).numpy().reshape(1, 8)
    gts = {"img": GroundTruthImage(quad.reshape(1, 8), ["a"], np.zeros(1, np.int64))}
    dets = {"a": ClassDetections(["img"], np.array([0.9]), det_poly)}
    dota = eval_dota_task1(dets, gts, ["a"], iou_thr=0.7)
    iou = polygon_iou(quad.reshape(1, 8), det_poly)[0, 0]
    assert 0.6 < iou < 0.7  # the parallelogram fills 2/3 of its rectangle
    assert dota.map == 0.0
    ann = {"bboxes": np.array([obb], np.float32), "labels": np.zeros(1, np.int64)}
    mm = eval_rbbox_map([[np.array([[*obb, 0.9]], np.float32)]], [ann], iou_thr=0.7)
    assert mm.map == pytest.approx(1.0)


def test_detections_touching_no_ground_truth():
    # Same image as the objects but nowhere near them: no candidate pair at all, AP 0, no error.
    dota, mm = _both(GT2, [0, 0], [(300, 300, 320, 310), (500, 0, 510, 5)], [0.9, 0.8])
    assert dota.map == 0.0 and mm.map == 0.0
    assert dota.classes[0].num_dets == 2 and dota.classes[0].recall == 0.0


def test_difficult_ignored_by_dota_counted_by_mmrotate():
    # The second object is difficult and not detected; a detection on a difficult object is neither.
    dota, mm = _both(GT2, [0, 1], [GT2[0]], [0.9])
    assert dota.map == pytest.approx(1.0, abs=1e-12)
    assert dota.classes[0].num_gts == 1 and dota.classes[0].num_difficult == 1
    assert mm.map == pytest.approx(6 / 11, abs=1e-6) and mm.classes[0].num_gts == 2
    dota, _ = _both(GT2, [0, 1], [GT2[1], GT2[0]], [0.95, 0.9])
    assert dota.map == pytest.approx(1.0, abs=1e-12)  # the detection of the difficult object is no FP


def test_iou_exactly_half():
    # The detection covers the object and as much again: IoU exactly 0.5.
    dota, mm = _both([(0, 0, 10, 10)], [0], [(0, 0, 10, 20)], [0.9])
    assert dota.map == 0.0  # DOTA: IoU > 0.5 needed
    assert mm.map == pytest.approx(1.0, abs=1e-7)  # mmrotate: IoU >= 0.5


def test_no_ground_truth_class_in_means():
    # Class "b" has no object: the devkit's mean counts it as AP 0, mmrotate's mean leaves it out.
    gts = {"img": GroundTruthImage(np.array([_rect_poly(0, 0, 10, 10)], float), ["a"], np.zeros(1, np.int64))}
    dets = {
        "a": ClassDetections(["img"], np.array([0.9]), np.array([_rect_poly(0, 0, 10, 10)], float)),
        "b": ClassDetections(["img"], np.array([0.9]), np.array([_rect_poly(50, 50, 60, 60)], float)),
    }
    assert eval_dota_task1(dets, gts, ["a", "b"]).map == pytest.approx(0.5, abs=1e-12)
    det = [[np.array([[5, 5, 10, 10, 0, 0.9]], np.float32), np.array([[55, 55, 10, 10, 0, 0.9]], np.float32)]]
    ann = [{"bboxes": np.array([[5, 5, 10, 10, 0]], np.float32), "labels": np.zeros(1, np.int64)}]
    assert eval_rbbox_map(det, ann).map == pytest.approx(1.0, abs=1e-7)


# ------------------------------------------------------------------- mmrotate oracle equality
def _oracle_inputs(z, name):
    g = {k[len(name) + 4 :]: z[k] for k in z.files if k.startswith(f"{name}.in.")}
    n_cls, n_img = int(g["num_classes"]), int(g["num_imgs"])
    dets, anns = [], []
    for i in range(n_img):
        m = g["det_img"] == i
        dets.append([g["det_bboxes"][m & (g["det_labels"] == c)] for c in range(n_cls)])
        gm, ign = g["gt_img"] == i, g["gt_ignore"]
        anns.append(
            {
                "bboxes": g["gt_bboxes"][gm & ~ign],
                "labels": g["gt_labels"][gm & ~ign],
                "bboxes_ignore": g["gt_bboxes"][gm & ign],
                "labels_ignore": g["gt_labels"][gm & ign],
            }
        )
    return dets, anns


def _check_against_oracle(z, name):
    dets, anns = _oracle_inputs(z, name)
    for tag in ("07", "area"):
        for thr in ("0.5", "0.7"):
            res = eval_rbbox_map(dets, anns, iou_thr=float(thr), use_07_metric=tag == "07")
            p = f"{name}.{tag}_{thr}."
            assert res.map == float(z[p + "mAP"]), (p, res.map, float(z[p + "mAP"]))
            assert [c.ap for c in res.classes] == z[p + "ap"].tolist()
            assert [c.num_gts for c in res.classes] == z[p + "num_gts"].tolist()
            assert [c.num_dets for c in res.classes] == z[p + "num_dets"].tolist()
            if thr == "0.5":
                for k, c in enumerate(res.classes):
                    np.testing.assert_array_equal(c.recalls, z[p + f"recall.c{k}"])
                    np.testing.assert_array_equal(c.precisions, z[p + f"precision.c{k}"])


def test_mmrotate_oracle_equality_distinct_scores():
    """Bit-equal to mmrotate 0.3.4's eval_rbbox_map (run by the reference oracle) on a random set
    with ignored objects, duplicates, exact copies, a class without objects; distinct scores."""
    _check_against_oracle(np.load(DATA / "mmrotate_map_case.npz"), "distinct")


def test_mmrotate_oracle_equality_tied_scores():
    """With tied scores mmrotate's result depends on how numpy's (unstable) argsort orders ties; we
    call numpy's argsort on the same arrays, so we equal mmrotate under the same numpy version."""
    z = np.load(DATA / "mmrotate_map_case.npz")
    if str(z["numpy_version"]) != np.__version__:
        pytest.skip(f"oracle ran numpy {z['numpy_version']}, here {np.__version__}: tie order may differ")
    _check_against_oracle(z, "ties")


def _tpfp_loop(dets, gts, ignores, iou_thr):
    """A literal per-detection transcription of mmrotate 0.3.4's tpfp_default (one image)."""
    import torch

    from rotdet.ops import box_iou_rotated

    all_gts = np.vstack([gts, ignores]).astype(np.float32)
    ign = np.r_[np.zeros(len(gts), bool), np.ones(len(ignores), bool)]
    tp, fp = np.zeros(len(dets), np.float32), np.zeros(len(dets), np.float32)
    if len(all_gts) == 0:
        fp[:] = 1
        return tp, fp
    ious = box_iou_rotated(torch.from_numpy(dets[:, :5]).float(), torch.from_numpy(all_gts)).numpy()
    covered = np.zeros(len(all_gts), bool)
    for i in np.argsort(-dets[:, -1]):
        if ious[i].max() >= iou_thr:
            j = ious[i].argmax()
            if not ign[j]:
                if not covered[j]:
                    covered[j] = True
                    tp[i] = 1
                else:
                    fp[i] = 1
        else:
            fp[i] = 1
    return tp, fp


def test_mmrotate_vectorised_equals_loop_with_ties():
    """Under the installed numpy, the vectorised matching equals a per-detection loop that uses
    numpy's argsort exactly where mmrotate does (tied scores everywhere)."""
    from rotdet.evaluation.ap import average_precision_mmdet as ap_fn

    z = np.load(DATA / "mmrotate_map_case.npz")
    dets, anns = _oracle_inputs(z, "ties")
    for thr in (0.5, 0.7):
        res = eval_rbbox_map(dets, anns, iou_thr=thr)
        for c, row in enumerate(res.classes):
            tps, fps, n = [], [], 0
            for img, ann in zip(dets, anns, strict=True):
                g = ann["bboxes"][ann["labels"] == c]
                i = ann["bboxes_ignore"][ann["labels_ignore"] == c]
                tp, fp = _tpfp_loop(img[c], g, i, thr)
                tps.append(tp)
                fps.append(fp)
                n += len(g)
            order = np.argsort(-np.vstack([img[c] for img in dets])[:, -1])
            tp = np.cumsum(np.hstack(tps)[order])
            fp = np.cumsum(np.hstack(fps)[order])
            eps = np.finfo(np.float32).eps
            ap = ap_fn(tp / max(n, eps), tp / np.maximum(tp + fp, eps), "11points")
            assert row.ap == float(ap)


# ------------------------------------------------------------------ DOTA_devkit equality
def test_dota_devkit_equality():
    """Equal to DOTA_devkit's dota_evaluation_task1 (its own code and compiled polyiou) on random
    files with difficult objects, non-convex and self-intersecting polygons, duplicates, tied
    scores, an image without objects and a class without objects or file."""
    case = DATA / "dota_case"
    exp = json.loads((case / "expected.json").read_text())
    for tag, thr, use07 in (("07_0.5", 0.5, True), ("07_0.7", 0.7, True), ("area_0.5", 0.5, False)):
        res = eval_dota_task1(
            case / "task1", case / "labelTxt", exp["classes"], iou_thr=thr, use_07_metric=use07
        )
        assert [c.ap for c in res.classes] == exp[tag]["ap"], tag
        assert res.map == exp[tag]["map"], tag


def _devkit_loop(dets: ClassDetections, gts: dict, name: str, thr: float) -> float:
    """Per-detection transcription of the devkit's voc_eval (polygon IoU from rotdet)."""
    recs = {
        k: (g.polygons[[n == name for n in g.names]], g.difficult[[n == name for n in g.names]] != 0)
        for k, g in gts.items()
    }
    taken = {k: np.zeros(len(v[0]), bool) for k, v in recs.items()}
    npos = sum(int((~d).sum()) for _, d in recs.values())
    order = np.argsort(-dets.scores)
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for r, d in enumerate(order):
        polys, diff = recs[dets.image_ids[d]]
        ovmax, jmax = -np.inf, -1
        if len(polys):
            ious = polygon_iou_aligned(polys, np.repeat(dets.polygons[d : d + 1], len(polys), 0))
            ovmax, jmax = np.max(ious), int(np.argmax(ious))
        if ovmax > thr:
            if not diff[jmax]:
                if not taken[dets.image_ids[d]][jmax]:
                    tp[r] = 1
                    taken[dets.image_ids[d]][jmax] = True
                else:
                    fp[r] = 1
        else:
            fp[r] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp / float(npos)
    return average_precision_voc(rec, tp / np.maximum(tp + fp, np.finfo(np.float64).eps), True)


def test_dota_vectorised_equals_loop_on_random_images():
    rng = np.random.default_rng(7)
    gts, ids, scores, polys = {}, [], [], []
    for i in range(25):
        n = int(rng.integers(0, 40))
        base = _star_quads(rng, n, convex=bool(i % 2))
        base = base * 0.3 + np.tile(rng.uniform(0, 400, (n, 2)), 4)  # crowded: many candidates
        gts[f"im{i}"] = GroundTruthImage(base, ["a"] * n, (rng.random(n) < 0.2).astype(np.int64))
        for k in range(n):
            for _ in range(int(rng.integers(0, 4))):
                ids.append(f"im{i}")
                scores.append(float(rng.integers(0, 10)) / 10)
                polys.append(base[k] + rng.normal(0, 2, 8))
    dets = ClassDetections(ids, np.array(scores), np.array(polys))
    for thr in (0.3, 0.5, 0.7):
        res = eval_dota_task1({"a": dets}, gts, ["a"], iou_thr=thr)
        assert res.classes[0].ap == _devkit_loop(dets, gts, "a", thr)


# ------------------------------------------------------------------------- I/O, round trips
def _merged_example(rng, classes, n_img=4):
    merged = {}
    for i in range(n_img):
        per_class = []
        for _c in classes:
            k = int(rng.integers(0, 6))
            obb = np.c_[rng.uniform(50, 900, (k, 2)), rng.uniform(10, 80, (k, 2)), rng.uniform(-1.5, 1.5, k)]
            per_class.append(np.c_[obb, rng.random(k)].astype(np.float32))
        merged[f"P{i:04d}"] = per_class
    return merged


def _gt_from_merged(merged, classes, rng):
    """Ground truth made from the detections' own polygons, jittered, some difficult."""
    import torch

    from rotdet.structures import obb2poly

    gts = {}
    for img, per_class in merged.items():
        polys, names = [], []
        for c, d in enumerate(per_class):
            p = obb2poly(torch.from_numpy(d[:, :5].astype(np.float64))).numpy()
            polys.append(p + rng.normal(0, 2, p.shape))
            names += [classes[c]] * len(d)
        polys = np.concatenate(polys)
        gts[img] = GroundTruthImage(polys, names, (rng.random(len(names)) < 0.2).astype(np.int64))
    return gts


@pytest.mark.parametrize("version", ["oc", "le90", "le135"])
def test_task1_round_trip(tmp_path, version):
    """In-memory merged detections score exactly as the Task1 files write_task1_submission writes."""
    classes = ["plane", "ship", "harbor"]
    rng = np.random.default_rng(11)
    merged = _merged_example(rng, classes)
    gts = _gt_from_merged(merged, classes, rng)
    dets = [
        RotatedDetections.from_per_class(per_class, image_id=img, classes=classes, angle_version=version)
        for img, per_class in merged.items()
    ]
    write_task1_submission(tmp_path / "sub", dets, classes, version=version)
    from_files = eval_dota_task1(tmp_path / "sub", gts, classes)
    in_memory = eval_dota_task1(dets, gts, classes)
    assert from_files.map == in_memory.map and from_files.map > 0.3
    assert [c.ap for c in from_files.classes] == [c.ap for c in in_memory.classes]
    # The JSON results file round-trips too.
    path = write_detections_json(tmp_path / "dets.json", dets, polygons=False)
    back = read_detections_json(path)
    assert all(d.classes == tuple(classes) and d.angle_version == version for d in back)
    assert [d.image_id for d in back] == list(gts)
    assert eval_dota_task1(path, gts, classes).map == in_memory.map
    mm_mem = eval_rbbox_map(
        [d.per_class() for d in back],
        [{"bboxes": np.zeros((0, 5), np.float32), "labels": np.zeros(0, np.int64)} for _ in gts],
    )
    assert mm_mem.map == 0.0


def test_result_table_and_json(tmp_path):
    dota, _ = _both(GT2, [0, 1], [GT2[0]], [0.9])
    text = dota.table()
    assert "mAP" in text and "difficult" in text and "1.0000" in text
    out = json.loads(dota.write_json(tmp_path / "r.json").read_text())
    assert out["mAP"] == dota.map and out["protocol"] == "dota" and out["metric"] == "11points"
    assert out["classes"][0] == {
        "name": "a",
        "num_gts": 1,
        "num_dets": 1,
        "recall": 1.0,
        "ap": dota.map,
        "num_difficult": 1,
    }


def test_malformed_inputs(tmp_path):
    (tmp_path / "task1").mkdir()
    (tmp_path / "task1" / "Task1_a.txt").write_text("img 0.9 0 0 10 0 10 10 0 10\nimg 0.8 0 0 10\n")
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "img.txt").write_text("imagesource:x\ngsd:0.1\n0 0 10 0 10 10 0 10 a 0\n")
    with pytest.raises(EvalInputError, match=r"Task1_a\.txt:2: expected 10 fields"):
        eval_dota_task1(tmp_path / "task1", tmp_path / "gt", ["a"])
    (tmp_path / "task1" / "Task1_a.txt").write_text(
        "img 0.9 0 0 10 0 10 10 0 10\nother 0.8 0 0 10 0 10 10 0 10\n"
    )
    with pytest.raises(EvalInputError, match="without a label file.*other"):
        eval_dota_task1(tmp_path / "task1", tmp_path / "gt", ["a"])
    (tmp_path / "gt" / "img.txt").write_text("0 0 10 0 10 x 0 10 a 0\n")
    with pytest.raises(EvalInputError, match=r"img\.txt:1: non-numeric"):
        read_labeltxt_folder(tmp_path / "gt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalInputError, match="no .txt label file"):
        read_labeltxt_folder(tmp_path / "empty")
    (tmp_path / "gt" / "img.txt").write_text("0 0 10 0 10 10 0 10 a 0\n")
    with pytest.raises(EvalInputError, match="no Task1_<class>.txt"):
        eval_dota_task1(tmp_path / "empty", tmp_path / "gt", ["a"])
    (tmp_path / "bad.json").write_text(
        '{"format": "rotdet-detections", "format_version": 1, "classes": ["a"],'
        ' "images": [{"id": "x", "boxes": [[1, 2, 3, 4, 0]], "scores": [], "labels": [0]}]}'
    )
    with pytest.raises(EvalInputError, match=r"images\[0\].*differ in length"):
        read_detections_json(tmp_path / "bad.json")


# ------------------------------------------------------------------- vectorised text readers
def _line_readers_agree(raw: bytes, kind: str):
    """The vectorised reader equals the line-by-line one (or declines), and where the line reader
    raises the public reader raises the same error."""
    from rotdet.evaluation import _fastparse
    from rotdet.evaluation.io import _parse_labeltxt_lines, _read_task1_lines

    path = Path("x.txt")
    slow_fn = _read_task1_lines if kind == "task1" else _parse_labeltxt_lines
    try:
        slow = slow_fn(path, raw)
    except EvalInputError as e:
        slow = e
    if kind == "task1":
        fast = _fastparse.read_task1(raw)
        fast = None if fast is None else ClassDetections(*fast)
    else:
        fast = _fastparse.read_labeltxt_many([raw])
        fast = None if fast is None else GroundTruthImage(*fast[0])
    if isinstance(slow, EvalInputError):
        assert fast is None, raw
        return False
    if fast is not None:
        for f in (
            ("image_ids", "scores", "polygons") if kind == "task1" else ("polygons", "names", "difficult")
        ):
            a, b = getattr(fast, f), getattr(slow, f)
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), (raw, f)
                assert np.array_equal(np.signbit(a), np.signbit(b)), (raw, f)  # -0.0 stays -0.0
            else:
                assert a == b, (raw, f)
    return fast is not None


_NUMBER_FORMS = [
    "0",
    "7",
    "-3",
    "+4",
    "12.5",
    "-0.0",
    "0.25",
    ".5",
    "5.",
    "-.75",
    "+.5",
    "00012.50",
    "1e3",
    "-2.5E-3",
    "inf",
    "nan",
    "1_0",
    "0.1234567890123456789",
    "123456789012345678901234567",
    "0.30000000000000004",
    "9007199254740993",
    "9007199254740993.0",
    "18446744073709551615",
    "1.7976931348623157e308",
    "x",
    "1.2.3",
    "--1",
    "1-",
    "",
    "0x10",
    "١٢",
]


def test_fast_readers_equal_line_readers():
    """Every form of number, whitespace and line break the line readers accept or reject."""
    rng = np.random.default_rng(5)
    decimals = [f"{v:.{int(rng.integers(0, 20))}f}" for v in rng.uniform(-5000, 5000, 200)] + [
        repr(float(v)) for v in rng.uniform(-1, 1, 200) * 10.0 ** rng.integers(-6, 6, 200)
    ]
    # Midpoints of doubles written in full (the long double path must send them to float()).
    for v in rng.uniform(1, 2, 50):
        lo = float(v)
        mid = (np.longdouble(lo) + np.longdouble(np.nextafter(lo, 2.0))) / 2
        decimals.append(np.format_float_positional(mid, unique=False, precision=25))
    seps = [" ", "  ", "\t", " \t "]
    breaks = ["\n", "\r\n", "\r"]
    accepted = 0
    for _ in range(600):
        lines = []
        for _ in range(int(rng.integers(0, 6))):
            kind = rng.random()
            if kind < 0.08:
                lines.append(rng.choice(["", "   ", "\t"]))
                continue
            nums = [str(rng.choice(decimals)) for _ in range(9)]
            if rng.random() < 0.15:
                nums[int(rng.integers(9))] = str(rng.choice(_NUMBER_FORMS))
            name = str(rng.choice(["P0001", "P0002__1024__0___824", "img", "é", "a\x0bb"]))
            tokens = [name, *nums]
            if rng.random() < 0.05:
                tokens = tokens[: int(rng.integers(0, 10))] + (["extra"] if rng.random() < 0.5 else [])
            sep = str(rng.choice(seps))
            lead = str(rng.choice(["", " ", "\t"])) if rng.random() < 0.2 else ""
            lines.append(lead + sep.join(tokens))
        br = str(rng.choice(breaks))
        text = br.join(lines) + (br if rng.random() < 0.7 else "")
        raw = ("\ufeff" if rng.random() < 0.1 else "").encode() + text.encode()
        if rng.random() < 0.03:
            raw = raw.replace(b" ", b"\x00", 1)
        accepted += _line_readers_agree(raw, "task1")
    assert accepted > 200  # the fast path covered most of them
    accepted = 0
    for _ in range(600):
        lines = []
        if rng.random() < 0.7:
            lines += ["imagesource:GoogleEarth", "gsd:0.146343590398"]
        for _ in range(int(rng.integers(0, 6))):
            coords = [str(rng.choice(decimals[:200])) for _ in range(8)]
            if rng.random() < 0.1:
                coords[int(rng.integers(8))] = str(rng.choice(_NUMBER_FORMS))
            tokens = [*coords, str(rng.choice(["plane", "small-vehicle", "ship"]))]
            if rng.random() < 0.7:
                tokens.append(str(rng.choice(["0", "1", "2", "+1", "-0", "1.0", "x", "1_0", "007"])))
            if rng.random() < 0.05:
                tokens = tokens[: int(rng.integers(0, 11))]
            if rng.random() < 0.03:
                tokens = ["GSD:0.5"] if rng.random() < 0.5 else ["note:", "x"]
            lines.append(str(rng.choice(seps)).join(tokens))
        br = str(rng.choice(breaks))
        raw = (br.join(lines) + br).encode()
        accepted += _line_readers_agree(raw, "labeltxt")
    assert accepted > 200


def test_fast_float_parse_is_correctly_rounded():
    from rotdet.evaluation import _fastparse

    rng = np.random.default_rng(9)
    texts = []
    for _ in range(20000):
        digits = "".join(rng.choice(list("0123456789"), int(rng.integers(1, 23))))
        cut = int(rng.integers(0, len(digits) + 1))
        t = digits[:cut] + "." + digits[cut:] if rng.random() < 0.8 else digits
        texts.append(("-" if rng.random() < 0.3 else "") + t)
    raw = " ".join(texts).encode()
    tok = _fastparse.tokenize(raw)
    got = _fastparse.parse_floats(tok, np.arange(len(texts)))
    assert np.array_equal(got, np.array([float(t) for t in texts]))
    assert np.array_equal(np.signbit(got), np.signbit(np.array([float(t) for t in texts])))


def test_label_folder_reading_is_per_file(tmp_path):
    """Files read together: each gets its own objects; a file the fast path declines (non-ASCII)
    is read line by line; the first bad file (sorted order) is the error, with its line."""
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "a.txt").write_text("imagesource:x\r\ngsd:0.1\r\n0 0 10 0 10 10 0 10 plane 0\r\n")
    (tmp_path / "gt" / "b.txt").write_bytes(b"")
    (tmp_path / "gt" / "c.txt").write_text("1 1 9 1 9 9 1 9 ship\n2 2 8 2 8 8 2 8 ship 1", encoding="utf-8")
    (tmp_path / "gt" / "d.txt").write_text("imagesource:caf\u00e9\n5 5 6 5 6 6 5 6 plane 0\n")
    gts = read_labeltxt_folder(tmp_path / "gt")
    assert list(gts) == ["a", "b", "c", "d"]
    assert gts["a"].names == ["plane"] and gts["b"].names == [] and gts["c"].names == ["ship", "ship"]
    assert gts["c"].difficult.tolist() == [0, 1] and gts["d"].polygons.tolist() == [[5, 5, 6, 5, 6, 6, 5, 6]]
    assert gts["b"].polygons.shape == (0, 8) and gts["b"].difficult.dtype == np.int64
    (tmp_path / "gt" / "e.txt").write_text("0 0 1 0 1 1 0 1 plane 0\n0 0 1 0 1 1 0 plane 0 1 2\n")
    (tmp_path / "gt" / "f.txt").write_text("0 0 1 0 1 1 0 inf plane 0\n")
    with pytest.raises(EvalInputError, match=r"e\.txt:2: expected"):
        read_labeltxt_folder(tmp_path / "gt")
    (tmp_path / "gt" / "e.txt").unlink()
    with pytest.raises(EvalInputError, match=r"f\.txt:1: non-finite"):
        read_labeltxt_folder(tmp_path / "gt")


# -------------------------------------------------------------------------------------- CLI
def test_cli_end_to_end(shared_data, tmp_path, capsys):
    """``rotdet eval`` on the real DOTA samples: perturbed ground-truth polygons as detections."""
    gt_dir = shared_data / "dota_samples" / "labelTxt"
    gts = read_labeltxt_folder(gt_dir)
    rng = np.random.default_rng(0)
    lines = {c: [] for c in DOTA_V1_CLASSES}
    for img, g in gts.items():
        for poly, name in zip(g.polygons, g.names, strict=True):
            for _ in range(int(rng.integers(1, 3))):  # some objects twice: duplicates
                p = poly + rng.normal(0, 1.0, 8)
                lines[name].append(f"{img} {rng.random():.4f} " + " ".join(f"{v:.2f}" for v in p))
    det_dir = tmp_path / "task1"
    det_dir.mkdir()
    for c, rows in lines.items():
        (det_dir / f"Task1_{c}.txt").write_text("".join(r + "\n" for r in rows))

    out_json = tmp_path / "dota.json"
    assert cli_main(["eval", str(det_dir), str(gt_dir), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "mAP" in printed and "ship" in printed
    dota = json.loads(out_json.read_text())
    ship = next(c for c in dota["classes"] if c["name"] == "ship")
    assert ship["num_difficult"] > 0 and ship["num_gts"] + ship["num_difficult"] == sum(
        n == "ship" for g in gts.values() for n in g.names
    )
    assert 0.5 < ship["ap"] <= 1.0 and ship["recall"] > 0.9
    assert len(dota["classes"]) == 15 and dota["mAP"] == pytest.approx(
        sum(c["ap"] for c in dota["classes"]) / 15, abs=1e-12
    )

    out_mm = tmp_path / "mm.json"
    assert cli_main(["eval", str(det_dir), str(gt_dir), "--protocol", "mmrotate", "--json", str(out_mm)]) == 0
    mm = json.loads(out_mm.read_text())
    ship_mm = next(c for c in mm["classes"] if c["name"] == "ship")
    assert ship_mm["num_gts"] >= ship["num_gts"] + ship["num_difficult"] - 5  # difficult counted
    present = [c for c in mm["classes"] if c["num_gts"] > 0]
    assert mm["mAP"] == pytest.approx(
        float(np.float32(np.mean([np.float32(c["ap"]) for c in present]))), abs=1e-6
    )

    # Errors: exit code 2 and a message, no traceback.
    assert cli_main(["eval", str(tmp_path / "missing"), str(gt_dir)]) == 2
    assert "no such detections" in capsys.readouterr().err
    (det_dir / "Task1_ship.txt").write_text("P0706 0.5 1 2 3\n")
    assert cli_main(["eval", str(det_dir), str(gt_dir)]) == 2
    assert "Task1_ship.txt:1:" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["eval", str(det_dir), str(tmp_path / "empty")]) == 2
    assert "no .txt label file" in capsys.readouterr().err


def test_cli_json_results(shared_data, tmp_path):
    """A rotdet JSON results file through the CLI, both protocols; classes come from the file."""
    gt_dir = shared_data / "dota_samples" / "labelTxt"
    from rotdet.structures import poly2obb_np

    gts = read_labeltxt_folder(gt_dir)
    images = []
    for img, g in gts.items():
        obbs, keep = poly2obb_np(g.polygons, "le90")
        labels = np.array([DOTA_V1_CLASSES.index(n) for n in g.names])[keep]
        scores = np.linspace(1, 0.5, len(obbs))
        images.append(
            RotatedDetections(obbs.astype(np.float64), scores, labels, "le90", img, DOTA_V1_CLASSES)
        )
    path = write_detections_json(tmp_path / "r.json", images, polygons=False)
    for protocol in ("dota", "mmrotate"):
        out = tmp_path / f"{protocol}.json"
        assert cli_main(["eval", str(path), str(gt_dir), "--protocol", protocol, "--json", str(out)]) == 0
        res = json.loads(out.read_text())
        present = [c for c in res["classes"] if c["num_gts"] > 0]
        assert len(present) == 4 and min(c["ap"] for c in present) > 0.9, res


def test_pair_search_paths_agree(monkeypatch):
    """The candidate search in tiny steps gives the same results (and the dense per-image way, the
    fallback for non-finite boxes, the same pairs)."""
    from rotdet.evaluation import _matching

    rng = np.random.default_rng(1)
    for trial in range(200):
        na, nb = (int(v) for v in rng.integers(0, 200, 2))
        ni = int(rng.integers(1, 12))
        scale = 10 ** rng.uniform(0, 4)

        def boxes(n, scale=scale, integer=trial % 2):
            xy, wh = rng.uniform(-scale, scale, (n, 2)), rng.uniform(0, scale / 5, (n, 2))
            if integer:  # integer boxes: touching edges and corners
                xy, wh = np.round(xy), np.round(wh)
            return np.c_[xy, xy + wh]

        a, b = boxes(na), boxes(nb)
        ia, ib = rng.integers(0, ni, na), rng.integers(0, ni, nb)
        pad = (0.0, 0.5, 1.5)[trial % 3]
        rows, cols = _matching.same_image_pairs(a, ia, b, ib, pad)
        pairs = set(zip(rows.tolist(), cols.tolist(), strict=True))
        assert len(pairs) == len(rows)
        if na and nb:
            r2, c2 = _matching._same_image_pairs_dense(a + np.array([-pad, -pad, pad, pad]), ia, b, ib)
            assert pairs == set(zip(r2.tolist(), c2.tolist(), strict=True)), trial

    z = np.load(DATA / "mmrotate_map_case.npz")
    dets, anns = _oracle_inputs(z, "distinct")
    case = DATA / "dota_case"
    exp = json.loads((case / "expected.json").read_text())
    monkeypatch.setattr(_matching, "_DENSE_PAIRS_PER_STEP", 12)
    _check_against_oracle(z, "distinct")
    res = eval_dota_task1(case / "task1", case / "labelTxt", exp["classes"])
    assert [c.ap for c in res.classes] == exp["07_0.5"]["ap"]
