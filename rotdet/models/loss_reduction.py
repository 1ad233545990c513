"""mmdet 2.x's loss reduction (``weight_reduce_loss`` and its loss classes' zero-weight shortcut):
one copy for every loss class that takes ``weight``, ``avg_factor`` and ``reduction`` (the IoU and
Gaussian box losses)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["EPS", "empty_weight_loss", "weighted_loss", "weight_reduce_loss"]

EPS = torch.finfo(torch.float32).eps  # mmdet divides by avg_factor + this
REDUCTIONS = ("none", "mean", "sum")


def weight_reduce_loss(
    loss: Tensor, weight: Tensor | None, reduction: str, avg_factor: float | Tensor | None
) -> Tensor:
    """mmdet's ``weight_reduce_loss`` of an element-wise ``loss``: times ``weight``, then with an
    ``avg_factor`` the sum over ``avg_factor + eps`` (``mean``), else the mean / sum / nothing."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return loss if reduction == "none" else (loss.mean() if reduction == "mean" else loss.sum())
    if reduction == "mean":
        return loss.sum() / (avg_factor + EPS)
    if reduction == "none":
        return loss
    raise ValueError('avg_factor can not be used with reduction="sum"')


def empty_weight_loss(pred: Tensor, weight: Tensor | None, reduction: str) -> Tensor | None:
    """mmdet's loss classes' shortcut for a weight with no positive entry: ``(pred * weight).sum()``
    (zero, but connected to the graph); None when it does not apply."""
    if weight is None or reduction == "none" or bool((weight > 0).any()):
        return None
    if pred.dim() == weight.dim() + 1:
        weight = weight.unsqueeze(1)
    return (pred * weight).sum()


def weighted_loss(
    elementwise,
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None,
    avg_factor: float | Tensor | None,
    reduction: str,
    loss_weight: float,
) -> Tensor:
    """A loss class's ``forward``: the shortcut, a per-box weight (the mean of a ``[N, k]`` one),
    ``elementwise(pred, target)`` reduced, times ``loss_weight``."""
    shortcut = empty_weight_loss(pred, weight, reduction)
    if shortcut is not None:
        return shortcut
    if weight is not None and weight.dim() > 1:
        weight = weight.mean(-1)
    return loss_weight * weight_reduce_loss(elementwise(pred, target), weight, reduction, avg_factor)
