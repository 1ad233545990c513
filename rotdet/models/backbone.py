"""ResNet backbone with mmdet 2.x ``ResNet`` semantics (``style='pytorch'``), built on torchvision's ResNet.

Module names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer3.0.downsample.0`` ...),
which are also mmdet's ``backbone.*`` names, so mmrotate checkpoint keys map one to one (minus the
``backbone.`` prefix) and torchvision's ImageNet weights load directly (its ``fc`` is not kept).

Training behaviour as mmdet: ``frozen_stages=k`` freezes the stem (``conv1`` + ``bn1``) when k >= 0 and
``layer1`` .. ``layer{k}``: their parameters get ``requires_grad=False`` and the modules stay in eval
mode; ``norm_eval=True`` keeps every BatchNorm in eval mode (running statistics frozen, batch
statistics unused) whenever ``train()`` is called. BatchNorm affine parameters of unfrozen stages still
train (mmdet's ``norm_cfg=dict(type='BN', requires_grad=True)``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from rotdet.fileio import safe_torch_load
from rotdet.models.config_keys import constructor_kwargs

logger = logging.getLogger("rotdet.models")


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights a config asks for cannot be had; the message says how to proceed."""


__all__ = ["ResNetBackbone"]

# depth -> (torchvision builder, ImageNet weights that mmdet's ``torchvision://resnetXX`` resolves to)
_ARCHS = {
    18: (tv_resnet.resnet18, tv_resnet.ResNet18_Weights.IMAGENET1K_V1),
    34: (tv_resnet.resnet34, tv_resnet.ResNet34_Weights.IMAGENET1K_V1),
    50: (tv_resnet.resnet50, tv_resnet.ResNet50_Weights.IMAGENET1K_V1),
    101: (tv_resnet.resnet101, tv_resnet.ResNet101_Weights.IMAGENET1K_V1),
}


class ResNetBackbone(nn.Module):
    """ResNet-18/34/50/101 returning the C2..C5 feature maps selected by ``out_indices``.

    Input [B, 3, H, W]; stage ``i`` (0..3) has stride ``4 * 2**i`` and ``out_channels_per_stage[i]``
    channels (64/128/256/512 for 18/34, 256/512/1024/2048 for 50/101); its output is
    [B, C_i, ceil(H / s_i), ceil(W / s_i)] for H, W multiples of 32 (in general the conv arithmetic of
    a 7x7/2 conv, 3x3/2 max pool and 3x3/2 convs).

    Args:
        depth: 18, 34, 50 or 101.
        frozen_stages: -1 freezes nothing, 0 the stem, k >= 1 the stem and ``layer1..layerk``.
        norm_eval: keep all BatchNorms in eval mode during training.
        out_indices: which stages (0 = ``layer1`` = C2, ..., 3 = C5) to return, in order.
        pretrained: ``True`` loads torchvision's ImageNet weights (``IMAGENET1K_V1``, downloaded once
            into torch's hub cache), a path loads that file (the same weights kept locally), ``False``
            keeps mmdet's random init. Weights that cannot be had are an error (as in mmcv): a model
            trained from random init on purpose must say ``pretrained: false``.
        zero_init_residual: zero the last BN weight of every block (mmdet's default is True, but all
            seed configs set False).
    """

    def __init__(
        self,
        depth: int = 50,
        frozen_stages: int = 1,
        norm_eval: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        pretrained: bool | str | os.PathLike = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if depth not in _ARCHS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(_ARCHS)}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in [-1, 4], got {frozen_stages}")
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or any(not 0 <= i <= 3 for i in out_indices):
            raise ValueError(f"out_indices must be stage indices in 0..3, got {out_indices}")
        builder, self._weights = _ARCHS[depth]
        net = builder(weights=None)
        self.depth = depth
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.out_indices = out_indices
        self.zero_init_residual = zero_init_residual
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        expansion = 1 if depth in (18, 34) else 4
        self.out_channels_per_stage: list[int] = [64 * expansion * 2**i for i in range(4)]
        self.out_channels: list[int] = [self.out_channels_per_stage[i] for i in out_indices]
        self.strides: list[int] = [4 * 2**i for i in out_indices]
        self.init_weights()
        self.pretrained_from: str | None = None  # where the ImageNet weights came from, if any
        if pretrained:
            self.load_pretrained(None if pretrained is True else pretrained)
        self._freeze_stages()

    @classmethod
    def from_config(cls, cfg: Mapping) -> ResNetBackbone:
        """From a config's ``backbone`` (mmdet's ``ResNet``; only ``style='pytorch'``, torchvision's)."""
        c = constructor_kwargs(cls, cfg, "backbone", {"ResNet", None}, extra={"style"})
        if c.pop("style", "pytorch") != "pytorch":
            raise ValueError("backbone: only style='pytorch' ResNets are supported")
        return cls(**c)

    def init_weights(self) -> None:
        """mmdet's ResNet init: Kaiming normal (fan_out, relu) convs, BatchNorm weight 1 / bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, tv_resnet.Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, tv_resnet.BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def load_pretrained(self, path: str | os.PathLike | None = None) -> str:
        """Load the ImageNet weights (torchvision's download, or the file ``path``); returns where
        they came from. Raises :class:`PretrainedWeightsError` saying how to proceed otherwise."""
        url = self._weights.url
        try:
            if path is not None:
                state, source = safe_torch_load(path), str(Path(path))
            else:
                state = torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True)
                source = url
        except Exception as exc:  # offline, proxy, corrupt cache, missing file: say how to go on
            local = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
            raise PretrainedWeightsError(
                f"ResNet-{self.depth}: cannot load the ImageNet weights ({path or url}): "
                f"{type(exc).__name__}: {' '.join(str(exc).split())}. Put {Path(url).name} at {local}, "
                "or point model.backbone.pretrained=/path/to/it, or train from random init on purpose "
                "with model.backbone.pretrained=false (tens of mAP points below the seed's table)"
            ) from None
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        self.load_state_dict(state, strict=True)
        self.pretrained_from = source
        logger.info("ResNet-%d: ImageNet weights loaded from %s", self.depth, source)
        return source

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            for m in (self.conv1, self.bn1):
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            layer = getattr(self, f"layer{i}")
            layer.eval()
            for p in layer.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> ResNetBackbone:
        """Switch mode, then re-apply the frozen stages and (when training) ``norm_eval``."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, H, W] -> the selected stage outputs, e.g. [C2, C3, C4, C5]."""
        x = self.relu(self.bn1(self.conv1(x)))
        if x.device.type == "cpu" and x.is_contiguous() and not x.requires_grad:
            # The same maxima, ~3x faster: PyTorch's CPU max pool vectorises over channels only in
            # channels-last layout (the NCHW kernel is ~4 % of a ResNet-50 forward). Not where a
            # gradient flows back: ties would be free to pick another element than the NCHW kernel.
            x = self.maxpool(x.contiguous(memory_format=torch.channels_last)).contiguous()
        else:
            x = self.maxpool(x)
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
            if i >= max(self.out_indices):
                break
        return outs
