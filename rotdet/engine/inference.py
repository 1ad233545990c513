"""Running a detector on images of any size: :class:`Detector`, whose result is
:class:`~rotdet.structures.RotatedDetections`.

::

    det = Detector.from_config("rotated_atss_obb_r50_fpn_1x_dota_le90", "atss_le90.pth")
    found = det.predict("P0006.png")          # a path, or a BGR uint8 [H, W, 3] array
    found.write_dota_txt("P0006.txt")

An image that fits in one window (both sides <= ``size``, by default the config's test scale) is
run whole, exactly as the test pipeline runs a dataset image. A larger image is cut as
``rotdet split`` (mmrotate's ``img_split.py``) cuts DOTA: windows of ``size`` with overlap ``gap``
(:func:`rotdet.data.split.sliding_windows`), border windows padded bottom/right with the split
tool's BGR mean; each window goes through the test pipeline, the model sees at most ``batch_size``
windows at a time (so a 10,000 x 10,000 px scene fits in memory: only one batch of windows exists
at once, and detections go to the CPU after each batch), and the detections are shifted back and
merged by class-wise rotated NMS at IoU 0.1, the rule of mmrotate's ``merge_det``
(:func:`rotdet.data.merge.merge_patch_detections`).

The windows come from :func:`plan_windows` and go through :meth:`Detector.detect_windows`, which
takes ``(window, patch)`` pairs from any source: :meth:`Detector.predict_raster`
(:mod:`rotdet.geo`, the ``geo`` extra) feeds it windows read one by one from a GeoTIFF.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rotdet.configs import apply_overrides, load_config
from rotdet.data.dataset import collate, format_results
from rotdet.data.merge import merge_windows
from rotdet.data.split import SplitConfig, crop_patch, sliding_windows
from rotdet.data.transforms import build_pipeline, load_image
from rotdet.engine.checkpoint import CheckpointError, checkpoint_config, checkpoint_origin, load_checkpoint
from rotdet.engine.data import config_pipeline, resolve_classes
from rotdet.models.detectors import R3Det
from rotdet.models.factory import build_model
from rotdet.models.heads import TestConfig
from rotdet.models.mmrotate_import import load_weights
from rotdet.structures.detections import RotatedDetections

if TYPE_CHECKING:  # rotdet.geo needs rasterio (the "geo" extra): imported only by predict_raster
    from rotdet.geo.predict import RasterDetections

__all__ = [
    "MERGE_IOU_THR",
    "Detections",
    "Detector",
    "check_window",
    "default_device",
    "default_gap",
    "plan_windows",
]

# mmrotate's merge_det: patch detections of one image are merged by class-wise NMS at this IoU.
MERGE_IOU_THR = 0.1
# The split tool's padding of border patches (BGR); the models were trained on patches padded so.
PATCH_PADDING: tuple[int, ...] = tuple(SplitConfig().padding_value)
# DOTA's single-scale split: windows of 1024 overlapping by 200; other sizes keep that proportion.
DOTA_WINDOW, DOTA_GAP = 1024, 200


def default_gap(size: int) -> int:
    """The overlap for windows of ``size``: DOTA's 200 at 1024, in proportion otherwise."""
    return int(size) * DOTA_GAP // DOTA_WINDOW


# The detections of an image are :class:`rotdet.structures.RotatedDetections`; this name is kept for
# code written against rotdet 0.1 (the same class).
Detections = RotatedDetections


def check_window(size: int, gap: int, batch_size: int) -> None:
    """ValueError unless ``size >= 32``, ``0 <= gap < size`` and ``batch_size >= 1``."""
    if size < 32:
        raise ValueError(f"window size must be at least 32 px, got {size}")
    if not 0 <= gap < size:
        raise ValueError(f"gap must be in [0, window size {size}), got {gap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def plan_windows(width: int, height: int, size: int, gap: int) -> tuple[np.ndarray, bool]:
    """The windows :meth:`Detector.predict` runs on a ``width`` x ``height`` image: int64 [K, 4]
    ``(x0, y0, x1, y1)`` and whether the image is run whole (both sides <= ``size``: one window, the
    image itself, unpadded), else :func:`rotdet.data.split.sliding_windows` (border windows reach
    past the image and are padded with :data:`PATCH_PADDING`)."""
    if height <= size and width <= size:
        return np.array([[0, 0, width, height]], dtype=np.int64), True
    return sliding_windows(width, height, [size], [gap]), False


def default_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device; None is CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_config(config: str | os.PathLike | Mapping, overrides) -> dict:
    """The config dict (a name, a YAML path or a dict), with ``overrides`` applied and the backbone's
    ImageNet download switched off: the weights come from a checkpoint, or the model is untrained."""
    if isinstance(config, Mapping):
        cfg = apply_overrides(copy.deepcopy(dict(config)), overrides)
    else:
        cfg = load_config(config, overrides)
    cfg["model"]["backbone"]["pretrained"] = False
    return cfg


def _config_label(cfg: Mapping) -> str:
    return str(cfg.get("name", "<config dict>"))


class Detector:
    """A detection model ready for inference: the network (eval mode, on ``device``), its config,
    class names and angle version. Build one with :meth:`from_config` or :meth:`from_checkpoint`.

    Attributes:
        model: the :mod:`rotdet.models` detector.
        cfg: the resolved config dict.
        class_names: label ``i`` is ``class_names[i]``.
        angle_version: the boxes' angle convention.
        device: where the model runs.
        window_size: default sliding-window size (the long side of ``data.img_scale``).
    """

    def __init__(self, model: nn.Module, cfg: Mapping, device: str | torch.device | None = None) -> None:
        self.cfg = dict(cfg)
        self.device = default_device(device)
        self.model = model.to(self.device).eval()
        self.class_names = resolve_classes(self.cfg)
        self.angle_version = str(self.cfg["angle_version"])
        self.window_size = int(max(self.cfg["data"]["img_scale"]))
        # The dataset's test pipeline without its file loading: RResize, Normalize, Pad.
        steps = [s for s in config_pipeline(self.cfg, train=False) if s["type"] != "LoadImage"]
        self._transform = build_pipeline(steps)

    def optimize(self, fuse_bn: bool = True, channels_last: bool = True) -> Detector:
        """Run faster from now on: BatchNorms folded into the convolutions and channels-last layout
        (:func:`rotdet.models.fast_inference.optimize_for_inference`; the CLI's ``--fast``). The
        detections equal the default path's up to float rounding (about 1e-5 on the logits), not bit
        for bit. Returns ``self``; its ``model`` is then for inference only."""
        from rotdet.models.fast_inference import optimize_for_inference

        optimize_for_inference(self.model, fuse_bn=fuse_bn, channels_last=channels_last)
        return self

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        config: str | os.PathLike | Mapping,
        checkpoint: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        overrides: Sequence[str] | Mapping | None = None,
    ) -> Detector:
        """A detector from a config (bundled name, YAML path or dict) and optional weights.

        ``checkpoint``: a rotdet checkpoint or an mmrotate 0.3.4 one (``.pth``, or a bare state
        dict). Without it the model is untrained (a warning says so); ImageNet weights are never
        downloaded. A checkpoint that does not fit the config raises :class:`CheckpointError`
        naming the file and the config.
        """
        cfg = _resolve_config(config, overrides)
        ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None
        return cls._build(cfg, ckpt, checkpoint, device)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> Detector:
        """A detector from a checkpoint that carries its config (rotdet training checkpoints and
        ``rotdet convert`` outputs); for others (mmrotate's) use :meth:`from_config`."""
        ckpt = load_checkpoint(path)
        cfg = checkpoint_config(ckpt)
        if cfg is None:
            raise CheckpointError(
                f"{path} carries no config (an mmrotate checkpoint?); use "
                f"Detector.from_config(CONFIG, {str(path)!r}) with the config it was trained with"
            )
        try:
            cfg = _resolve_config(cfg, None)
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: cannot use the config it names: {exc}") from None
        return cls._build(cfg, ckpt, path, device)

    @classmethod
    def from_export(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> Detector:
        """A detector on an exported graph (``rotdet export``: a ``model.onnx`` / ``model.pt2`` or
        its folder); same :meth:`predict`, no PyTorch model (see :mod:`rotdet.export`)."""
        from rotdet.export.runtime import ExportedDetector

        return ExportedDetector(path, device)

    @classmethod
    def _build(
        cls, cfg: dict, ckpt: dict | None, path: str | os.PathLike | None, device: str | torch.device | None
    ) -> Detector:
        model = build_model(cfg)
        if ckpt is None:
            warnings.warn(
                f"no checkpoint given: the {_config_label(cfg)} model is untrained (random weights)",
                UserWarning,
                stacklevel=3,
            )
        else:
            try:
                load_weights(model, ckpt, strict=True)
            except ValueError as exc:
                raise CheckpointError(
                    f"checkpoint {path} does not fit config {_config_label(cfg)!r} "
                    f"(it was trained with {checkpoint_origin(ckpt)}): {exc}"
                ) from None
            names = ckpt["meta"].get("classes") or ckpt["meta"].get("CLASSES")
            if names is not None and tuple(names) != resolve_classes(cfg):
                warnings.warn(
                    f"{path} was trained with classes {tuple(names)}, the config names "
                    f"{resolve_classes(cfg)}; labels are named after the config",
                    UserWarning,
                    stacklevel=3,
                )
        return cls(model, cfg, device)

    # ------------------------------------------------------------------ inference
    def _final_head(self) -> nn.Module:
        """The head whose ``test_cfg`` makes the detections (R3Det: its last refine head)."""
        return self.model.refine_head[-1] if isinstance(self.model, R3Det) else self.model.bbox_head

    def _test_cfg(self, score_thr: float | None) -> TestConfig:
        base = self._final_head().test_cfg or TestConfig()
        return base if score_thr is None else dataclasses.replace(base, score_thr=float(score_thr))

    def _prepare_patch(self, patch: np.ndarray) -> dict:
        """A BGR patch through the test pipeline, formatted as a dataset sample (``img``, ``img_metas``)."""
        # The keys LoadImage records for a freshly read image.
        results = {
            "img": patch,
            "ori_shape": patch.shape,
            "img_shape": patch.shape,
            "pad_shape": patch.shape,
            "scale_factor": np.ones(4, np.float32),
        }
        return format_results(self._transform(results))

    def _detect_batch(self, patches: list[np.ndarray], cfg: TestConfig) -> list[RotatedDetections]:
        """The model's detections (window pixels) of BGR patches, one forward pass."""
        batch = collate([self._prepare_patch(p) for p in patches])
        return self.model.predict(batch["img"].to(self.device), batch["img_metas"], cfg=cfg)

    @torch.no_grad()
    def predict(
        self,
        image: str | os.PathLike | np.ndarray,
        size: int | None = None,
        gap: int | None = None,
        batch_size: int = 4,
        score_thr: float | None = None,
        progress: bool = False,
        image_id: str | None = None,
    ) -> RotatedDetections:
        """Detect objects in one image of any size.

        Args:
            image: a file path, or a BGR uint8 [H, W, 3] array (OpenCV's layout).
            size: sliding-window size in pixels (default :attr:`window_size`); an image with both
                sides <= ``size`` is run whole.
            gap: overlap of neighbouring windows, ``0 <= gap < size`` (default :func:`default_gap`:
                200 at 1024, DOTA's split).
            batch_size: windows per forward pass (the most the device holds at once).
            score_thr: overrides the config's ``test_cfg.score_thr`` when given.
            progress: show a progress bar over the batches of windows (when there is more than one).
            image_id: the name the detections carry (default: the file's stem, ``"image"`` for an array).

        Returns:
            :class:`~rotdet.structures.RotatedDetections` (float32 numpy) in original-image pixels,
            by descending score, with the model's classes and angle version.
        """
        if isinstance(image, np.ndarray):
            img, default_id = image, "image"
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"an image array must be uint8 [H, W, 3] (BGR), got {img.dtype} {img.shape}")
        else:
            img, default_id = load_image(image), Path(image).stem
        image_id = image_id if image_id is not None else default_id
        height, width = img.shape[:2]
        size = int(size) if size is not None else self.window_size
        gap = int(gap) if gap is not None else default_gap(size)
        check_window(size, gap, batch_size)
        windows, whole = plan_windows(width, height, size, gap)
        padding = None if whole else PATCH_PADDING
        # Cut lazily, batch by batch: the patches of a huge scene never exist all at once.
        patches = ((w, crop_patch(img, w, padding)) for w in windows)
        found = self.detect_windows(
            patches,
            whole=whole,
            batch_size=batch_size,
            score_thr=score_thr,
            progress=progress and len(windows) > batch_size,
            total=len(windows),
            desc=f"{image_id} windows",
        )
        return found.describe(image_id=image_id, image_size=(height, width))

    @torch.no_grad()
    def detect_windows(
        self,
        patches: Iterable[tuple[Sequence[int], np.ndarray]],
        whole: bool = False,
        batch_size: int = 4,
        score_thr: float | None = None,
        progress: bool = False,
        total: int | None = None,
        desc: str = "windows",
    ) -> RotatedDetections:
        """Detect in ``(window, patch)`` pairs and merge: the sliding-window core of :meth:`predict`,
        for any source of patches (an array in memory, a raster read window by window).

        Args:
            patches: ``((x0, y0, x1, y1), BGR uint8 [h, w, 3])`` pairs, consumed ``batch_size`` at a
                time (a generator's patches are made only when their batch runs).
            whole: the single patch is the whole image (:func:`plan_windows`): its detections are
                the model's, unmerged.
            batch_size, score_thr, progress: as in :meth:`predict`; ``total`` and ``desc`` label the
                progress bar.

        Returns:
            float32 numpy detections in image pixels (shifted by each window's origin), merged by
            :func:`rotdet.data.merge.merge_windows` (class-wise rotated NMS at
            :data:`MERGE_IOU_THR`, mmrotate's ``merge_det``), by descending score.
        """
        cfg = self._test_cfg(score_thr)
        bar = tqdm(total=total, desc=desc, unit="win", leave=False, disable=not progress)
        parts: list[tuple[RotatedDetections, tuple[int, int]]] = []
        iterator = iter(patches)
        while chunk := list(itertools.islice(iterator, batch_size)):
            outputs = self._detect_batch([patch for _, patch in chunk], cfg)
            for (window, _), out in zip(chunk, outputs, strict=True):
                parts.append((out.astype(np.float32), (int(window[0]), int(window[1]))))
            bar.update(len(chunk))
        bar.close()
        meta = {"angle_version": self.angle_version, "classes": self.class_names}
        if whole and len(parts) == 1:
            # One window, the image itself: the model's own NMS made these, already by descending score.
            return parts[0][0].describe(**meta)
        merged = merge_windows(parts, MERGE_IOU_THR)
        if merged is None:  # no patch at all (a raster whose windows are all nodata)
            return RotatedDetections.empty(**meta)
        # float32 again: the merge's float64 holds the float32 values exactly
        return merged.astype(np.float32).describe(**meta)

    def predict_raster(self, path: str | os.PathLike, **kwargs) -> RasterDetections:
        """Detect objects in a GeoTIFF (or any raster GDAL reads), window by window, and map them to
        the raster's CRS: :func:`rotdet.geo.predict.predict_raster` (needs ``pip install
        "rotdet[geo]"``; the keyword arguments are documented there)."""
        from rotdet.geo.predict import predict_raster

        return predict_raster(self, path, **kwargs)

    def __repr__(self) -> str:
        name, model = _config_label(self.cfg), type(self.model).__name__
        return (
            f"Detector({name}, {model}, {len(self.class_names)} classes, {self.angle_version}, {self.device})"
        )
