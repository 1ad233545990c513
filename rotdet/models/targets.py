"""Training targets of a dense head: anchors -> assignment -> targets, for a whole batch at once.

mmdet's ``AnchorHead.get_targets`` goes image by image: the image's valid anchors (``inside_flags``),
the assigner on them, then labels, weights and encoded boxes, unmapped back to all anchors. Here
each step runs on ``[B, ...]`` tensors with the same result:

1. :func:`dense_anchors` -- the anchors of every image ``[B, N, 5]`` (the cached grid, or the
   caller's per-image boxes for R3Det's refine heads), the anchors per level, and which anchors take
   part (``None`` when all do, known from the shapes on the host: no flags, no sync);
2. :func:`assign_anchors` -- any :class:`~rotdet.models.assigners.Assigner` (ATSS or MaxIoU, one
   protocol) on the ground truths padded to ``[B, G, 5]``: ``gt_inds [B, N]``;
3. :func:`anchor_targets` -- labels, label weights, box deltas (or, with ``reg_decoded_bbox``, the
   matched ground-truth boxes themselves) and their weights, and mmdet's ``num_total_pos``, with
   nothing that waits for the device.

The loss of these targets is :func:`rotdet.models.losses.dense_head_loss`. Targets are computed in
float32 whatever the training precision, as mmrotate computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rotdet.models.anchors import AnchorGenerator
from rotdet.models.assigners import Assigner, assign_targets_boxes
from rotdet.models.coders import DeltaXYWHAOBBoxCoder

__all__ = [
    "AnchorTargets",
    "DenseAnchors",
    "GroundTruths",
    "TrainConfig",
    "anchor_targets",
    "assign_anchors",
    "dense_anchors",
    "featmap_sizes",
    "rotated_anchor_inside_flags",
]


@dataclass(frozen=True)
class TrainConfig:
    """The non-assigner part of mmrotate's dense-head ``train_cfg``."""

    allowed_border: float = -1
    pos_weight: float = -1


@dataclass(frozen=True)
class GroundTruths:
    """The ground truths of a batch, padded to the largest count ``G`` (real ones first).

    Attributes:
        boxes: ``[B, G, 5]`` float32 rotated boxes (zeros where padding).
        labels: ``[B, G]`` int64 classes.
        valid: ``[B, G]`` bool, False for padding.
    """

    boxes: Tensor
    labels: Tensor
    valid: Tensor

    @classmethod
    def pad(cls, boxes: Sequence[Tensor], labels: Sequence[Tensor], device) -> GroundTruths:
        """From per-image ``boxes [K_i, 5]`` and ``labels [K_i]`` (validity built on the device:
        no host copy)."""
        gts = [b.to(device=device, dtype=torch.float32).reshape(-1, 5) for b in boxes]
        gls = [lab.to(device=device, dtype=torch.long).reshape(-1) for lab in labels]
        valid = [torch.ones(len(g), dtype=torch.bool, device=device) for g in gts]
        pad = nn.utils.rnn.pad_sequence
        return cls(pad(gts, batch_first=True), pad(gls, batch_first=True), pad(valid, batch_first=True))

    @classmethod
    def from_targets(cls, targets: Sequence[dict], device) -> GroundTruths:
        """From per-image ``{"boxes": [K_i, 5], "labels": [K_i]}`` (tensors or array-likes)."""
        boxes = [torch.as_tensor(t["boxes"], dtype=torch.float32, device=device) for t in targets]
        labels = [torch.as_tensor(t["labels"], dtype=torch.long, device=device) for t in targets]
        return cls.pad(boxes, labels, device)


@dataclass(frozen=True)
class DenseAnchors:
    """The anchors of a batch.

    Attributes:
        boxes: ``[B, N, 5]`` float32 (an expanded view of one grid, or per-image boxes).
        level_sizes: anchors per level (``H_l * W_l * A``), summing to ``N``.
        valid: ``[B, N]`` bool, the anchors that take part in training; ``None`` when all do.
    """

    boxes: Tensor
    level_sizes: list[int]
    valid: Tensor | None


@dataclass(frozen=True)
class AnchorTargets:
    """mmdet's ``get_targets`` for a batch (``N`` anchors per image, levels concatenated).

    Attributes:
        labels: ``[B, N]`` int64, ``num_classes`` for background.
        label_weights: ``[B, N]`` float32 (0 for ignored anchors and those not taking part).
        bbox_targets: ``[B, N, 5]`` encoded deltas, or with ``reg_decoded_bbox`` the matched
            ground-truth boxes (zeros where not positive, in both cases).
        bbox_weights: ``[B, N, 5]`` float32, 1 for positives.
        num_total_pos: 0-dim: sum over images of ``max(positives, 1)`` (mmdet's avg factor).
        level_sizes: anchors per level.
        anchors: ``[B, N, 5]`` the anchors (priors) the targets were made for: what predicted
            deltas are decoded on for a decoded-box loss.
    """

    labels: Tensor
    label_weights: Tensor
    bbox_targets: Tensor
    bbox_weights: Tensor
    num_total_pos: Tensor
    level_sizes: list[int]
    anchors: Tensor | None = None


def featmap_sizes(outputs: Sequence[Tensor]) -> list[tuple[int, int]]:
    """``(H_l, W_l)`` of per-level ``[B, C, H_l, W_l]`` head outputs."""
    return [(int(o.shape[-2]), int(o.shape[-1])) for o in outputs]


def rotated_anchor_inside_flags(
    anchors: Tensor, valid_flags: Tensor, img_shape: Sequence[int], allowed_border: float = -1
) -> Tensor:
    """mmrotate's ``rotated_anchor_inside_flags``: ``[N]`` bool, valid anchors (``anchors [N, 5]``,
    ``valid_flags [N]``) whose centre is within the image grown by ``allowed_border``;
    ``allowed_border < 0`` keeps every valid anchor."""
    if allowed_border < 0:
        return valid_flags
    img_h, img_w = int(img_shape[0]), int(img_shape[1])
    cx, cy = anchors[:, 0], anchors[:, 1]
    return (
        valid_flags
        & (cx >= -allowed_border)
        & (cy >= -allowed_border)
        & (cx < img_w + allowed_border)
        & (cy < img_h + allowed_border)
    )


def dense_anchors(
    generator: AnchorGenerator,
    sizes: Sequence[tuple[int, int]],
    metas: Sequence[dict],
    device,
    priors: Sequence[Tensor] | None = None,
    allowed_border: float = -1,
) -> DenseAnchors:
    """Step 1: the anchors of every image and which of them take part.

    Args:
        generator: the head's anchor generator (its grid, and its valid flags: the anchor's grid
            cell within the image's own ``pad_shape``).
        sizes: per level ``(H_l, W_l)``.
        metas: per image dicts with ``pad_shape`` (and ``img_shape`` when ``allowed_border >= 0``).
        device: where the anchors live.
        priors: per level ``[B, H_l*W_l*A, 5]`` caller-given anchors (R3Det's refined boxes,
            detached here); ``None`` for the grid.
        allowed_border: mmrotate's ``train_cfg.allowed_border`` (``< 0``: no centre test).
    """
    batch = len(metas)
    level_sizes = [h * w * generator.num_base_anchors for h, w in sizes]
    if priors is None:
        boxes = generator.flat_anchors(sizes, device)[None].expand(batch, -1, -1)
    else:
        boxes = torch.cat([p.reshape(batch, -1, 5) for p in priors], dim=1).detach().float()
    valid = generator.batch_valid_flags(sizes, [m["pad_shape"] for m in metas], device)
    if allowed_border >= 0:
        if valid is None:
            valid = torch.ones(boxes.shape[:2], dtype=torch.bool, device=boxes.device)
        valid = torch.stack(
            [
                rotated_anchor_inside_flags(boxes[i], valid[i], metas[i]["img_shape"], allowed_border)
                for i in range(batch)
            ]
        )
    return DenseAnchors(boxes, level_sizes, valid)


def assign_anchors(
    assigner: Assigner | None,
    anchors: DenseAnchors,
    gts: GroundTruths,
    assign_by_circumhbbox: str | None = None,
) -> Tensor:
    """Step 2: ``gt_inds [B, N]`` (``0`` negative, ``-1`` ignored or not taking part, ``k + 1``
    positive for ground truth ``k``) from any :class:`~rotdet.models.assigners.Assigner`.

    ``assign_by_circumhbbox``: the assigner sees the ground truths' circumscribed hbb in that angle
    version (``None``: the obb), see :func:`~rotdet.models.assigners.assign_targets_boxes`.
    """
    if assigner is None:
        raise RuntimeError("this head was built without an assigner (no train_cfg)")
    boxes = gts.boxes
    with torch.autocast(device_type=boxes.device.type, enabled=False):
        if boxes.shape[1] > 0:
            boxes = assign_targets_boxes(boxes.reshape(-1, 5), assign_by_circumhbbox).view(boxes.shape)
        return assigner.assign_batch(anchors.boxes, anchors.level_sizes, boxes, gts.valid, anchors.valid)[0]


def anchor_targets(
    anchors: DenseAnchors,
    gt_inds: Tensor,
    gts: GroundTruths,
    coder: DeltaXYWHAOBBoxCoder,
    num_classes: int,
    pos_weight: float = -1,
    reg_decoded_bbox: bool = False,
) -> AnchorTargets:
    """Step 3: mmdet's ``_get_targets_single`` for every image at once from ``gt_inds [B, N]``.

    The deltas are encoded for every anchor and kept where positive: the coder works pair by pair,
    so the positives get exactly the values of encoding them alone, with no data-dependent indexing.
    ``pos_weight``: label weight of positives (``<= 0``: 1). ``reg_decoded_bbox``: the box targets
    are the matched ground-truth boxes, not encoded (mmdet's option of that name, for losses on
    decoded boxes such as ``GDLoss``).
    """
    boxes = anchors.boxes
    with torch.autocast(device_type=boxes.device.type, enabled=False):
        pos = gt_inds > 0
        dtype = boxes.dtype
        label_weights = torch.where(
            pos, 1.0 if pos_weight <= 0 else float(pos_weight), (gt_inds == 0).to(dtype)
        )
        if gts.boxes.shape[1] == 0:
            labels = torch.full_like(gt_inds, num_classes)
            bbox_targets = boxes.new_zeros(boxes.shape)
        else:
            idx = (gt_inds - 1).clamp(min=0)
            labels = torch.where(pos, gts.labels.gather(1, idx), num_classes)
            matched = gts.boxes.gather(1, idx[..., None].expand(-1, -1, 5))
            if reg_decoded_bbox:
                wanted = matched.to(dtype)
            else:
                wanted = coder.encode(boxes, matched).to(dtype)
            bbox_targets = torch.where(pos[..., None], wanted, torch.zeros_like(wanted))
        bbox_weights = pos[..., None].to(dtype).expand(-1, -1, 5).contiguous()
        num_total_pos = pos.sum(dim=1).clamp(min=1).sum()
    return AnchorTargets(
        labels, label_weights, bbox_targets, bbox_weights, num_total_pos, anchors.level_sizes, boxes
    )
