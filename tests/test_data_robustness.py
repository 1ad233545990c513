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
    from rotdet.evaluation.io import _parse_labeltxt_lines, read_labeltxt_folder

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
