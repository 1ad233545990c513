"""Random rotation of image and rotated boxes: mmrotate 0.3.4's ``PolyRandomRotate`` (the ``rr`` of
its HRSC2016 configs; mmrotate 1.x calls it ``RandomRotate``), with the same semantics.

Per sample (after ``RResize`` and ``RRandomFlip``, before ``Normalize``):

1. Draw: rotate with probability ``rotate_ratio``; the angle (degrees, counter-clockwise on screen
   as OpenCV's ``getRotationMatrix2D``) is uniform in ``(-angles_range, angles_range)``
   (``mode="range"``) or one of the ``angles_range`` list (``mode="value"``). If any object's label
   is in ``rect_classes`` the angle is replaced by one of 90, 180, -90, -180 (mmrotate shuffles that
   list in place and takes its head, so with a numpy generator the list's order carries over from
   one sample to the next, as in mmrotate). Not rotating is angle 0 -- and steps 2-4 still run.
2. Image: OpenCV 4's ``warpAffine`` (bilinear, black border; see :func:`warp_affine_linear`) about
   the centre; the output keeps the size,
   or with ``auto_bound`` grows to ``rint(h|sin| + w|cos|)`` x ``rint(h|cos| + w|sin|)`` with the
   centre moved to the middle. QUIRK kept: the image matrix turns about ``(w/2 - 0.5, h/2 - 0.5)``
   (pixel centres) while the boxes turn about ``(w/2, h/2)``, and with ``auto_bound`` the image's
   shift is computed from ``(w/2 - 1, h/2 - 1)``: mmrotate's in-place ``center += offset``.
3. Boxes: each obb -> mmrotate's ``obb2poly_np`` polygon (in ``version``, see
   :mod:`rotdet.data.mmrotate_geometry`) -> corners through the coordinate matrix ->
   ``poly2obb_np`` in ``version`` (a box it cannot make becomes all zeros).
4. Kept: boxes with the centre strictly inside the (new) image and both sides > 5 px; the labels
   follow. No box left and not ``allow_negative``: the sample is dropped (the transform returns
   None and the dataset takes another one, as mmdet's ``CustomDataset`` does).

Draws come from ``generator``: a ``torch.Generator`` / None (torch's global RNG, which the training
loader seeds per sample) or a ``numpy.random.RandomState`` (or the ``numpy.random`` module), which
draws exactly as mmrotate (``rand`` for the decision, ``rand`` or ``randint`` for the angle,
``shuffle`` for the rect classes), so a seeded numpy state gives mmrotate's angle.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from rotdet.data.mmrotate_geometry import mmrotate_obb2poly_np
from rotdet.structures import check_version, poly2obb_np

__all__ = ["PolyRandomRotate", "rotate_results", "warp_affine_linear"]

DISCRETE_ANGLES = (90, 180, -90, -180)


def _inverse_affine(m: np.ndarray) -> np.ndarray:
    """OpenCV's inversion of a 2 x 3 matrix (``warpAffine`` without ``WARP_INVERSE_MAP``), in its
    order of operations."""
    m = np.asarray(m, np.float64).reshape(6).copy()
    det = m[0] * m[4] - m[1] * m[3]
    det = 1.0 / det if det != 0 else 0.0
    m[0], m[4] = m[4] * det, m[0] * det
    m[1] *= -det
    m[3] *= -det
    m[2], m[5] = -m[0] * m[2] - m[1] * m[5], -m[3] * m[2] - m[4] * m[5]
    return m


def warp_affine_linear(img: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.warpAffine(img, matrix, size, flags=cv2.INTER_LINEAR)`` (black border) on uint8 images
    as OpenCV 4.x computes it, whatever OpenCV is installed.

    OpenCV 4's ``warpAffine`` finds the source position of each output pixel in fixed point (the
    inverse matrix times 1024, rounded; then 1/32 pixel) and hands the integer positions and the
    1/32 fractions to ``remap``, whose bilinear weights are 15-bit integers. That is done here
    step by step, with ``cv2.remap`` on those fixed-point maps. OpenCV 5's ``warpAffine``
    interpolates at full precision instead, which moves pixel values by up to a few levels;
    mmrotate 0.3.4 ran with OpenCV 4, so this is what its ``PolyRandomRotate`` gave. Other dtypes
    go to ``cv2.warpAffine``."""
    if img.dtype != np.uint8:
        return cv2.warpAffine(img, matrix, size, flags=cv2.INTER_LINEAR)
    w, h = int(size[0]), int(size[1])
    if img.shape[1] == w and img.shape[0] == h and np.array_equal(matrix, np.eye(2, 3)):
        return img.copy()  # the identity: every weight falls on one pixel
    m = _inverse_affine(matrix)
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    x_row = np.rint((m[1] * ys + m[2]) * 1024).astype(np.int64)[:, None] + 16
    y_row = np.rint((m[4] * ys + m[5]) * 1024).astype(np.int64)[:, None] + 16
    fx = (x_row + np.rint(m[0] * xs * 1024).astype(np.int64)[None, :]) >> 5  # in 1/32 pixel
    fy = (y_row + np.rint(m[3] * xs * 1024).astype(np.int64)[None, :]) >> 5
    # Positions past the border read only black taps however far they are: clip into int16.
    sx = np.clip(fx >> 5, -2, img.shape[1]).astype(np.int16)
    sy = np.clip(fy >> 5, -2, img.shape[0]).astype(np.int16)
    table = ((fy & 31) * 32 + (fx & 31)).astype(np.uint16)
    return cv2.remap(
        img,
        np.stack([sx, sy], axis=-1),
        table,
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def _rotation_matrix(
    center: np.ndarray, angle: float, bound_w: int, bound_h: int, auto_bound: bool, offset: float
):
    """mmrotate's ``create_rotation_matrix`` for a centre that already carries ``offset`` once."""
    rm = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), angle, 1)
    if auto_bound:
        rot_center = cv2.transform((center + offset)[None, None, :], rm)[0, 0, :]
        rm[:, 2] += np.array([bound_w / 2, bound_h / 2]) + offset - rot_center
    return rm


def rotate_results(
    results: dict, angle: float, version: str, auto_bound: bool = False, allow_negative: bool = False
) -> dict | None:
    """Steps 2-4 of the module docstring on ``results`` (in place); None when no box is left and
    not ``allow_negative``."""
    h, w, c = results["img_shape"]
    results["rotate_angle"] = angle
    rad = angle / 180 * np.pi
    abs_cos, abs_sin = abs(np.cos(rad)), abs(np.sin(rad))
    if auto_bound:
        bound_w, bound_h = np.rint([h * abs_sin + w * abs_cos, h * abs_cos + w * abs_sin]).astype(int)
        bound_w, bound_h = int(bound_w), int(bound_h)
    else:
        bound_w, bound_h = int(w), int(h)
    center = np.array((w / 2, h / 2))
    rm_coords = _rotation_matrix(center, angle, bound_w, bound_h, auto_bound, 0.0)
    rm_image = _rotation_matrix(center - 0.5, angle, bound_w, bound_h, auto_bound, -0.5)
    img = results["img"]
    if len(img):
        img = warp_affine_linear(img, rm_image, (bound_w, bound_h))
    results["img"] = img
    results["img_shape"] = (bound_h, bound_w, c)
    boxes = np.asarray(results.get("gt_bboxes", np.zeros((0, 5), np.float32)))
    labels = np.asarray(results.get("gt_labels", np.zeros((0,), np.int64)))
    if len(boxes):
        polys = mmrotate_obb2poly_np(boxes.astype(np.float64), version).reshape(-1, 2)
        polys = cv2.transform(polys[:, None, :], rm_coords)[:, 0, :].reshape(-1, 8).astype(np.float32)
        obbs, ok = poly2obb_np(polys, version)
        boxes = np.zeros((len(polys), 5), np.float32)
        boxes[ok] = obbs
        x, y, bw, bh = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        keep = (x > 0) & (x < bound_w) & (y > 0) & (y < bound_h) & (bw > 5) & (bh > 5)
        boxes, labels = boxes[keep], labels[keep]
        if "gt_polygons" in results:
            results["gt_polygons"] = polys[keep]
    if len(boxes) == 0 and not allow_negative:
        return None
    results["gt_bboxes"] = boxes.astype(np.float32).reshape(-1, 5)
    results["gt_labels"] = labels
    return results


class PolyRandomRotate:
    """mmrotate 0.3.4 ``PolyRandomRotate`` (also registered as ``RRandomRotate``); see the module
    docstring. Arguments as mmrotate's, plus ``generator``."""

    def __init__(
        self,
        rotate_ratio: float = 0.5,
        mode: str = "range",
        angles_range: int | Sequence[int] = 180,
        auto_bound: bool = False,
        rect_classes: Sequence[int] | None = None,
        allow_negative: bool = False,
        version: str = "le90",
        generator: torch.Generator | np.random.RandomState | None = None,
    ):
        if mode not in ("range", "value"):
            raise ValueError(f"mode must be 'range' or 'value', got {mode!r}")
        if mode == "range" and not isinstance(angles_range, int):
            raise ValueError(f"mode 'range' expects angles_range to be an int, got {angles_range!r}")
        if mode == "value" and (
            isinstance(angles_range, (int, str))
            or not angles_range
            or not all(isinstance(a, int) for a in angles_range)
        ):
            raise ValueError(
                f"mode 'value' expects angles_range as a non-empty list of int, got {angles_range!r}"
            )
        self.rotate_ratio = float(rotate_ratio)
        self.mode = mode
        self.angles_range = angles_range if mode == "range" else list(angles_range)
        self.auto_bound = bool(auto_bound)
        self.rect_classes = list(rect_classes) if rect_classes else None
        self.allow_negative = bool(allow_negative)
        self.version = check_version(version)
        self.generator = generator
        self.discrete_range = list(DISCRETE_ANGLES)  # shuffled in place by numpy draws, as mmrotate

    def _numpy(self) -> bool:
        return isinstance(self.generator, np.random.RandomState) or self.generator is np.random

    def _uniform(self) -> float:
        if self._numpy():
            return float(self.generator.rand())
        return float(torch.rand((), dtype=torch.float64, generator=self.generator))

    def _index(self, n: int) -> int:
        if self._numpy():
            return int(self.generator.randint(n))
        return int(torch.randint(n, (), generator=self.generator))

    def draw(self, labels: Sequence[int]) -> tuple[bool, float]:
        """``(rotate, angle in degrees)`` for a sample with these labels (step 1)."""
        if not self._uniform() < self.rotate_ratio:
            return False, 0
        if self.mode == "range":
            angle = self.angles_range * (2 * self._uniform() - 1)
        else:
            angle = self.angles_range[self._index(len(self.angles_range))]
        if self.rect_classes and any(int(c) in self.rect_classes for c in np.asarray(labels).reshape(-1)):
            if self._numpy():
                self.generator.shuffle(self.discrete_range)
                angle = self.discrete_range[0]
            else:
                angle = DISCRETE_ANGLES[self._index(len(DISCRETE_ANGLES))]
        return True, angle

    def __call__(self, results: dict) -> dict | None:
        rotate, angle = self.draw(results.get("gt_labels", []))
        results["rotate"] = rotate
        return rotate_results(results, angle, self.version, self.auto_bound, self.allow_negative)

    def __repr__(self) -> str:
        return (
            f"PolyRandomRotate(rotate_ratio={self.rotate_ratio}, mode={self.mode!r}, "
            f"angles_range={self.angles_range}, auto_bound={self.auto_bound}, "
            f"rect_classes={self.rect_classes}, version={self.version!r})"
        )
