"""Vectorised helpers shared by both protocols: candidate pairs within an image, best match per
detection, and greedy matching in score order without a per-detection Python loop."""

from __future__ import annotations

import numpy as np
import torch

from rotdet.ops.iou import hbb_overlap_pairs

# Pairs enumerated densely per vectorised step (int64 index arrays of this length).
_DENSE_PAIRS_PER_STEP = 1 << 22


def same_image_pairs(
    hbb_a: np.ndarray, img_a: np.ndarray, hbb_b: np.ndarray, img_b: np.ndarray, pad: float
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` with ``img_a[i] == img_b[j]`` whose horizontal boxes, ``a`` grown by
    ``pad`` on every side, overlap or touch: a superset of the pairs a caller then tests exactly.

    Images are handled together: for images with few boxes every same-image pair is enumerated
    (segment-wise cross products, in bounded steps) and tested at once; an image whose own product
    exceeds a step is swept with :func:`rotdet.ops.iou.hbb_overlap_pairs` alone.
    """
    empty = np.zeros(0, np.int64)
    if len(hbb_a) == 0 or len(hbb_b) == 0:
        return empty, empty
    a = np.asarray(hbb_a, np.float64) + np.array([-pad, -pad, pad, pad])
    b = np.asarray(hbb_b, np.float64)
    img_a, img_b = np.asarray(img_a, np.int64), np.asarray(img_b, np.int64)
    num_imgs = int(max(img_a.max(), img_b.max())) + 1
    order_a = np.argsort(img_a, kind="stable")
    order_b = np.argsort(img_b, kind="stable")
    count_a = np.bincount(img_a, minlength=num_imgs)
    count_b = np.bincount(img_b, minlength=num_imgs)
    start_a = np.cumsum(count_a) - count_a
    start_b = np.cumsum(count_b) - count_b
    work = count_a * count_b
    rows_out, cols_out = [], []

    def test(r: np.ndarray, c: np.ndarray) -> None:
        ok = (a[r, 0] <= b[c, 2]) & (b[c, 0] <= a[r, 2]) & (a[r, 1] <= b[c, 3]) & (b[c, 1] <= a[r, 3])
        rows_out.append(r[ok])
        cols_out.append(c[ok])

    big = np.flatnonzero(work > _DENSE_PAIRS_PER_STEP)
    for img in big.tolist():
        ia = order_a[start_a[img] : start_a[img] + count_a[img]]
        ib = order_b[start_b[img] : start_b[img] + count_b[img]]
        for r, c in hbb_overlap_pairs(torch.from_numpy(a[ia]), torch.from_numpy(b[ib])):
            rows_out.append(ia[r.numpy()])
            cols_out.append(ib[c.numpy()])
    small = np.flatnonzero((work > 0) & (work <= _DENSE_PAIRS_PER_STEP))
    # Steps of consecutive small images holding at most _DENSE_PAIRS_PER_STEP pairs each.
    cum = np.cumsum(work[small])
    step_of = (cum - 1) // _DENSE_PAIRS_PER_STEP
    for step in np.unique(step_of).tolist():
        imgs = small[step_of == step]
        # Every a box of these images, repeated once per b box of its image.
        a_pos = np.concatenate([np.arange(start_a[i], start_a[i] + count_a[i]) for i in imgs.tolist()])
        a_img = img_a[order_a[a_pos]]
        reps = count_b[a_img]
        rows = np.repeat(order_a[a_pos], reps)
        first = np.repeat(np.cumsum(reps) - reps, reps)
        cols = order_b[np.repeat(start_b[a_img], reps) + np.arange(len(rows)) - first]
        test(rows, cols)
    if not rows_out:
        return empty, empty
    return np.concatenate(rows_out), np.concatenate(cols_out)


def best_per_row(rows: np.ndarray, cols_key: np.ndarray, values: np.ndarray, num_rows: int):
    """For each row: the max of ``values`` over its pairs and the pair with the smallest ``cols_key``
    among those reaching it (``np.argmax``'s first-maximum rule). NaN values are not candidates here;
    the caller handles them.

    Returns ``(best_value [num_rows] float64, -inf where a row has no pair; best_pair [num_rows] int64,
    -1 where none)``.
    """
    best = np.full(num_rows, -np.inf)
    best_pair = np.full(num_rows, -1, np.int64)
    if len(rows) == 0:
        return best, best_pair
    order = np.lexsort((cols_key, -values, rows))
    r = rows[order]
    first = np.ones(len(r), bool)
    first[1:] = r[1:] != r[:-1]
    sel = order[first]
    best[rows[sel]] = values[sel]
    best_pair[rows[sel]] = sel
    return best, best_pair


def first_in_group(group: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Boolean mask: the element of smallest ``rank`` in each ``group`` (ranks distinct per group)."""
    if len(group) == 0:
        return np.zeros(0, bool)
    order = np.lexsort((rank, group))
    g = group[order]
    first = np.ones(len(g), bool)
    first[1:] = g[1:] != g[:-1]
    mask = np.zeros(len(group), bool)
    mask[order[first]] = True
    return mask
