"""Detection on rasters larger than memory: :func:`predict_raster`.

::

    det = Detector.from_checkpoint("work_dirs/demo/latest.pth")
    found = det.predict_raster("scene.tif", bands=(3, 2, 1), stretch=(2, 98))
    found.polygons            # float64 [K, 4, 2] in the raster's CRS
    found.write_geojson("scene.geojson"); found.write_gpkg("scene.gpkg")

The raster is cut into the windows :meth:`Detector.predict` would cut an image of its size into
(:func:`~rotdet.engine.inference.plan_windows`: same size, gap, padding), each window is read by
:class:`~rotdet.geo.raster.RasterReader` only when its batch is about to run (on CUDA, one batch is
read ahead by a background thread while the model runs the current one), and the windows go through
:meth:`Detector.detect_windows`, the same batching and rotated-NMS merge as ``predict``. So an 8-bit
RGB GeoTIFF gives exactly the detections ``predict`` gives for the same pixels as a PNG. Windows
without a valid pixel are skipped and counted. What is kept in memory: the windows in flight, the
detections, and a downscaled preview when asked for.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from rotdet.data.split import crop_patch
from rotdet.engine.inference import PATCH_PADDING, check_window, default_gap, plan_windows
from rotdet.geo import RasterError
from rotdet.geo.raster import RasterReader, raster_env
from rotdet.geo.vector import RasterDetections, metres_per_unit

__all__ = ["DEFAULT_PREVIEW_SIZE", "RasterDetections", "predict_raster"]

DEFAULT_PREVIEW_SIZE = 2048


class _Preview:
    """A BGRA picture of the raster, at most ``max_side`` px on its long side, painted window by
    window as they are read (alpha 0 where nothing valid was read)."""

    def __init__(self, height: int, width: int, max_side: int) -> None:
        self.scale = min(1.0, max_side / max(height, width))
        self.image = np.zeros(
            (max(1, round(height * self.scale)), max(1, round(width * self.scale)), 4), np.uint8
        )

    def paste(self, x0: int, y0: int, image: np.ndarray, valid: np.ndarray | None) -> None:
        s, (h, w) = self.scale, image.shape[:2]
        px0, py0 = math.floor(x0 * s), math.floor(y0 * s)
        px1 = min(self.image.shape[1], max(px0 + 1, round((x0 + w) * s)))
        py1 = min(self.image.shape[0], max(py0 + 1, round((y0 + h) * s)))
        size = (px1 - px0, py1 - py0)
        if size != (w, h):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        alpha = np.full(image.shape[:2], 255, np.uint8)
        if valid is not None:
            alpha = valid.astype(np.uint8) * 255
            if size != (w, h):
                alpha = np.where(cv2.resize(alpha, size, interpolation=cv2.INTER_AREA) >= 128, 255, 0)
        self.image[py0:py1, px0:px1, :3] = image
        self.image[py0:py1, px0:px1, 3] = alpha


def _prefetch(items: Iterable, depth: int) -> Iterator:
    """The items of ``items``, made by a background thread at most ``depth`` ahead of the
    consumer. An exception in the thread is raised here; closing this generator stops the thread."""
    done = object()
    box: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # passed to the consumer, which raises it
            put((done, exc))
            return
        put((done, None))

    thread = threading.Thread(target=work, name="rotdet-raster-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = box.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _georeference(reader: RasterReader) -> dict[str, Any]:
    """The map fields of :class:`RasterDetections` for ``reader``'s raster, warning when it has no
    (affine) georeference."""
    ds, crs, transform = reader.dataset, reader.crs, reader.transform
    has_transform = not transform.is_identity
    if not has_transform:
        how = "ground control points" if ds.gcps[0] else ("RPCs" if ds.rpcs else None)
        why = f"it is georeferenced by {how}, not an affine transform" if how else "it has no georeference"
        warnings.warn(
            f"{reader.name}: {why}: detections stay in pixel coordinates (no GeoJSON)",
            UserWarning,
            stacklevel=3,
        )
    elif crs is None:
        warnings.warn(
            f"{reader.name}: it has a geotransform but no CRS: polygons in the map units of an "
            "unknown CRS (no GeoJSON)",
            UserWarning,
            stacklevel=3,
        )
    known = has_transform and crs is not None
    return {
        "transform": tuple(transform)[:6],
        "crs_wkt": crs.to_wkt() if known else None,
        "crs_name": crs.to_string() if known else None,
        "metres_per_unit": metres_per_unit(crs) if known else None,
        "georeferenced": has_transform,
    }


class _WindowPatches:
    """The ``(window, BGR patch)`` pairs of a raster, read one window at a time: windows with no
    valid pixel are skipped (and counted in :attr:`skipped`), nodata pixels get the split tool's
    padding value, and each read window is pasted into the preview."""

    def __init__(self, reader: RasterReader, windows: np.ndarray, padding, preview, bar) -> None:
        self.reader, self.windows, self.padding = reader, windows, padding
        self.preview, self.bar = preview, bar
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[Sequence[int], np.ndarray]]:
        for window in self.windows.tolist():
            found = self.reader.read(window)
            self.bar.update()
            if found is None:
                self.skipped += 1
                continue
            image, valid = found
            if self.preview is not None:
                self.preview.paste(window[0], window[1], image, valid)
            if valid is not None:
                image[~valid] = PATCH_PADDING
            x0, y0, x1, y1 = window
            yield window, crop_patch(image, (0, 0, x1 - x0, y1 - y0), self.padding)


def _detect(detector, read: _WindowPatches, whole: bool, batch_size: int, score_thr, prefetch: bool):
    """``detector.detect_windows`` over ``read``'s patches, read in a background thread when
    ``prefetch``."""
    source = _prefetch(iter(read), batch_size) if prefetch else iter(read)
    try:
        return detector.detect_windows(source, whole=whole, batch_size=batch_size, score_thr=score_thr)
    finally:
        if prefetch:
            source.close()


def predict_raster(
    detector,
    path: str | os.PathLike,
    size: int | None = None,
    gap: int | None = None,
    batch_size: int = 4,
    score_thr: float | None = None,
    bands: Sequence[int] | None = None,
    stretch: Sequence[float] | None = None,
    value_range: Sequence[float] | None = None,
    progress: bool = False,
    image_id: str | None = None,
    preview_size: int = 0,
    prefetch: bool | None = None,
    cache_bytes: int | None = None,
) -> RasterDetections:
    """Detect objects in a raster GDAL reads (GeoTIFF...), window by window.

    Args:
        detector: a :class:`~rotdet.engine.inference.Detector` (or any object with its
            ``detect_windows``, ``window_size``, ``class_names`` and ``angle_version``).
        path: the raster (any path GDAL opens).
        size, gap, batch_size, score_thr, progress, image_id: as in :meth:`Detector.predict`
            (``image_id`` defaults to the file's stem).
        bands: 1-based bands read as R, G, B, or one band replicated (default: the first three
            that are not alpha); stretch: ``(low, high)`` percentiles for 8-bit scaling, default
            ``(2, 98)`` for data that is not 8-bit; value_range: fixed ``(min, max)`` instead (see
            :mod:`rotdet.geo.raster`).
        preview_size: also keep a BGRA picture of the raster, at most this many pixels on its long
            side (0: none); :meth:`RasterDetections.draw_preview` draws the detections on it.
        prefetch: read the next batch of windows in a background thread while the model runs;
            default: on when the detector runs on CUDA (the CPU is then free to decode), off on
            the CPU, where the model already has the cores and the reading thread's own malloc
            arena costs memory (measured in BENCHMARKS.md).
        cache_bytes: GDAL's block cache while reading (default
            :data:`rotdet.geo.raster.DEFAULT_CACHE_BYTES`; ``GDAL_CACHEMAX`` in the environment wins).

    Returns:
        :class:`RasterDetections`: the pixel detections and their polygons in the raster's CRS.

    Raises:
        RasterError: GDAL cannot open or read the file, a band is out of range, the raster is empty
            or has no valid pixel.
    """
    size = int(size) if size is not None else int(detector.window_size)
    gap = int(gap) if gap is not None else default_gap(size)
    check_window(size, gap, batch_size)
    image_id = image_id if image_id is not None else Path(path).stem
    if prefetch is None:
        prefetch = getattr(getattr(detector, "device", None), "type", "cpu") == "cuda"
    with raster_env(cache_bytes), RasterReader(path, bands, stretch, value_range) as reader:
        geo = _georeference(reader)
        windows, whole = plan_windows(reader.width, reader.height, size, gap)
        padding = None if whole else PATCH_PADDING
        preview = _Preview(reader.height, reader.width, preview_size) if preview_size > 0 else None
        # The bar counts windows read, the skipped ones too (the model's batches lag by one at most).
        bar = tqdm(total=len(windows), desc=f"{image_id} windows", unit="win", leave=False,
                   disable=not progress or len(windows) <= batch_size)  # fmt: skip
        read = _WindowPatches(reader, windows, padding, preview, bar)
        with contextlib.closing(bar):
            detected = _detect(detector, read, whole, batch_size, score_thr, prefetch)
        if read.skipped == len(windows):
            raise RasterError(
                f"{reader.name}: no valid pixel: all {len(windows)} window(s) are nodata (or transparent)"
            )
        pixel = detected.describe(image_id=image_id, image_size=(reader.height, reader.width))
        return RasterDetections(
            pixel,
            **geo,
            windows=len(windows),
            skipped_windows=read.skipped,
            bands=reader.bands,
            scaling=reader.scaling.rule,
            source=reader.name,
            preview=None if preview is None else preview.image,
            preview_scale=1.0 if preview is None else preview.scale,
        )
