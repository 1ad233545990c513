"""Detections of a raster on the map: polygons in its CRS, GeoJSON (WGS84) and a GeoPackage layer.

A detection's corners go through the raster's affine transform, ``X = a x + b y + c``,
``Y = d x + e y + f`` (in float64, from the float32 pixel corners), with GDAL's pixel convention:
``(0, 0)`` is the top-left corner of the top-left pixel, the convention in which the test
pipeline's resize scales the boxes. The transform is exact; no bounding box is re-projected.
Rotated and sheared geotransforms are handled the same way. Polygons are then reprojected point by
point to WGS84 (lon, lat) for GeoJSON (RFC 7946: no ``crs`` member, closed rings, exterior rings
counterclockwise). In a projected CRS each detection also gets the size of its rotated box on the
ground: the lengths of its two sides and its area, in metres.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from rotdet.fileio import atomic_write, atomic_write_bytes
from rotdet.structures.detections import RotatedDetections

__all__ = ["RasterDetections", "closed_rings", "polygon_wkb"]

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
GPKG_LAYER = "detections"


def closed_rings(polygons: np.ndarray) -> np.ndarray:
    """[K, 4, 2] polygons to closed rings [K, 5, 2], each counterclockwise (x right, y up): first
    vertex kept, the others reversed where the signed area is negative."""
    p = np.asarray(polygons, np.float64)
    x, y = p[..., 0], p[..., 1]
    area2 = (x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1)
    p = np.where((area2 < 0)[:, None, None], p[:, [0, 3, 2, 1]], p)
    return np.concatenate([p, p[:, :1]], axis=1)


def polygon_wkb(rings: np.ndarray) -> np.ndarray:
    """Closed rings [K, N, 2] as little-endian WKB polygons (an object array of bytes)."""
    rings = np.ascontiguousarray(rings, dtype="<f8")
    header = struct.pack("<BIII", 1, 3, 1, rings.shape[1])  # little endian, Polygon, 1 ring, N points
    out = np.empty(len(rings), dtype=object)
    for i, ring in enumerate(rings):
        out[i] = header + ring.tobytes()
    return out


@dataclass
class RasterDetections:
    """The detections of one raster: in its pixels (:attr:`pixel`) and on the map.

    Attributes:
        pixel: the :class:`~rotdet.structures.RotatedDetections` in raster pixels.
        transform: the affine pixel -> CRS transform ``(a, b, c, d, e, f)`` (rasterio's order).
        crs_wkt: the raster's CRS as WKT, None without one.
        crs_name: its short name (``EPSG:32633``), None without one.
        metres_per_unit: metres per CRS unit when the CRS is projected, else None.
        georeferenced: whether :attr:`polygons` are map coordinates (False: pixel coordinates).
        windows: windows the raster was cut into; skipped_windows: those entirely nodata, not run.
        bands: the bands read as R, G, B; scaling: the 8-bit rule applied (text).
        source: the raster's path.
        preview: a downscaled BGRA picture of the raster (alpha 0 where nodata), when asked for.
        preview_scale: preview pixels per raster pixel.
    """

    pixel: RotatedDetections
    transform: tuple[float, ...] = _IDENTITY
    crs_wkt: str | None = None
    crs_name: str | None = None
    metres_per_unit: float | None = None
    georeferenced: bool = False
    windows: int = 0
    skipped_windows: int = 0
    bands: tuple[int, ...] = (1, 2, 3)
    scaling: str = ""
    source: str = ""
    preview: np.ndarray | None = None
    preview_scale: float = 1.0

    def __post_init__(self) -> None:
        self.transform = tuple(float(v) for v in self.transform[:6])

    def __len__(self) -> int:
        return len(self.pixel)

    @property
    def scores(self) -> np.ndarray:
        return self.pixel.scores

    @property
    def labels(self) -> np.ndarray:
        return self.pixel.labels

    @property
    def names(self) -> list[str]:
        return self.pixel.names

    @property
    def polygons(self) -> np.ndarray:
        """float64 [K, 4, 2]: each detection's corners (the pixel polygon's, in order) in the CRS."""
        a, b, c, d, e, f = self.transform
        p = self.pixel.polygons.astype(np.float64).reshape(-1, 4, 2)
        x, y = p[..., 0], p[..., 1]
        return np.stack([a * x + b * y + c, d * x + e * y + f], axis=-1)

    def sizes_m(self) -> np.ndarray | None:
        """float64 [K, 3]: the rotated box's two sides (along ``w``, along ``h``) and area on the
        ground in metres (m, m, m^2), or None when the CRS is not projected."""
        if self.metres_per_unit is None:
            return None
        a, b, _, d, e, _ = self.transform
        w, h, t = (self.pixel.boxes[:, i].astype(np.float64) for i in (2, 3, 4))
        cos, sin = np.cos(t), np.sin(t)
        side_w = w * np.hypot(a * cos + b * sin, d * cos + e * sin)
        side_h = h * np.hypot(-a * sin + b * cos, -d * sin + e * cos)
        area = w * h * abs(a * e - b * d)
        m = self.metres_per_unit
        return np.stack([side_w * m, side_h * m, area * m * m], axis=1)

    def lonlat(self) -> np.ndarray:
        """float64 [K, 4, 2]: :attr:`polygons` in WGS84 ``(lon, lat)``; ValueError without a CRS."""
        if not self.georeferenced or self.crs_wkt is None:
            raise ValueError(f"{self.source or 'the raster'} has no CRS: no WGS84 coordinates")
        from rasterio.crs import CRS
        from rasterio.warp import transform

        poly = self.polygons
        crs = CRS.from_wkt(self.crs_wkt)
        if crs.to_epsg() == 4326 or poly.size == 0:
            return poly  # already lon, lat (GDAL's traditional axis order)
        lon, lat = transform(crs, CRS.from_epsg(4326), poly[..., 0].ravel(), poly[..., 1].ravel())
        return np.stack([np.asarray(lon), np.asarray(lat)], axis=-1).reshape(poly.shape)

    def _features(self) -> Iterator[dict]:
        """The GeoJSON features, one at a time (a million detections never exist as dicts at once)."""
        rings = closed_rings(self.lonlat())
        sizes = self.sizes_m()
        names = self.pixel.classes
        rows = zip(
            rings,
            self.pixel.boxes.tolist(),
            self.pixel.scores.tolist(),
            self.pixel.labels.tolist(),
            strict=True,
        )
        for i, (ring, box, score, label) in enumerate(rows):
            props = {"class": names[label], "label": label, "score": score, "obb_px": box}
            if sizes is not None:
                props["width_m"], props["height_m"], props["area_m2"] = (float(v) for v in sizes[i])
            geometry = {"type": "Polygon", "coordinates": [ring.tolist()]}
            yield {"type": "Feature", "id": i, "geometry": geometry, "properties": props}

    def _collection(self) -> dict:
        """The FeatureCollection's members other than ``features``."""
        doc: dict = {"type": "FeatureCollection", "name": self.pixel.image_id}
        lonlat = self.lonlat()
        if len(lonlat):
            lon, lat = lonlat[..., 0], lonlat[..., 1]
            doc["bbox"] = [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]
        doc["rotdet"] = {  # a foreign member (RFC 7946, section 6.1): where the features come from
            "source": self.source,
            "crs": self.crs_name,
            "classes": list(self.pixel.classes),
            "angle_version": self.pixel.angle_version,
            "image_size": list(self.pixel.image_size),
        }
        return doc

    def to_geojson(self) -> dict:
        """An RFC 7946 FeatureCollection in WGS84: one Polygon per detection (a closed,
        counterclockwise ring of ``[lon, lat]``) with ``class``, ``label``, ``score``, ``obb_px``
        (the pixel box ``cx, cy, w, h, theta``, theta in radians, ``angle_version``) and, in a
        projected CRS, ``width_m``, ``height_m``, ``area_m2``; ValueError without a CRS."""
        return {**self._collection(), "features": list(self._features())}

    def write_geojson(self, path_or_file: str | os.PathLike | IO[str]) -> Path | None:
        """:meth:`to_geojson` as text, written feature by feature: to a path (atomically; returns
        it) or to an open text file."""
        if not isinstance(path_or_file, (str, os.PathLike)):
            head = json.dumps(self._collection())
            path_or_file.write(head[:-1] + ', "features": [')
            for i, feature in enumerate(self._features()):
                path_or_file.write((", " if i else "") + json.dumps(feature))
            path_or_file.write("]}")
            return None
        with atomic_write(path_or_file, "w") as f:
            self.write_geojson(f)
        return Path(path_or_file)

    def write_gpkg(self, path: str | os.PathLike, layer: str = GPKG_LAYER) -> Path:
        """:meth:`to_gpkg_bytes` to ``path`` (atomically)."""
        return atomic_write_bytes(path, self.to_gpkg_bytes(layer))

    def to_gpkg_bytes(self, layer: str = GPKG_LAYER) -> bytes:
        """A GeoPackage file with one Polygon layer in the raster's CRS (pixel coordinates and no CRS
        for a raster without one): fields ``class``, ``label``, ``score``, the pixel box ``cx_px``,
        ``cy_px``, ``w_px``, ``h_px``, ``theta`` and, in a projected CRS, ``width_m``, ``height_m``,
        ``area_m2``. GDAL (through pyogrio) builds it in memory."""
        from rotdet.geo import require

        raw = require("pyogrio.raw", "writing a GeoPackage")
        boxes = self.pixel.boxes.astype(np.float64)
        names = ["class", "label", "score", "cx_px", "cy_px", "w_px", "h_px", "theta"]
        data = [
            np.array(self.pixel.names, dtype=object),
            self.pixel.labels.astype(np.int32),
            self.pixel.scores.astype(np.float64),
            *(boxes[:, i] for i in range(5)),
        ]
        sizes = self.sizes_m()
        if sizes is not None:
            names += ["width_m", "height_m", "area_m2"]
            data += [sizes[:, 0], sizes[:, 1], sizes[:, 2]]
        buf = io.BytesIO()
        with warnings.catch_warnings():  # pyogrio's "'crs' was not provided": predict_raster said so
            warnings.simplefilter("ignore", UserWarning)
            raw.write(
                buf,
                polygon_wkb(closed_rings(self.polygons)),
                data,
                names,
                layer=layer,
                driver="GPKG",
                geometry_type="Polygon",
                crs=self.crs_wkt if self.georeferenced else None,
            )
        return buf.getvalue()

    def write_dota_txt(self, path: str | os.PathLike) -> Path:
        """DOTA lines in pixel coordinates (:meth:`RotatedDetections.write_dota_txt`)."""
        return self.pixel.write_dota_txt(path)

    def write_json(self, path: str | os.PathLike) -> Path:
        """rotdet's detections JSON in pixel coordinates (:meth:`RotatedDetections.write_json`)."""
        return self.pixel.write_json(path)

    def draw_preview(self) -> np.ndarray:
        """:attr:`preview` (BGRA) with the detections drawn; ValueError when there is none."""
        if self.preview is None:
            raise ValueError("no preview: predict_raster(..., preview_size=N) makes one")
        from rotdet.data.visualize import draw_detections

        bgr = np.ascontiguousarray(self.preview[..., :3])
        polys = self.pixel.polygons * np.float32(self.preview_scale)
        drawn = draw_detections(bgr, polys, self.pixel.labels, self.pixel.scores, self.pixel.classes)
        alpha = np.where((drawn != bgr).any(axis=2), np.uint8(255), self.preview[..., 3])
        return np.concatenate([drawn, alpha[..., None]], axis=2)

    def __repr__(self) -> str:
        where = self.crs_name or ("map units, no CRS" if self.georeferenced else "pixel coordinates")
        return (
            f"RasterDetections({self.source!r}: {len(self)} detection(s), {where}, "
            f"{self.windows} windows, {self.skipped_windows} nodata)"
        )


def metres_per_unit(crs) -> float | None:
    """Metres per unit of a projected rasterio CRS, else None."""
    if crs is None or not crs.is_projected:
        return None
    try:
        factor = float(crs.linear_units_factor[1])
    except Exception:  # a CRS whose unit PROJ does not know
        return None
    return factor if math.isfinite(factor) and factor > 0 else None
