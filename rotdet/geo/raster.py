"""A raster read window by window through rasterio: three bands as BGR uint8, nodata masked.

Only the window asked for is read (GDAL decodes the blocks it touches; its block cache is bounded
by :func:`raster_env`), so a 50,000 x 50,000 GeoTIFF costs the memory of a window, not of the image.

Rules, the same for every window of a raster so that no seam appears between windows:

* **Bands** (1-based, as GDAL counts): ``bands=(r, g, b)`` or one band, replicated to three; by
  default the first three bands that are not an alpha band, or the first one replicated when there
  are fewer. The model gets them as BGR, like an image read by OpenCV.
* **8 bits**: 8-bit data is taken as is. Otherwise (or when asked) each band is scaled linearly,
  ``v8 = round(clip((v - low) / (high - low), 0, 1) * 255)``, with ``low, high`` either a fixed
  ``value_range`` (every band) or, per band, the ``stretch`` percentiles (default 2 and 98) of its
  valid pixels in a sample read once before the first window: the whole raster when it has at most
  :data:`SAMPLE_PIXELS` pixels, else its smallest overview with at least that many pixels (or the
  largest overview), else an 8 x 8 grid of 256 px tiles spread over it.
* **Nodata**: a pixel is invalid when GDAL's mask says so in every chosen band (a nodata value, an
  alpha band, an internal or ``.msk`` mask). A window without a valid pixel is reported as such
  (the caller skips it); invalid pixels of other windows get the split tool's padding colour,
  the colour the border patches are padded with.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from rotdet.geo import RasterError

__all__ = [
    "DEFAULT_STRETCH",
    "SAMPLE_PIXELS",
    "RasterReader",
    "Scaling",
    "raster_env",
]

DEFAULT_STRETCH: tuple[float, float] = (2.0, 98.0)
# The percentiles of a stretch come from at most about this many pixels (per band).
SAMPLE_PIXELS = 4_000_000
_SAMPLE_GRID, _SAMPLE_TILE = 8, 256
# GDAL's block cache while rotdet reads (its default is 5 % of the RAM, which a large raster fills):
# enough for the blocks one column of 1024 px windows shares with the next on a 10,000 px raster.
DEFAULT_CACHE_BYTES = 64 * 2**20


def raster_env(cache_bytes: int | None = None) -> rasterio.Env:
    """A ``rasterio.Env`` whose GDAL block cache holds at most ``cache_bytes`` (default
    :data:`DEFAULT_CACHE_BYTES`; a ``GDAL_CACHEMAX`` set in the environment wins)."""
    if cache_bytes is None and "GDAL_CACHEMAX" in os.environ:
        return rasterio.Env()
    return rasterio.Env(GDAL_CACHEMAX=int(cache_bytes or DEFAULT_CACHE_BYTES))


@dataclass(frozen=True)
class Scaling:
    """How band values become 8 bits: ``round(clip((v - low) / (high - low), 0, 1) * 255)`` per
    band (``low`` / ``high`` in the order of the chosen bands), or as is (``low is None``)."""

    low: tuple[float, ...] | None
    high: tuple[float, ...] | None
    rule: str

    @property
    def identity(self) -> bool:
        return self.low is None

    def apply(self, data: np.ndarray) -> np.ndarray:
        """``data`` [C, H, W] (C = len(low)) to uint8 [C, H, W]."""
        if self.identity:
            return data if data.dtype == np.uint8 else np.clip(data, 0, 255).astype(np.uint8)
        low = np.asarray(self.low, np.float32)[:, None, None]
        high = np.asarray(self.high, np.float32)[:, None, None]
        scaled = (data.astype(np.float32) - low) * (255.0 / (high - low))
        np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        return np.rint(np.clip(scaled, 0.0, 255.0, out=scaled), out=scaled).astype(np.uint8)


def parse_bands(bands: Sequence[int] | None, count: int, colorinterp: Sequence, name: str) -> tuple[int, ...]:
    """The three 1-based bands to read as R, G, B (see the module's rules)."""
    if bands is None:
        data = [i + 1 for i, c in enumerate(colorinterp) if c != ColorInterp.alpha] or [1]
        return tuple(data[:3]) if len(data) >= 3 else (data[0],) * 3
    bands = tuple(int(b) for b in bands)
    if len(bands) not in (1, 3):
        raise RasterError(f"{name}: give one band or three (R, G, B), not {len(bands)}: {bands}")
    for b in bands:
        if not 1 <= b <= count:
            raise RasterError(f"{name}: band {b} is out of range: the raster has {count} band(s) (1-{count})")
    return bands * 3 if len(bands) == 1 else bands


class RasterReader:
    """A raster open for window reads (a context manager; :meth:`close` releases the file).

    Args:
        path: any path or URL GDAL opens (``/vsizip/...`` and the like included).
        bands: 1-based bands for R, G, B (or one, replicated); default: see the module.
        stretch: ``(low, high)`` percentiles for the 8-bit scaling (default
            :data:`DEFAULT_STRETCH` for data that is not 8-bit).
        value_range: a fixed ``(min, max)`` for the 8-bit scaling instead of percentiles.

    Attributes:
        width, height: the raster's size in pixels.
        bands: the bands read as R, G, B.
        scaling: the :class:`Scaling` applied to every window.
        crs, transform: the raster's (``crs`` None without one).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        bands: Sequence[int] | None = None,
        stretch: Sequence[float] | None = None,
        value_range: Sequence[float] | None = None,
    ) -> None:
        self.name = str(path)
        if stretch is not None and value_range is not None:
            raise ValueError("give a stretch (percentiles) or a value range, not both")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # predict_raster says it
                self.dataset = rasterio.open(path)
        except RasterioError as exc:
            raise RasterError(f"{self.name}: GDAL cannot open it ({exc})") from None
        try:
            self._setup(bands, stretch, value_range)
        except BaseException:
            self.close()
            raise

    def _setup(self, bands, stretch, value_range) -> None:
        ds = self.dataset
        self.width, self.height = int(ds.width), int(ds.height)
        if self.width == 0 or self.height == 0 or ds.count == 0:
            raise RasterError(f"{self.name}: empty raster ({self.width} x {self.height}, {ds.count} band(s))")
        self.bands = parse_bands(bands, ds.count, ds.colorinterp, self.name)
        # Each band is read once even when replicated; _order picks R, G, B among them as B, G, R.
        self._read = tuple(dict.fromkeys(self.bands))
        self._order = [self._read.index(b) for b in reversed(self.bands)]
        dtypes = {ds.dtypes[b - 1] for b in self._read}
        if any(np.dtype(d).kind == "c" for d in dtypes):
            raise RasterError(f"{self.name}: complex-valued bands cannot be shown as an image")
        self._out_dtype = dtypes.pop() if len(dtypes) == 1 else "float64"
        self.dtype = np.dtype(self._out_dtype)
        flags = [ds.mask_flag_enums[b - 1] for b in self._read]
        # A pixel is valid when it is in any chosen band: a band without a mask makes all valid.
        self.masked = not any(MaskFlags.all_valid in f for f in flags)
        # Nodata values compare against the data already read; alpha and mask bands are read.
        self._nodata = [
            ds.nodatavals[b - 1] if f == [MaskFlags.nodata] else None
            for b, f in zip(self._read, flags, strict=True)
        ]
        self._mask_band = next(
            (
                b
                for b, f in zip(self._read, flags, strict=True)
                if MaskFlags.all_valid not in f and f != [MaskFlags.nodata]
            ),
            None,
        )
        self.scaling = self._scaling(stretch, value_range)
        self.crs = ds.crs
        self.transform = ds.transform

    # ------------------------------------------------------------------ scaling
    def _scaling(self, stretch, value_range) -> Scaling:
        n = len(self._read)
        if value_range is not None:
            lo, hi = (float(v) for v in value_range)
            if not hi > lo:
                raise ValueError(f"value range: max must exceed min, got {lo}, {hi}")
            return Scaling((lo,) * n, (hi,) * n, f"linear {lo:g}..{hi:g} -> 0..255 (every band)")
        if stretch is None and self.dtype == np.uint8:
            return Scaling(None, None, "8-bit, as is")
        p_lo, p_hi = (float(v) for v in (stretch if stretch is not None else DEFAULT_STRETCH))
        if not 0 <= p_lo < p_hi <= 100:
            raise ValueError(f"stretch percentiles must satisfy 0 <= low < high <= 100, got {p_lo}, {p_hi}")
        data, valid = self._sample()
        lows, highs = [], []
        for i in range(n):
            values = (
                data[i][valid & np.isfinite(data[i])] if valid is not None else data[i][np.isfinite(data[i])]
            )
            if values.size == 0:
                raise RasterError(
                    f"{self.name}: no valid pixel to compute the stretch from: the raster is all nodata"
                )
            lo, hi = np.percentile(values.astype(np.float64), [p_lo, p_hi])
            lows.append(float(lo))
            highs.append(float(hi) if hi > lo else float(lo) + 1.0)  # a flat band: anything above is 255
        return Scaling(
            tuple(lows),
            tuple(highs),
            f"percentiles {p_lo:g}-{p_hi:g} per band -> 0..255 "
            + ", ".join(
                f"band {b}: {lo:g}..{hi:g}" for b, lo, hi in zip(self._read, lows, highs, strict=True)
            ),
        )

    def _sample(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Values [C, N] of the bands read and their validity [C... N] (None: all valid)."""
        ds, h, w = self.dataset, self.height, self.width
        if h * w <= SAMPLE_PIXELS:
            return self._read_flat([Window(0, 0, w, h)])
        factors = ds.overviews(self._read[0])
        if factors:
            fits = [f for f in sorted(factors) if math.ceil(h / f) * math.ceil(w / f) <= SAMPLE_PIXELS]
            f = fits[0] if fits else max(factors)
            return self._read_flat([Window(0, 0, w, h)], out_shape=(math.ceil(h / f), math.ceil(w / f)))
        tile_h, tile_w = min(_SAMPLE_TILE, h), min(_SAMPLE_TILE, w)
        ys = np.linspace(0, h - tile_h, _SAMPLE_GRID).round().astype(int)
        xs = np.linspace(0, w - tile_w, _SAMPLE_GRID).round().astype(int)
        windows = [
            Window(int(x), int(y), tile_w, tile_h) for y in dict.fromkeys(ys) for x in dict.fromkeys(xs)
        ]
        data, valid = self._read_flat(windows)
        if valid is not None and not valid.any():
            # The tiles missed the valid part (a small island in a nodata sea): a decimated read of all.
            f = math.ceil(math.sqrt(h * w / SAMPLE_PIXELS))
            return self._read_flat([Window(0, 0, w, h)], out_shape=(math.ceil(h / f), math.ceil(w / f)))
        return data, valid

    def _read_flat(self, windows, out_shape=None) -> tuple[np.ndarray, np.ndarray | None]:
        datas, valids = [], []
        for win in windows:
            data, valid = self._read_raw(win, out_shape)
            datas.append(data.reshape(len(self._read), -1))
            valids.append(None if valid is None else valid.reshape(-1))
        data = np.concatenate(datas, axis=1)
        if all(v is None for v in valids):
            return data, None
        return data, np.concatenate(
            [np.ones(d.shape[1], bool) if v is None else v for d, v in zip(datas, valids, strict=True)]
        )

    # ------------------------------------------------------------------ windows
    def _read_raw(self, win: Window, out_shape=None) -> tuple[np.ndarray, np.ndarray | None]:
        """The bands read [C, h, w] (native values) and the valid pixels [h, w] (None: all valid)."""
        ds = self.dataset
        shape = None if out_shape is None else (len(self._read), *out_shape)
        try:
            data = ds.read(list(self._read), window=win, out_shape=shape, out_dtype=self._out_dtype)
            if not self.masked:
                return data, None
            valid = np.zeros(data.shape[1:], bool)
            for i, nodata in enumerate(self._nodata):
                if nodata is not None:
                    valid |= ~np.isnan(data[i]) if np.isnan(nodata) else data[i] != nodata
            if self._mask_band is not None:
                mshape = None if out_shape is None else tuple(out_shape)
                valid |= ds.read_masks(self._mask_band, window=win, out_shape=mshape) > 0
        except RasterioError as exc:
            raise RasterError(f"{self.name}: cannot read {win!r} ({exc})") from None
        return data, valid

    def read(self, window: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The part of ``window`` ``(x0, y0, x1, y1)`` inside the raster as BGR uint8 [h, w, 3] and
        its valid pixels (bool [h, w], None when all are valid), or None when none is valid."""
        x0, y0, x1, y1 = (int(v) for v in window)
        x1, y1 = min(x1, self.width), min(y1, self.height)
        data, valid = self._read_raw(Window(x0, y0, x1 - x0, y1 - y0))
        if valid is not None:
            if not valid.any():
                return None
            if valid.all():
                valid = None
        image = self.scaling.apply(data)[self._order]
        return np.ascontiguousarray(image.transpose(1, 2, 0)), valid

    def close(self) -> None:
        ds = getattr(self, "dataset", None)
        if ds is not None and not ds.closed:
            ds.close()

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        size = f"{self.width} x {self.height}"
        return f"RasterReader({self.name!r}, {size}, bands {self.bands}, {self.scaling.rule})"
