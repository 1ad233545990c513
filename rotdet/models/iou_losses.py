"""IoU box losses with mmdet 2.x's weighting and reduction: mmrotate's ``RotatedIoULoss`` (on
:func:`rotdet.ops.diff_iou.diff_iou_rotated_2d`) and mmdet's ``GIoULoss`` (axis-aligned boxes).

Both follow mmdet's ``weighted_loss`` reduction: element-wise loss times the weight, then the sum
over ``avg_factor + eps`` (``eps`` = float32 epsilon) with an ``avg_factor``, else the mean (or
the sum, or nothing, by ``reduction``). A weight with no positive entry gives
``(pred * weight).sum()`` -- zero, but connected to the graph -- as mmdet's loss classes do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rotdet.models.loss_reduction import REDUCTIONS as _REDUCTIONS
from rotdet.models.loss_reduction import weighted_loss
from rotdet.ops.diff_iou import diff_iou_rotated_2d

__all__ = ["GIoULoss", "RotatedIoULoss", "aligned_giou"]


@dataclass(frozen=True)
class RotatedIoULoss:
    """mmrotate 0.3.4's ``RotatedIoULoss``: ``1 - iou`` (``linear``), ``1 - iou^2`` (``square``) or
    ``-log(iou)`` (``log``, the default) of the differentiable rotated IoU, the IoU clamped to
    ``eps`` first. ``linear=True`` is mmrotate's deprecated spelling of ``mode='linear'``."""

    loss_weight: float = 1.0
    mode: str = "log"
    eps: float = 1e-6
    reduction: str = "mean"
    linear: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("linear", "square", "log"):
            raise ValueError(f"RotatedIoULoss: mode {self.mode!r} is not one of linear, square, log")
        if self.reduction not in _REDUCTIONS:
            raise ValueError(f"RotatedIoULoss: reduction {self.reduction!r} is not one of {_REDUCTIONS}")

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """``[N]`` losses of ``pred, target [N, 5]`` rotated boxes."""
        ious = diff_iou_rotated_2d(pred[None], target[None])[0].clamp(min=self.eps)
        mode = "linear" if self.linear else self.mode
        if mode == "linear":
            return 1 - ious
        if mode == "square":
            return 1 - ious**2
        return -ious.log()

    def __call__(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction: str | None = None,
    ) -> Tensor:
        """The loss of ``pred, target [N, 5]`` with ``weight [N]`` (or ``[N, 5]``: its mean)."""
        reduction = reduction or self.reduction
        return weighted_loss(self.elementwise, pred, target, weight, avg_factor, reduction, self.loss_weight)


def aligned_giou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """GIoU of aligned ``[N, 4]`` ``(x1, y1, x2, y2)`` pairs: mmdet's ``bbox_overlaps(mode='giou',
    is_aligned=True)`` (union and enclosing area floored at ``eps``)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    wh = (torch.min(boxes1[:, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    floor = overlap.new_tensor([eps])
    union = torch.max(area1 + area2 - overlap, floor)
    enclose = (torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    enclose_area = torch.max(enclose[:, 0] * enclose[:, 1], floor)
    return overlap / union - (enclose_area - union) / enclose_area


@dataclass(frozen=True)
class GIoULoss:
    """mmdet 2.x's ``GIoULoss``: ``1 - giou`` of axis-aligned boxes (Rotated FCOS's
    ``separate_angle`` variant regresses the box this way and the angle apart)."""

    loss_weight: float = 1.0
    eps: float = 1e-6
    reduction: str = "mean"

    def __post_init__(self) -> None:
        if self.reduction not in _REDUCTIONS:
            raise ValueError(f"GIoULoss: reduction {self.reduction!r} is not one of {_REDUCTIONS}")

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return 1 - aligned_giou(pred, target, self.eps)

    def __call__(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction: str | None = None,
    ) -> Tensor:
        """The loss of ``pred, target [N, 4]`` with ``weight [N]`` (or ``[N, 4]``: its mean)."""
        reduction = reduction or self.reduction
        return weighted_loss(self.elementwise, pred, target, weight, avg_factor, reduction, self.loss_weight)
