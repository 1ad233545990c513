"""Anchor assigners with the rules of mmdet 2.x ``MaxIoUAssigner`` and mmrotate 0.3.4 ``ATSSObbAssigner``.

An assigner labels each anchor as negative (``0``), ignored (``-1``) or positive for ground truth
``k`` (``k + 1``). Both assigners here compute rotated IoU the way mmrotate's ``RBboxOverlaps2D``
does: widths and heights of both sides clamped to at least ``1e-3`` before the IoU, which is then
taken in the dtype of the first argument (float32 for float32 boxes), so threshold tests such as
``iou >= 0.5`` compare the same float32 numbers as mmdet does.

Neither assigner builds the anchors x ground-truths matrices mmrotate builds:

* :class:`MaxIoUAssigner` only computes the IoU of pairs whose circumscribed horizontal boxes
  touch (every other IoU is exactly 0) and derives mmdet's per-anchor and per-ground-truth maxima,
  and its low-quality matches, from those pairs; the few pairs that decide each ground truth's best
  anchors are recomputed with mmcv's float32 arithmetic, whose rounding breaks ties as mmrotate's.
  Its IoU is swappable (``iou_calculator``): rotated (``RBboxOverlaps2D``) for the dense heads and
  the R-CNN's RoI head, horizontal (mmdet's ``BboxOverlaps2D``) for Oriented R-CNN's RPN; the rules
  are one implementation for both.
* :class:`ATSSAssigner` computes centre distances level by level in chunks of ground truths, keeps
  the ``topk`` nearest anchors per level and ground truth, and computes IoUs and the point-in-polygon
  test for those candidate pairs only (at most ``topk * levels * M`` of them).

Both follow one protocol (:class:`Assigner`, torchvision's ``Matcher`` idea: one contract for every
assigner), which is all a dense head uses::

    gt_inds, max_overlaps = assigner.assign_batch(anchors, num_level_anchors, gt_boxes, gt_valid,
                                                  anchor_valid)

with the anchors of a whole batch ``[B, N, 5]`` (levels concatenated, ``num_level_anchors`` of them
per level), the ground truths padded to ``[B, G, 5]`` with their validity ``[B, G]``, and optionally
which anchors take part ``[B, N]`` (anchors beyond an image's own padded shape, or outside it by
``allowed_border``). An anchor that does not take part is as absent: the result of the others is
that of assigning the image's taking-part anchors alone (mmdet's per-image ``inside_flags`` subset),
and it gets ``gt_inds = -1``. ATSS runs without a single host sync (one when ``anchor_valid`` is
given), MaxIoU with one overlap search for the batch. ``assign`` is mmdet's single-image call with
mmdet's arguments, a batch of one.

In the ``_hbb`` configs (and both R3Det first stages) the assigner sees the circumscribed
horizontal box of each ground truth while the regression target stays the rotated box; heads get
the boxes to assign with from :func:`assign_targets_boxes`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from rotdet.models.config_keys import constructor_kwargs
from rotdet.ops import bbox_overlaps, box_iou_rotated, circumscribed_xyxy, points_in_polygons
from rotdet.ops.iou import hbb_overlap_pairs, separate_groups
from rotdet.structures import check_version, obb2hbb, obb2poly

__all__ = [
    "IOU_CALCULATORS",
    "LOW_QUALITY_TIE_RULES",
    "MMCV_CUDA_INSIDE_LIMIT",
    "ATSSAssigner",
    "AssignResult",
    "Assigner",
    "MaxIoUAssigner",
    "assign_targets_boxes",
    "mmcv_box_iou_rotated_float32",
    "mmrotate_gt_polygons",
    "rbbox_overlaps",
]

# mmrotate's RBboxOverlaps2D clamps w and h of both sides to this before calling box_iou_rotated.
_MIN_SIZE = 1e-3
# MaxIoUAssigner's rules for the anchors at a ground truth's best IoU (see _low_quality_ties).
LOW_QUALITY_TIE_RULES = ("exact", "float32")
# MaxIoUAssigner's IoUs: mmdet's iou_calculator types (see _PairOverlaps).
IOU_CALCULATORS = ("RBboxOverlaps2D", "BboxOverlaps2D")
# float32 rule: pairs within this relative distance of the exact best are recomputed the mmcv way
# (mmcv's float32 IoUs are within 5e-6 of exact, relative, for boxes over a pixel wide and 6e-5 for
# sub-pixel ones: the recorded pairs of tests/data/mmcv_iou_oracle.py).
_TIE_CANDIDATE_RTOL = 1e-4
# ATSSObbAssigner's "minus infinity" for anchors no ground truth claims; it is also what mmrotate
# reports as the max overlap of those anchors, so we report it too.
_ATSS_NEG_INF = -100000000.0
# mmcv 1.7.2's points_in_polygons CUDA launch: at most 4096 blocks of 512 threads, and the kernel body
# ends with ``return`` inside its grid-stride loop, so every thread handles only its first index.
MMCV_CUDA_INSIDE_LIMIT = 4096 * 512
# Anchor x ground-truth distance entries per step of the ATSS candidate search (float32 temporaries
# of this many values, a few of them alive at once: ~16 MB each).
_DIST_ELEMS_PER_CHUNK = 1 << 22


@dataclass
class AssignResult:
    """Result of assigning ``N`` anchors to ``num_gts`` ground truths (mmdet's ``AssignResult``).

    Attributes:
        num_gts: number of ground truths ``M``.
        gt_inds: ``[N]`` int64: ``0`` negative, ``-1`` ignored, ``k + 1`` positive for ground truth ``k``.
        max_overlaps: ``[N]`` float: the IoU behind the decision. MaxIoU: each anchor's best IoU
            (``-1`` where ignored). ATSS: the assigned IoU for positives and ``-1e8`` elsewhere, as
            mmrotate reports it. Zeros when there is no ground truth or no anchor.
        labels: ``[N]`` int64 class of the assigned ground truth, ``-1`` where not positive; ``None``
            when no ground-truth labels were given.
    """

    num_gts: int
    gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor | None = None

    @property
    def num_preds(self) -> int:
        return int(self.gt_inds.numel())

    @property
    def pos_inds(self) -> Tensor:
        """``[P]`` int64 indices of positive anchors."""
        return torch.nonzero(self.gt_inds > 0).flatten()

    @property
    def neg_inds(self) -> Tensor:
        """``[Q]`` int64 indices of negative anchors."""
        return torch.nonzero(self.gt_inds == 0).flatten()


def _labels_of(gt_inds: Tensor, gt_labels: Tensor | None) -> Tensor | None:
    """Class of each anchor's ground truth, ``-1`` where not positive (``None`` without labels)."""
    if gt_labels is None:
        return None
    labels = torch.full_like(gt_inds, -1)
    pos = gt_inds > 0
    labels[pos] = gt_labels.to(device=gt_inds.device, dtype=torch.long)[gt_inds[pos] - 1]
    return labels


def _empty_result(num_gts: int, num_anchors: int, like: Tensor, gt_labels: Tensor | None) -> AssignResult:
    """mmdet/mmrotate's answer when there is no ground truth or no anchor: all negative, overlaps 0."""
    gt_inds = torch.zeros(num_anchors, dtype=torch.long, device=like.device)
    labels = None if gt_labels is None else torch.full_like(gt_inds, -1)
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return AssignResult(num_gts, gt_inds, torch.zeros(num_anchors, dtype=dtype, device=like.device), labels)


@runtime_checkable
class Assigner(Protocol):
    """What a dense head needs of an assigner (:class:`ATSSAssigner`, :class:`MaxIoUAssigner`)."""

    def assign_batch(
        self,
        anchors: Tensor,
        num_level_anchors: list[int],
        gt_boxes: Tensor,
        gt_valid: Tensor,
        anchor_valid: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Assign the anchors of ``B`` images at once.

        Args:
            anchors: ``[B, N, 5]`` anchors (or predicted boxes) of each image, levels concatenated;
                an expanded view of one grid is fine.
            num_level_anchors: anchors per level, summing to ``N``.
            gt_boxes: ``[B, G, 5]`` ground truths of each image, padded to the largest count
                (``G`` may be 0); each image's real ground truths come first.
            gt_valid: ``[B, G]`` bool, False for padding.
            anchor_valid: optional ``[B, N]`` bool, False for anchors that do not take part.

        Returns:
            ``gt_inds [B, N]`` int64 (``0`` negative, ``-1`` ignored or not taking part, ``k + 1``
            positive for ground truth ``k``) and ``max_overlaps [B, N]``.
        """
        ...


def _unmatched(anchors: Tensor, anchor_valid: Tensor | None, absent_overlap: float) -> tuple[Tensor, Tensor]:
    """mmdet's answer without ground truths for a batch ``anchors [B, N, 5]``: ``gt_inds [B, N]`` 0
    (``-1`` where ``anchor_valid`` is False), ``max_overlaps [B, N]`` 0 (``absent_overlap`` there)."""
    shape = anchors.shape[:2]
    gt_inds = torch.zeros(shape, dtype=torch.long, device=anchors.device)
    dtype = anchors.dtype if anchors.is_floating_point() else torch.float32
    overlaps = torch.zeros(shape, dtype=dtype, device=anchors.device)
    if anchor_valid is not None:
        gt_inds = torch.where(anchor_valid, gt_inds, -1)
        overlaps = torch.where(anchor_valid, overlaps, absent_overlap)
    return gt_inds, overlaps


def _clamp_sizes(boxes: Tensor) -> Tensor:
    """Copy of ``boxes [K, 5]`` with w and h clamped to at least 1e-3 (RBboxOverlaps2D)."""
    out = boxes[:, :5].detach().clone()
    out[:, 2:4] = out[:, 2:4].clamp(min=_MIN_SIZE)
    return out


def rbbox_overlaps(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", aligned: bool = False) -> Tensor:
    """mmrotate's ``RBboxOverlaps2D``: exact rotated IoU/IoF after clamping w, h to >= 1e-3.

    Args:
        boxes1: ``[N, 5]`` (or ``[N, 6]`` with a trailing score, which is dropped).
        boxes2: ``[M, 5]`` (``M == N`` when ``aligned``).

    Returns:
        ``[N, M]`` (``[N]`` when aligned) in the dtype of ``boxes1``.
    """
    boxes2 = boxes2.to(boxes1.device)
    if boxes1.shape[0] == 0 or boxes2.shape[0] == 0:
        shape = (boxes1.shape[0],) if aligned else (boxes1.shape[0], boxes2.shape[0])
        return boxes1.new_zeros(shape)
    return box_iou_rotated(_clamp_sizes(boxes1), _clamp_sizes(boxes2), mode=mode, aligned=aligned)


def assign_targets_boxes(gt_boxes: Tensor, assign_by_circumhbbox: str | None) -> Tensor:
    """The ground-truth boxes an assigner sees (mmrotate ``RotatedAnchorHead._get_targets_single``).

    Args:
        gt_boxes: ``[M, 5]`` rotated ground truths (the regression targets, unchanged by this).
        assign_by_circumhbbox: an angle version (``"oc"``, ``"le90"``, ``"le135"``): assign on the
            circumscribed horizontal box ``obb2hbb(gt_boxes, version)``, mmrotate's head default and
            what the ``_hbb`` configs and both R3Det first stages use; ``None``: assign on the obb.

    Returns:
        ``[M, 5]`` boxes for the assigner.
    """
    if assign_by_circumhbbox is None:
        return gt_boxes
    return obb2hbb(gt_boxes, assign_by_circumhbbox)


# ------------------------------------------------------------------------------------------- MaxIoU
@dataclass(frozen=True)
class _PairOverlaps:
    """The IoU of :class:`MaxIoUAssigner`: all that differs between mmdet's ``iou_calculator`` types.

    ``prepare`` turns ``[K, box_dim]`` boxes into what the IoU is computed on; ``search_xyxy`` gives,
    in float64, horizontal boxes that must touch for a pair's IoU to be above 0 (the overlap search);
    ``aligned`` is the IoU of prepared pairs ``[P, box_dim]`` x ``[P, box_dim]`` -> ``[P]``, in the
    dtype of the first, with the bits the dense matrix would hold. ``float32_ties``: the IoUs are exact
    and the ``"float32"`` tie rule recomputes the near-best ones as mmcv's float32 kernel does (rotated);
    False where the IoUs already are mmdet's float32 numbers (horizontal): both tie rules are then the
    plain comparison.
    """

    box_dim: int
    prepare: Callable[[Tensor], Tensor]
    search_xyxy: Callable[[Tensor], Tensor]
    aligned: Callable[[Tensor, Tensor], Tensor]
    float32_ties: bool


_PAIR_OVERLAPS = {
    # mmrotate's RBboxOverlaps2D: sizes clamped to 1e-3, exact rotated IoU; any IoU > 0 needs the
    # circumscribed horizontal boxes to touch.
    "RBboxOverlaps2D": _PairOverlaps(
        box_dim=5,
        prepare=_clamp_sizes,
        search_xyxy=lambda boxes: circumscribed_xyxy(boxes.to(torch.float64)),
        aligned=lambda boxes1, boxes2: box_iou_rotated(boxes1, boxes2, aligned=True),
        float32_ties=True,
    ),
    # mmdet's BboxOverlaps2D on xyxy boxes (Oriented R-CNN's RPN).
    "BboxOverlaps2D": _PairOverlaps(
        box_dim=4,
        prepare=lambda boxes: boxes[:, :4].detach(),
        search_xyxy=lambda boxes: boxes.to(torch.float64),
        aligned=lambda boxes1, boxes2: bbox_overlaps(boxes1, boxes2, aligned=True),
        float32_ties=False,
    ),
}


def _iou_calculator_name(iou_calculator: str | Mapping[str, str]) -> str:
    """The type of an ``iou_calculator`` given as its name or as mmdet's ``{type: ...}`` section."""
    if isinstance(iou_calculator, Mapping):
        if set(iou_calculator) != {"type"}:
            raise ValueError(f"iou_calculator: only its type may be given, got {dict(iou_calculator)!r}")
        iou_calculator = iou_calculator["type"]
    if iou_calculator not in IOU_CALCULATORS:
        raise ValueError(f"iou_calculator must be one of {list(IOU_CALCULATORS)}, got {iou_calculator!r}")
    return iou_calculator


class MaxIoUAssigner:
    """mmdet 2.x ``MaxIoUAssigner``, on rotated IoU (``iou_calculator="RBboxOverlaps2D"``, the
    default: ``[*, 5]`` boxes) or horizontal IoU (``"BboxOverlaps2D"``, mmdet's ``bbox_overlaps``:
    ``[*, 4]`` xyxy boxes, as Oriented R-CNN's RPN assigns). The rules below are the same for both.

    Rules, in mmdet's order, with ``IoU`` the ground-truth x anchor overlaps (``-1`` for every
    ground truth at anchors ignored by ``ignore_iof_thr``):

    1. every anchor starts ignored (``-1``);
    2. anchors whose best IoU lies in ``[0, neg_iou_thr)`` (or in ``[lo, hi)`` for a tuple) -> ``0``;
    3. anchors whose best IoU is ``>= pos_iou_thr`` -> the first ground truth reaching that best;
    4. low-quality matches (``match_low_quality``): ground truths are visited in index order and each
       whose best IoU is ``>= min_pos_iou`` takes every anchor whose IoU with it equals that best
       (``gt_max_assign_all``) or only its first such anchor; later ground truths overwrite earlier
       ones. With ``min_pos_iou = 0`` a ground truth that overlaps no anchor at all takes every
       anchor (all tie at 0) -- mmdet's behaviour, kept.

    Which anchors "equal that best" is ``low_quality_ties``. ``"float32"`` (default, mmrotate's
    behaviour): the IoUs near each ground truth's best are recomputed the way mmcv's float32
    ``box_iou_rotated`` computes them (:func:`mmcv_box_iou_rotated_float32`, bit for bit), so that a
    small ground truth inside several equal anchors keeps those mmcv's rounding puts on top -- often
    not all of them. ``"exact"``: the exact IoUs decide, and every anchor of such a set is taken
    (36-48 % more low-quality anchors for small non-integer boxes; README, Models). Horizontal IoUs
    are mmdet's float32 numbers already: there both rules compare them as they are.

    Only pairs whose circumscribed horizontal boxes touch are computed; every other IoU is exactly 0
    and is accounted for without being stored, so memory grows with the overlapping pairs, not N x M.
    """

    def __init__(
        self,
        pos_iou_thr: float,
        neg_iou_thr: float | tuple[float, float],
        min_pos_iou: float = 0.0,
        gt_max_assign_all: bool = True,
        match_low_quality: bool = True,
        ignore_iof_thr: float = -1,
        ignore_wrt_candidates: bool = True,
        low_quality_ties: str = "float32",
        iou_calculator: str | Mapping[str, str] = "RBboxOverlaps2D",
    ) -> None:
        self.iou_calculator = _iou_calculator_name(iou_calculator)
        self._overlaps = _PAIR_OVERLAPS[self.iou_calculator]
        if ignore_iof_thr > 0 and self.iou_calculator != "RBboxOverlaps2D":
            raise ValueError(
                f"ignore_iof_thr > 0 needs iou_calculator RBboxOverlaps2D, not {self.iou_calculator}"
            )
        if isinstance(neg_iou_thr, tuple | list) and len(neg_iou_thr) != 2:
            raise ValueError(f"neg_iou_thr tuple must have 2 values, got {neg_iou_thr!r}")
        if low_quality_ties not in LOW_QUALITY_TIE_RULES:
            raise ValueError(
                f"low_quality_ties must be one of {list(LOW_QUALITY_TIE_RULES)}, got {low_quality_ties!r}"
            )
        self.low_quality_ties = low_quality_ties
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = tuple(neg_iou_thr) if isinstance(neg_iou_thr, tuple | list) else neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.match_low_quality = match_low_quality
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates

    def __repr__(self) -> str:
        return (
            f"MaxIoUAssigner(pos_iou_thr={self.pos_iou_thr}, neg_iou_thr={self.neg_iou_thr}, "
            f"min_pos_iou={self.min_pos_iou}, gt_max_assign_all={self.gt_max_assign_all}, "
            f"match_low_quality={self.match_low_quality}, ignore_iof_thr={self.ignore_iof_thr}, "
            f"low_quality_ties={self.low_quality_ties!r}, iou_calculator={self.iou_calculator!r})"
        )

    def _ignored_anchors(self, anchors: Tensor, gt_boxes_ignore: Tensor | None) -> Tensor:
        """``[N]`` bool: anchors mmdet ignores because they lie in an ignore region (IoF > thr)."""
        ignored = torch.zeros(anchors.shape[0], dtype=torch.bool, device=anchors.device)
        if self.ignore_iof_thr > 0 and gt_boxes_ignore is not None and gt_boxes_ignore.numel() > 0:
            if self.ignore_wrt_candidates:
                iof = rbbox_overlaps(anchors, gt_boxes_ignore, mode="iof").amax(dim=1)
            else:
                iof = rbbox_overlaps(gt_boxes_ignore.to(anchors), anchors, mode="iof").amax(dim=0)
            ignored = iof > self.ignore_iof_thr
        return ignored

    def assign(
        self,
        anchors: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor | None = None,
        gt_boxes_ignore: Tensor | None = None,
    ) -> AssignResult:
        """Assign ``N`` anchors of one image to ``M`` ground truths (mmdet's call).

        Args:
            anchors: ``[N, 5]`` rotated anchors (or predicted boxes, for R3Det's refine stage);
                ``[N, 4]`` xyxy with ``BboxOverlaps2D``.
            gt_boxes: ``[M, 5]`` rotated ground truths (already :func:`assign_targets_boxes`-converted);
                ``[M, 4]`` xyxy with ``BboxOverlaps2D``.
            gt_labels: ``[M]`` int classes, or None.
            gt_boxes_ignore: ``[K, 5]`` ignore regions, used only when ``ignore_iof_thr > 0``.

        Returns:
            :class:`AssignResult` with ``gt_inds``, ``max_overlaps`` and ``labels`` of length ``N``.
        """
        n, m = anchors.shape[0], gt_boxes.shape[0]
        gt_boxes = gt_boxes.to(anchors.device)
        if n == 0 or m == 0:
            # mmdet: empty overlaps -> all 0 (also for anchors when there are no ground truths).
            return _empty_result(m, n, _overlaps_dtype_probe(gt_boxes), gt_labels)
        ignored = None
        if self.ignore_iof_thr > 0 and gt_boxes_ignore is not None and gt_boxes_ignore.numel() > 0:
            ignored = self._ignored_anchors(anchors, gt_boxes_ignore)[None]
        valid = torch.ones(1, m, dtype=torch.bool, device=anchors.device)
        gt_inds, max_overlaps = self.assign_batch(anchors[None], [n], gt_boxes[None], valid, ignored=ignored)
        return AssignResult(m, gt_inds[0], max_overlaps[0], _labels_of(gt_inds[0], gt_labels))

    def assign_batch(
        self,
        anchors: Tensor,
        num_level_anchors: list[int],
        gt_boxes: Tensor,
        gt_valid: Tensor,
        anchor_valid: Tensor | None = None,
        *,
        ignored: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The :class:`Assigner` protocol: the anchors of ``B`` images at once, one overlap search
        for the whole batch (``num_level_anchors`` is not needed by this rule).

        Args:
            anchors: ``[B, N, 5]``; gt_boxes: ``[B, G, 5]`` (``[B, N, 4]`` and ``[B, G, 4]`` xyxy
            with ``BboxOverlaps2D``); gt_valid: ``[B, G]``;
            anchor_valid: optional ``[B, N]`` (see :class:`Assigner`).
            ignored: optional ``[B, N]`` bool, anchors in ignore regions (mmdet's ``ignore_iof_thr``):
                they take part, with every IoU ``-1``.

        Returns:
            ``gt_inds [B, N]`` and ``max_overlaps [B, N]`` (each anchor's best IoU; ``-1`` where
            ignored or not taking part), as :meth:`assign` gives image by image on the anchors
            that take part.
        """
        batch, n = anchors.shape[:2]
        g = gt_boxes.shape[1]
        if g == 0 or n == 0:
            return _unmatched(anchors, anchor_valid, -1.0)
        d = self._overlaps.box_dim
        if anchors.shape[-1] != d or gt_boxes.shape[-1] != d:
            raise ValueError(
                f"MaxIoUAssigner({self.iou_calculator}) takes [*, {d}] boxes, got anchors "
                f"{list(anchors.shape)} and ground truths {list(gt_boxes.shape)}"
            )
        device = anchors.device
        valid = None if anchor_valid is None else anchor_valid.reshape(-1)
        g_idx, a_idx, iou = self._batch_pairs(anchors, gt_boxes, gt_valid, valid, ignored)
        ignored = torch.zeros(batch * n, dtype=torch.bool, device=device) if ignored is None else ignored
        kept = ~ignored.reshape(-1) if valid is None else ~ignored.reshape(-1) & valid
        g_local = g_idx % g
        dtype = iou.dtype

        # Per anchor: best IoU (first ground truth reaching it, as torch.max does).
        max_overlaps = torch.zeros(batch * n, dtype=dtype, device=device)
        max_overlaps.scatter_reduce_(0, a_idx, iou, reduce="amax", include_self=True)
        at_max = iou == max_overlaps[a_idx]
        argmax = torch.full((batch * n,), g, dtype=torch.long, device=device)
        argmax.scatter_reduce_(0, a_idx, torch.where(at_max, g_local, g), reduce="amin", include_self=True)
        # Best 0 (or -1 for ignored): every ground truth ties, the first one (0) is the argmax.
        argmax = torch.where(max_overlaps > 0, argmax, torch.zeros_like(argmax))
        max_overlaps = torch.where(kept, max_overlaps, -torch.ones_like(max_overlaps))

        # Per ground truth: best IoU over its image's anchors. Kept anchors outside every pair give 0,
        # so the best is max(0, pair max) -- unless every anchor is ignored, when all entries are -1.
        any_kept = kept.view(batch, n).any(dim=1).repeat_interleave(g)  # [B*G]
        gt_max = torch.where(any_kept, 0.0, -1.0).to(dtype)
        gt_max.scatter_reduce_(0, g_idx, iou, reduce="amax", include_self=True)

        gt_inds = torch.full((batch * n,), -1, dtype=torch.long, device=device)
        if isinstance(self.neg_iou_thr, tuple):
            lo, hi = self.neg_iou_thr
            gt_inds = torch.where((max_overlaps >= lo) & (max_overlaps < hi), 0, gt_inds)
        else:
            gt_inds = torch.where((max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr), 0, gt_inds)
        gt_inds = torch.where(max_overlaps >= self.pos_iou_thr, argmax + 1, gt_inds)

        if self.match_low_quality:
            present = torch.ones_like(kept) if valid is None else valid
            eligible = (gt_max >= self.min_pos_iou) & gt_valid.reshape(-1)  # [B*G]
            ties = self._low_quality_ties(
                eligible & (gt_max > 0), gt_max, (g_idx, a_idx, iou), anchors, gt_boxes
            )
            pairs = (g_idx, g_local, a_idx, ties)
            winner = self._low_quality_winners(batch, n, g, gt_max, eligible, pairs, kept, present)
            gt_inds = torch.where(winner >= 0, winner + 1, gt_inds)
        if valid is not None:
            gt_inds = torch.where(valid, gt_inds, -1)
        return gt_inds.view(batch, n), max_overlaps.view(batch, n)

    def _batch_pairs(
        self,
        anchors: Tensor,
        gt_boxes: Tensor,
        gt_valid: Tensor,
        valid: Tensor | None,
        ignored: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Flat ``(gt, anchor, iou)`` ``[P]`` of the pairs of one image with IoU > 0 (the only
        ones stored; a pair left out has IoU 0, or -1 if its anchor is ignored), valid ground truths
        and taking-part (``valid [B*N]``), not ignored (``ignored [B, N]``) anchors only."""
        batch, n = anchors.shape[:2]
        g = gt_boxes.shape[1]
        device = anchors.device
        # One image needs no separating of images: its search skips shifting every box (~20 ms of
        # the RPN's single-image assign on 260k anchors, 1 CPU thread).
        anchor_img = torch.arange(batch, device=device).repeat_interleave(n) if batch > 1 else None
        gt_img = torch.arange(batch, device=device).repeat_interleave(g) if batch > 1 else None
        d = self._overlaps.box_dim
        g_idx, a_idx, iou = _positive_pairs(
            gt_boxes.reshape(-1, d),
            anchors.reshape(-1, d),
            gt_img,
            anchor_img,
            gt_valid.reshape(-1),
            valid,
            overlaps=self._overlaps,
        )
        if ignored is not None:  # known on the host: no selection (no host sync) when nothing is ignored
            keep = (~ignored.reshape(-1)[a_idx]).nonzero()[:, 0]
            g_idx, a_idx, iou = g_idx[keep], a_idx[keep], iou[keep]
        return g_idx, a_idx, iou

    def _low_quality_ties(
        self,
        positive_best: Tensor,
        gt_max: Tensor,
        pairs: tuple[Tensor, Tensor, Tensor],
        anchors: Tensor,
        gt_boxes: Tensor,
    ) -> Tensor:
        """``[P]`` bool: the pairs at their ground truth's best IoU, by ``self.low_quality_ties``.

        ``positive_best [B*G]`` ground truths that match low-quality anchors and overlap some;
        ``gt_max [B*G]`` their best IoU; ``pairs`` the flat ``(gt, anchor, iou)`` ``[P]`` of
        :meth:`_batch_pairs`; ``anchors [B, N, 5]``, ``gt_boxes [B, G, 5]``.

        ``"exact"``: the pairs whose exact IoU equals the best -- every anchor of a set of equal
        anchors around a small ground truth. ``"float32"``: the pairs within ``_TIE_CANDIDATE_RTOL``
        of the best are recomputed as mmcv's float32 kernel computes them (ground truth first, as
        mmdet calls it) and those reaching the largest recomputed value are kept: mmcv's rounding
        decides, and usually keeps fewer.
        """
        g_idx, a_idx, iou = pairs
        best = gt_max[g_idx]
        if self.low_quality_ties == "exact" or not self._overlaps.float32_ties:
            return positive_best[g_idx] & (iou == best)
        near = (positive_best[g_idx] & (iou >= best * (1 - _TIE_CANDIDATE_RTOL))).nonzero()[:, 0]
        gts = _clamp_sizes(gt_boxes.reshape(-1, 5)[g_idx[near]])
        iou32 = mmcv_box_iou_rotated_float32(gts, _clamp_sizes(anchors.reshape(-1, 5)[a_idx[near]]))
        best32 = torch.full_like(gt_max, -1.0, dtype=torch.float32)
        best32.scatter_reduce_(0, g_idx[near], iou32, reduce="amax", include_self=True)
        ties = torch.zeros_like(iou, dtype=torch.bool)
        ties[near] = iou32 == best32[g_idx[near]]
        return ties

    def _low_quality_winners(
        self,
        batch: int,
        n: int,
        g: int,
        gt_max: Tensor,
        eligible: Tensor,
        pairs: tuple[Tensor, Tensor, Tensor, Tensor],
        kept: Tensor,
        present: Tensor,
    ) -> Tensor:
        """``[B*N]`` ground truth (local index) each anchor takes from mmdet's low-quality matches,
        ``-1`` for none. Ground truths are visited in index order and later ones overwrite earlier
        ones, so an anchor takes the largest eligible index among the ground truths it ties with.

        ``gt_max [B*G]`` each ground truth's best IoU, ``eligible [B*G]`` those that match
        (``>= min_pos_iou``, not padding); ``pairs`` the flat ``(gt, local gt, anchor, at best)``
        ``[P]`` (:meth:`_batch_pairs`, :meth:`_low_quality_ties`); ``kept`` / ``present``
        ``[B*N]`` the anchors taking part and not ignored / taking part."""
        g_idx, g_local, a_idx, ties = pairs
        device = ties.device
        positive_best = eligible & (gt_max > 0)
        # One extra slot (index B*N) takes the writes of pairs and images that match nothing.
        trash = batch * n
        winner = torch.full((trash + 1,), -1, dtype=torch.long, device=device)
        first_anchor = torch.arange(batch, device=device) * n  # [B]
        local = torch.arange(g, device=device).expand(batch, g)
        if self.gt_max_assign_all:
            winner.scatter_reduce_(0, a_idx, torch.where(ties, g_local, -1), reduce="amax", include_self=True)
        else:
            # The first anchor at the best: the smallest anchor index among the tying pairs.
            first = torch.full((batch * g + 1,), trash, dtype=torch.long, device=device)
            first.scatter_reduce_(
                0, torch.where(ties, g_idx, batch * g), a_idx, reduce="amin", include_self=True
            )
            first = torch.where(positive_best, first[:-1], trash)
            winner.scatter_reduce_(0, first, local.reshape(-1), reduce="amax", include_self=True)
        # A best of 0 means IoU 0 with every kept anchor of the image: all of them tie. A best of -1
        # (every anchor of the image ignored) ties every anchor taking part.
        for best_value, tied in ((0.0, kept), (-1.0, present)):
            at_value = (eligible & (gt_max == best_value)).view(batch, g)
            last = torch.where(at_value, local, -1).amax(dim=1)  # [B], -1 where none
            if self.gt_max_assign_all:
                per_anchor = last.repeat_interleave(n)
                winner[:trash] = torch.where(tied, torch.maximum(winner[:trash], per_anchor), winner[:trash])
            else:
                # Each such ground truth takes only the first tied anchor of its image.
                first_tied = tied.view(batch, n).to(torch.int8).argmax(dim=1) + first_anchor
                has_tied = tied.view(batch, n).any(dim=1)
                winner.scatter_reduce_(
                    0, torch.where(has_tied, first_tied, trash), last, reduce="amax", include_self=True
                )
        return winner[:trash]


def _overlaps_dtype_probe(boxes: Tensor) -> Tensor:
    """A tensor carrying the dtype mmdet's empty overlaps would have (that of the first IoU argument)."""
    return boxes if boxes.is_floating_point() else boxes.float()


def _positive_pairs(
    boxes1: Tensor,
    boxes2: Tensor,
    groups1: Tensor | None = None,
    groups2: Tensor | None = None,
    valid1: Tensor | None = None,
    valid2: Tensor | None = None,
    overlaps: _PairOverlaps = _PAIR_OVERLAPS["RBboxOverlaps2D"],
) -> tuple[Tensor, Tensor, Tensor]:
    """``(i, j, iou)`` for every pair with ``overlaps``' IoU (``RBboxOverlaps2D`` by default) of
    ``boxes1[i]`` and ``boxes2[j]`` above 0.

    ``iou`` is in the dtype of ``boxes1`` (float32 for float32 input), computed exactly like the dense
    matrix; pairs whose circumscribed horizontal boxes do not touch have IoU 0 and are never computed.
    With ``groups1, groups2`` (e.g. the image of each box) only pairs of the same group are formed;
    rows with ``valid1 [N]`` False (padding) and columns with ``valid2 [M]`` False take part in none.
    """
    c1, c2 = overlaps.prepare(boxes1), overlaps.prepare(boxes2.to(boxes1))
    x1, x2 = overlaps.search_xyxy(c1), overlaps.search_xyxy(c2)
    if groups1 is not None:
        x1, x2 = separate_groups([x1, x2], [groups1, groups2])
    rows, cols, vals = [], [], []
    for r, c in hbb_overlap_pairs(x1, x2):
        rows.append(r)
        cols.append(c)
        vals.append(overlaps.aligned(c1[r], c2[c]))
    if not rows:
        empty = torch.zeros(0, dtype=torch.long, device=boxes1.device)
        dtype = boxes1.dtype if boxes1.is_floating_point() else torch.float32
        return empty, empty, torch.zeros(0, dtype=dtype, device=boxes1.device)
    rows, cols, vals = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    # One selection for all blocks of the search (one host sync, not one per block).
    keep = vals > 0
    if valid1 is not None:
        keep &= valid1[rows]
    if valid2 is not None:
        keep &= valid2[cols]
    keep = keep.nonzero()[:, 0]
    return rows[keep], cols[keep], vals[keep]


# --------------------------------------------------------------------------------------------- ATSS
def mmrotate_gt_polygons(gt_boxes: Tensor, version: str) -> Tensor:
    """The polygons ``[M, 8]`` mmrotate's ATSSObbAssigner tests anchor centres against.

    ``obb2poly(gt, angle_version)`` with mmrotate's per-version arithmetic, reproduced operation for
    operation because a centre exactly on a polygon edge is decided by the float32 corner values:
    ``oc`` adds the half-edge vectors to the centre; ``le90``/``le135`` rotate the corner offsets with
    a batched 2x2 ``matmul`` and then add the centre. The corner order is the same in all three.
    """
    check_version(version)
    if version == "oc":
        return obb2poly(gt_boxes)
    n = gt_boxes.shape[0]
    if n == 0:
        return gt_boxes.new_zeros((0, 8))
    cx, cy, w, h, theta = gt_boxes.unbind(1)
    left, top, right, bottom = -w * 0.5, -h * 0.5, w * 0.5, h * 0.5
    rects = torch.stack([left, right, right, left, top, top, bottom, bottom], 0).reshape(2, 4, n)
    sin, cos = torch.sin(theta), torch.cos(theta)
    rot = torch.stack([cos, -sin, sin, cos], 0).reshape(2, 2, n)
    # Never under autocast: a bfloat16 matmul would round the corners to whole pixels.
    with torch.autocast(device_type=gt_boxes.device.type, enabled=False):
        polys = rot.permute(2, 0, 1).matmul(rects.permute(2, 0, 1))  # [n, 2, 4]: rows x, y of corners
    polys = polys.permute(2, 1, 0).reshape(-1, n).transpose(1, 0).clone()  # [n, 8] x0 y0 x1 y1 ...
    polys[:, ::2] += cx.unsqueeze(1)
    polys[:, 1::2] += cy.unsqueeze(1)
    return polys.contiguous()


def _nearest_k(points: Tensor, centres: Tensor, k: int, valid: Tensor | None = None) -> Tensor:
    """Indices ``[..., C, k]`` of the ``k`` anchor centres nearest each ground-truth centre.

    Args:
        points: ``[..., n, 2]`` anchor centres of one level.
        centres: ``[..., C, 2]`` ground-truth centres (same leading dimensions, e.g. images).
        valid: optional ``[..., n]`` bool: anchors that do not take part are the farthest (at
            infinity), so that an image's taking-part anchors come first, in their own order.

    Distances are mmrotate's float32 ``sqrt(dx^2 + dy^2)``. Among anchors tied at the k-th distance
    the lowest indices are taken -- what CUDA ``torch.topk`` (the radix select that trained the
    released models) does; CPU ``topk`` breaks such ties in an unspecified order. Each row is sorted
    by distance, ties by index, like a sorted ``topk``.
    """
    # Same float32 operations as mmrotate's (a - b).pow(2).sum(-1).sqrt(), one coordinate at a time
    # (x * x + y * y rounds exactly like a two-element sum of squares) to avoid a [C, n, 2] temporary.
    dx = points[..., None, :, 0] - centres[..., :, None, 0]
    dy = points[..., None, :, 1] - centres[..., :, None, 1]
    d = (dx * dx + dy * dy).sqrt()  # [..., C, n], >= 0
    del dx, dy
    if valid is not None:
        d = d.masked_fill(~valid[..., None, :], math.inf)
    # One int64 key per entry orders by (distance, index): the bits of a non-negative float32 sort
    # like the float, so a plain topk is the rule -- no tie repair, no data-dependent step.
    key = d.view(torch.int32).to(torch.int64).bitwise_left_shift_(32)
    key |= torch.arange(points.shape[-2], device=points.device)
    return key.topk(k, dim=-1, largest=False, sorted=True).values.bitwise_and_(0xFFFFFFFF)


def _mean_plus_std(iou: Tensor) -> Tensor:
    """``[..., 1]``: mmrotate's threshold, mean + unbiased std of each row of ``iou [..., K]``
    (NaN for fewer than two candidates: that ground truth gets no positive, as in mmrotate)."""
    if iou.shape[-1] > 1:
        return iou.mean(dim=-1, keepdim=True) + iou.std(dim=-1, keepdim=True)
    # torch.std of one value is NaN (with a warning): nothing passes the threshold
    return iou.new_full((*iou.shape[:-1], 1), math.nan)


class ATSSAssigner:
    """mmrotate 0.3.4 ``ATSSObbAssigner(topk, angle_version, iou_calculator=RBboxOverlaps2D)``.

    For each ground truth:

    1. on every level, the ``topk`` anchors whose centres are nearest the ground truth's centre are
       its candidates (``min(topk, anchors on the level)``; mmrotate would crash on a smaller level);
    2. its IoU threshold is the mean plus the unbiased standard deviation of the candidates' IoUs;
    3. a candidate is positive when its IoU is ``>=`` the threshold and its centre lies inside the
       ground truth's polygon ``obb2poly(gt, angle_version)`` (mmcv ``points_in_polygons``
       semantics, see :mod:`rotdet.ops.points`);
    4. an anchor positive for several ground truths goes to the one with the highest IoU, the lowest
       index on ties (``torch.max``'s first maximum).

    Only candidate pairs are ever evaluated: distances are computed per level in chunks of ground
    truths, then IoU and the inside test run on the ``<= topk * levels * M`` candidate pairs, and the
    tie-break runs over positive pairs. mmrotate materialises ``N x M`` IoU, distance, inside and
    ``-inf``-filled matrices instead; the assignment is the same.

    ``mmcv_cuda_inside_limit`` (default True) reproduces a bug of mmcv's CUDA ``points_in_polygons``
    that the released models were trained with: the kernel is launched on ``min(ceil(N*M/512), 4096)``
    blocks of 512 threads, and its grid-stride loop body ends in ``return``, so only the first
    ``4096 * 512 = 2,097,152`` entries of the row-major ``[N anchors, M gts]`` output are computed;
    the rest stay 0, i.e. "outside". Pair (anchor ``a``, gt ``g``) can thus be positive only if
    ``a * M + g < 2,097,152``: with 21,824 anchors (a 1024 x 1024 image) and 97 or more ground truths
    the last anchors lose their positives, and with 1,000 ground truths only anchors below 2,098 (the
    top of the stride-8 level) can be positive. Set it to False for the exact inside test (what
    mmcv's rule intends); models trained that way differ from mmrotate's on crowded images.
    """

    def __init__(
        self,
        topk: int = 9,
        angle_version: str = "oc",
        mmcv_cuda_inside_limit: bool = True,
    ) -> None:
        check_version(angle_version)
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.topk = topk
        self.angle_version = angle_version
        self.mmcv_cuda_inside_limit = mmcv_cuda_inside_limit

    def __repr__(self) -> str:
        return (
            f"ATSSAssigner(topk={self.topk}, angle_version={self.angle_version!r}, "
            f"mmcv_cuda_inside_limit={self.mmcv_cuda_inside_limit})"
        )

    def candidates(
        self,
        anchors: Tensor,
        num_level_anchors: list[int],
        gt_boxes: Tensor,
        anchor_valid: Tensor | None = None,
    ) -> Tensor:
        """``[..., M, K]`` int64 anchor indices of each ground truth's candidates, level by level.

        ``anchors [..., N, 5]`` and ``gt_boxes [..., M, 5]`` (optional leading image dimension).
        ``K = sum(min(topk, n_l))``; within a level, nearest first. With ``anchor_valid [..., N]``
        the anchors that do not take part come last in their level's block: they are candidates
        only where an image has fewer than ``topk`` taking-part anchors on the level (see
        :meth:`assign_batch`).
        """
        m = gt_boxes.shape[-2]
        points = anchors[..., :2]
        centres = gt_boxes[..., :2].to(points)
        per_level = []
        start = 0
        for n_l in num_level_anchors:
            if n_l > 0:
                k = min(self.topk, n_l)
                level_points = points[..., start : start + n_l, :]
                level_valid = None if anchor_valid is None else anchor_valid[..., start : start + n_l]
                rows = max(1, _DIST_ELEMS_PER_CHUNK // (n_l * points.shape[:-2].numel()))
                parts = [
                    _nearest_k(level_points, centres[..., c : c + rows, :], k, level_valid) + start
                    for c in range(0, m, rows)
                ]
                per_level.append(torch.cat(parts, dim=-2))
            start += n_l
        return torch.cat(per_level, dim=-1)

    def assign(
        self,
        anchors: Tensor,
        num_level_anchors: list[int],
        gt_boxes: Tensor,
        gt_labels: Tensor | None = None,
    ) -> AssignResult:
        """Assign ``N`` anchors of one image (all levels concatenated) to ``M`` ground truths
        (mmrotate's call).

        Args:
            anchors: ``[N, 5]`` rotated anchors, level after level.
            num_level_anchors: anchors per level, summing to ``N``.
            gt_boxes: ``[M, 5]`` ground truths (already :func:`assign_targets_boxes`-converted).
            gt_labels: ``[M]`` int classes, or None.

        Returns:
            :class:`AssignResult`; ``max_overlaps`` is the assigned IoU for positives, ``-1e8`` elsewhere.
        """
        n, m = anchors.shape[0], gt_boxes.shape[0]
        if sum(num_level_anchors) != n:
            raise ValueError(f"num_level_anchors sums to {sum(num_level_anchors)}, but there are {n} anchors")
        gt_boxes = gt_boxes.to(anchors.device)
        if n == 0 or m == 0:
            return _empty_result(m, n, _overlaps_dtype_probe(anchors), gt_labels)
        valid = torch.ones(1, m, dtype=torch.bool, device=anchors.device)
        gt_inds, max_overlaps = self.assign_batch(anchors[None], num_level_anchors, gt_boxes[None], valid)
        return AssignResult(m, gt_inds[0], max_overlaps[0], _labels_of(gt_inds[0], gt_labels))

    def assign_batch(
        self,
        anchors: Tensor,
        num_level_anchors: list[int],
        gt_boxes: Tensor,
        gt_valid: Tensor,
        anchor_valid: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The :class:`Assigner` protocol: the anchors of ``B`` images at once, without a host sync
        (one with ``anchor_valid``, see :meth:`_thresholds`).

        Args:
            anchors: ``[B, N, 5]`` anchors of each image (an expanded view of one grid is fine).
            num_level_anchors: anchors per level, summing to ``N``.
            gt_boxes: ``[B, G, 5]`` ground truths of each image, padded to the largest count.
            gt_valid: ``[B, G]`` bool, False for padding. Each image's real ground truths come first,
                so a ground truth keeps its index (mmcv's inside limit depends on it).
            anchor_valid: optional ``[B, N]`` bool, the anchors that take part.

        Returns:
            ``gt_inds [B, N]`` (``0`` negative, ``k + 1`` positive for ground truth ``k``, ``-1``
            not taking part) and ``max_overlaps [B, N]`` (assigned IoU, ``-1e8`` where not
            positive); the same as :meth:`assign` image by image on the anchors that take part
            (each level's count of them, and each one's index among them for mmcv's inside limit).
        """
        batch, n = anchors.shape[:2]
        g = gt_boxes.shape[1]
        if sum(num_level_anchors) != n:
            raise ValueError(f"num_level_anchors sums to {sum(num_level_anchors)}, but there are {n} anchors")
        if g == 0 or n == 0:
            return _unmatched(anchors, anchor_valid, _ATSS_NEG_INF)
        cand = self.candidates(anchors, num_level_anchors, gt_boxes, anchor_valid)  # [B, G, K]
        k_total = cand.shape[-1]
        pair_anchors = anchors.gather(1, cand.reshape(batch, -1, 1).expand(-1, -1, 5))  # [B, G*K, 5]
        pair_gts = gt_boxes[:, :, None, :].expand(-1, -1, k_total, -1).reshape(batch, -1, 5)
        iou = rbbox_overlaps(pair_anchors.reshape(-1, 5), pair_gts.reshape(-1, 5), aligned=True)
        iou = iou.view(batch, g, k_total)
        # mmrotate: mean + unbiased std over each ground truth's candidates.
        is_pos = (iou >= self._thresholds(iou, num_level_anchors, anchor_valid)) & gt_valid[:, :, None]

        polys = mmrotate_gt_polygons(gt_boxes.reshape(-1, 5), self.angle_version)  # [B*G, 8]
        pair_polys = polys[:, None, :].expand(-1, k_total, -1).reshape(-1, 8)
        inside = points_in_polygons(pair_anchors.reshape(-1, 5)[:, :2], pair_polys, aligned=True)
        is_pos &= inside.view(batch, g, k_total)
        rank = cand  # each candidate's index among the anchors its image's assignment sees
        if anchor_valid is not None:
            is_pos &= anchor_valid.gather(1, cand.reshape(batch, -1)).view_as(cand)
            rank = (anchor_valid.cumsum(dim=1) - 1).gather(1, cand.reshape(batch, -1)).view_as(cand)
        gt_idx = torch.arange(g, device=anchors.device)[None, :, None]
        if self.mmcv_cuda_inside_limit:
            num_gts = gt_valid.sum(dim=1)[:, None, None]  # the kernel's M is the image's own count
            is_pos &= rank * num_gts + gt_idx < MMCV_CUDA_INSIDE_LIMIT
        gt_inds, max_overlaps = _resolve_claims(cand, is_pos, iou, gt_idx, n)
        if anchor_valid is not None:
            gt_inds = torch.where(anchor_valid, gt_inds, -1)
        return gt_inds, max_overlaps

    def _thresholds(self, iou: Tensor, num_level_anchors: list[int], anchor_valid: Tensor | None) -> Tensor:
        """``[B, G, 1]``: each ground truth's IoU threshold over its candidates' ``iou [B, G, K]``.

        With ``anchor_valid``, an image with fewer than ``topk`` taking-part anchors on a level has
        fewer candidates there (the rest of the level's block are anchors that do not take part):
        its threshold is the reduction of its own shorter row -- the very one image-by-image
        assignment computes, rounding included. Images are grouped by their candidate count per
        level, which needs the per-level counts on the host: one sync, only when anchors are
        missing somewhere (a batch of images padded to different shapes).
        """
        if anchor_valid is None:
            return _mean_plus_std(iou)
        full = [min(self.topk, n_l) for n_l in num_level_anchors]
        counts = torch.stack([v.sum(dim=1) for v in anchor_valid.split(num_level_anchors, dim=1)], dim=1)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, row in enumerate(counts.tolist()):
            groups.setdefault(tuple(min(self.topk, int(c)) for c in row), []).append(i)
        if list(groups) == [tuple(full)]:  # every image has all its candidates (the usual case)
            return _mean_plus_std(iou)
        starts = [sum(full[:level]) for level in range(len(full))]
        thr = iou.new_empty((*iou.shape[:2], 1))
        for ks, images in groups.items():
            index = torch.tensor(images, device=iou.device)
            rows = iou.index_select(0, index)
            if list(ks) != full:
                cols = [s + j for s, k in zip(starts, ks, strict=True) for j in range(k)]
                rows = rows.index_select(2, torch.tensor(cols, dtype=torch.long, device=iou.device))
            thr[index] = _mean_plus_std(rows)
        return thr


def _resolve_claims(
    cand: Tensor, is_pos: Tensor, iou: Tensor, gt_idx: Tensor, n: int
) -> tuple[Tensor, Tensor]:
    """ATSS's last step: an anchor positive for several ground truths goes to the highest IoU, then
    the lowest index. ``cand``, ``is_pos``, ``iou`` ``[B, G, K]`` (candidate anchor, positive, IoU),
    ``gt_idx [1, G, 1]``; returns ``gt_inds [B, N]`` and ``max_overlaps [B, N]``. Pairs that are not
    positive take part with values that can never win."""
    batch, g, k_total = cand.shape
    device = cand.device
    flat = (cand + (torch.arange(batch, device=device) * n)[:, None, None]).reshape(-1)
    values = torch.where(is_pos, iou, torch.full_like(iou, _ATSS_NEG_INF)).reshape(-1)
    max_overlaps = torch.full((batch * n,), _ATSS_NEG_INF, dtype=iou.dtype, device=device)
    max_overlaps.scatter_reduce_(0, flat, values, reduce="amax", include_self=True)
    best = is_pos.reshape(-1) & (values == max_overlaps[flat])
    claims = torch.where(best, gt_idx.expand(batch, g, k_total).reshape(-1), g)
    winner = torch.full((batch * n,), g, dtype=torch.long, device=device)
    winner.scatter_reduce_(0, flat, claims, reduce="amin", include_self=True)
    gt_inds = torch.where(winner < g, winner + 1, torch.zeros_like(winner))
    return gt_inds.view(batch, n), max_overlaps.view(batch, n)


# ------------------------------------------------------------------- mmcv's float32 rotated IoU
# The low-quality rule ``low_quality_ties="float32"`` recomputes the IoUs that decide each ground
# truth's best anchors the way mmcv 1.7.2's CPU ``box_iou_rotated`` kernel does, operation for
# operation in float32. Exact IoUs of a small ground truth inside several equal anchors are equal;
# mmcv's are not (each pair is shifted to its own centre midpoint, and the intersection polygon's
# vertices round differently at each offset), so mmcv keeps only the anchors that happen to round
# to the largest value. Only candidate pairs are recomputed: a few per ground truth.
_MMCV_PARALLEL_EPS = 1e-14  # mmcv: |det| <= this means parallel edges
_MMCV_ANGLE_EPS = 1e-6  # mmcv's convex hull: |cross| below this means the same direction
_MMCV_DUP_EPS = 1e-8  # mmcv's convex hull: squared distance below this means the same point


def _mmcv_vertices(x: Tensor, y: Tensor, w: Tensor, h: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """mmcv's ``get_rotated_vertices`` in float32: corners ``x, y`` each ``[K, 4]``."""
    cos2 = torch.cos(theta.double()).float() * 0.5
    sin2 = torch.sin(theta.double()).float() * 0.5
    x0 = x - sin2 * h - cos2 * w
    y0 = y + cos2 * h - sin2 * w
    x1 = x + sin2 * h - cos2 * w
    y1 = y - cos2 * h - sin2 * w
    return (
        torch.stack([x0, x1, 2 * x - x0, 2 * x - x1], dim=1),
        torch.stack([y0, y1, 2 * y - y0, 2 * y - y1], dim=1),
    )


def _mmcv_intersection_points(
    ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """mmcv's ``get_intersection_points``: the 24 candidate points ``x, y, valid`` ``[K, 24]`` in
    mmcv's order (16 edge crossings, then corners of a inside b, then corners of b inside a)."""
    ex, ey = ax.roll(-1, 1) - ax, ay.roll(-1, 1) - ay  # [K, 4] edges of a
    fx, fy = bx.roll(-1, 1) - bx, by.roll(-1, 1) - by  # [K, 4] edges of b
    # pair (i, j): edge i of a (rows), edge j of b (columns), flattened i * 4 + j
    e_x, e_y, f_x, f_y = ex[:, :, None], ey[:, :, None], fx[:, None, :], fy[:, None, :]
    det = f_x * e_y - e_x * f_y
    dx = bx[:, None, :] - ax[:, :, None]
    dy = by[:, None, :] - ay[:, :, None]
    crosses = det.abs() > _MMCV_PARALLEL_EPS
    safe = torch.where(crosses, det, torch.ones_like(det))
    t1 = (f_x * dy - dx * f_y) / safe
    t2 = (e_x * dy - dx * e_y) / safe
    hit = crosses & (t1 >= 0) & (t1 <= 1) & (t2 >= 0) & (t2 <= 1)
    px = ax[:, :, None] + e_x * t1
    py = ay[:, :, None] + e_y * t1
    xs, ys, ok = [px.flatten(1)], [py.flatten(1)], [hit.flatten(1)]
    for (qx, qy), (rx, ry, gx, gy) in (((ax, ay), (bx, by, fx, fy)), ((bx, by), (ax, ay, ex, ey))):
        ab_x, ab_y, da_x, da_y = gx[:, :1], gy[:, :1], gx[:, 3:], gy[:, 3:]
        ab_ab = ab_x * ab_x + ab_y * ab_y
        ad_ad = da_x * da_x + da_y * da_y
        ap_x, ap_y = qx - rx[:, :1], qy - ry[:, :1]
        ap_ab = ap_x * ab_x + ap_y * ab_y
        ap_ad = -(ap_x * da_x + ap_y * da_y)
        xs.append(qx)
        ys.append(qy)
        ok.append((ap_ab >= 0) & (ap_ad >= 0) & (ap_ab <= ab_ab) & (ap_ad <= ad_ad))
    return torch.cat(xs, 1), torch.cat(ys, 1), torch.cat(ok, 1)


def _mmcv_sorted_from_start(x: Tensor, y: Tensor, num: Tensor) -> tuple[Tensor, Tensor]:
    """Steps 1-3 of mmcv's ``convex_hull_graham``: points ``[K, 24]`` (the first ``num [K]`` real)
    shifted to the lowest (then leftmost) one, which goes first, the others sorted by angle with
    mmcv's comparator. libstdc++'s ``std::sort`` of at most 16 elements is an insertion sort; it is
    run here for every size (the same order whenever the comparator is consistent)."""
    k, slots = x.shape
    slot = torch.arange(slots, device=x.device)
    real = slot[None] < num[:, None]
    big = torch.finfo(x.dtype).max
    ym = torch.where(real, y, big)
    lowest = real & (ym == ym.amin(dim=1, keepdim=True))
    xm = torch.where(lowest, x, big)
    lowest &= xm == xm.amin(dim=1, keepdim=True)
    # the first such point, as mmcv's loop keeps (0 for pairs without points: they are dropped)
    t = torch.where(lowest, slot, slots).amin(dim=1) % slots
    rows = torch.arange(k, device=x.device)
    qx, qy = x - x[rows, t][:, None], y - y[rows, t][:, None]
    # swap slots 0 and t
    perm = slot.expand(k, slots).clone()
    perm[rows, t] = 0
    perm[:, 0] = t
    qx, qy = qx.gather(1, perm), qy.gather(1, perm)

    def less(ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor) -> Tensor:
        cross = ax * by - bx * ay
        return torch.where(cross.abs() < _MMCV_ANGLE_EPS, ax * ax + ay * ay < bx * bx + by * by, cross > 0)

    for i in range(2, slots):  # insertion sort of slots 1 .. num-1
        active = i < num
        if not bool(active.any()):
            break
        vx, vy = qx[:, i : i + 1], qy[:, i : i + 1]
        before = less(vx, vy, qx[:, 1:i], qy[:, 1:i])  # [K, i-1]: val < each sorted element
        # the scan down from i-1 stops at the first element val is not less than
        not_less = torch.where(~before, torch.arange(1, i, device=x.device), 0).amax(dim=1)
        pos = torch.where(before[:, 0], 1, not_less + 1)
        pos = torch.where(active, pos, i)
        src = slot.expand(k, slots).clone()
        moved = (slot[None] > pos[:, None]) & (slot[None] <= i)
        src = torch.where(moved, src - 1, src)
        src[rows, pos] = i
        qx, qy = qx.gather(1, src), qy.gather(1, src)
    return qx, qy


def _mmcv_hull_area(qx: Tensor, qy: Tensor, num: Tensor) -> Tensor:
    """Steps 4-5 of mmcv's ``convex_hull_graham`` and its ``polygon_area``: ``[K]`` float32 area of
    the hull of the sorted points ``qx, qy [K, 24]`` (first ``num`` real)."""
    k, slots = qx.shape
    rows = torch.arange(k, device=qx.device)
    dist = qx * qx + qy * qy
    far = (dist > _MMCV_DUP_EPS) & (torch.arange(slots, device=qx.device)[None] >= 1)
    far &= torch.arange(slots, device=qx.device)[None] < num[:, None]
    first_far = torch.where(far, torch.arange(slots, device=qx.device), slots).amin(dim=1)
    single = first_far >= num  # the hull is one point: no area
    sx, sy = qx.clone(), qy.clone()
    kf = first_far.clamp(max=slots - 1)
    sx[:, 1], sy[:, 1] = qx[rows, kf], qy[rows, kf]
    m = torch.full((k,), 2, dtype=torch.long, device=qx.device)
    for i in range(2, slots):
        active = (i > first_far) & (i < num) & ~single
        if not bool(active.any()):
            if bool((i >= num).all()):
                break
            continue
        ix, iy = qx[:, i], qy[:, i]
        while True:
            a = (m - 2).clamp(min=0)
            b = (m - 1).clamp(min=0)
            ax, ay, bx, by = sx[rows, a], sy[rows, a], sx[rows, b], sy[rows, b]
            ux, uy, vx, vy = ix - ax, iy - ay, bx - ax, by - ay
            pop = active & (m > 1) & (ux * vy - vx * uy >= 0)
            if not bool(pop.any()):
                break
            m = m - pop.long()
        put = torch.where(active, m, slots - 1)
        keep_x, keep_y = sx[rows, slots - 1].clone(), sy[rows, slots - 1].clone()
        sx[rows, put] = torch.where(active, ix, keep_x)
        sy[rows, put] = torch.where(active, iy, keep_y)
        m = m + active.long()
    area = torch.zeros(k, dtype=qx.dtype, device=qx.device)
    for i in range(1, slots - 1):  # sequential float32 sum, as mmcv accumulates it
        use = (i + 1 < m) & ~single
        if not bool(use.any()):
            break
        term = (sx[:, i] * sy[:, i + 1] - sx[:, i + 1] * sy[:, i]).abs()  # q[0] is the origin
        area = torch.where(use, area + term, area)
    return area * 0.5


def mmcv_box_iou_rotated_float32(boxes1: Tensor, boxes2: Tensor, mode: str = "iou") -> Tensor:
    """IoU (or IoF) of aligned pairs the way mmcv 1.7.2's CPU ``box_iou_rotated`` computes it.

    The same float32 operations in the same order (and the same double steps: the centre shift,
    ``cos``/``sin``), so the result matches mmcv's to the bit wherever its ``std::sort`` of the
    intersection points agrees with an insertion sort (always for up to 17 points). mmcv's CUDA
    kernel sorts differently and may contract products into FMAs, so its values can differ in the
    last bits: it breaks the same ties, not always the same way. Sizes are used as given (clamp
    them first, as :func:`rbbox_overlaps` does). Slow next to :func:`rotdet.ops.box_iou_rotated`;
    meant for the few pairs that decide ties.

    Args:
        boxes1: ``[K, 5]`` boxes ``(cx, cy, w, h, theta)``; boxes2: ``[K, 5]``, paired row by row.
        mode: ``"iou"`` or ``"iof"`` (intersection over the area of ``boxes1``).

    Returns:
        ``[K]`` float32.
    """
    if mode not in ("iou", "iof"):
        raise ValueError(f"mode must be 'iou' or 'iof', got {mode!r}")
    b1, b2 = boxes1[:, :5].detach().float(), boxes2[:, :5].detach().to(boxes1.device).float()
    if b1.shape[0] == 0:
        return b1.new_zeros(0)
    # mmcv adds the float32 centres, halves in double and rounds each shifted centre to float32
    shift = (b1[:, :2] + b2[:, :2]).double() / 2
    c1, c2 = (b1[:, :2].double() - shift).float(), (b2[:, :2].double() - shift).float()
    ax, ay = _mmcv_vertices(c1[:, 0], c1[:, 1], b1[:, 2], b1[:, 3], b1[:, 4])
    bx, by = _mmcv_vertices(c2[:, 0], c2[:, 1], b2[:, 2], b2[:, 3], b2[:, 4])
    px, py, ok = _mmcv_intersection_points(ax, ay, bx, by)
    num = ok.sum(dim=1)
    # order-keeping compaction of the valid points into the first num slots
    order = torch.argsort((~ok).to(torch.int8), dim=1, stable=True)
    px, py = px.gather(1, order), py.gather(1, order)
    qx, qy = _mmcv_sorted_from_start(px, py, num)
    inter = torch.where(num > 2, _mmcv_hull_area(qx, qy, num), torch.zeros_like(px[:, 0]))
    area1, area2 = b1[:, 2] * b1[:, 3], b2[:, 2] * b2[:, 3]
    base = area1 if mode == "iof" else area1 + area2 - inter
    iou = inter / base
    return torch.where((area1 < 1e-14) | (area2 < 1e-14), torch.zeros_like(iou), iou)


def assigner_from_config(cfg: Mapping) -> Assigner:
    """The assigner of a ``train_cfg.assigner`` section: mmdet's ``MaxIoUAssigner`` or mmrotate's
    ``ATSSObbAssigner``, whose keys are the class's constructor parameters."""
    kind = cfg.get("type")
    if kind == "MaxIoUAssigner":
        return MaxIoUAssigner(**constructor_kwargs(MaxIoUAssigner, cfg, "assigner"))
    if kind in ("ATSSObbAssigner", "ATSSAssigner"):
        return ATSSAssigner(
            **constructor_kwargs(ATSSAssigner, cfg, "assigner", {"ATSSObbAssigner", "ATSSAssigner"})
        )
    raise ValueError(f"assigner: type {kind!r} is not supported; expected MaxIoUAssigner or ATSSObbAssigner")
