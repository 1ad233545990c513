"""Horizontal-box NMS as mmcv's ``batched_nms`` runs it (Oriented R-CNN's proposals), eager and in
static shapes.

mmcv keeps groups apart (the RPN's FPN levels) by shifting each group's boxes by
``group * (max coordinate + 1)``, then runs one NMS when there are fewer than :data:`SPLIT_THR`
boxes and one NMS per group (on the same shifted boxes) otherwise; the shift rounds the
coordinates, so it is kept in both cases, to the last bit. The NMS itself is torchvision's (IoU
strictly above the threshold suppresses, as mmcv's; equal scores: the lower index first).

:func:`nms_keep_mask` is the same NMS on a batch of images with a static-shape result, a boolean
mask ``[B, K]`` instead of a list of indices: what an exported graph needs between Oriented
R-CNN's two stages. It is a registered operator (``torch.ops.rotdet.nms_keep_mask``), so that
``torch.export`` keeps it as one node and the ONNX export can write it as ONNX's
``NonMaxSuppression`` (:mod:`rotdet.export.onnx_ops`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import Tensor

__all__ = ["SPLIT_THR", "batched_nms_hbb", "batched_nms_hbb_mask", "group_offset_boxes", "nms_keep_mask"]

SPLIT_THR = 10000  # mmcv's batched_nms: one NMS with offset boxes below this many boxes


def group_offset_boxes(boxes: Tensor, idxs: Tensor) -> Tensor:
    """mmcv's shift: xyxy ``boxes [..., K, 4]`` moved by ``idxs [..., K]`` (or ``[K]``) times one
    more than each image's largest coordinate, so that boxes of different groups never overlap."""
    top = boxes.amax(dim=(-2, -1), keepdim=True)
    return boxes + idxs.to(boxes)[..., None] * (top + 1)


def batched_nms_hbb(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_thr: float) -> Tensor:
    """mmcv's ``batched_nms`` for xyxy ``boxes [N, 4]``: kept indices by descending score, boxes of
    different ``idxs`` never suppressing each other."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shifted = group_offset_boxes(boxes, idxs)
    if boxes.shape[0] < SPLIT_THR:
        return torchvision.ops.nms(shifted, scores, iou_thr)
    kept = torch.zeros_like(scores, dtype=torch.bool)
    for i in torch.unique(idxs):
        mask = (idxs == i).nonzero().flatten()
        kept[mask[torchvision.ops.nms(shifted[mask], scores[mask], iou_thr)]] = True
    keep = kept.nonzero().flatten()
    return keep[scores[keep].sort(descending=True).indices]


@torch.library.custom_op("rotdet::nms_keep_mask", mutates_args=())
def nms_keep_mask(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS per image: ``boxes [B, K, 4]`` (xyxy), ``scores [B, K]`` -> bool ``[B, K]``, True
    where a box survives (torchvision's rule: IoU strictly above ``iou_threshold`` suppresses)."""
    keep = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    for b in range(boxes.shape[0]):
        keep[b, torchvision.ops.nms(boxes[b], scores[b], iou_threshold)] = True
    return keep


@nms_keep_mask.register_fake
def _nms_keep_mask_shape(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return torch.empty(scores.shape, dtype=torch.bool, device=scores.device)


def batched_nms_hbb_mask(boxes: Tensor, scores: Tensor, group_sizes: Sequence[int], iou_thr: float) -> Tensor:
    """:func:`batched_nms_hbb` of each image in static shapes: ``boxes [B, K, 4]`` (xyxy),
    ``scores [B, K]``, the groups consecutive runs of ``group_sizes`` (summing to ``K``) -> bool
    ``[B, K]``, True for the boxes :func:`batched_nms_hbb` keeps."""
    k = boxes.shape[1]
    if sum(group_sizes) != k:
        raise ValueError(f"group sizes {list(group_sizes)} do not add up to {k} boxes")
    # a constant (repeat_interleave would give the graph a data-dependent size)
    idxs = torch.tensor([g for g, n in enumerate(group_sizes) for _ in range(n)], device=boxes.device)
    shifted = group_offset_boxes(boxes, idxs)
    if k < SPLIT_THR:
        return nms_keep_mask(shifted, scores, iou_thr)
    masks, start = [], 0
    for n in group_sizes:
        masks.append(nms_keep_mask(shifted[:, start : start + n], scores[:, start : start + n], iou_thr))
        start += n
    return torch.cat(masks, dim=1)
