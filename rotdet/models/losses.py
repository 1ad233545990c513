"""Detection losses with mmdet 2.x's definitions and reductions.

All losses here are element-wise losses multiplied by element-wise weights, summed and divided by
``avg_factor + eps`` (``eps`` = float32 epsilon), which is mmdet's ``weight_reduce_loss`` with
``reduction='mean'`` and an ``avg_factor`` (the number of positive anchors in a dense head).
They are computed in float32, also under autocast.

* :func:`sigmoid_focal_loss`: mmdet's ``FocalLoss(use_sigmoid=True)`` (its ``py_sigmoid_focal_loss``
  formula: ``BCEWithLogits * (alpha t + (1 - alpha)(1 - t)) * |t - sigmoid(x)|^gamma``); labels equal
  to ``num_classes`` are background (all-zero one-hot row).
* :func:`l1_loss`, :func:`smooth_l1_loss`: mmdet's ``L1Loss`` / ``SmoothL1Loss(beta)``.
* mmrotate's Gaussian box losses ``GDLoss`` / ``GDLoss_v1`` (KLD, GWD, ...):
  :mod:`rotdet.models.gaussian_losses`.

Use :class:`LossSpec` (built from a config dict) to apply a loss by name with its ``loss_weight``;
:func:`build_loss` builds any of them from a config dict. :func:`dense_head_loss` is a dense head's
training loss from its outputs and :class:`~rotdet.models.targets.AnchorTargets`, on the deltas or,
with a decoder (mmdet's ``reg_decoded_bbox``), on the decoded boxes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from rotdet.models.gaussian_losses import GDLoss, GDLossV1, KFLoss
from rotdet.models.loss_reduction import EPS  # mmdet's weight_reduce_loss: sum / (avg_factor + eps)

if TYPE_CHECKING:
    from rotdet.models.targets import AnchorTargets

__all__ = [
    "BoxLoss",
    "LossSpec",
    "build_loss",
    "dense_head_loss",
    "l1_loss",
    "level_losses",
    "levels_to_flat",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
]


def sigmoid_focal_loss(logits: Tensor, labels: Tensor, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """Element-wise focal loss ``[N, C]`` of ``logits [N, C]`` against ``labels [N]`` in ``[0, C]``."""
    num_classes = logits.shape[-1]
    # One-hot by comparison: background (= num_classes) matches no column. F.one_hot would check
    # the label range with a host sync on some devices.
    classes = torch.arange(num_classes, device=labels.device)
    target = (labels[..., None] == classes).to(logits.dtype)
    p = logits.sigmoid()
    pt = (1 - p) * target + p * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * focal_weight


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Element-wise ``|pred - target|``."""
    return (pred - target).abs()


def smooth_l1_loss(pred: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Element-wise smooth L1 (Huber / beta), mmdet's form: ``0.5 d^2 / beta`` below ``beta``."""
    diff = (pred - target).abs()
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


@dataclass(frozen=True)
class LossSpec:
    """A loss from a config: ``type`` (FocalLoss, L1Loss, SmoothL1Loss), its parameters and weight."""

    type: str
    loss_weight: float = 1.0
    gamma: float = 2.0
    alpha: float = 0.25
    beta: float = 1.0

    @classmethod
    def from_cfg(cls, cfg: dict) -> LossSpec:
        cfg = dict(cfg)
        kind = cfg.pop("type")
        if kind not in ("FocalLoss", "L1Loss", "SmoothL1Loss"):
            raise ValueError(
                f"unknown loss type {kind!r}; known: FocalLoss, L1Loss, SmoothL1Loss (and, through "
                "build_loss, GDLoss, GDLoss_v1, KFLoss)"
            )
        if kind == "FocalLoss" and not cfg.pop("use_sigmoid", True):
            raise ValueError("only the sigmoid FocalLoss is supported")
        return cls(type=kind, **cfg)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """Unweighted, unreduced loss (``target`` = labels for the focal loss)."""
        if self.type == "FocalLoss":
            out = sigmoid_focal_loss(pred, target, self.gamma, self.alpha)
        elif self.type == "L1Loss":
            out = l1_loss(pred, target)
        else:
            out = smooth_l1_loss(pred, target, self.beta)
        return out

    def level_losses(
        self, pred: Tensor, target: Tensor, weights: Tensor, level_sizes: list[int], avg_factor: Tensor
    ) -> Tensor:
        """A dense head's ``[L]`` level losses of ``pred``, ``target``, ``weights`` ``[B, N, K]``:
        ``loss_weight`` x each level's weighted sum over ``avg_factor + eps``."""
        el = self.elementwise(pred, target) * weights
        return self.loss_weight * level_losses(el, level_sizes, avg_factor)


BoxLoss = LossSpec | GDLoss | GDLossV1 | KFLoss
"""A box regression loss: each has ``type``, ``loss_weight`` and ``level_losses``."""

GAUSSIAN_LOSSES = {"GDLoss": GDLoss, "GDLoss_v1": GDLossV1, "KFLoss": KFLoss}


def build_loss(cfg: dict) -> BoxLoss:
    """A loss from its config dict: ``FocalLoss``, ``L1Loss``, ``SmoothL1Loss`` (:class:`LossSpec`),
    ``GDLoss``, ``GDLoss_v1`` or ``KFLoss`` (:mod:`rotdet.models.gaussian_losses`)."""
    kind = cfg.get("type")
    if kind in GAUSSIAN_LOSSES:
        try:
            return GAUSSIAN_LOSSES[kind].from_cfg(cfg)
        except TypeError as exc:  # an unknown keyword argument
            raise ValueError(f"{kind}: {exc}") from None
    return LossSpec.from_cfg(cfg)


def level_losses(loss: Tensor, level_sizes: list[int], avg_factor: float | Tensor) -> Tensor:
    """``[L]``: mmdet's ``loss.sum() / (avg_factor + eps)`` of each level's slice of
    ``loss [B, N, ...]`` (levels concatenated along dim 1); ``avg_factor`` may be a 0-dim tensor."""
    sums = torch.stack([x.sum() for x in loss.split(level_sizes, dim=1)])
    return sums / (avg_factor + EPS)


def levels_to_flat(outputs: Sequence[Tensor], channels: int) -> Tensor:
    """Per-level ``[B, A * channels, H, W]`` -> ``[B, sum(H W A), channels]`` in (y, x, a) order
    (channel ``a * channels + c``, mmrotate's layout), levels concatenated."""
    batch = outputs[0].shape[0]
    return torch.cat([o.permute(0, 2, 3, 1).reshape(batch, -1, channels) for o in outputs], dim=1)


def dense_head_loss(
    cls_scores: Sequence[Tensor],
    bbox_preds: Sequence[Tensor],
    targets: AnchorTargets,
    loss_cls: LossSpec,
    loss_bbox: BoxLoss,
    decode: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """mmdet's ``AnchorHead.loss``: ``{"loss_cls": [L], "loss_bbox": [L]}`` per-level losses
    (float32, also under autocast), each level's sum divided by ``targets.num_total_pos``
    (``GDLoss_v1``: each level's mean over its positives, see its docs).

    Args:
        cls_scores: per level ``[B, A * C, H, W]`` class logits.
        bbox_preds: per level ``[B, A * 5, H, W]`` deltas.
        targets: the batch's targets (``N = sum(H W A)`` anchors per image).
        loss_cls, loss_bbox: the classification (sigmoid focal) and box losses.
        decode: mmdet's ``reg_decoded_bbox``: the head's ``bbox_coder.decode`` (``[B, N, 5]``
            anchors and deltas -> boxes); the box loss then compares the deltas decoded on
            ``targets.anchors`` with ``targets.bbox_targets``, which must hold the ground-truth boxes
            (:func:`~rotdet.models.targets.anchor_targets` with ``reg_decoded_bbox=True``). A box loss
            with ``needs_decoded_pair`` (``KFLoss``) takes the deltas and encoded targets and, from
            this decoder, the boxes decoded from both.
    """
    num_classes = cls_scores[0].shape[1] * 5 // bbox_preds[0].shape[1]  # A * C and A * 5 channels
    sizes = targets.level_sizes
    with torch.autocast(device_type=cls_scores[0].device.type, enabled=False):
        logits = levels_to_flat([c.float() for c in cls_scores], num_classes)
        deltas = levels_to_flat([b.float() for b in bbox_preds], 5)
        cls_el = loss_cls.elementwise(logits, targets.labels) * targets.label_weights[..., None]
        losses_cls = loss_cls.loss_weight * level_losses(cls_el, sizes, targets.num_total_pos)
        if decode is not None and targets.anchors is None:
            raise ValueError("decoded-box losses need the targets' anchors")
        if getattr(loss_bbox, "needs_decoded_pair", False):
            if decode is None:
                raise ValueError(f"{loss_bbox.type} needs the head's decoder")
            # mmrotate's KFIoU heads decode every anchor's predicted and target deltas
            decoded = (decode(targets.anchors, deltas), decode(targets.anchors, targets.bbox_targets))
            losses_bbox = loss_bbox.level_losses(
                deltas, targets.bbox_targets, targets.bbox_weights, sizes, targets.num_total_pos, decoded
            )
            return {"loss_cls": losses_cls, "loss_bbox": losses_bbox}
        if decode is not None:
            # every anchor is decoded, as mmrotate's loss_single does; only positives weigh
            deltas = decode(targets.anchors, deltas)
        losses_bbox = loss_bbox.level_losses(
            deltas, targets.bbox_targets, targets.bbox_weights, sizes, targets.num_total_pos
        )
    return {"loss_cls": losses_cls, "loss_bbox": losses_bbox}
