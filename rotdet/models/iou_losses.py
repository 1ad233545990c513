"""IoU box losses with mmdet 2.x's weighting and reduction: mmrotate's ``RotatedIoULoss`` (on
:func:`rotdet.ops.diff_iou.diff_iou_rotated_2d`) and mmdet's ``GIoULoss`` (axis-aligned boxes).

Both follow mmdet's ``weighted_loss`` reduction: element-wise loss times the weight, then the sum
over ``avg_factor + eps`` (``eps`` = float32 epsilon) with an ``avg_factor``, else the mean (or
the sum, or nothing, by ``reduction``). A weight with no positive entry gives
``(pred * weight).sum()`` -- zero, but connected to the graph -- as mmdet's loss classes do.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from rotdet.models.loss_reduction import REDUCTIONS as _REDUCTIONS
from rotdet.models.loss_reduction import weighted_loss
from rotdet.ops.diff_iou import diff_iou_rotated_2d
from rotdet.ops.iou import bbox_overlaps

__all__ = ["GIoULoss", "RotatedIoULoss"]


@dataclass(frozen=True)
class _WeightedBoxLoss:
    """The part both losses share: ``loss_weight``, ``eps``, ``reduction`` and mmdet's weighted
    call around the subclass's ``elementwise(pred, target) -> [N]``."""

    loss_weight: float = 1.0
    eps: float = 1e-6
    reduction: str = "mean"

    def __post_init__(self) -> None:
        if self.reduction not in _REDUCTIONS:
            name = type(self).__name__
            raise ValueError(f"{name}: reduction {self.reduction!r} is not one of {_REDUCTIONS}")

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction: str | None = None,
    ) -> Tensor:
        """The loss of ``pred, target [N, D]`` boxes with ``weight [N]`` (or ``[N, D]``: its mean)."""
        reduction = reduction or self.reduction
        return weighted_loss(self.elementwise, pred, target, weight, avg_factor, reduction, self.loss_weight)


@dataclass(frozen=True)
class RotatedIoULoss(_WeightedBoxLoss):
    """mmrotate 0.3.4's ``RotatedIoULoss``: ``1 - iou`` (``linear``), ``1 - iou^2`` (``square``) or
    ``-log(iou)`` (``log``, the default) of the differentiable rotated IoU, the IoU clamped to
    ``eps`` first. ``linear=True`` is mmrotate's deprecated spelling of ``mode='linear'``."""

    mode: str = "log"
    linear: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("linear", "square", "log"):
            raise ValueError(f"RotatedIoULoss: mode {self.mode!r} is not one of linear, square, log")
        super().__post_init__()

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """``[N]`` losses of ``pred, target [N, 5]`` rotated boxes."""
        ious = diff_iou_rotated_2d(pred[None], target[None])[0].clamp(min=self.eps)
        mode = "linear" if self.linear else self.mode
        if mode == "linear":
            return 1 - ious
        if mode == "square":
            return 1 - ious**2
        return -ious.log()


@dataclass(frozen=True)
class GIoULoss(_WeightedBoxLoss):
    """mmdet 2.x's ``GIoULoss``: ``1 - giou`` of axis-aligned boxes ``[N, 4]`` (Rotated FCOS's
    ``separate_angle`` variant regresses the box this way and the angle apart)."""

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return 1 - bbox_overlaps(pred, target, aligned=True, mode="giou", eps=self.eps)
