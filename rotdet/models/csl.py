"""Circular Smooth Label (CSL) Rotated FCOS: mmrotate 0.3.4's ``CSLRFCOSHead``, ``CSLCoder`` and
``SmoothFocalLoss`` (``rotated_fcos_csl_gaussian_r50_fpn_1x_dota_le90``).

The head is :class:`~rotdet.models.fcos.RotatedFCOSHead` with the angle as a classification over
``coding_len`` bins (``angle range / omega``: 180 one-degree bins for ``le90`` / ``le135``, 90 for
``oc``): ``conv_angle`` has ``coding_len`` outputs and no scale; the box is regressed apart
(``separate_angle``, a GIoU loss on the axis-aligned box), the angle by a focal loss on the bins
against the *smoothed* one-hot target (a window around the target bin, wrapping round the circle);
at test the angle is the centre of the highest bin.

mmrotate 0.3.4's ``CSLRFCOSHead.loss`` reads a misspelt attribute (``self.seprate_angle``) and raises
``AttributeError``, so that release cannot train this config; rotdet trains it as the head declares
(separate angle: GIoU box loss, smooth focal angle loss), which is what the released checkpoint
was trained with. Inference is mmrotate's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rotdet.models.config_keys import constructor_kwargs
from rotdet.models.fcos import RotatedFCOSHead

__all__ = ["CSLCoder", "CSLRFCOSHead", "SmoothFocalLoss"]

_OFFSETS = {"oc": 0, "le90": 90, "le135": 45}  # degrees added before binning
_WINDOWS = ("gaussian", "triangle", "rect", "pulse")


class CSLCoder:
    """mmrotate's ``CSLCoder``: angles (radians) <-> circular smooth labels ``[N, coding_len]``.

    Args:
        angle_version: ``oc`` (a 90-degree range) or ``le90`` / ``le135`` (180 degrees).
        omega: degrees per bin.
        window: the label's shape around the target bin: ``gaussian`` (radius = its sigma, over
            the whole circle), ``triangle`` / ``rect`` (``2 radius`` bins), ``pulse`` (one bin).
        radius: the window's radius.
    """

    def __init__(
        self, angle_version: str, omega: float = 1, window: str = "gaussian", radius: float = 6
    ) -> None:
        if angle_version not in _OFFSETS:
            raise ValueError(f"CSLCoder: angle_version {angle_version!r} is not one of oc, le90, le135")
        if window not in _WINDOWS:
            raise ValueError(f"CSLCoder: window {window!r} is not one of {', '.join(_WINDOWS)}")
        self.angle_version = angle_version
        self.angle_range = 90 if angle_version == "oc" else 180
        self.angle_offset = _OFFSETS[angle_version]
        self.omega = omega
        self.window = window
        self.radius = radius
        self.coding_len = int(self.angle_range // omega)

    @classmethod
    def from_config(cls, cfg: Mapping) -> CSLCoder:
        return cls(**constructor_kwargs(cls, cfg, "bbox_head.angle_coder", {"CSLCoder"}))

    def encode(self, angles: Tensor) -> Tensor:
        """``[N, 1]`` angles (radians) -> ``[N, coding_len]`` smooth labels (float)."""
        labels = torch.zeros_like(angles).repeat(1, self.coding_len)
        # the bin: truncated toward zero, as mmrotate's .long()
        bins = ((angles * (180 / math.pi) + self.angle_offset) / self.omega).long()
        if self.window == "pulse":
            return labels.scatter(1, bins % self.coding_len, 1.0)
        if self.window == "gaussian":
            offsets = torch.arange(-self.angle_range // 2, self.angle_range // 2, device=angles.device)
            values = torch.exp(-torch.pow(offsets, 2) / (2 * self.radius**2))
        else:
            offsets = torch.arange(-self.radius, self.radius, device=angles.device)
            values = 1.0 - torch.abs((1 / self.radius) * offsets) if self.window == "triangle" else None
        index = (offsets + bins) % self.coding_len
        if values is None:  # rect
            return labels.scatter(1, index, 1.0)
        return labels.scatter(1, index, values.to(labels.dtype)[None].repeat(labels.shape[0], 1))

    def decode(self, angle_preds: Tensor) -> Tensor:
        """``[N, coding_len]`` bin scores -> ``[N]`` angles (radians): the best bin's centre."""
        best = torch.argmax(angle_preds, dim=1)
        return (((best + 0.5) * self.omega) % self.angle_range - self.angle_offset) * (math.pi / 180)


@dataclass(frozen=True)
class SmoothFocalLoss:
    """mmrotate's ``SmoothFocalLoss``: the sigmoid focal loss against soft targets, element-wise
    (the head sums it over the positives' bins and divides by ``num_pos + eps``)."""

    gamma: float = 2.0
    alpha: float = 0.25
    reduction: str = "mean"
    loss_weight: float = 1.0

    def elementwise(self, logits: Tensor, target: Tensor) -> Tensor:
        p = logits.sigmoid()
        target = target.to(logits.dtype)
        pt = (1 - p) * target + p * (1 - target)
        focal_weight = (self.alpha * target + (1 - self.alpha) * (1 - target)) * pt.pow(self.gamma)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * focal_weight


class CSLRFCOSHead(RotatedFCOSHead):
    """mmrotate's ``CSLRFCOSHead`` (see the module docstring): ``separate_angle`` must be true and
    ``scale_angle`` false, as mmrotate asserts."""

    def __init__(self, num_classes: int, angle_coder: CSLCoder | None = None, **kwargs) -> None:
        if not kwargs.get("separate_angle", True) or kwargs.get("scale_angle", False):
            raise ValueError("CSLRFCOSHead: needs separate_angle=true and scale_angle=false")
        kwargs.update(separate_angle=True, scale_angle=False)
        kwargs.setdefault("loss_angle", SmoothFocalLoss())
        super().__init__(num_classes, **kwargs)
        self.angle_coder = angle_coder if angle_coder is not None else CSLCoder("le90", radius=6)
        self.conv_angle = nn.Conv2d(self.feat_channels, self.angle_coder.coding_len, 3, padding=1)
        self.init_weights()

    CONFIG_TYPE = "CSLRFCOSHead"

    @classmethod
    def _config_sections(cls, c: dict) -> dict:
        """The CSL-specific sections of a config's ``bbox_head`` built (the rest by the base)."""
        if "angle_coder" in c:
            c["angle_coder"] = CSLCoder.from_config(c["angle_coder"])
        if "loss_angle" in c:
            c["loss_angle"] = SmoothFocalLoss(
                **constructor_kwargs(
                    SmoothFocalLoss, c["loss_angle"], "bbox_head.loss_angle", {"SmoothFocalLoss"}
                )
            )
        return c

    def angle_targets(self, angles: Tensor) -> Tensor:
        return self.angle_coder.encode(angles)

    def decode_angle(self, angle_preds: Tensor) -> Tensor:
        return self.angle_coder.decode(angle_preds)[:, None]
