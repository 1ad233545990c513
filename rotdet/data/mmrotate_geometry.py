"""mmrotate 0.3.4's ``obb2poly_np`` in its own arithmetic, for the places where the data pipeline
must give mmrotate's float values bit for bit (HRSC2016 polygons, ``PolyRandomRotate``).

rotdet's :func:`rotdet.structures.obb2poly_np` computes the same corners in torch and keeps the
vertex order; mmrotate's numpy version differs in three ways that change the last bits or the
order, reproduced here:

* oc / le90: the corners in the boxes' own dtype with numpy's ``cos`` / ``sin``
  (``x - w/2 cos - (-h/2 sin)``, left to right);
* le135: per box, the corner offsets as a ``2 x 2`` rotation matrix ``.dot`` the ``2 x 4`` corner
  matrix, plus the centre, rounded to float32;
* then every polygon is re-started at its "best begin point" (the cyclic rotation whose vertices
  are closest, summed left to right with ``sqrt(pow(dx, 2) + pow(dy, 2))`` in float64, to the
  horizontal box's corners ``(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)``; first
  strict minimum from a start of 1e8), and returned as float64.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mmrotate_obb2poly_np"]


def _corners_vectorised(obbs: np.ndarray) -> np.ndarray:
    x, y, w, h, a = (obbs[:, i] for i in range(5))
    cos, sin = np.cos(a), np.sin(a)
    wx, wy = w / 2 * cos, w / 2 * sin
    hx, hy = -h / 2 * sin, h / 2 * cos
    return np.stack(
        [
            x - wx - hx,
            y - wy - hy,
            x + wx - hx,
            y + wy - hy,
            x + wx + hx,
            y + wy + hy,
            x - wx + hx,
            y - wy + hy,
        ],
        axis=-1,
    )


def _corners_le135(obbs: np.ndarray) -> np.ndarray:
    out = np.zeros((len(obbs), 8), np.float32)
    for i, (x, y, w, h, a) in enumerate(obbs[:, :5]):
        corners = np.array([[-w / 2, w / 2, w / 2, -w / 2], [-h / 2, -h / 2, h / 2, h / 2]])
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        poly = rot.dot(corners)
        xs, ys = poly[0, :4] + x, poly[1, :4] + y
        out[i] = np.array([xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], xs[3], ys[3]], dtype=np.float32)
    return out


def _best_begin(poly: list[float]) -> list[float]:
    xs, ys = poly[0::2], poly[1::2]
    targets = [(min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys))]
    pts = list(zip(xs, ys, strict=True))
    best, best_cost = 0, 100000000.0
    for start in range(4):
        cost = 0.0
        for j in range(4):
            px, py = pts[(start + j) % 4]
            tx, ty = targets[j]
            d = math.sqrt(math.pow(px - tx, 2) + math.pow(py - ty, 2))
            cost = d if j == 0 else cost + d
        if cost < best_cost:
            best, best_cost = start, cost
    return [c for k in range(4) for c in pts[(best + k) % 4]]


def mmrotate_obb2poly_np(obbs: np.ndarray, version: str) -> np.ndarray:
    """mmrotate 0.3.4 ``obb2poly_np`` of ``obbs`` ``[N, 5]`` (its score column left out): float64
    ``[N, 8]`` polygons, re-started at the best begin point. The arithmetic is done in ``obbs``'
    dtype (mmrotate's HRSC loader passes float32, ``PolyRandomRotate`` float64)."""
    obbs = np.asarray(obbs).reshape(-1, 5)
    if version in ("oc", "le90"):
        corners = _corners_vectorised(obbs)
    elif version == "le135":
        corners = _corners_le135(obbs)
    else:
        raise ValueError(f"unknown angle version {version!r}")
    return np.array([_best_begin(p) for p in corners.tolist()], np.float64).reshape(-1, 8)
