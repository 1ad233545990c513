"""A detector whose n-th training loss goes bad, for the trainer's divergence tests: injected into
:class:`rotdet.engine.trainer.Trainer` as its model (no class is patched)."""

import torch
from torch import nn


class _NaNGradient(torch.autograd.Function):
    """Identity forward; NaN gradient backward (a finite loss whose gradients are not)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class PoisonAt(nn.Module):
    """``model`` itself (the same submodules, so the same state-dict names: its checkpoints load
    into a plain detector) whose ``call``-th ``loss_batch`` goes bad as ``kind`` says:

    * ``"loss"``: ``loss_bbox`` is NaN;
    * ``"grad"``: the loss is finite, its gradients are NaN;
    * ``"weights"``: loss and gradients are finite, but a weight is Inf when the step is taken.
    """

    def __init__(self, model: nn.Module, call: int, kind: str = "loss") -> None:
        super().__init__()
        self._detector = [model]  # a list: not registered twice; its children are, below
        for name, child in model.named_children():
            self.add_module(name, child)
        self.call, self.kind, self.calls = call, kind, 0

    def loss_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        losses = self._detector[0].loss_batch(batch)
        self.calls += 1
        if self.calls == self.call:
            if self.kind == "loss":
                losses["loss_bbox"] = losses["loss_bbox"] * float("nan")
            elif self.kind == "grad":
                losses["loss_bbox"] = _NaNGradient.apply(losses["loss_bbox"])
            else:
                with torch.no_grad():
                    self._detector[0].bbox_head.retina_cls.bias.fill_(float("inf"))
        return losses

    def predict(self, *args, **kwargs):
        return self._detector[0].predict(*args, **kwargs)
