"""Data commands never turn a typo or a bad file into a silent result: missing folders are errors,
orphan label files are listed, an unreadable image is skipped with its name (split, browse)."""

from __future__ import annotations

import pytest

from rotdet.cli import main as cli_main
from rotdet.data.browse import browse
from rotdet.data.split import SplitConfig, split_dataset
from rotdet.data.toy import TOY_CLASSES, make_toy_dota


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_dota(root, num_images=3, size=(160, 160))
    return root


def test_split_refuses_a_missing_annotation_folder(toy, tmp_path, capsys):
    argv = ["split", "--img-dirs", str(toy / "images"), "--ann-dirs", str(toy / "labeltxt")]
    assert cli_main([*argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "annotation folder not found" in err and "labeltxt" in err
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        split_dataset([toy / "imgs"], None, tmp_path / "out2")


def test_split_lists_label_files_without_an_image(toy, tmp_path, caplog):
    labels = tmp_path / "labels"
    labels.mkdir()
    for p in (toy / "labelTxt").glob("*.txt"):
        (labels / p.name).write_bytes(p.read_bytes())
    (labels / "lost_image.txt").write_text("1 1 9 1 9 9 1 9 ship 0\n")
    cfg = SplitConfig(sizes=[128], gaps=[32])
    summary = split_dataset([toy / "images"], [labels], tmp_path / "out", cfg, progress=False)
    assert [p.rsplit("/", 1)[-1] for p in summary["orphan_labels"]] == ["lost_image.txt"]
    assert summary["images"] == 3 and "lost_image.txt" in caplog.text


def test_browse_skips_an_unreadable_image_and_refuses_a_missing_folder(toy, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    files = sorted((toy / "images").glob("*.png"))
    for p in files:
        (images / p.name).write_bytes(p.read_bytes())
    first = images / files[0].name
    first.write_bytes(first.read_bytes()[:200])  # truncated PNG
    written, problems = browse(toy / "labelTxt", images, tmp_path / "out", TOY_CLASSES, num=3)
    assert [p.stem for p in written] == [p.stem for p in files[1:]]
    assert len(problems) == 1 and files[0].name in problems[0]
    with pytest.raises(FileNotFoundError, match="annotation folder not found"):
        browse(toy / "labeltxt", images, tmp_path / "out", TOY_CLASSES)


LABELS = (
    "'imagesource':GoogleEarth\r\n'gsd':0.146343590398\r\n"
    "10 10 60 10 60 40 10 40 plane 0\r\n20.5 30 80 30 80 70 20.5 70 ship 1\r\n"
)


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_bom_label_files_and_quoted_headers_read_as_utf8(tmp_path, codec, caplog):
    """UTF-16 / UTF-32 (with a BOM, or UTF-16 without one) and UTF-8-BOM label files, with DOTA
    v1.5's quoted header keys, read as the plain UTF-8 file: by the training reader and by `rotdet
    eval`'s vectorised and line-by-line readers."""
    import numpy as np

    from rotdet.data.dota import read_dota_txt
    from rotdet.evaluation.io import _parse_labeltxt_lines, read_labeltxt_folder, read_task1_file

    (tmp_path / "plain").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "plain" / "P1.txt").write_bytes(LABELS.encode("ascii"))
    (tmp_path / "odd" / "P1.txt").write_bytes(LABELS.encode(codec))
    want = read_dota_txt(tmp_path / "plain" / "P1.txt")
    assert (want.imagesource, want.gsd, want.names) == ("GoogleEarth", 0.146343590398, ["plane", "ship"])
    with caplog.at_level("WARNING"):
        got = read_dota_txt(tmp_path / "odd" / "P1.txt", strict=True)
    assert not caplog.records
    assert (got.imagesource, got.gsd, got.names) == (want.imagesource, want.gsd, want.names)
    np.testing.assert_array_equal(got.polygons, want.polygons)
    gt = read_labeltxt_folder(tmp_path / "odd")["P1"]
    lines = _parse_labeltxt_lines(tmp_path / "odd" / "P1.txt", LABELS.encode(codec))
    for one in (gt, lines):
        assert one.names == ["plane", "ship"] and one.difficult.tolist() == [0, 1]
        np.testing.assert_array_equal(one.polygons, want.polygons.astype(np.float64))
    task1 = tmp_path / "Task1_ship.txt"
    task1.write_bytes("P1 0.9 20.5 30 80 30 80 70 20.5 70\r\n".encode(codec))
    det = read_task1_file(task1)
    assert det.image_ids == ["P1"] and det.scores.tolist() == [0.9] and det.polygons[0, 0] == 20.5


def test_undecodable_utf16_label_file_is_an_error_naming_it(tmp_path):
    from rotdet.data.dota import read_dota_txt
    from rotdet.data.records import LabelFormatError
    from rotdet.evaluation.io import read_labeltxt_folder
    from rotdet.evaluation.results import EvalInputError

    bad = tmp_path / "P2.txt"
    bad.write_bytes(LABELS.encode("utf-16")[:-1])  # a byte short: half a character
    with pytest.raises(LabelFormatError, match=r"P2\.txt: UTF-16 .*does not decode"):
        read_dota_txt(bad)
    with pytest.raises(EvalInputError, match=r"P2\.txt: UTF-16 .*does not decode"):
        read_labeltxt_folder(tmp_path)


def test_absurd_and_wholly_outside_objects_are_skipped_naming_file_and_line(tmp_path, caplog):
    """1e30 / 1e39 / NaN coordinates and a polygon wholly outside its 128 px image are skipped with
    `file:line` and counted (strict: raised); an object crossing the border is kept, as mmrotate."""
    from rotdet.configs import load_config
    from rotdet.data import build_dataset
    from rotdet.data.records import LabelFormatError

    make_toy_dota(tmp_path / "train", num_images=1, size=(128, 128))
    label = next((tmp_path / "train" / "labelTxt").glob("*.txt"))
    lines = [
        "10 10 40 10 40 30 10 30 ship 0",  # inside
        "110 10 150 10 150 30 110 30 ship 0",  # crosses the border: kept
        "300 300 340 300 340 330 300 330 ship 0",  # wholly outside
        "10 10 1e30 10 40 30 10 30 ship 0",  # a corner far out
        "10 10 1e39 10 40 30 10 30 ship 0",  # inf in float32
        "nan 10 40 10 40 30 10 30 ship 0",
    ]
    label.write_text("\n".join(lines) + "\n")
    cfg = load_config("demo_atss_le90", [f"data.root={tmp_path.as_posix()}"])
    with caplog.at_level("WARNING", logger="rotdet"):
        ds = build_dataset(cfg, "train")
    ann = ds.get_ann_info(0)
    assert ann["polygons"][:, 0].tolist() == [10, 110]
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for lineno in (3, 4, 5, 6):
        assert f"{label}:{lineno}:" in warned
    assert "polygon wholly outside the image (128x128)" in warned
    assert "corner farther than the image size outside the image" in warned
    summary = ds.parse_log.summary()
    assert "skipped 4 line(s)" in summary and "1 object(s) with coordinates outside the image" in summary
    cfg["data"]["strict"] = True
    label.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(LabelFormatError, match=rf"{label.name}:3: polygon wholly outside"):
        build_dataset(cfg, "train")


def test_yolo_obb_object_wholly_outside_is_skipped():
    from rotdet.data.formats.yolo_obb import parse_yolo_obb_text
    from rotdet.data.records import ParseLog

    log = ParseLog()
    inside, outside, crossing = (
        "0.1 0.1 0.3 0.1 0.3 0.2 0.1 0.2",
        "1.5 1.5 1.8 1.5 1.8 1.7 1.5 1.7",
        "0.9 0.1 1.1 0.1 1.1 0.2 0.9 0.2",
    )
    text = "".join(f"0 {poly}\n" for poly in (inside, outside, crossing))
    polys, labels = parse_yolo_obb_text(text, 100, 100, 1, "a.txt", log=log, check_bounds=True)
    assert len(polys) == 2 and [(s.where, s.reason.split(" (")[0]) for s in log.skipped] == [
        ("a.txt:2", "polygon wholly outside the image")
    ]


def test_training_finds_an_image_whatever_the_case_of_its_extension(tmp_path):
    from rotdet.configs import load_config
    from rotdet.data import build_dataset

    make_toy_dota(tmp_path / "train", num_images=2, size=(128, 128))
    png = sorted((tmp_path / "train" / "images").glob("*.png"))[1]
    png.rename(png.with_suffix(".Png"))
    ds = build_dataset(load_config("demo_atss_le90", [f"data.root={tmp_path.as_posix()}"]), "train")
    assert sorted(i["filename"] for i in ds.data_infos)[1] == str(png.with_suffix(".Png"))
    assert tuple(ds[1]["img_metas"]["ori_shape"][:2]) == (128, 128)
