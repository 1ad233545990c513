"""Feature pyramid network with mmdet 2.x ``FPN`` semantics (the RetinaNet configuration).

``lateral_convs[i]`` (1x1) and ``fpn_convs[i]`` (3x3) are plain ``nn.Conv2d`` with bias, no norm and
no activation. mmdet wraps each in a ``ConvModule``, so its checkpoint keys carry an extra ``.conv``
(``neck.lateral_convs.0.conv.weight`` is our ``lateral_convs.0.weight``); the mmrotate checkpoint
importer drops that ``.conv``.

Forward (``start_level=1``, ``num_outs=5``, ``add_extra_convs='on_input'``):
laterals L3..L5 = 1x1(C3..C5); top-down ``L_{i-1} += nearest_upsample(L_i, size=L_{i-1}.shape)``
(upsampled to the exact size of the finer map, so odd sizes work); P3..P5 = 3x3(L3..L5);
P6 = 3x3/2 conv on C5 (the input, not P5); P7 = 3x3/2 conv on P6 (ReLU before it only when
``relu_before_extra_convs``, which the seed configs leave False).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rotdet.models.config_keys import constructor_kwargs

__all__ = ["FPN"]


class FPN(nn.Module):
    """mmdet 2.x FPN. Input: the backbone stages ``in_channels`` (e.g. [C2, C3, C4, C5]); output: ``num_outs``
    maps [B, out_channels, H_l, W_l] of strides ``in_stride[start_level] * 2**l``.

    Args:
        in_channels: channels of every backbone output passed in.
        out_channels: channels of every output level.
        start_level: first backbone output used (1 = C3).
        num_outs: number of output levels; those beyond the backbone levels come from extra convs.
        add_extra_convs: False (max pool extras, as Faster R-CNN), True / 'on_input' (extra conv on the
            last used backbone input), 'on_lateral' or 'on_output'.
        relu_before_extra_convs: ReLU before every extra conv after the first.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (256, 512, 1024, 2048),
        out_channels: int = 256,
        start_level: int = 1,
        num_outs: int = 5,
        add_extra_convs: bool | str = "on_input",
        relu_before_extra_convs: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.start_level = start_level
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        num_ins = len(self.in_channels)
        if not 0 <= start_level < num_ins:
            raise ValueError(f"start_level {start_level} outside the {num_ins} inputs")
        if num_outs < num_ins - start_level:
            raise ValueError(f"num_outs {num_outs} < the {num_ins - start_level} backbone levels used")
        if add_extra_convs is True:
            add_extra_convs = "on_input"
        if add_extra_convs not in (False, "on_input", "on_lateral", "on_output"):
            raise ValueError(f"invalid add_extra_convs {add_extra_convs!r}")
        self.add_extra_convs = add_extra_convs
        self.lateral_convs = nn.ModuleList(
            nn.Conv2d(self.in_channels[i], out_channels, 1) for i in range(start_level, num_ins)
        )
        self.fpn_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(start_level, num_ins)
        )
        extra_levels = num_outs - num_ins + start_level
        if add_extra_convs and extra_levels >= 1:
            for i in range(extra_levels):
                c_in = self.in_channels[-1] if i == 0 and add_extra_convs == "on_input" else out_channels
                self.fpn_convs.append(nn.Conv2d(c_in, out_channels, 3, stride=2, padding=1))
        self.init_weights()

    @classmethod
    def from_config(cls, cfg: Mapping, backbone_channels: Sequence[int]) -> FPN:
        """From a config's ``neck``; a null ``in_channels`` takes the backbone's, others must equal them."""
        c = constructor_kwargs(cls, cfg, "neck", {"FPN", None})
        in_channels = c.get("in_channels")
        if in_channels is None:
            c["in_channels"] = list(backbone_channels)
        elif list(in_channels) != list(backbone_channels):
            raise ValueError(
                f"neck.in_channels {list(in_channels)} do not match the backbone's outputs "
                f"{list(backbone_channels)} (set model.neck.in_channels to them, or to null)"
            )
        return cls(**c)

    def init_weights(self) -> None:
        """mmdet's FPN init: Xavier uniform (gain 1) conv weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight, gain=1.0)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone maps (one per ``in_channels``) -> ``num_outs`` maps, finest first (P3..P7)."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"FPN expects {len(self.in_channels)} inputs, got {len(inputs)}")
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            # size= (not scale_factor=2), as mmdet's default upsample_cfg: exact for odd sizes
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
            )
        used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.num_outs > used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == "on_input":
                    source = inputs[-1]
                elif self.add_extra_convs == "on_lateral":
                    source = laterals[-1]
                else:
                    source = outs[-1]
                outs.append(self.fpn_convs[used](source))
                for i in range(used + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](x))
        return outs
