"""Exact float64 references built on shapely, for tests and benchmarks only (rotdet never imports it)."""

from __future__ import annotations

import numpy as np
import shapely


def obb_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners ``[N, 4, 2]`` in float64 of boxes ``[N, 5]`` (cx, cy, w, h, theta)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    cos, sin = np.cos(b[:, 4]), np.sin(b[:, 4])
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) / 2
    lx = signs[None, :, 0] * b[:, 2:3]
    ly = signs[None, :, 1] * b[:, 3:4]
    x = b[:, 0:1] + lx * cos[:, None] - ly * sin[:, None]
    y = b[:, 1:2] + lx * sin[:, None] + ly * cos[:, None]
    return np.stack((x, y), axis=-1)


def obb_polygons(boxes: np.ndarray) -> np.ndarray:
    return shapely.polygons(obb_corners(boxes))


def iou_matrix(boxes1: np.ndarray, boxes2: np.ndarray, mode: str = "iou") -> np.ndarray:
    """Float64 IoU/IoF ``[N, M]`` of rotated boxes by exact polygon clipping."""
    p1, p2 = obb_polygons(boxes1), obb_polygons(boxes2)
    inter = shapely.area(shapely.intersection(p1[:, None], p2[None, :]))
    a1, a2 = shapely.area(p1)[:, None], shapely.area(p2)[None, :]
    base = a1 if mode == "iof" else a1 + a2 - inter
    return np.where(base > 0, inter / np.where(base > 0, base, 1), 0.0)


def iou_aligned(boxes1: np.ndarray, boxes2: np.ndarray, mode: str = "iou") -> np.ndarray:
    p1, p2 = obb_polygons(boxes1), obb_polygons(boxes2)
    inter = shapely.area(shapely.intersection(p1, p2))
    a1, a2 = shapely.area(p1), shapely.area(p2)
    base = a1 if mode == "iof" else a1 + a2 - inter
    return np.where(base > 0, inter / np.where(base > 0, base, 1), 0.0)


def greedy_nms(
    boxes: np.ndarray, scores: np.ndarray, iou_thr: float, labels: np.ndarray | None = None
) -> list[int]:
    """Brute-force greedy NMS on shapely IoUs: by descending score, ties by lower index; IoU > thr."""
    iou = iou_matrix(boxes, boxes)
    if labels is not None:
        iou = np.where(labels[:, None] == labels[None, :], iou, 0.0)
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_thr
    return keep


def random_dota_boxes(
    rng: np.random.Generator, n: int, image: float = 1024.0, min_size: float = 4.0, max_size: float = 400.0
) -> np.ndarray:
    """DOTA-like boxes ``[n, 5]`` float32: log-uniform sizes, aspect ratio up to 8, uniform angles."""
    w = np.exp(rng.uniform(np.log(min_size), np.log(max_size), n))
    h = np.maximum(w / np.exp(rng.uniform(0, np.log(8), n)), min_size / 2)
    cx, cy = rng.uniform(0, image, n), rng.uniform(0, image, n)
    theta = rng.uniform(-np.pi / 2, np.pi / 2, n)
    return np.stack((cx, cy, w, h, theta), axis=1).astype(np.float32)
