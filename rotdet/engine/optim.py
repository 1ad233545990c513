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

``optimizer.paramwise_cfg.custom_keys`` is mmcv's ``DefaultOptimizerConstructor`` rule: a parameter
whose mmrotate name contains a key (longest key first, then alphabetical) gets ``lr * lr_mult`` and
``weight_decay * decay_mult``; the schedule then scales each group's lr by its ``lr_mult``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from rotdet.models.mmrotate_import import rotdet_to_mmrotate_key

__all__ = ["LrSchedule", "build_optimizer", "paramwise_groups", "scaled_lr"]

_OPTIMIZERS = {"SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam}


def scaled_lr(lr: float, batch_size: int, base_batch_size: int) -> float:
    """The linear scaling rule (Goyal et al.): ``lr * batch_size / base_batch_size``."""
    return lr * batch_size / base_batch_size


def build_optimizer(
    cfg: dict, params: nn.Module | Iterable[nn.Parameter], lr: float | None = None
) -> torch.optim.Optimizer:
    """``cfg["optimizer"]`` (``type`` SGD / AdamW / Adam, its keyword arguments and optionally
    mmcv's ``paramwise_cfg.custom_keys``) over a model's parameters (or bare ``params``: then no
    ``paramwise_cfg``). Weight decay on every parameter unless a custom key says otherwise, as mmcv's
    default constructor does; parameters that do not require grad are left out."""
    opt_cfg = dict(cfg["optimizer"])
    name = opt_cfg.pop("type")
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(_OPTIMIZERS)}")
    if lr is not None:
        opt_cfg["lr"] = lr
    if "betas" in opt_cfg:  # YAML has lists, torch documents a tuple
        opt_cfg["betas"] = tuple(opt_cfg["betas"])
    paramwise = opt_cfg.pop("paramwise_cfg", None)
    if not paramwise:
        plain = params.parameters() if isinstance(params, nn.Module) else params
        return _OPTIMIZERS[name]([p for p in plain if p.requires_grad], **opt_cfg)
    if not isinstance(params, nn.Module):
        raise ValueError("optimizer.paramwise_cfg needs the model (parameter names), not bare parameters")
    groups = paramwise_groups(params, paramwise, opt_cfg["lr"], opt_cfg.get("weight_decay"))
    return _OPTIMIZERS[name](groups, **opt_cfg)


def paramwise_groups(
    model: nn.Module, paramwise_cfg: dict, lr: float, weight_decay: float | None
) -> list[dict]:
    """Parameter groups of mmcv's ``custom_keys`` rule (see the module docstring): consecutive
    parameters with the same multipliers share a group; each group records its ``lr_mult``."""
    unknown = set(paramwise_cfg) - {"custom_keys"}
    if unknown:
        raise ValueError(
            f"optimizer.paramwise_cfg: unsupported keys {sorted(unknown)}; supported: custom_keys"
        )
    custom = dict(paramwise_cfg.get("custom_keys") or {})
    for key, mults in custom.items():
        bad = set(mults) - {"lr_mult", "decay_mult"}
        if bad:
            raise ValueError(
                f"optimizer.paramwise_cfg.custom_keys.{key}: unknown {sorted(bad)}; use lr_mult, decay_mult"
            )
    keys = sorted(sorted(custom), key=len, reverse=True)  # mmcv's order: longest first
    groups: list[dict] = []
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        full = rotdet_to_mmrotate_key(pname)  # the name mmcv matched the keys against
        key = next((k for k in keys if k in full), None)
        lr_mult = float(custom[key].get("lr_mult", 1.0)) if key else 1.0
        decay_mult = float(custom[key].get("decay_mult", 1.0)) if key else 1.0
        if groups and groups[-1]["lr_mult"] == lr_mult and groups[-1]["decay_mult"] == decay_mult:
            groups[-1]["params"].append(param)
            continue
        group = {"params": [param], "lr": lr * lr_mult, "lr_mult": lr_mult, "decay_mult": decay_mult}
        if weight_decay is not None:
            group["weight_decay"] = weight_decay * decay_mult
        groups.append(group)
    return groups


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
        """Set every group's lr to ``lr`` (times the group's ``lr_mult`` from ``custom_keys``)."""
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
