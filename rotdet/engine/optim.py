"""Optimizer and learning-rate schedule from a config (mmcv 1.x semantics).

The schedule is a pure function of ``(iteration, epoch)`` so that resuming needs nothing but the
counters: no scheduler object with hidden state to save.

* ``policy: step`` — mmcv's ``StepLrUpdaterHook`` by epoch: ``lr = base * gamma ** (number of steps
  s with epoch >= s)`` (epochs counted from 0, so ``step: [8, 11]`` lowers the lr for epochs 9 and 12
  in 1-based terms, as mmrotate's 1x schedule does).
* ``policy: cosine`` — cosine annealing by iteration from ``base`` to ``base * min_lr_ratio``.
* ``policy: fixed`` — constant.
* warm-up (any policy): mmcv's ``linear`` rule over the first ``warmup_iters`` iterations,
  ``lr = regular * (1 - (1 - it / warmup_iters) * (1 - warmup_ratio))``, or ``constant``
  (``regular * warmup_ratio``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["LrSchedule", "build_optimizer", "scaled_lr"]

_OPTIMIZERS = {"SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam}


def scaled_lr(lr: float, batch_size: int, base_batch_size: int) -> float:
    """The linear scaling rule (Goyal et al.): ``lr * batch_size / base_batch_size``."""
    return lr * batch_size / base_batch_size


def build_optimizer(
    cfg: dict, params: Iterable[nn.Parameter], lr: float | None = None
) -> torch.optim.Optimizer:
    """``cfg["optimizer"]`` (``type`` SGD / AdamW / Adam and its keyword arguments) over ``params``
    (weight decay on every parameter, as mmcv's default constructor does)."""
    opt_cfg = dict(cfg["optimizer"])
    name = opt_cfg.pop("type")
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(_OPTIMIZERS)}")
    if lr is not None:
        opt_cfg["lr"] = lr
    params = [p for p in params if p.requires_grad]
    return _OPTIMIZERS[name](params, **opt_cfg)


class LrSchedule:
    """Learning rate at a given iteration and epoch, from ``cfg["lr_config"]``.

    Args:
        lr_config: ``policy`` (step / cosine / fixed), ``warmup`` (linear / constant / null),
            ``warmup_iters``, ``warmup_ratio``; ``step`` and ``gamma`` (step); ``min_lr_ratio`` (cosine).
        base_lr: the optimizer's (possibly scaled) lr.
        total_iters: iterations of the whole run (cosine only).
    """

    def __init__(self, lr_config: dict, base_lr: float, total_iters: int | None = None) -> None:
        known = {"policy", "warmup", "warmup_iters", "warmup_ratio", "step", "gamma", "min_lr_ratio"}
        unknown = set(lr_config) - known
        if unknown:
            raise ValueError(f"unknown lr_config keys {sorted(unknown)}; known: {sorted(known)}")
        self.policy = lr_config.get("policy", "step")
        if self.policy not in ("step", "cosine", "fixed"):
            raise ValueError(f"unknown lr policy {self.policy!r}; use step, cosine or fixed")
        self.base_lr = float(base_lr)
        self.warmup = lr_config.get("warmup")
        if self.warmup not in (None, "linear", "constant"):
            raise ValueError(f"unknown warmup {self.warmup!r}; use linear, constant or null")
        self.warmup_iters = int(lr_config.get("warmup_iters", 0)) if self.warmup else 0
        self.warmup_ratio = float(lr_config.get("warmup_ratio", 0.1))
        step = lr_config.get("step", [])
        self.steps = sorted([step] if isinstance(step, int) else step)
        self.gamma = float(lr_config.get("gamma", 0.1))
        self.min_lr_ratio = float(lr_config.get("min_lr_ratio", 0.0))
        if self.policy == "cosine" and not total_iters:
            raise ValueError("the cosine policy needs the total number of iterations")
        self.total_iters = total_iters

    def regular(self, iteration: int, epoch: int) -> float:
        if self.policy == "step":
            return self.base_lr * self.gamma ** sum(epoch >= s for s in self.steps)
        if self.policy == "cosine":
            progress = min(iteration / self.total_iters, 1.0)
            low = self.base_lr * self.min_lr_ratio
            return low + 0.5 * (self.base_lr - low) * (1 + math.cos(math.pi * progress))
        return self.base_lr

    def __call__(self, iteration: int, epoch: int) -> float:
        """The lr of (0-based) global ``iteration`` in (0-based) ``epoch``."""
        lr = self.regular(iteration, epoch)
        if iteration < self.warmup_iters:
            if self.warmup == "linear":
                k = (1 - iteration / self.warmup_iters) * (1 - self.warmup_ratio)
                return lr * (1 - k)
            return lr * self.warmup_ratio
        return lr

    @staticmethod
    def apply(optimizer: torch.optim.Optimizer, lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr
