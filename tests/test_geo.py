"""Rasters in, map layers out (rotdet.geo): GeoTIFFs written here with rasterio from ToyDOTA scenes
(UTM and EPSG:4326, north-up and rotated geotransforms, nodata borders and alpha, uint16 with four
bands), predicted with a tiny seeded model on the CPU and checked against ``Detector.predict`` and
the affine transform; GeoJSON (RFC 7946) and GeoPackage read back."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings

import cv2
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely.geometry
import torch
import yaml
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform
from tiny_model import TINY_MODEL

from rotdet.cli import main as cli_main
from rotdet.configs import load_config
from rotdet.data import make_toy_image
from rotdet.data.split import crop_patch
from rotdet.data.transforms import load_image
from rotdet.engine import Detector
from rotdet.engine.checkpoint import save_checkpoint
from rotdet.engine.inference import PATCH_PADDING, plan_windows
from rotdet.geo import RasterError
from rotdet.geo import raster as geo_raster
from rotdet.geo.predict import _prefetch, predict_raster
from rotdet.geo.raster import RasterReader
from rotdet.geo.vector import RasterDetections, closed_rings

TINY = [
    *TINY_MODEL,
    "model.test_cfg.score_thr=0.0",
    "model.test_cfg.nms_pre=10",
    "model.test_cfg.max_per_img=10",
]
SIZE, GAP = 128, 32  # 256 x 192 rasters: 3 x 2 windows
UTM = CRS.from_epsg(32633)  # UTM 33N: x = 500,000 m is its central meridian, 15 degrees east
NORTH_UP = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0)  # 0.5 m pixels, north up


@pytest.fixture(autouse=True)
def _flush_denormals():
    torch.set_flush_denormal(True)  # tiny random models make denormals, 10-50x slower on a CPU
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def tiny_cfg() -> dict:
    return load_config("demo_atss_le90", TINY)


@pytest.fixture(scope="module")
def detector(tiny_cfg) -> Detector:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        with pytest.warns(UserWarning, match="untrained"):
            return Detector.from_config(tiny_cfg, device="cpu")


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return make_toy_image(11, size=(256, 192))[0]  # BGR


def write_raster(path, bands: np.ndarray, crs=UTM, transform=NORTH_UP, **profile) -> str:
    """``bands`` [C, H, W] as a tiled, compressed GeoTIFF (no georeference when crs is None and
    transform is None)."""
    count, height, width = bands.shape
    options = dict(driver="GTiff", width=width, height=height, count=count, dtype=bands.dtype.name)
    options.update(tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    if crs is not None:
        options["crs"] = crs
    if transform is not None:
        options["transform"] = transform
    options.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **options) as ds:
            ds.write(bands)
    return str(path)


def rgb_bands(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))


def affine_map(transform: Affine, polygons: np.ndarray) -> np.ndarray:
    a, b, c, d, e, f = tuple(transform)[:6]
    p = polygons.astype(np.float64).reshape(-1, 4, 2)
    return np.stack([a * p[..., 0] + b * p[..., 1] + c, d * p[..., 0] + e * p[..., 1] + f], axis=-1)


def assert_same(found: RasterDetections, expected) -> None:
    np.testing.assert_array_equal(found.pixel.boxes, expected.boxes)
    np.testing.assert_array_equal(found.pixel.scores, expected.scores)
    np.testing.assert_array_equal(found.pixel.labels, expected.labels)


def is_ring_of(ring: np.ndarray, corners: np.ndarray) -> bool:
    """``ring`` [5, 2] is ``corners`` [4, 2] closed, in their order or reversed from the first."""
    return bool(np.array_equal(ring[0], ring[4])) and any(
        np.array_equal(ring[:4], corners[order]) for order in ([0, 1, 2, 3], [0, 3, 2, 1])
    )


def test_importing_rotdet_loads_nothing_geospatial():
    code = (
        "import sys, rotdet, rotdet.engine.inference, rotdet.cli, rotdet.geo, rotdet.cli.predict_raster\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rasterio', 'pyogrio', 'fiona'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_utm_geotiff_is_predict_mapped_through_the_transform(detector, scene, tmp_path):
    path = write_raster(tmp_path / "utm.tif", rgb_bands(scene))
    found = detector.predict_raster(path, size=SIZE, gap=GAP, batch_size=2, prefetch=True)  # a reader thread
    expected = detector.predict(scene, size=SIZE, gap=GAP, batch_size=2)
    assert len(found) > 10 and found.windows == 6 and found.skipped_windows == 0
    assert_same(found, expected)  # same windows, patches, batches and merge as predict
    assert found.pixel.image_id == "utm" and found.crs_name == "EPSG:32633" and found.georeferenced
    assert found.scaling == "8-bit, as is" and found.bands == (1, 2, 3)

    # Polygons: the pixel corners through the affine transform, exactly; sizes in metres.
    corners = affine_map(NORTH_UP, expected.polygons)
    np.testing.assert_array_equal(found.polygons, corners)
    sizes = found.sizes_m()
    np.testing.assert_allclose(sizes[:, 0], expected.boxes[:, 2] * 0.5, rtol=1e-12)
    np.testing.assert_allclose(sizes[:, 1], expected.boxes[:, 3] * 0.5, rtol=1e-12)
    np.testing.assert_allclose(
        sizes[:, 2], np.prod(expected.boxes[:, 2:4].astype(np.float64), axis=1) * 0.25, rtol=1e-12
    )

    # GeoPackage: the raster's CRS, the same corners in a closed ring, the fields.
    gpkg = found.write_gpkg(tmp_path / "utm.gpkg")
    info = pyogrio.read_info(gpkg)
    assert (
        info["crs"] == "EPSG:32633" and info["features"] == len(found) and info["geometry_type"] == "Polygon"
    )
    meta, _, geoms, fields = pyogrio.raw.read(gpkg)
    columns = dict(zip(meta["fields"], fields, strict=True))
    assert list(columns["class"]) == expected.names
    np.testing.assert_array_equal(columns["score"], expected.scores.astype(np.float64))
    np.testing.assert_array_equal(columns["theta"], expected.boxes[:, 4].astype(np.float64))
    np.testing.assert_allclose(columns["width_m"], sizes[:, 0])
    for wkb, poly in zip(geoms, corners, strict=True):
        ring = np.asarray(shapely.from_wkb(wkb).exterior.coords)
        assert is_ring_of(ring, poly)

    # GeoJSON: WGS84 lon/lat of the same corners, closed counterclockwise rings, RFC 7946 shape.
    doc = json.loads(found.write_geojson(tmp_path / "utm.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc and len(doc["features"]) == len(found)
    lon, lat = warp_transform(UTM, CRS.from_epsg(4326), corners[..., 0].ravel(), corners[..., 1].ravel())
    lonlat = np.stack([lon, lat], axis=-1).reshape(-1, 4, 2)
    for feature, poly, det_box, det_score in zip(
        doc["features"], lonlat, expected.boxes, expected.scores, strict=True
    ):
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert feature["geometry"]["type"] == "Polygon" and ring.shape == (5, 2)
        assert is_ring_of(ring, poly)
        assert 14.99 < ring[:, 0].min() < ring[:, 0].max() < 15.01  # longitude first (15 E)
        assert 45.14 < ring[:, 1].min() < ring[:, 1].max() < 45.17  # then latitude
        shape = shapely.geometry.shape(feature["geometry"])
        assert shape.is_valid and shape.exterior.is_ccw  # the right-hand rule
        props = feature["properties"]
        assert props["obb_px"] == det_box.tolist() and props["score"] == float(det_score)
        assert props["width_m"] > 0 and props["area_m2"] > 0
    all_lon = lonlat[..., 0]
    assert doc["bbox"][0] == all_lon.min() and doc["bbox"][2] == all_lon.max()

    # A raster that fits in one window is run whole, as predict runs a small image.
    small = write_raster(tmp_path / "small.tif", rgb_bands(scene[:100, :120]))
    assert_same(detector.predict_raster(small, size=SIZE), detector.predict(scene[:100, :120], size=SIZE))


def test_real_dota_patch_as_uint16_four_band_geotiff(detector, shared_data, tmp_path):
    image = load_image(shared_data / "dota_patch" / "images" / "P0004__1__0___0.png")  # 285 x 294, real
    b, g, r = image.transpose(2, 0, 1).astype(np.uint16) * 4 + 3  # 10-bit-like values
    nir = np.full_like(b, 500)
    path = write_raster(tmp_path / "P0004.tif", np.stack([b, g, r, nir]), crs=CRS.from_epsg(32650))
    found = detector.predict_raster(path, size=192, gap=48, bands=(3, 2, 1), value_range=(3, 3 + 255 * 4))
    assert found.windows == 4 and found.crs_name == "EPSG:32650"
    assert_same(found, detector.predict(image, size=192, gap=48))
    np.testing.assert_array_equal(found.polygons, affine_map(NORTH_UP, found.pixel.polygons))


def test_rotated_geotransform_in_epsg4326(detector, scene, tmp_path):
    # 30 degrees rotated, 1e-5 degree pixels: GDAL's geotransform with non-zero b and d.
    transform = Affine.translation(14.0, 45.0) @ Affine.rotation(30.0) @ Affine.scale(1e-5, -1e-5)
    assert transform.b != 0 and transform.d != 0
    path = write_raster(tmp_path / "rot.tif", rgb_bands(scene), crs=CRS.from_epsg(4326), transform=transform)
    found = predict_raster(detector, path, size=SIZE, gap=GAP, batch_size=6, prefetch=False)
    expected = detector.predict(scene, size=SIZE, gap=GAP, batch_size=6)
    assert_same(found, expected)
    corners = affine_map(transform, expected.polygons)
    np.testing.assert_array_equal(found.polygons, corners)
    assert found.sizes_m() is None  # a geographic CRS: no metres
    np.testing.assert_array_equal(found.lonlat(), corners)  # already lon, lat: no reprojection
    doc = found.to_geojson()
    for feature, poly in zip(doc["features"], corners, strict=True):
        assert is_ring_of(np.asarray(feature["geometry"]["coordinates"][0]), poly)
        assert "width_m" not in feature["properties"]
    rings = closed_rings(corners)
    assert (np.asarray([shapely.geometry.Polygon(r).exterior.is_ccw for r in rings])).all()


@pytest.mark.parametrize("mask", ["nodata", "alpha"])
def test_nodata_windows_are_skipped_uint16_four_bands(detector, scene, tmp_path, monkeypatch, mask):
    # Part of the scene in a 448 x 128 raster whose border (top, left, right) is nodata or transparent.
    height, width, top, left = 128, 448, 16, 160
    valid = np.zeros((height, width), bool)
    valid[top:, left : left + 256] = True
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[valid] = scene[: height - top].reshape(-1, 3)
    rng = np.random.default_rng(0)
    if mask == "nodata":  # uint16 bands B, G, R, NIR, values 100 + 16 v; 0 is nodata
        bands = np.concatenate([canvas.transpose(2, 0, 1), rng.integers(0, 256, (1, height, width))]).astype(
            np.uint16
        )
        bands = np.where(valid, bands * 16 + 100, 0).astype(np.uint16)
        path = write_raster(tmp_path / "border.tif", bands, nodata=0)
        options = {"bands": (3, 2, 1), "value_range": (100, 100 + 255 * 16)}
    else:  # uint8 RGBA, alpha 0 outside
        bands = np.concatenate([rgb_bands(canvas), valid[None].astype(np.uint8) * 255])
        path = write_raster(tmp_path / "border.tif", bands, photometric="RGB", alpha="YES")
        options = {}

    windows, whole = plan_windows(width, height, SIZE, GAP)
    empty = [not valid[y0:y1, x0:x1].any() for x0, y0, x1, y1 in windows.tolist()]
    assert not whole and len(windows) == 5 and sum(empty) == 1  # the first
    seen = []
    original = detector._detect_batch

    def recording(patches, cfg):
        seen.extend(patches)
        return original(patches, cfg)

    monkeypatch.setattr(detector, "_detect_batch", recording)
    found = detector.predict_raster(path, size=SIZE, gap=GAP, batch_size=2, **options)
    assert found.windows == 5 and found.skipped_windows == 1 and len(seen) == 4

    # The reference: predict's machinery on the windows with a valid pixel, nodata painted with
    # the split tool's padding colour (as border patches are padded).
    reference = canvas.copy()
    reference[~valid] = PATCH_PADDING
    kept = [w for w, e in zip(windows.tolist(), empty, strict=True) if not e]
    for patch, w in zip(seen, kept, strict=True):
        np.testing.assert_array_equal(patch, crop_patch(reference, w, PATCH_PADDING))
    want = detector.detect_windows(((w, crop_patch(reference, w, PATCH_PADDING)) for w in kept), batch_size=2)
    np.testing.assert_array_equal(found.pixel.boxes, want.boxes)
    np.testing.assert_array_equal(found.pixel.scores, want.scores)
    np.testing.assert_array_equal(found.pixel.labels, want.labels)


def test_stretch_from_the_whole_raster_an_overview_or_a_sample(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    values = rng.gamma(2.0, 300.0, (1, 300, 400)).astype(np.uint16) + 1
    values[0, :40] = 0  # a nodata strip the percentiles leave out
    path = write_raster(tmp_path / "gray.tif", values, nodata=0)
    valid = values[0][values[0] > 0].astype(np.float64)
    with RasterReader(path) as reader:  # 120,000 px: the whole raster is the sample
        assert reader.bands == (1, 1, 1)  # one band, replicated
        lo, hi = np.percentile(valid, [2, 98])
        assert reader.scaling.low == (lo,) and reader.scaling.high == (hi,)
        image, mask = reader.read((0, 0, 400, 300))
        assert image.shape == (300, 400, 3) and (image[..., 0] == image[..., 2]).all()
        assert not mask[:40].any() and mask[40:].all()
        lo32, hi32 = np.float32(lo), np.float32(hi)  # Scaling computes in float32
        expected = np.rint(
            np.clip((values[0].astype(np.float32) - lo32) * (np.float32(255) / (hi32 - lo32)), 0, 255)
        )
        np.testing.assert_array_equal(image[40:, :, 1], expected[40:].astype(np.uint8))

    floats = np.where(values > 0, values.astype(np.float32) / 7, np.nan).astype(np.float32)
    with RasterReader(write_raster(tmp_path / "float.tif", floats, nodata=np.nan)) as reader:  # NaN nodata
        assert reader.scaling.low[0] == pytest.approx(np.percentile(valid / 7, 2), rel=1e-5)
        assert reader.read((0, 0, 400, 40)) is None and reader.read((0, 30, 400, 50))[1][:10].sum() == 0

    monkeypatch.setattr(geo_raster, "SAMPLE_PIXELS", 10_000)  # a "large" raster: sampled
    reads = []
    original = RasterReader._read_raw
    monkeypatch.setattr(
        RasterReader,
        "_read_raw",
        lambda self, win, shape=None: reads.append(win) or original(self, win, shape),
    )
    with RasterReader(path, stretch=(5, 95)) as reader:  # no overview: an 8 x 8 grid of tiles
        assert len(reads) == 64 and {(w.width, w.height) for w in reads} == {(256, 256)}
        assert reader.scaling.low[0] == pytest.approx(np.percentile(valid, 5), rel=0.1)
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4])
    reads.clear()
    with RasterReader(path, stretch=(5, 95)) as reader:  # the overview of 100 x 75 px
        assert len(reads) == 1 and reader.scaling.low[0] == pytest.approx(np.percentile(valid, 5), rel=0.1)


def test_raster_without_georeference_and_bad_inputs(detector, scene, tmp_path):
    plain = write_raster(tmp_path / "plain.tif", rgb_bands(scene), crs=None, transform=None)
    with pytest.warns(UserWarning, match="no georeference: detections stay in pixel coordinates"):
        found = detector.predict_raster(plain, size=256)
    assert not found.georeferenced and found.crs_name is None
    np.testing.assert_array_equal(found.polygons, found.pixel.polygons.astype(np.float64).reshape(-1, 4, 2))
    with pytest.raises(ValueError, match="has no CRS"):
        found.to_geojson()
    assert pyogrio.read_info(found.write_gpkg(tmp_path / "plain.gpkg"))["crs"] is None

    with_gcps = write_raster(tmp_path / "gcps.tif", rgb_bands(scene), crs=None, transform=None)
    with warnings.catch_warnings():  # a raw scene: ground control points only
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(with_gcps, "r+") as ds:
            points = [(0, 0), (0, 255), (191, 0)]
            ds.gcps = ([GroundControlPoint(r, c, 500000 + c, 5000000 - r) for r, c in points], UTM)
    with pytest.warns(UserWarning, match="georeferenced by ground control points, not an affine transform"):
        assert not detector.predict_raster(with_gcps, size=256).georeferenced

    (tmp_path / "junk.tif").write_bytes(b"II*\x00 not a real tiff")
    with pytest.raises(RasterError, match="junk.tif: GDAL cannot open it"):
        detector.predict_raster(tmp_path / "junk.tif")
    with pytest.raises(RasterError, match=r"band 5 is out of range: the raster has 3 band\(s\) \(1-3\)"):
        detector.predict_raster(plain, bands=(3, 2, 5))
    nothing = write_raster(tmp_path / "nothing.tif", np.zeros((3, 192, 256), np.uint8), nodata=0)
    with pytest.raises(RasterError, match="nothing.tif: no valid pixel: all 6 window"):
        detector.predict_raster(nothing, size=SIZE, gap=GAP)
    nothing16 = write_raster(tmp_path / "nothing16.tif", np.zeros((1, 64, 64), np.uint16), nodata=0)
    with pytest.raises(RasterError, match="no valid pixel to compute the stretch"):
        detector.predict_raster(nothing16)
    with pytest.raises(ValueError, match="not both"):
        detector.predict_raster(plain, stretch=(2, 98), value_range=(0, 255))


def test_predict_cli_writes_map_layers_and_reports_bad_rasters(detector, tiny_cfg, scene, tmp_path, capsys):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg))
    ckpt = save_checkpoint({"state_dict": detector.model.state_dict(), "meta": {}}, tmp_path / "w.pth")
    rasters = tmp_path / "rasters"
    rasters.mkdir()
    write_raster(rasters / "scene.tif", rgb_bands(scene))
    (rasters / "broken.tif").write_bytes(b"not a tiff at all")
    out = tmp_path / "preds"
    whole = ["predict", str(cfg_path), str(ckpt), "--device", "cpu", "--size", "256"]  # one window
    base = ["predict", str(cfg_path), str(ckpt), "--device", "cpu", "--size", str(SIZE), "--gap", str(GAP)]

    rc = cli_main([*base, str(rasters), "--out", str(out), "--preview-size", "128", "--batch-size", "6"])
    captured = capsys.readouterr()
    assert rc == 1 and "skipped" in captured.err and "broken.tif: GDAL cannot open it" in captured.err
    assert "scene.tif: " in captured.out and "EPSG:32633" in captured.out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["scene.geojson", "scene.gpkg", "scene.json", "scene.txt", "scene_preview.png"]
    expected = detector.predict(scene, size=SIZE, gap=GAP)
    doc = json.loads((out / "scene.geojson").read_text())
    assert len(doc["features"]) == len(expected) == len((out / "scene.txt").read_text().splitlines())
    lines = [line.split() for line in (out / "scene.txt").read_text().splitlines()]
    np.testing.assert_array_equal(np.array([t[:8] for t in lines], np.float32), expected.polygons)  # pixels
    preview = cv2.imread(str(out / "scene_preview.png"), cv2.IMREAD_UNCHANGED)
    assert preview.shape == (96, 128, 4) and (preview[..., 3] == 255).all()

    # uint16, four bands, bands chosen and stretched; a band out of range is one clear line.
    bands = (np.concatenate([scene.transpose(2, 0, 1), scene[None, ..., 0]]).astype(np.uint16) * 40) + 7
    write_raster(tmp_path / "multi.tif", bands)
    rc = cli_main(
        [*whole, str(tmp_path / "multi.tif"), "--out", str(out), "--bands", "3,2,1", "--stretch", "1,99"]
    )
    captured = capsys.readouterr()
    assert rc == 0 and "percentiles 1-99 per band" in captured.out
    assert json.loads((out / "multi.geojson").read_text())["features"]
    rc = cli_main([*whole, str(tmp_path / "multi.tif"), "--out", str(out), "--bands", "5"])
    captured = capsys.readouterr()
    assert rc == 1 and "multi.tif: band 5 is out of range" in captured.err and "Traceback" not in captured.err

    # Without a georeference: a warning line, no GeoJSON.
    write_raster(tmp_path / "plain.tif", rgb_bands(scene), crs=None, transform=None)
    rc = cli_main(
        [*whole, str(tmp_path / "plain.tif"), "--out", str(tmp_path / "plain_out"), "--preview-size", "0"]
    )
    captured = capsys.readouterr()
    assert rc == 0 and "plain.tif: it has no georeference" in captured.err
    assert sorted(p.name for p in (tmp_path / "plain_out").iterdir()) == [
        "plain.gpkg",
        "plain.json",
        "plain.txt",
    ]

    with pytest.raises(SystemExit):
        cli_main([*base, str(tmp_path / "multi.tif"), "--stretch", "98,2"])
    assert "argument --stretch: '98,2' is not LOW,HIGH with 0 <= LOW < HIGH <= 100" in capsys.readouterr().err


def test_without_the_geo_extra_tifs_are_plain_images(
    detector, tiny_cfg, scene, tmp_path, capsys, monkeypatch
):
    import rotdet.cli.predict_raster

    monkeypatch.setattr(rotdet.cli.predict_raster, "geo_available", lambda: False)
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg))
    ckpt = save_checkpoint({"state_dict": detector.model.state_dict(), "meta": {}}, tmp_path / "w.pth")
    path = write_raster(tmp_path / "scene.tif", rgb_bands(scene))
    base = ["predict", str(cfg_path), str(ckpt), path, "--device", "cpu", "--size", "256", "--out"]
    assert cli_main([*base, str(tmp_path / "out")]) == 0
    assert "rasterio is not installed: 1 raster(s) read as plain images" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scene.json", "scene.png", "scene.txt"]
    assert cli_main([*base, str(tmp_path / "out2"), "--bands", "1"]) == 2
    assert "--bands / --stretch / --range read rasters through GDAL" in capsys.readouterr().err


def test_a_failure_half_way_writes_nothing(detector, scene, tmp_path, monkeypatch):
    from rotdet.cli.predict_raster import predict_raster_file

    write_raster(tmp_path / "scene.tif", rgb_bands(scene))
    out = tmp_path / "out"
    out.mkdir()
    args = type("Args", (), dict(size=SIZE, gap=GAP, batch_size=2, score_thr=None, bands=None, stretch=None))
    args.value_range, args.preview_size = None, 64
    threads = threading.active_count()

    calls = []
    original = detector._detect_batch

    def failing(patches, cfg):
        calls.append(len(patches))
        if len(calls) == 2:
            raise RuntimeError("the device fell over")
        return original(patches, cfg)

    monkeypatch.setattr(detector, "_detect_batch", failing)
    with pytest.raises(RuntimeError, match="fell over"):
        predict_raster_file(detector, tmp_path / "scene.tif", out, args)
    assert list(out.iterdir()) == []
    calls.clear()
    with pytest.raises(RuntimeError, match="fell over"):
        predict_raster(detector, tmp_path / "scene.tif", size=SIZE, gap=GAP, batch_size=2, prefetch=True)
    assert threading.active_count() == threads  # the reader thread ended
    monkeypatch.setattr(detector, "_detect_batch", original)

    args.size = 256  # one window from here on

    def broken_gpkg(self, layer="detections"):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(RasterDetections, "to_gpkg_bytes", broken_gpkg)
        with pytest.raises(OSError, match="disk full"):
            predict_raster_file(detector, tmp_path / "scene.tif", out, args)
    assert list(out.iterdir()) == []

    def half_features(self):
        yield next(original_features(self))
        raise RuntimeError("PROJ gave up")

    original_features = RasterDetections._features
    monkeypatch.setattr(RasterDetections, "_features", half_features)
    with pytest.raises(RuntimeError, match="PROJ gave up"):
        predict_raster_file(detector, tmp_path / "scene.tif", out, args)
    # The GeoJSON half-streamed, the GeoPackage and preview complete: none renamed, temporaries gone.
    assert list(out.iterdir()) == []


def test_prefetch_keeps_order_raises_and_stops():
    assert list(_prefetch(iter(range(10)), 2)) == list(range(10))

    def failing():
        yield 1
        raise KeyError("read error")

    got = []
    with pytest.raises(KeyError, match="read error"):
        for item in _prefetch(failing(), 1):
            got.append(item)
    assert got == [1]

    made = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    threads = threading.active_count()
    items = _prefetch(endless(), 2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert threading.active_count() == threads and len(made) <= 3 + 2 + 1  # at most depth ahead
