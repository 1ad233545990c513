"""DOTA annotation I/O: class lists, parser on well-formed and broken files, lossless writer."""

import logging

import numpy as np
import pytest

from rotdet.data.dota import (
    DOTA_V1_CLASSES,
    DotaAnnotation,
    DotaFormatError,
    ParseLog,
    get_classes,
    parse_dota_text,
    read_dota_txt,
    write_dota_txt,
)


def test_class_lists():
    assert len(get_classes("v1.0")) == 15 and get_classes("v1.0")[0] == "plane"
    assert get_classes("v1.0")[-1] == "helicopter" and get_classes("v1.0")[4] == "small-vehicle"
    assert get_classes("dota1.5")[-1] == "container-crane" and len(get_classes("v1.5")) == 16
    assert get_classes("v2.0")[-2:] == ("airport", "helipad") and len(get_classes("v2")) == 18
    assert get_classes(["a", "b"]) == ("a", "b")
    with pytest.raises(ValueError):
        get_classes(["a", "a"])
    with pytest.raises(ValueError):
        get_classes("v3")


def test_real_labels_with_crlf_headers_and_difficult(shared_data):
    total_difficult = 0
    for name in ("P0706", "P1888"):
        text = (shared_data / "dota_samples" / "labelTxt" / f"{name}.txt").read_bytes()
        ann = read_dota_txt(
            shared_data / "dota_samples" / "labelTxt" / f"{name}.txt", classes=DOTA_V1_CLASSES
        )
        n_lines = sum(1 for line in text.decode().splitlines() if line.strip())
        assert len(ann) == n_lines - 2  # two header lines
        assert ann.imagesource == "GoogleEarth" and ann.gsd is not None
        assert ann.polygons.dtype == np.float32 and ann.polygons.shape == (len(ann), 8)
        assert all("\r" not in n for n in ann.names)
        total_difficult += int((ann.difficulties == 1).sum())
    assert total_difficult == 6


def test_empty_label_file(shared_data):
    ann = read_dota_txt(shared_data / "dota_patch" / "labelTxt" / "P0004__1__0___1024.txt")
    assert len(ann) == 0 and ann.polygons.shape == (0, 8) and ann.difficulties.shape == (0,)


def test_broken_lines_skipped_with_file_line_and_summary(caplog):
    text = (
        "\ufeffimagesource:GoogleEarth\r\n"
        "gsd:null\r\n"
        "1 2 3 4 5 6 7 8 plane 0\r\n"
        "1 2 3 4 5 6 7 plane 0\n"  # wrong token count (line 4)
        "1 2 x 4 5 6 7 8 plane 0\n"  # non-numeric (line 5)
        "1 2 nan 4 5 6 7 8 plane 0\n"  # NaN (line 6)
        "1 2 3 4 5 6 7 8 spaceship 0\n"  # unknown class (line 7)
        "1 2 3 4 5 6 7 8 ship\n"  # 9 tokens: difficulty 0, as DOTA_devkit
        "   \n\n"
        "1.5 2 3 4 5 6 7 8 ship 1   \n"
    )
    log = ParseLog()
    with caplog.at_level(logging.WARNING, logger="rotdet.data"):
        ann = parse_dota_text(text, "a.txt", classes=DOTA_V1_CLASSES, log=log)
    assert ann.names == ["plane", "ship", "ship"] and ann.difficulties.tolist() == [0, 0, 1]
    assert ann.imagesource == "GoogleEarth" and ann.gsd is None
    assert [s.lineno for s in log.skipped] == [4, 5, 6, 7]
    assert "a.txt:4" in caplog.text and "unknown class name" in caplog.text
    summary = log.summary()
    assert "skipped 4 line(s)" in summary and "1 unknown class name" in summary
    with pytest.raises(DotaFormatError, match="a.txt:4"):
        parse_dota_text(text, "a.txt", classes=DOTA_V1_CLASSES, strict=True)


def test_round_trip_is_lossless(tmp_path, shared_data):
    rng = np.random.default_rng(0)
    ann = DotaAnnotation(
        (rng.random((20, 8)) * 5000).astype(np.float32),
        [DOTA_V1_CLASSES[i] for i in rng.integers(0, 15, 20)],
        rng.integers(0, 3, 20),
        "GoogleEarth",
        0.123456789012,
    )
    for a in (ann, DotaAnnotation.empty(), read_dota_txt(shared_data / "dota_samples/labelTxt/P0706.txt")):
        write_dota_txt(tmp_path / "x.txt", a)
        b = read_dota_txt(tmp_path / "x.txt")
        np.testing.assert_array_equal(a.polygons, b.polygons)
        assert a.names == b.names and a.difficulties.tolist() == b.difficulties.tolist()
        assert (a.imagesource, a.gsd) == (b.imagesource, b.gsd)


def _mmrotate_rule(poly, version):
    """mmrotate 0.3.4's per-polygon poly2obb_np rules, written out scalar by scalar (None = dropped)."""
    import math

    import cv2

    p = np.asarray(poly, np.float32)
    if version == "le135":
        e1 = float(np.hypot(*(p[0:2] - p[2:4])))
        e2 = float(np.hypot(*(p[2:4] - p[4:6])))
        if e1 < 2 or e2 < 2:
            return None
        d = p[2:4] - p[0:2] if e1 > e2 else p[6:8] - p[0:2]
        a = (math.atan2(float(d[1]), float(d[0])) + math.pi / 4) % math.pi - math.pi / 4
        return ((p[0] + p[4]) / 2, (p[1] + p[5]) / 2, max(e1, e2), min(e1, e2), a)
    (x, y), (w, h), a = cv2.minAreaRect(p.reshape(4, 2))
    if w < 2 or h < 2:
        return None
    while not 0 < a <= 90:  # oc canonical form
        if a == -90:
            a += 180
        else:
            a += 90
            w, h = h, w
    a = a / 180 * math.pi
    if version == "le90":
        if w < h:
            w, h, a = h, w, a + math.pi / 2
        while not -math.pi / 2 <= a < math.pi / 2:
            a += -math.pi if a >= math.pi / 2 else math.pi
    return (x, y, w, h, a)


@pytest.mark.parametrize("version", ["oc", "le90", "le135"])
def test_load_infos_poly_to_obb_per_version(tmp_path, shared_data, version):
    from rotdet.data.dota import load_dota_infos

    src = read_dota_txt(shared_data / "dota_samples/labelTxt/P1888.txt")
    extra = DotaAnnotation(
        np.array(
            [[0, 0, 1, 0, 1, 30, 0, 30], [5, 5, 45, 5, 45, 25, 5, 25]], np.float32
        ),  # 1 px wide: dropped
        ["plane", "ship"],
        np.array([0, 101]),  # difficulty > 100: dropped
    )
    ann = DotaAnnotation(
        np.concatenate([src.polygons, extra.polygons]),
        src.names + extra.names,
        np.r_[src.difficulties, 0, 101],
    )
    write_dota_txt(tmp_path / "P1888.txt", ann)
    (tmp_path / "EMPTY.txt").write_bytes(b"")
    infos = load_dota_infos(tmp_path, shared_data / "dota_samples/images", DOTA_V1_CLASSES, version)
    assert [i["id"] for i in infos] == ["EMPTY", "P1888"]
    assert infos[1]["filename"].endswith("P1888.png")
    got = infos[1]["ann"]
    expected = [(k, r) for k, p in enumerate(ann.polygons) if (r := _mmrotate_rule(p, version)) is not None]
    expected = [(k, r) for k, r in expected if ann.difficulties[k] <= 100]
    assert len(got["bboxes"]) == len(expected) == len(src)
    np.testing.assert_allclose(
        got["bboxes"], np.array([r for _, r in expected], np.float32), rtol=0, atol=1e-4
    )
    np.testing.assert_array_equal(got["polygons"], ann.polygons[[k for k, _ in expected]])
    assert got["labels"].tolist() == [DOTA_V1_CLASSES.index(ann.names[k]) for k, _ in expected]
    skipped = load_dota_infos(tmp_path, tmp_path, DOTA_V1_CLASSES, version, skip_empty_files=True)
    assert [i["id"] for i in skipped] == ["P1888"]
