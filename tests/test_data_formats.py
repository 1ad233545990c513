"""Label formats (YOLO-OBB, HRSC2016, DIOR-R, SAR, DOTA v1.5 / v2.0), datasets from a config for each,
``convert-labels`` and ``make-toy --format``: small examples written here, awkward cases included."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from rotdet.cli import main
from rotdet.configs import load_config
from rotdet.data import build_dataset, get_classes
from rotdet.data.classes import DIOR_CLASSES, HRSC_CLASSES, TOY_CLASSES
from rotdet.data.convert import convert_labels
from rotdet.data.dota import DotaAnnotation, read_dota_txt, write_dota_txt
from rotdet.data.formats import read_ground_truth, read_split
from rotdet.data.formats.dior import read_dior_records
from rotdet.data.formats.hrsc import read_hrsc_records
from rotdet.data.formats.yolo_obb import (
    format_yolo_obb_text,
    label_path_for,
    parse_yolo_obb_text,
    read_data_yaml,
    read_yolo_obb_records,
    write_data_yaml,
)
from rotdet.data.mmrotate_geometry import mmrotate_obb2poly_np
from rotdet.data.records import DEGENERATE, OUT_OF_IMAGE, UNKNOWN_CLASS, LabelFormatError, ParseLog
from rotdet.data.toy import make_toy
from rotdet.structures import poly2obb_np


def _image(path: Path, w: int = 100, h: int = 80) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))
    return path


# --------------------------------------------------------------------------------- class lists
def test_named_class_lists():
    assert get_classes("dota1.5")[-1] == "container-crane" and len(get_classes("DOTA_v1.5")) == 16
    assert get_classes("dota2.0")[-2:] == ("airport", "helipad") and len(get_classes("dota-2")) == 18
    assert get_classes("dota1.0") == get_classes("v1.0") and len(get_classes("dota1")) == 15
    assert get_classes("hrsc") == ("ship",) and len(get_classes("hrsc-classwise")) == 31
    assert len(get_classes("dior")) == 20 and get_classes("ssdd") == get_classes("hrsid") == ("ship",)
    assert get_classes("toy") == TOY_CLASSES
    with pytest.raises(ValueError, match="unknown class list"):
        get_classes("dota3.0")


# ----------------------------------------------------------------------------------- YOLO-OBB
def test_yolo_parse_edges_zero_and_one_empty_and_malformed(caplog):
    text = (
        "\ufeff0 0 0 1 0 1 1 0 1\r\n"  # corners exactly on the image edges
        "1 0.5 0.25 0.75 0.25 0.75 0.5 0.5 0.5\n"
        "\n"
        "2 0.1 0.1 0.2 0.1 0.2 0.2\n"  # line 4: 7 tokens
        "x 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n"  # line 5: non-numeric class
        "1.5 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n"  # line 6: non-integer class
        "7 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n"  # line 7: class out of range
        "0 0.1 nan 0.2 0.1 0.2 0.2 0.1 0.2\n"  # line 8: NaN
        "2.0 -0.1 0.1 1.2 0.1 1.2 0.9 -0.1 0.9\n"  # outside [0, 1]: kept, counted
    )
    log = ParseLog()
    with caplog.at_level(logging.WARNING, logger="rotdet.data"):
        polys, labels = parse_yolo_obb_text(text, 200, 100, 3, "a.txt", log=log)
    assert labels.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(polys[0], [0, 0, 200, 0, 200, 100, 0, 100])
    np.testing.assert_array_equal(polys[1], [100, 25, 150, 25, 150, 50, 100, 50])
    assert [s.lineno for s in log.skipped] == [4, 5, 6, 7, 8]
    assert "a.txt:7: unknown class index" in caplog.text
    assert log.counts[OUT_OF_IMAGE] == 1 and log.counts[UNKNOWN_CLASS] == 1
    with pytest.raises(LabelFormatError, match="a.txt:4"):
        parse_yolo_obb_text(text, 200, 100, 3, "a.txt", strict=True)
    empty, none = parse_yolo_obb_text("", 10, 10, 3)
    assert empty.shape == (0, 8) and none.shape == (0,)


def test_yolo_write_read_is_lossless_and_short():
    rng = np.random.default_rng(0)
    w, h = 1023, 769
    polys = np.round(rng.uniform(-20, 1100, (200, 8)), 1).astype(np.float32)
    polys[:3] = [[0, 0, w, 0, w, h, 0, h]] * 3
    labels = rng.integers(0, 5, 200)
    text = format_yolo_obb_text(polys, labels, w, h)
    back, back_labels = parse_yolo_obb_text(text, w, h, 5)
    np.testing.assert_array_equal(back, polys)
    assert back_labels.tolist() == labels.tolist()
    assert text.splitlines()[0] == f"{labels[0]} 0 0 1 0 1 1 0 1"
    assert max(len(t) for line in text.splitlines() for t in line.split()) <= 19


def test_yolo_dataset_yaml_and_label_paths(tmp_path):
    for split in ("train", "val"):
        _image(tmp_path / "ds" / "images" / split / f"{split}0.jpg")
        (tmp_path / "ds" / "labels" / split).mkdir(parents=True)
    (tmp_path / "ds" / "labels" / "train" / "train0.txt").write_text("1 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n")
    (tmp_path / "ds" / "list.txt").write_text("./images/val/val0.jpg\n\n")
    yml = tmp_path / "ds" / "data.yaml"
    yml.write_text("path: .\ntrain: images/train\nval: list.txt\nnames:\n  0: ship\n  1: harbor\n")
    data = read_data_yaml(yml)
    assert data.names == ("ship", "harbor") and data.root == tmp_path / "ds"
    train = data.split_images("train")
    assert [p.name for p in train] == ["train0.jpg"] and [p.name for p in data.split_images("val")] == [
        "val0.jpg"
    ]
    assert label_path_for(train[0]) == tmp_path / "ds" / "labels" / "train" / "train0.txt"
    log = ParseLog()
    recs = read_yolo_obb_records(train + data.split_images("val"), data.names, log=log)
    assert [len(r) for r in recs] == [1, 0] and recs[0].labels.tolist() == [1]
    assert (recs[0].width, recs[0].height) == (100, 80)
    np.testing.assert_allclose(recs[0].polygons[0], [10, 8, 50, 8, 50, 40, 10, 40], rtol=1e-6)
    assert log.counts["image(s) without a label file (no objects)"] == 1
    with pytest.raises(ValueError, match="no 'test' entry"):
        data.split_images("test")
    out = write_data_yaml(tmp_path / "w" / "d.yaml", ["a", "b c"], root=tmp_path / "ds")
    again = read_data_yaml(out)
    assert again.names == ("a", "b c") and again.root == (tmp_path / "ds").resolve()
    (tmp_path / "bad.yaml").write_text("names: {0: a, 2: b}\n")
    with pytest.raises(LabelFormatError, match="names keys"):
        read_data_yaml(tmp_path / "bad.yaml")
    (tmp_path / "nc.yaml").write_text("nc: 3\nnames: [a, b]\n")
    with pytest.raises(LabelFormatError, match="nc is 3"):
        read_data_yaml(tmp_path / "nc.yaml")


# ------------------------------------------------------------------------------------ HRSC2016
def _hrsc_object(cx, cy, w, h, ang, class_id="100000001", difficult=0, extra=""):
    return (
        f"<HRSC_Object><Class_ID>{class_id}</Class_ID><difficult>{difficult}</difficult>"
        f"<mbox_cx>{cx}</mbox_cx><mbox_cy>{cy}</mbox_cy><mbox_w>{w}</mbox_w><mbox_h>{h}</mbox_h>"
        f"<mbox_ang>{ang}</mbox_ang><header_x>1</header_x><header_y>2</header_y>{extra}</HRSC_Object>"
    )


def _hrsc_xml(objects, size=True):
    dims = "<Img_SizeWidth>300</Img_SizeWidth><Img_SizeHeight>200</Img_SizeHeight>" if size else ""
    return f"<HRSC_Image><Img_ID>1</Img_ID>{dims}<HRSC_Objects>{''.join(objects)}</HRSC_Objects></HRSC_Image>"


def test_hrsc_mmrotate_semantics_and_awkward_angles(tmp_path, caplog):
    ann = tmp_path / "Annotations"
    ann.mkdir()
    objs = [
        _hrsc_object(100.5, 80.25, 120.0, 30.0, -0.6),
        _hrsc_object(
            200, 100, 80, 20, math.pi / 2, class_id="100000005", difficult=1
        ),  # = pi/2: outside le90
        _hrsc_object(150, 60, 60, 15, 2.1, class_id="100000021"),  # angle > pi/2; id 21 is not an HRSC class
        _hrsc_object(10, 10, "x", 5, 0),  # malformed: skipped with its element path
    ]
    (ann / "100000001.xml").write_text(_hrsc_xml(objs))
    (ann / "100000002.xml").write_text("<HRSC_Image><Img_SizeWidth>3</Img_SizeWidth>\n<oops></HRSC_Image>")
    (tmp_path / "trainval.txt").write_text("100000001\n\n100000002\n100000003\n")
    log = ParseLog()
    with caplog.at_level(logging.WARNING, logger="rotdet.data"):
        recs = read_hrsc_records(ann, tmp_path, ("ship",), tmp_path / "trainval.txt", log=log)
    assert [r.id for r in recs] == ["100000001"]
    assert "HRSC_Object[4]/mbox_w: non-numeric value" in caplog.text
    assert (
        "100000002.xml:2: malformed XML" in caplog.text
        and "trainval.txt:4: no annotation file" in caplog.text
    )
    rec = recs[0]
    assert rec.labels.tolist() == [0, 0, 0] and rec.difficulties.tolist() == [0, 1, 0]  # one class: all ship
    assert (rec.width, rec.height) == (300, 200) and rec.meta["headers"].tolist() == [[1, 2]] * 3
    mbox = np.array(
        [[100.5, 80.25, 120, 30, -0.6], [200, 100, 80, 20, math.pi / 2], [150, 60, 60, 15, 2.1]], np.float32
    )
    np.testing.assert_array_equal(rec.obbs, mbox)  # le90 boxes as written (mmrotate keeps them)
    np.testing.assert_array_equal(rec.polygons, mmrotate_obb2poly_np(mbox, "le90").astype(np.float32))
    assert log.counts["HRSC angle(s) outside [-pi/2, pi/2) kept as written (mmrotate's le90 boxes)"] == 2
    with pytest.raises(LabelFormatError, match="HRSC_Object\\[4\\]/mbox_w"):
        read_hrsc_records(ann, tmp_path, ("ship",), strict=True)  # every XML of the folder, sorted
    # classwise: Class_ID 1000000NN names mmrotate's HRSC_CLASSES; id 21 is not one (dropped, counted)
    log = ParseLog()
    cw = read_hrsc_records(ann, tmp_path, HRSC_CLASSES, [tmp_path / "trainval.txt"], log=log)[0]
    assert cw.labels.tolist() == [0, 4] and log.counts[UNKNOWN_CLASS] == 1
    # oc / le135 boxes come from the polygon, so they are normalised
    from rotdet.data.records import records_to_infos

    for version in ("oc", "le135"):
        info = records_to_infos([rec], version)[0]
        expected, keep = poly2obb_np(rec.polygons, version)
        assert keep.all()
        np.testing.assert_array_equal(info["ann"]["bboxes"], expected)
    le90 = records_to_infos([rec], "le90")[0]["ann"]["bboxes"]
    np.testing.assert_array_equal(le90, mbox)


def test_hrsc_size_from_image_when_missing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.xml").write_text(_hrsc_xml([_hrsc_object(20, 20, 30, 10, 0.1)], size=False))
    _image(tmp_path / "img" / "1.bmp", 64, 48)
    rec = read_hrsc_records(tmp_path / "a", tmp_path / "img", ("ship",))[0]
    assert (rec.width, rec.height) == (64, 48) and rec.filename.endswith("1.bmp")


# -------------------------------------------------------------------------------------- DIOR-R
def _dior_object(name, corners, difficult=0):
    tags = ["x_left_top", "y_left_top", "x_right_top", "y_right_top",
            "x_right_bottom", "y_right_bottom", "x_left_bottom", "y_left_bottom"]  # fmt: skip
    # the corner elements in a shuffled order: they are found by name
    order = [6, 2, 0, 7, 4, 1, 3, 5]
    inner = "".join(f"<{tags[i]}>{corners[i]}</{tags[i]}>" for i in order)
    return (
        f"<object><type>robndbox</type><name>{name}</name><difficult>{difficult}</difficult>"
        f"<robndbox>{inner}</robndbox><angle>0</angle></object>"
    )


def test_dior_corner_order_names_and_errors(tmp_path, caplog):
    ann = tmp_path / "Annotations" / "Oriented Bounding Boxes"
    ann.mkdir(parents=True)
    objs = [
        _dior_object("Vehicle", [10, 10, 50, 12, 49, 30, 9, 28]),  # upper-case name: lower-cased, as mmrotate
        _dior_object("ship", [100, 100, 140, 130, 100, 130, 140, 100], difficult=1),  # bow tie: re-ordered
        _dior_object("spaceship", [1, 1, 5, 1, 5, 5, 1, 5]),  # unknown: skipped, counted
        _dior_object("airport", [1, 1, 500, 1, 500, 5, 1, 5]),  # x beyond the 400 px image: counted
    ]
    xml = f"<annotation><size><width>400</width><height>300</height></size>{''.join(objs)}</annotation>"
    (ann / "00001.xml").write_text(xml)
    (tmp_path / "ImageSets").mkdir()
    (tmp_path / "ImageSets" / "train.txt").write_text("00001\n")
    log = ParseLog()
    with caplog.at_level(logging.WARNING, logger="rotdet.data"):
        recs = read_dior_records(ann, tmp_path, DIOR_CLASSES, tmp_path / "ImageSets" / "train.txt", log=log)
    rec = recs[0]
    assert rec.labels.tolist() == [18, 13, 1] and rec.difficulties.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(rec.polygons[0], [10, 10, 50, 12, 49, 30, 9, 28])
    np.testing.assert_array_equal(rec.polygons[1], [100, 100, 140, 100, 140, 130, 100, 130])
    assert "00001.xml:/annotation/object[3]/name: unknown class name (spaceship)" in caplog.text
    assert log.counts[UNKNOWN_CLASS] == 1 and log.counts[OUT_OF_IMAGE] == 1
    assert log.counts["DIOR-R polygon(s) with self-crossing corner order re-ordered"] == 1
    with pytest.raises(LabelFormatError, match="object\\[3\\]/name"):
        read_dior_records(ann, tmp_path, DIOR_CLASSES, strict=True)


# ------------------------------------------------------------------- datasets from a config
@pytest.fixture(scope="module")
def toy_sets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("formats")
    for fmt in ("dota", "yolo-obb", "hrsc", "dior"):
        make_toy(root / fmt, fmt, 3, seed=4, size=(128, 96))
    return root


def toy_cfg(root: Path, fmt: str) -> dict:
    cfg = load_config("demo_atss_le90", ["data.img_scale=[128,128]"])
    data = cfg["data"]
    data.update(format=fmt, root=str(root / fmt), classes="toy")
    splits = {
        "dota": {"ann_dir": "labelTxt", "img_dir": "images"},
        "sar": {"ann_dir": "labelTxt", "img_dir": "images"},
        "yolo-obb": None,
        "hrsc": {"ann_dir": "FullDataSet/Annotations", "img_dir": "FullDataSet/AllImages",
                 "ann_file": "ImageSets/trainval.txt"},
        "dior": {"ann_dir": "Annotations/Oriented Bounding Boxes", "img_dir": "JPEGImages-trainval",
                 "ann_file": ["ImageSets/Main/trainval.txt"]},
    }[fmt]  # fmt: skip
    for split in ("train", "val", "test"):
        data.pop(split)
        if splits is not None:
            data[split] = dict(splits)
    if fmt == "yolo-obb":
        data.update(yaml=str(root / fmt / "data.yaml"), classes="yaml")
    return cfg


def test_every_format_gives_the_same_dataset(toy_sets):
    ref = build_dataset(toy_cfg(toy_sets, "dota"), "train")
    for fmt in ("yolo-obb", "hrsc", "dior"):
        ds = build_dataset(toy_cfg(toy_sets, fmt), "train")
        assert ds.classes == ref.classes and ds.img_ids == ref.img_ids
        for a, b in zip(ref.data_infos, ds.data_infos, strict=True):
            np.testing.assert_array_equal(a["ann"]["labels"], b["ann"]["labels"])
            np.testing.assert_array_equal(a["ann"]["bboxes"], b["ann"]["bboxes"])
        test = build_dataset(toy_cfg(toy_sets, fmt), "test")  # test mode: no flips, all images
        assert len(test) == 3 and tuple(test[0]["img"].shape[1:]) == (96, 128)
    sample = ref[0]
    assert sample["gt_bboxes"].shape[1] == 5 and sample["img"].shape[0] == 3


def test_config_errors_name_the_fix(toy_sets, tmp_path):
    cfg = toy_cfg(toy_sets, "hrsc")
    cfg["model"]["bbox_head"]["num_classes"] = 15
    with pytest.raises(ValueError, match="num_classes is 15 but data.classes has 6 name.*num_classes=6"):
        build_dataset(cfg, "train")
    cfg = toy_cfg(toy_sets, "hrsc")
    cfg["data"]["format"] = "coco"
    with pytest.raises(ValueError, match="unknown data.format 'coco'"):
        build_dataset(cfg, "train")
    cfg = toy_cfg(toy_sets, "dior")
    cfg["data"]["train"]["ann_file"] = ["ImageSets/Main/missing.txt"]
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        build_dataset(cfg, "train")
    cfg = toy_cfg(toy_sets, "yolo-obb")
    cfg["data"]["yaml"] = None
    with pytest.raises(ValueError, match="names no data.yaml"):
        build_dataset(cfg, "train")


def test_sar_reads_dota_files_as_ship(tmp_path):
    poly = np.array([[0, 0, 20, 0, 20, 9, 0, 9]], np.float32)
    write_dota_txt(tmp_path / "l" / "s.txt", DotaAnnotation(poly, ["ship"], np.zeros(1, np.int64)))
    _image(tmp_path / "i" / "s.jpg")
    recs = read_split("sar", {"ann_dir": "l", "img_dir": "i"}, tmp_path, get_classes("ssdd"))
    assert recs[0].labels.tolist() == [0] and recs[0].filename.endswith("s.jpg")


def test_new_configs_build_their_models():
    from rotdet.models import build_model

    tiny = [
        "model.backbone.depth=18",
        "model.backbone.pretrained=false",
        "model.neck.in_channels=[64,128,256,512]",
    ]
    for name, n in [
        ("rotated_retinanet_hbb_r50_fpn_6x_hrsc_rr_oc", 1),
        ("rotated_retinanet_obb_r50_fpn_6x_hrsc_rr_le90", 1),
        ("rotated_atss_obb_r50_fpn_6x_hrsc_rr_le90", 1),
        ("rotated_atss_obb_r50_fpn_1x_dior_le90", 20),
        ("rotated_atss_obb_r50_fpn_1x_dota2_le90", 18),
    ]:
        cfg = load_config(name, tiny)
        assert len(get_classes(cfg["data"]["classes"])) == n == cfg["model"]["bbox_head"]["num_classes"]
        build_model(cfg)
    hrsc = load_config("rotated_retinanet_obb_r50_fpn_6x_hrsc_rr_le90")
    assert hrsc["data"]["img_scale"] == [800, 512] and hrsc["max_epochs"] == 72
    assert hrsc["lr_config"]["step"] == [48, 66] and hrsc["data"]["train_rotate"]["rect_classes"] == [9, 11]
    from rotdet.data import config_pipeline

    types = [s["type"] for s in config_pipeline(hrsc, train=True)]
    assert types == ["LoadImage", "RResize", "RRandomFlip", "PolyRandomRotate", "Normalize", "Pad"]
    assert config_pipeline(hrsc, train=False)[2]["type"] == "Normalize"
    yolo = load_config("rotated_atss_obb_r50_fpn_1x_yolo_le90", ["model.bbox_head.num_classes=3"])
    assert yolo["data"]["format"] == "yolo-obb" and yolo["data"]["classes"] == "yaml"


# ----------------------------------------------------------------- convert-labels, make-toy
def test_convert_labels_round_trips(toy_sets, tmp_path, capsys):
    src = toy_sets / "dota"
    yolo, back = tmp_path / "yolo", tmp_path / "back"
    args = ["convert-labels", "--from", "dota", "--to", "yolo-obb", str(src / "labelTxt"), str(yolo),
            "--images", str(src / "images"), "--classes", "toy"]  # fmt: skip
    assert main(args) == 0 and "wrote 3 label file(s)" in capsys.readouterr().out
    assert main(["convert-labels", "--from", "yolo-obb", "--to", "dota", str(yolo), str(back),
                 "--images", str(src / "images"), "--classes", "toy"]) == 0  # fmt: skip
    for f in sorted((src / "labelTxt").glob("*.txt")):
        a, b = read_dota_txt(f), read_dota_txt(back / f.name)
        np.testing.assert_array_equal(a.polygons, b.polygons)
        assert a.names == b.names
    # HRSC XML -> DOTA: the polygons are mmrotate's polygons of the mbox
    hrsc_dota = tmp_path / "hrsc_dota"
    res = convert_labels(
        toy_sets / "hrsc" / "FullDataSet" / "Annotations", hrsc_dota, "hrsc", "dota", classes="toy"
    )
    assert res.written == 3
    # DIOR-R -> YOLO-OBB needs no --images: the XML has the sizes
    dior = toy_sets / "dior" / "Annotations" / "Oriented Bounding Boxes"
    res = convert_labels(dior, tmp_path / "dy", "dior", "yolo-obb", classes="toy")
    assert res.written == 3 and not res.missing_size
    assert main(["convert-labels", "--from", "yolo-obb", "--to", "dota", str(yolo), str(tmp_path / "x")]) == 2
    assert "--classes is needed" in capsys.readouterr().err
    with pytest.raises(ValueError, match="hold spaces"):
        convert_labels(toy_sets / "hrsc" / "FullDataSet" / "Annotations", tmp_path / "h", "hrsc", "dota",
                       classes="hrsc-classwise")  # fmt: skip


def test_make_toy_formats_cli(tmp_path, capsys):
    assert (
        main(
            [
                "make-toy",
                "--out",
                str(tmp_path / "y"),
                "--format",
                "yolo-obb",
                "-n",
                "2",
                "--size",
                "64",
                "64",
            ]
        )
        == 0
    )
    assert "yolo-obb format" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == ["data.yaml", "images", "labels"]
    ids, anns = read_ground_truth(tmp_path / "y" / "data.yaml", "yolo-obb", TOY_CLASSES)
    assert ids == ["T0000", "T0001"] and all(len(a["labels"]) for a in anns)


def test_degenerate_polygons_counted(tmp_path):
    poly = np.array([[0, 0, 1, 0, 1, 30, 0, 30], [5, 5, 45, 5, 45, 25, 5, 25]], np.float32)
    write_dota_txt(tmp_path / "l" / "a.txt", DotaAnnotation(poly, ["ship", "ship"], np.zeros(2, np.int64)))
    _image(tmp_path / "i" / "a.png")
    cfg = copy.deepcopy(load_config("demo_atss_le90"))
    cfg["data"].update(root=str(tmp_path), train={"ann_dir": "l", "img_dir": "i"})
    ds = build_dataset(cfg, "train")
    assert ds.parse_log.counts[DEGENERATE] == 1 and len(ds.data_infos[0]["ann"]["labels"]) == 1


def test_yolo_export_to_trained_model_and_map_in_three_commands(tmp_path, capsys):
    """README's "your own data": train on a YOLO-OBB folder, test, COCO mAP (a tiny model here)."""
    make_toy(tmp_path / "export", "yolo-obb", 4, seed=1, size=(128, 128))
    yml = str(tmp_path / "export" / "data.yaml")
    tiny = [
        f"data.yaml={yml}",
        "model.bbox_head.num_classes=6",
        "model.backbone.depth=18",
        "model.backbone.pretrained=false",
        "model.neck.in_channels=[64,128,256,512]",
        "model.neck.out_channels=32",
        "model.bbox_head.in_channels=32",
        "model.bbox_head.feat_channels=32",
        "model.bbox_head.stacked_convs=1",
        "data.img_scale=[128,128]",
        "data.workers_per_gpu=0",
        "max_epochs=1",
    ]
    cfg, work = "rotated_atss_obb_r50_fpn_1x_yolo_le90", tmp_path / "work"
    assert main(["train", cfg, *tiny, "--work-dir", str(work), "--no-progress", "--device", "cpu"]) == 0
    assert main(["test", cfg, str(work / "latest.pth"), *tiny, "--out", str(work / "test"), "--workers", "0",
                 "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                str(work / "test" / "results.json"),
                yml,
                "--gt-format",
                "yolo-obb",
                "--protocol",
                "coco",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "coco protocol" in out and "mAP:" in out
    wrong = [o for o in tiny if "num_classes" not in o]
    assert (
        main(["train", cfg, *wrong, "--work-dir", str(tmp_path / "w2"), "--no-progress", "--device", "cpu"])
        == 2
    )
    assert "num_classes is not set but data.classes has 6 name(s)" in capsys.readouterr().err


def test_resolve_data_config_fills_names_and_num_classes(toy_sets):
    from rotdet.data.build import resolve_data_config

    cfg = load_config(
        "rotated_atss_obb_r50_fpn_1x_yolo_le90", [f"data.yaml={toy_sets / 'yolo-obb' / 'data.yaml'}"]
    )
    assert cfg["model"]["bbox_head"]["num_classes"] is None
    done = resolve_data_config(cfg)
    assert done["data"]["classes"] == list(TOY_CLASSES) and done["model"]["bbox_head"]["num_classes"] == 6
    assert cfg["data"]["classes"] == "yaml"  # a copy
    done["data"]["yaml"] = "/nowhere/data.yaml"
    assert resolve_data_config(done)["data"]["classes"] == list(TOY_CLASSES)  # no longer reads the YAML


def test_one_pipeline_builder():
    """A seed config's pipelines are the ones a DOTADataset without a pipeline gets (one builder)."""
    from rotdet.data import config_pipeline, test_pipeline_cfg, train_pipeline_cfg

    obb = load_config("rotated_atss_obb_r50_fpn_1x_dota_le90")
    hbb = load_config("rotated_retinanet_hbb_r50_fpn_1x_dota_oc")
    assert config_pipeline(obb, train=True) == train_pipeline_cfg("le90")
    assert config_pipeline(hbb, train=True) == train_pipeline_cfg("oc", hbb=True)
    assert config_pipeline(obb, train=False) == config_pipeline(hbb, train=False) == test_pipeline_cfg()


def test_empty_xml_and_label_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.xml").write_text(_hrsc_xml([]))
    (tmp_path / "a" / "2.xml").write_text(
        "<annotation><size><width>5</width><height>5</height></size></annotation>"
    )
    hrsc = read_hrsc_records(tmp_path / "a", tmp_path, ("ship",))
    assert [len(r) for r in hrsc] == [0, 0] and hrsc[0].polygons.shape == (0, 8)
    dior = read_dior_records(tmp_path / "a", tmp_path, DIOR_CLASSES)
    assert [len(r) for r in dior] == [0, 0]  # neither file has an <object>
    _image(tmp_path / "ds" / "images" / "e.png")
    (tmp_path / "ds" / "labels").mkdir(parents=True)
    (tmp_path / "ds" / "labels" / "e.txt").write_text("\n  \n")
    recs = read_yolo_obb_records([tmp_path / "ds" / "images" / "e.png"], ["x"])
    assert len(recs) == 1 and len(recs[0]) == 0 and recs[0].width == 100
