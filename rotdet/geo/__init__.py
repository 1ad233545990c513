"""Map coordinates: GeoTIFFs (and other rasters GDAL reads) in, GeoJSON and GeoPackage out.

* :mod:`rotdet.geo.raster`: :class:`~rotdet.geo.raster.RasterReader`, a raster read window by
  window (band choice, the one 8-bit scaling rule for all windows, nodata and alpha masks);
* :mod:`rotdet.geo.vector`: :class:`~rotdet.geo.vector.RasterDetections`, detections as polygons in
  the raster's CRS (through its affine transform), GeoJSON in WGS84 and a GeoPackage layer;
* :mod:`rotdet.geo.predict`: :func:`~rotdet.geo.predict.predict_raster` (what
  :meth:`rotdet.Detector.predict_raster` runs) and the downscaled preview;
* :mod:`rotdet.cli.predict_raster`: the raster part of ``rotdet predict``.

They need the ``geo`` extra (``pip install -e ".[geo]"``: rasterio, whose wheel carries GDAL, and
pyogrio for the GeoPackage). This package itself imports neither, nor does
:mod:`rotdet.cli.predict_raster`: nothing geospatial is loaded until a raster is read.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["GEO_EXTRA_HINT", "RASTER_EXTENSIONS", "RasterError", "geo_available", "require"]

# Files that go through GDAL (rotdet predict) without --bands / --stretch / --range saying so.
RASTER_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".ntf")

GEO_EXTRA_HINT = 'pip install "rotdet[geo]" (or -e ".[geo]" in a checkout)'


class RasterError(ValueError):
    """A raster that cannot be used as asked: the message names the file and says why (GDAL cannot
    open it, a band out of range, empty, all nodata...)."""


def geo_available() -> bool:
    """Whether rasterio and pyogrio can be imported (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("rasterio", "pyogrio"))


def require(name: str, what: str = "reading rasters") -> ModuleType:
    """``import name``, or ModuleNotFoundError saying which extra brings it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"{what} needs {name}: {GEO_EXTRA_HINT}", name=name) from exc
