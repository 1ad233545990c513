"""Image loading and the train/test transforms of mmrotate 0.3.4's DOTA configs.

A transform is a callable on a *results* dict and returns it; the keys follow mmdet:

* ``img``: image (BGR uint8 [H, W, 3] after loading; float32 RGB after :class:`Normalize`);
* ``gt_bboxes`` float32 [N, 5] obbs, ``gt_polygons`` float32 [N, 8], ``gt_labels`` int64 [N];
* metadata: ``filename``, ``ori_shape``, ``img_shape``, ``pad_shape``, ``scale_factor``
  (float32 [4] = w, h, w, h scales), ``flip``, ``flip_direction``, ``img_norm_cfg``.

Pipelines are data: a list of ``{"type": name, **kwargs}`` dicts built by :func:`build_pipeline`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from rotdet.data.rotate import PolyRandomRotate
from rotdet.structures import check_version, flip_obb, flip_poly, rescale_obb

IMG_NORM_CFG = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": True}


class ImageReadError(OSError):
    """An image that cannot be read or decoded, or is truncated; the message names the file."""


def _truncated(buf: np.ndarray) -> str | None:
    """Why an encoded image is visibly truncated (PNG without IEND, JPEG without EOI), else None.

    OpenCV decodes a cut JPEG without complaint (grey bottom rows), so the check is done here."""
    head = buf[:8].tobytes()
    tail = buf[-64:].tobytes().rstrip(b"\x00")
    if head.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    if head.startswith(b"\xff\xd8") and not tail.endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker)"
    return None


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file (PNG, JPEG, TIFF, BMP...) to BGR uint8 [H, W, 3] with OpenCV.

    Grayscale is expanded and an alpha channel dropped (``cv2.IMREAD_COLOR``, as mmcv's
    ``imread(color_type="color")`` that mmrotate uses); 16-bit images are reduced to 8 bits.
    Raises :class:`ImageReadError` naming the file when it is missing, unreadable or truncated.
    """
    path = str(path)
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if buf.size == 0:
        raise ImageReadError(f"{path}: empty file")
    reason = _truncated(buf)
    if reason is not None:
        raise ImageReadError(f"{path}: {reason}")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f"{path}: cannot decode image")
    return img


class LoadImage:
    """Read ``results["filename"]`` into ``img`` and record ``ori_shape`` / ``img_shape``."""

    def __call__(self, results: dict) -> dict:
        img = load_image(results["filename"])
        results["img"] = img
        results["ori_shape"] = img.shape
        results["img_shape"] = img.shape
        results["pad_shape"] = img.shape
        results["scale_factor"] = np.ones(4, np.float32)
        return results


class RResize:
    """Resize keeping the aspect ratio to fit ``img_scale`` (mmdet ``Resize(keep_ratio=True)``).

    The scale is ``min(long / max(h, w), short / min(h, w))`` of the ``img_scale`` edges, the new
    size ``int(w * s + 0.5)`` x ``int(h * s + 0.5)`` (bilinear); the box scales are the realised
    ``new_w / w`` and ``new_h / h`` in float32, obbs scaled as mmrotate's RResize (centre per axis,
    w / h by ``sqrt(sx * sy)``) and polygons per axis.
    """

    def __init__(self, img_scale: Sequence[int] = (1024, 1024)):
        self.img_scale = tuple(int(v) for v in img_scale)

    def __call__(self, results: dict) -> dict:
        img = results["img"]
        h, w = img.shape[:2]
        long_edge, short_edge = max(self.img_scale), min(self.img_scale)
        scale = min(long_edge / max(h, w), short_edge / min(h, w))
        new_w, new_h = int(w * float(scale) + 0.5), int(h * float(scale) + 0.5)
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        sx, sy = new_w / w, new_h / h
        sf = np.array([sx, sy, sx, sy], dtype=np.float32)
        results["img"] = img
        results["img_shape"] = img.shape
        results["pad_shape"] = img.shape
        results["scale_factor"] = sf
        results["keep_ratio"] = True
        if "gt_bboxes" in results:
            results["gt_bboxes"] = rescale_obb(results["gt_bboxes"], sf[:2]).astype(np.float32)
        if "gt_polygons" in results:
            results["gt_polygons"] = (results["gt_polygons"] * np.tile(sf[:2], 4)).astype(np.float32)
        return results


class RRandomFlip:
    """Random horizontal / vertical / diagonal flip of image, obbs (per ``version``) and polygons.

    ``flip_ratio`` as mmdet's RandomFlip: a list gives each direction's probability (the rest is no
    flip); a single number is shared evenly by the directions. mmrotate's configs: obb models
    ``[0.25, 0.25, 0.25]`` over horizontal/vertical/diagonal, hbb (oc) models 0.5 horizontal. The
    draw uses torch's generator (seeded per DataLoader worker), or ``generator`` when given.
    """

    def __init__(
        self,
        flip_ratio: float | Sequence[float] = 0.5,
        direction: str | Sequence[str] = "horizontal",
        version: str = "oc",
        generator: torch.Generator | None = None,
    ):
        self.version = check_version(version)
        directions = [direction] if isinstance(direction, str) else list(direction)
        if isinstance(flip_ratio, (int, float)):
            ratios = [float(flip_ratio) / len(directions)] * len(directions)
        else:
            ratios = [float(r) for r in flip_ratio]
        if len(ratios) != len(directions) or any(r < 0 for r in ratios) or sum(ratios) > 1 + 1e-9:
            raise ValueError(f"bad flip ratios {ratios} for directions {directions}")
        self.directions, self.ratios = directions, ratios
        self.generator = generator

    def choose(self) -> str | None:
        u = float(torch.rand((), generator=self.generator))
        edge = 0.0
        for d, r in zip(self.directions, self.ratios, strict=True):
            edge += r
            if u < edge:
                return d
        return None

    def __call__(self, results: dict) -> dict:
        if "flip" not in results:
            d = self.choose()
            results["flip"], results["flip_direction"] = d is not None, d
        if results["flip"]:
            apply_flip(results, results["flip_direction"], self.version)
        return results


def apply_flip(results: dict, direction: str, version: str) -> dict:
    """Flip ``img``, ``gt_bboxes`` and ``gt_polygons`` of ``results`` in place (mmrotate's ``W - x - 1``)."""
    shape = results["img"].shape
    axis = {"horizontal": (1,), "vertical": (0,), "diagonal": (0, 1)}[direction]
    results["img"] = np.ascontiguousarray(np.flip(results["img"], axis=axis))
    if "gt_bboxes" in results:
        results["gt_bboxes"] = flip_obb(results["gt_bboxes"], shape, direction, version)
    if "gt_polygons" in results:
        results["gt_polygons"] = flip_poly(results["gt_polygons"], shape, direction)
    return results


class Normalize:
    """``(img - mean) / std`` in float32, BGR -> RGB first when ``to_rgb`` (mmcv ``imnormalize``)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], to_rgb: bool = True):
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)
        self.to_rgb = to_rgb

    def __call__(self, results: dict) -> dict:
        img = results["img"].astype(np.float32)
        mean = np.float64(self.mean.reshape(1, -1))
        stdinv = 1 / np.float64(self.std.reshape(1, -1))
        if self.to_rgb:
            cv2.cvtColor(img, cv2.COLOR_BGR2RGB, img)
        cv2.subtract(img, mean, img)
        cv2.multiply(img, stdinv, img)
        results["img"] = img
        results["img_norm_cfg"] = {"mean": self.mean, "std": self.std, "to_rgb": self.to_rgb}
        return results


class Pad:
    """Pad bottom/right with ``pad_val`` to a multiple of ``size_divisor`` (mmdet ``Pad``)."""

    def __init__(self, size_divisor: int = 32, pad_val: float = 0):
        self.size_divisor, self.pad_val = int(size_divisor), pad_val

    def __call__(self, results: dict) -> dict:
        img = results["img"]
        h, w = img.shape[:2]
        ph = int(np.ceil(h / self.size_divisor)) * self.size_divisor
        pw = int(np.ceil(w / self.size_divisor)) * self.size_divisor
        if (ph, pw) != (h, w):
            padded = np.full((ph, pw, *img.shape[2:]), self.pad_val, dtype=img.dtype)
            padded[:h, :w] = img
            img = padded
        results["img"] = img
        results["pad_shape"] = img.shape
        results["pad_size_divisor"] = self.size_divisor
        return results


class Compose:
    """Apply transforms in order; a transform that returns None drops the sample (mmdet's rule:
    the dataset then takes another one), and so does the whole pipeline."""

    def __init__(self, transforms: Sequence[Callable[[dict], dict | None]]):
        self.transforms = list(transforms)

    def __call__(self, results: dict) -> dict | None:
        for t in self.transforms:
            results = t(results)
            if results is None:
                return None
        return results

    def __repr__(self) -> str:
        return f"Compose({[type(t).__name__ for t in self.transforms]})"


TRANSFORMS: dict[str, type] = {
    "LoadImage": LoadImage,
    "RResize": RResize,
    "RRandomFlip": RRandomFlip,
    "PolyRandomRotate": PolyRandomRotate,
    "RRandomRotate": PolyRandomRotate,  # mmrotate 1.x's name
    "Normalize": Normalize,
    "Pad": Pad,
}


def build_pipeline(cfg: Sequence[dict | Callable]) -> Compose:
    """A :class:`Compose` from ``[{"type": "RResize", "img_scale": [1024, 1024]}, ...]`` (callables pass)."""
    transforms = []
    for item in cfg:
        if callable(item):
            transforms.append(item)
            continue
        kwargs = dict(item)
        name = kwargs.pop("type")
        if name not in TRANSFORMS:
            raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
        transforms.append(TRANSFORMS[name](**kwargs))
    return Compose(transforms)


DOTA_OBB_FLIP = {"flip_ratio": [0.25, 0.25, 0.25], "direction": ["horizontal", "vertical", "diagonal"]}
DOTA_HBB_FLIP = {"flip_ratio": 0.5, "direction": "horizontal"}


def pipeline_cfg(
    train: bool,
    version: str,
    img_scale: Sequence[int] = (1024, 1024),
    flip: dict | None = None,
    rotate: dict | None = None,
    img_norm: dict | None = None,
    size_divisor: int = 32,
) -> list[dict]:
    """The one pipeline builder: mmrotate's order ``LoadImage``, ``RResize``, (train:
    ``RRandomFlip`` when ``flip`` is given, ``PolyRandomRotate`` when ``rotate`` is given, both in
    ``version``), ``Normalize``, ``Pad``. ``flip`` / ``rotate`` are the transforms' keyword
    arguments (a config's ``data.train_flip`` / ``data.train_rotate``)."""
    steps: list[dict] = [{"type": "LoadImage"}, {"type": "RResize", "img_scale": list(img_scale)}]
    if train and flip:
        steps.append({"type": "RRandomFlip", **flip, "version": version})
    if train and rotate:
        steps.append({"type": "PolyRandomRotate", **rotate, "version": version})
    steps += [
        {"type": "Normalize", **(img_norm if img_norm is not None else IMG_NORM_CFG)},
        {"type": "Pad", "size_divisor": size_divisor},
    ]
    return steps


def train_pipeline_cfg(
    version: str = "le90", img_scale: Sequence[int] = (1024, 1024), hbb: bool = False
) -> list[dict]:
    """mmrotate's DOTA training pipeline: obb configs flip 0.25 each way; hbb (oc) configs 0.5 horizontal."""
    return pipeline_cfg(True, version, img_scale, flip=DOTA_HBB_FLIP if hbb else DOTA_OBB_FLIP)


def test_pipeline_cfg(img_scale: Sequence[int] = (1024, 1024)) -> list[dict]:
    """mmrotate's DOTA test pipeline (no flip)."""
    return pipeline_cfg(False, "oc", img_scale)


test_pipeline_cfg.__test__ = False  # not a pytest test, despite its name
