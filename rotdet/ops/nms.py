"""Greedy non-maximum suppression of rotated boxes in pure PyTorch.

Greedy NMS visits boxes by descending score and keeps a box unless a box kept before it overlaps it
by IoU **strictly greater** than the threshold (mmcv's CUDA kernel, which trained and tested the
seed's models; mmcv's CPU kernel uses >=, we follow CUDA on every device). Among equal scores the
box with the lower input index comes first, so results are deterministic on every device.

The greedy order is sequential, but its result is reached in a few parallel rounds. Sorted boxes
are taken in blocks; a block first loses the boxes that an already-kept box suppresses, then the
"suppresses" relation inside the block (an edge list, only pairs whose horizontal boxes overlap are
tested) is resolved in rounds: a box whose higher-ranked neighbours are all suppressed is kept, a
box with a kept higher-ranked neighbour is suppressed. Each round decides at least the first
undecided box, and on detector outputs a handful of rounds decide all. Only kept boxes are compared
with later blocks, so a cluster of thousands of near-identical boxes costs little, and memory stays
bounded by the block size whatever the number of boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rotdet.ops.iou import _aligned_overlaps, circumscribed_xyxy, hbb_overlap_pairs, separate_groups

__all__ = ["nms_rotated", "batched_nms_rotated", "multiclass_nms_rotated"]


@dataclass(frozen=True)
class _Tuning:
    """How NMS spends work per device type.

    Blocks start small and double up to the cap: within a block every pair of alive boxes is
    tested, so small first blocks keep a dense cluster cheap (its first kept box then clears later
    blocks), while the cap bounds memory and few, large blocks keep the launch count low on sparse
    input. A GPU computes IoUs almost for free but pays for every launch and host sync, so it takes
    larger blocks (measured on an H200: 20,000 random boxes 53 -> 30 ms, see BENCHMARKS.md), does
    not compact the edge list between rounds, and asks whether all is decided only every other
    round (a round with nothing undecided changes nothing).
    """

    first_block: int
    max_block: int
    prune_edges: bool
    rounds_per_check: int
    # One overlap search per block over the kept boxes and the block together (the kept ones enter
    # the resolution as decided), instead of a search kept x block, a selection of the survivors
    # and a search among them: fewer launches and syncs, more IoUs.
    merged_search: bool = False


_TUNING = {"cpu": _Tuning(first_block=256, max_block=4096, prune_edges=True, rounds_per_check=1)}
_TUNING_DEFAULT = _Tuning(
    first_block=2048, max_block=16384, prune_edges=False, rounds_per_check=2, merged_search=True
)


def _tuning(device: torch.device) -> _Tuning:
    return _TUNING.get(device.type, _TUNING_DEFAULT)


_UNDECIDED, _KEPT, _SUPPRESSED = 0, 1, 2


def _overlapping_pairs(
    boxes: Tensor, xyxy: Tensor, rows_idx: Tensor, cols_idx: Tensor, iou_thr: float, upper_triangle: bool
) -> tuple[Tensor, Tensor]:
    """Pairs (positions in ``rows_idx`` and ``cols_idx``) with IoU > ``iou_thr``.

    Boxes of different classes never pair: :func:`_greedy_nms_sorted` has moved each class to its
    own strip of ``xyxy``'s x axis."""
    found_rows, found_cols = [], []
    for r, c in hbb_overlap_pairs(xyxy[rows_idx], xyxy[cols_idx], upper_triangle=upper_triangle):
        over = (_aligned_overlaps(boxes[rows_idx[r]], boxes[cols_idx[c]], "iou") > iou_thr).nonzero()[:, 0]
        found_rows.append(r[over])
        found_cols.append(c[over])
    if not found_rows:
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return empty, empty
    return torch.cat(found_rows), torch.cat(found_cols)


def _resolve_greedy(state: Tensor, src: Tensor, dst: Tensor, tuning: _Tuning) -> Tensor:
    """Greedy NMS decisions inside a block, from its "src suppresses dst" edges (src ranked first).

    Args:
        state: ``[B]`` int64: ``_UNDECIDED``, or already decided (``_KEPT``, ``_SUPPRESSED``).
        src, dst: ``[E]`` positions in the block, ``src < dst``, pairs with IoU above threshold.

    Returns:
        ``[B]`` bool, the kept boxes.
    """
    num = state.numel()
    prune = tuning.prune_edges
    # Each edge votes by the state of its source: kept counts 2^32, undecided 1, suppressed 0, so
    # one index_add gives both "has a kept predecessor" and "has an undecided one". Built with fills,
    # not from a Python list, which would be a host-to-device copy.
    vote = torch.zeros(3, dtype=torch.long, device=state.device)
    vote[_UNDECIDED] = 1
    vote[_KEPT] = 1 << 32
    rounds = 0
    while True:
        if prune:
            # Edges into decided boxes, or from suppressed ones, can no longer change anything.
            live = ((state[dst] == _UNDECIDED) & (state[src] != _SUPPRESSED)).nonzero()[:, 0]
            src, dst = src[live], dst[live]
        votes = torch.zeros(num, dtype=torch.long, device=state.device).index_add_(0, dst, vote[state[src]])
        decided = torch.where(votes >= 1 << 32, _SUPPRESSED, torch.where(votes == 0, _KEPT, _UNDECIDED))
        state = torch.where(state == _UNDECIDED, decided, state)
        rounds += 1
        if rounds % tuning.rounds_per_check == 0 and not bool((state == _UNDECIDED).any()):
            return state == _KEPT


def _dense_rank(values: Tensor) -> Tensor:
    """``[N]`` rank of each value among the distinct values (0..U-1), like ``unique``'s inverse
    but without its host sync."""
    sorted_values, order = values.sort()
    step = torch.ones_like(sorted_values, dtype=torch.long)
    step[0] = 0
    step[1:] = sorted_values[1:] != sorted_values[:-1]
    return torch.empty_like(step).scatter_(0, order, step.cumsum(0))


def _greedy_nms_sorted(boxes: Tensor, labels: Tensor | None, iou_thr: float) -> Tensor:
    """Positions (ascending) of the boxes kept by greedy NMS of boxes already sorted by rank."""
    n = boxes.shape[0]
    xyxy = circumscribed_xyxy(boxes.to(torch.float64))
    if labels is not None:
        # Each class in its own strip of the x axis, for the overlap search only (IoUs use the boxes
        # as given): pairs of different classes are never formed.
        (xyxy,) = separate_groups([xyxy], [_dense_rank(labels)])
    kept = torch.zeros(0, dtype=torch.long, device=boxes.device)
    tuning = _tuning(boxes.device)
    max_block = tuning.max_block
    start, size = 0, tuning.first_block
    while start < n:
        block = torch.arange(start, min(n, start + size), device=boxes.device)
        start, size = start + size, min(2 * size, max_block)
        state = torch.full((block.numel(),), _UNDECIDED, dtype=torch.long, device=boxes.device)
        if kept.numel() and tuning.merged_search:
            # Kept boxes rank before the block, so "row before column" in the joint list is the
            # greedy order; two kept boxes never overlap above the threshold.
            joint = torch.cat((kept, block))
            src, dst = _overlapping_pairs(boxes, xyxy, joint, joint, iou_thr, upper_triangle=True)
            joint_state = torch.cat((torch.full_like(kept, _KEPT), state))
            kept_mask = _resolve_greedy(joint_state, src, dst, tuning)[kept.numel() :]
            kept = torch.cat((kept, block[kept_mask]))
            continue
        if kept.numel():
            _, hit = _overlapping_pairs(boxes, xyxy, kept, block, iou_thr, upper_triangle=False)
            state[hit] = _SUPPRESSED
            alive = block[state == _UNDECIDED]
        else:  # the first block: every box is alive, no selection (no host sync) needed
            alive = block
        src, dst = _overlapping_pairs(boxes, xyxy, alive, alive, iou_thr, upper_triangle=True)
        alive_pos = alive - block[0]
        kept_mask = _resolve_greedy(state, alive_pos[src], alive_pos[dst], tuning)
        kept = torch.cat((kept, block[kept_mask]))
    return kept


def _check_boxes(boxes: Tensor, scores: Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"boxes must be [N, 5], got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must be [N] with N = {boxes.shape[0]}, got {tuple(scores.shape)}")


def batched_nms_rotated(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_thr: float) -> Tensor:
    """Class-wise greedy rotated NMS: boxes only suppress boxes with the same ``idxs`` value.

    Args:
        boxes: ``[N, 5]`` rotated boxes ``(cx, cy, w, h, theta)``.
        scores: ``[N]`` scores.
        idxs: ``[N]`` integer class (or image) ids.
        iou_thr: a box is suppressed when its IoU with a kept box of its class is > ``iou_thr``.

    Returns:
        ``[K]`` int64 indices of the kept boxes, by descending score (ties: lower index first).
    """
    _check_boxes(boxes, scores)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must be [N] with N = {boxes.shape[0]}, got {tuple(idxs.shape)}")
    return _nms(boxes, scores, idxs, iou_thr)


def nms_rotated(boxes: Tensor, scores: Tensor, iou_thr: float) -> Tensor:
    """Greedy rotated NMS over all boxes; see :func:`batched_nms_rotated` for the arguments."""
    _check_boxes(boxes, scores)
    return _nms(boxes, scores, None, iou_thr)


def _nms(boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_thr: float) -> Tensor:
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # A stable sort gives the documented tie-break: equal scores keep input order.
    order = torch.sort(scores, descending=True, stable=True).indices
    labels = None if idxs is None else idxs.to(boxes.device)[order]
    return order[_greedy_nms_sorted(boxes[order], labels, iou_thr)]


def multiclass_nms_rotated(
    boxes: Tensor,
    scores: Tensor,
    score_thr: float,
    iou_thr: float,
    max_per_img: int = -1,
    score_factors: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """mmrotate's ``multiclass_nms_rotated``: score filter, class-wise rotated NMS, cap.

    Args:
        boxes: ``[N, 5]`` boxes shared by all classes, or ``[N, C * 5]`` one box per class.
        scores: ``[N, C]`` class scores, without mmrotate's trailing background column.
        score_thr: candidates need a score strictly above it (before ``score_factors``).
        iou_thr: class-wise NMS suppresses at IoU strictly above it.
        max_per_img: keep at most this many (the best), all if <= 0.
        score_factors: optional ``[N]`` factors multiplied into the scores after the filter.

    Returns:
        ``dets [K, 6]`` (box and score), ``labels [K]`` (0-based, int64) and ``inds [K]``, the
        index of each detection in the flattened ``[N * C]`` candidates (``n * C + c``), all by
        descending score.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [N, C], got {tuple(scores.shape)}")
    num, num_classes = scores.shape
    if boxes.shape == (num, 5):
        per_class = boxes[:, None, :].expand(num, num_classes, 5)
    elif boxes.shape == (num, num_classes * 5):
        per_class = boxes.view(num, num_classes, 5)
    else:
        raise ValueError(
            f"boxes must be [N, 5] or [N, C*5] for scores {tuple(scores.shape)}, got {tuple(boxes.shape)}"
        )
    flat_scores = scores.reshape(-1)
    inds = (flat_scores > score_thr).nonzero().squeeze(1)
    cand_boxes = per_class.reshape(-1, 5)[inds]
    cand_scores = flat_scores[inds]
    if score_factors is not None:
        cand_scores = cand_scores * score_factors[inds // num_classes]
    labels = inds % num_classes
    keep = _nms(cand_boxes, cand_scores, labels, iou_thr)
    if max_per_img > 0:
        keep = keep[:max_per_img]
    dets = torch.cat((cand_boxes[keep], cand_scores[keep, None]), dim=1)
    return dets, labels[keep], inds[keep]
