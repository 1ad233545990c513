"""Vectorised helpers shared by both protocols: candidate pairs within an image, best match per
detection, and greedy matching in score order without a per-detection Python loop."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Pairs enumerated densely per vectorised step (int64 index arrays of this length).
_DENSE_PAIRS_PER_STEP = 1 << 22
# Elements of one block's mask in the sweep of hbb_overlap_pairs.
_MASK_ELEMS_PER_BLOCK = 1 << 22


def hbb_overlap_pairs(xyxy1: np.ndarray, xyxy2: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs ``(i, j)`` whose horizontal boxes ``[N, 4]`` and ``[M, 4]`` (x1, y1, x2, y2)
    overlap or touch, in chunks: numpy's copy of :func:`rotdet.ops.iou.hbb_overlap_pairs` (a blocked
    sweep over left edges), so that evaluation needs no torch."""
    n, m = len(xyxy1), len(xyxy2)
    if n == 0 or m == 0:
        return
    row_order = np.argsort(xyxy1[:, 0], kind="stable")
    col_order = np.argsort(xyxy2[:, 0], kind="stable")
    rows_sorted, cols_sorted = xyxy1[row_order], xyxy2[col_order]
    left_sorted = cols_sorted[:, 0]
    widest = (xyxy2[:, 2] - xyxy2[:, 0]).max()
    block = min(n, max(64, _MASK_ELEMS_PER_BLOCK // m))
    firsts = np.arange(0, n, block)
    right_most = np.maximum.reduceat(rows_sorted[:, 2], firsts)
    lo = np.searchsorted(left_sorted, rows_sorted[firsts, 0] - widest, side="left")
    hi = np.searchsorted(left_sorted, right_most, side="right")
    for first, col_lo, col_hi in zip(firsts.tolist(), lo.tolist(), hi.tolist(), strict=True):
        if col_hi <= col_lo:
            continue
        r = rows_sorted[first : first + block, None, :]
        c = cols_sorted[None, col_lo:col_hi, :]
        mask = (
            (r[..., 0] <= c[..., 2])
            & (c[..., 0] <= r[..., 2])
            & (r[..., 1] <= c[..., 3])
            & (c[..., 1] <= r[..., 3])
        )
        pr, pc = np.nonzero(mask)
        yield row_order[first + pr], col_order[col_lo + pc]


def same_image_pairs(
    hbb_a: np.ndarray, img_a: np.ndarray, hbb_b: np.ndarray, img_b: np.ndarray, pad: float
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` with ``img_a[i] == img_b[j]`` whose horizontal boxes, ``a`` grown by
    ``pad`` on every side, overlap or touch: a superset of the pairs a caller then tests exactly
    (in no particular order).

    All images at once on one line: image ``k``'s x coordinates are shifted by ``k`` times a stride
    longer than any image's extent, the ``b`` boxes sorted by left edge, and each ``a`` box's
    candidates are the ``b`` boxes whose left edge lies in ``[a.x1 - widest b, a.x2]`` (widened by
    a pixel against the shift's rounding), found by binary search; the candidates are then tested
    exactly on the original coordinates. Boxes with a non-finite coordinate take the dense way.
    """
    empty = np.zeros(0, np.int64)
    if len(hbb_a) == 0 or len(hbb_b) == 0:
        return empty, empty
    a = np.asarray(hbb_a, np.float64) + np.array([-pad, -pad, pad, pad])
    b = np.asarray(hbb_b, np.float64)
    img_a, img_b = np.asarray(img_a, np.int64), np.asarray(img_b, np.int64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return _same_image_pairs_dense(a, img_a, b, img_b)
    lo = min(a[:, 0].min(), b[:, 0].min())
    widest = float((b[:, 2] - b[:, 0]).max())
    margin = 1.0
    stride = (max(a[:, 2].max(), b[:, 2].max()) - lo) + widest + 4 * margin
    key_b = img_b * stride + (b[:, 0] - lo)
    order_b = np.argsort(key_b, kind="stable")
    keys = key_b[order_b]
    base_a = img_a * stride - lo
    first = np.searchsorted(keys, base_a + a[:, 0] - widest - margin, side="left")
    last = np.searchsorted(keys, base_a + a[:, 2] + margin, side="right")
    counts = np.maximum(last - first, 0)
    rows_out, cols_out = [], []
    # Steps of consecutive a boxes holding at most _DENSE_PAIRS_PER_STEP candidates each.
    cum = np.cumsum(counts)
    if cum[-1] == 0:
        return empty, empty
    bounds = np.searchsorted(cum, np.arange(0, int(cum[-1]), _DENSE_PAIRS_PER_STEP), side="right")
    for r0, r1 in zip(bounds.tolist(), [*bounds[1:].tolist(), len(a)], strict=True):
        reps = counts[r0:r1]
        total = int(reps.sum())
        if total == 0:
            continue
        rows = np.repeat(np.arange(r0, r1), reps)
        offset = np.repeat(first[r0:r1] - (np.cumsum(reps) - reps), reps)
        cols = order_b[offset + np.arange(total)]
        ar, bc = a[rows], b[cols]
        ok = (
            (img_a[rows] == img_b[cols])
            & (ar[:, 0] <= bc[:, 2])
            & (bc[:, 0] <= ar[:, 2])
            & (ar[:, 1] <= bc[:, 3])
            & (bc[:, 1] <= ar[:, 3])
        )
        rows_out.append(rows[ok])
        cols_out.append(cols[ok])
    if not rows_out:
        return empty, empty
    return np.concatenate(rows_out), np.concatenate(cols_out)


def _same_image_pairs_dense(
    a: np.ndarray, img_a: np.ndarray, b: np.ndarray, img_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`same_image_pairs` (``a`` already grown) by every same-image pair: small images
    enumerated together in bounded steps, an image whose own product exceeds a step swept with
    :func:`hbb_overlap_pairs` alone."""
    empty = np.zeros(0, np.int64)
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
        for r, c in hbb_overlap_pairs(a[ia], b[ib]):
            rows_out.append(ia[r])
            cols_out.append(ib[c])
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
