"""The raster part of ``rotdet predict``: GeoTIFFs (and other GDAL rasters) in, map layers out.

A path goes through GDAL when its extension is one of :data:`rotdet.geo.RASTER_EXTENSIONS`, or
when ``--bands``, ``--stretch`` or ``--range`` is given (then every path does). For ``scene.tif``
it writes, under ``--out``:

* ``scene.geojson``: the detections as polygons in WGS84 (lon, lat), RFC 7946; not written for a
  raster without a CRS;
* ``scene.gpkg``: a GeoPackage layer ``detections`` in the raster's own CRS;
* ``scene.txt`` (DOTA lines) and ``scene.json`` (rotdet's detections JSON), in pixel coordinates;
* ``scene_preview.png``: the raster downscaled to ``--preview-size`` px with the detections drawn.

Every file is written atomically once the raster is done: a run that fails half-way leaves none.
This module imports nothing geospatial; rasterio is loaded when a raster is predicted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path

import cv2
from tqdm import tqdm

from rotdet.fileio import atomic_write
from rotdet.geo import GEO_EXTRA_HINT, RASTER_EXTENSIONS, geo_available

__all__ = ["add_raster_arguments", "geo_check", "predict_raster_file", "wants_raster"]

DEFAULT_PREVIEW_SIZE = 2048  # = rotdet.geo.predict.DEFAULT_PREVIEW_SIZE, without importing rasterio


def _numbers(count: tuple[int, ...], kind: type, check=None):
    """An argparse type: ``len in count`` comma-separated numbers, ``check(values)`` the rule."""

    def parse(text: str):
        try:
            values = tuple(kind(v) for v in text.replace(" ", "").split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        if len(values) not in count:
            raise argparse.ArgumentTypeError(f"expected {' or '.join(map(str, count))} values, got {text!r}")
        if check is not None and not check(values):
            raise argparse.ArgumentTypeError(f"{text!r} is not {check.__doc__}")
        return values

    return parse


def _percentiles(v) -> bool:
    """LOW,HIGH with 0 <= LOW < HIGH <= 100"""
    return 0 <= v[0] < v[1] <= 100


def _increasing(v) -> bool:
    """MIN,MAX with MIN < MAX"""
    return v[0] < v[1]


def _positive(v) -> bool:
    """a list of band numbers >= 1"""
    return all(b >= 1 for b in v)


def add_raster_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "rasters", f"GeoTIFF and other GDAL rasters ({', '.join(RASTER_EXTENSIONS)}); need {GEO_EXTRA_HINT}"
    )
    group.add_argument(
        "--bands",
        type=_numbers((1, 3), int, _positive),
        default=None,
        metavar="R,G,B",
        help="1-based bands read as red, green, blue, or one band for grey (default: the first three)",
    )
    scale = group.add_mutually_exclusive_group()
    scale.add_argument(
        "--stretch",
        type=_numbers((2,), float, _percentiles),
        default=None,
        metavar="LOW,HIGH",
        help="scale each band to 8 bits between these percentiles of a sample (default: 2,98 unless 8-bit)",
    )
    scale.add_argument(
        "--range",
        dest="value_range",
        type=_numbers((2,), float, _increasing),
        default=None,
        metavar="MIN,MAX",
        help="scale every band to 8 bits between these fixed values instead",
    )
    group.add_argument(
        "--preview-size",
        type=int,
        default=DEFAULT_PREVIEW_SIZE,
        help="long side of scene_preview.png in px, 0 for none (default: %(default)s)",
    )


def _raster_options(args: argparse.Namespace) -> bool:
    return any(getattr(args, k, None) is not None for k in ("bands", "stretch", "value_range"))


def wants_raster(path: Path, args: argparse.Namespace) -> bool:
    """Whether ``path`` goes through GDAL: a raster extension, or a raster option given."""
    return path.suffix.lower() in RASTER_EXTENSIONS or _raster_options(args)


def geo_check(paths: list[Path], args: argparse.Namespace) -> tuple[bool, str | None, str | None]:
    """``(use_gdal, error, note)`` for ``paths``: whether rasters go through GDAL (the geo extra is
    installed), an error when a raster option asks for GDAL without it, and otherwise a note when
    raster files will be read as plain images (OpenCV: no georeference, no map outputs)."""
    if geo_available():
        return True, None, None
    if _raster_options(args):
        return False, f"--bands / --stretch / --range read rasters through GDAL: {GEO_EXTRA_HINT}", None
    count = sum(wants_raster(p, args) for p in paths)
    if not count:
        return False, None, None
    return (
        False,
        None,
        f"rasterio is not installed: {count} raster(s) read as plain images ({GEO_EXTRA_HINT})",
    )


def predict_raster_file(detector, path: Path, out: Path, args: argparse.Namespace) -> str:
    """Predict one raster and write its files under ``out``; returns the line to print (what was
    found and written). Its warnings (no georeference...) go to stderr as the command's lines.

    Raises :class:`rotdet.geo.RasterError` for a raster that cannot be used (nothing written)."""

    from rotdet.geo.predict import predict_raster

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        found = predict_raster(
            detector,
            path,
            size=args.size,
            gap=args.gap,
            batch_size=args.batch_size,
            score_thr=args.score_thr,
            bands=args.bands,
            stretch=args.stretch,
            value_range=args.value_range,
            progress=True,
            image_id=path.stem,
            preview_size=max(0, args.preview_size),
        )
    # All or nothing: what can fail (GDAL's GeoPackage, PNG encoding, reprojection) is done in
    # memory or into temporaries that are renamed together once all are complete.
    stem = path.stem
    payloads = {".gpkg": found.to_gpkg_bytes()}
    if found.preview is not None:
        ok, png = cv2.imencode(".png", found.draw_preview())
        if not ok:  # pragma: no cover - encoding a uint8 BGRA image as PNG does not fail
            raise RuntimeError(f"cannot encode the preview of {path}")
        payloads["_preview.png"] = png.tobytes()
    written = []
    with contextlib.ExitStack() as files:
        if found.crs_wkt is not None:
            found.write_geojson(files.enter_context(atomic_write(out / f"{stem}.geojson", "w")))
            written.append(".geojson")
        for suffix, data in payloads.items():
            files.enter_context(atomic_write(out / f"{stem}{suffix}", "wb")).write(data)
    found.write_dota_txt(out / f"{stem}.txt")
    found.write_json(out / f"{stem}.json")
    written += [".gpkg", ".txt", ".json"] + (["_preview.png"] if found.preview is not None else [])
    elapsed = time.perf_counter() - start
    where = found.crs_name or ("no CRS" if found.georeferenced else "pixel coordinates")
    skipped = f", {found.skipped_windows} nodata skipped" if found.skipped_windows else ""
    listing = ",".join(written)
    # The warnings (no georeference...) as the command's own lines, not Python's warning format.
    for w in caught:
        tqdm.write(f"rotdet predict: {w.message}", file=sys.stderr)
    return (
        f"{path.name}: {len(found)} detection(s) in {elapsed:.2f} s ({found.windows} window(s){skipped}; "
        f"{where}; {found.scaling}) -> {out / stem}{{{listing}}}"
    )
