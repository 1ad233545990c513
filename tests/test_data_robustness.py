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
