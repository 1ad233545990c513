"""Inputs for ``tests/test_assigners.py``'s comparisons with mmcv 1.7.2's float32 ``box_iou_rotated``,
and the recorder of mmcv's answers (``mmcv_iou_float32.npz``).

The inputs are made here from fixed seeds (no box is stored); run in the reference venv to record:

    /work/ref/venv/bin/python -W ignore tests/data/mmcv_iou_oracle.py

It stores mmcv's IoUs of the ``pairs()`` and, for each of the ``tie_cases()``, the anchors mmdet's
low-quality matching takes on mmcv's IoUs (those equal to the ground truth's best).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("mmcv_iou_float32.npz")
TIE_GRID = 256  # px: anchors of a square image this size
STRIDES = (8, 16, 32, 64, 128)


def pairs(count: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``[count, 5]`` float32 box pairs: general overlaps, one box inside the other, identical
    boxes, axis-aligned boxes on a pixel grid, thin and tiny boxes."""
    rng = np.random.default_rng(seed)
    a = np.zeros((count, 5), np.float32)
    a[:, :2] = rng.uniform(0, 1024, (count, 2))
    a[:, 2:4] = np.exp(rng.uniform(-2, 4.5, (count, 2)))
    a[:, 4] = rng.uniform(-np.pi / 2, np.pi / 2, count)
    b = a.copy()
    b[:, :2] += rng.normal(0, 15, (count, 2))
    b[:, 2:4] = np.exp(rng.uniform(-2, 4.5, (count, 2)))
    b[:, 4] = rng.uniform(-np.pi / 2, np.pi / 2, count)
    q = count // 5
    b[q : 2 * q, 2:4] = a[q : 2 * q, 2:4] * 0.3  # inside
    b[q : 2 * q, :2] = a[q : 2 * q, :2]
    b[2 * q : 3 * q] = a[2 * q : 3 * q]  # identical
    grid = slice(3 * q, 4 * q)  # axis-aligned, whole pixels
    a[grid, 4] = b[grid, 4] = 0
    a[grid, :4] = np.round(a[grid, :4])
    b[grid, :2] = np.round(b[grid, :2] / 8) * 8
    b[grid, 2:4] = 32
    return a, b


def anchors() -> np.ndarray:
    """``[N, 5]`` float32 RetinaNet anchors (3 scales x 3 ratios, centre offset 0) of a
    ``TIE_GRID`` px image, levels concatenated."""
    out = []
    for stride in STRIDES:
        n = TIE_GRID // stride
        shapes = []
        for ratio in (1.0, 0.5, 2.0):
            for scale in (4 * 2 ** (i / 3) for i in range(3)):
                h_ratio = np.sqrt(ratio)
                shapes.append((stride * scale / h_ratio, stride * scale * h_ratio))
        ys, xs = np.meshgrid(np.arange(n) * stride, np.arange(n) * stride, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        for cx, cy in centres:
            for w, h in shapes:
                out.append((cx, cy, w, h, 0.0))
    return np.asarray(out, np.float32)


def tie_cases(count: int = 60, seed: int = 1) -> np.ndarray:
    """``[count, 5]`` float32 small ground truths (6-24 px) inside the anchor grid, rotated (even
    rows) or axis-aligned with float parameters (odd rows)."""
    rng = np.random.default_rng(seed)
    gts = np.zeros((count, 5), np.float32)
    gts[:, :2] = rng.uniform(24, TIE_GRID - 24, (count, 2))
    gts[:, 2] = rng.uniform(6, 24, count)
    gts[:, 3] = gts[:, 2] / rng.uniform(1.5, 2.5, count)
    gts[::2, 4] = rng.uniform(-np.pi / 2, np.pi / 2, len(gts[::2]))
    return gts


def main() -> None:
    import torch
    from mmcv.ops import box_iou_rotated

    a, b = pairs()
    iou = box_iou_rotated(torch.from_numpy(a), torch.from_numpy(b), aligned=True).numpy()
    anc = torch.from_numpy(anchors())
    gts = torch.from_numpy(tie_cases())
    overlaps = box_iou_rotated(gts, anc).numpy()  # [M, N], ground truths first as mmdet calls it
    best = overlaps.max(axis=1, keepdims=True)
    taken = (overlaps == best) & (best > 0)
    rows, cols = np.nonzero(taken)
    np.savez_compressed(OUT, pair_iou=iou, tie_gt=rows.astype(np.int32), tie_anchor=cols.astype(np.int32))
    print(f"wrote {OUT}: {len(iou)} pair IoUs, {len(rows)} low-quality anchors of {len(gts)} ground truths")


if __name__ == "__main__":
    main()
