"""R3Det's Feature Refinement Module (mmrotate 0.3.4 ``FeatureRefineModule``).

Per FPN level: ``f = conv_5_1(conv_1_5(x)) + conv_1_1(x)`` (a 1x5 then a 5x1 conv, plus a 1x1
conv, no activation), then ``x + rotated_feature_align(f, refined_boxes, 1 / stride)``, where
:func:`rotdet.ops.rotated_feature_align` returns ``f`` plus the bilinear samples of ``f`` at the
refined boxes' points. mmrotate samples one point (the centre, in mmcv's transposed (y, x) reading
of the box, see :mod:`rotdet.ops.feature_align`); ``points=5`` (centre + corners, the paper's
variant) and ``mmcv_yx=False`` are opt-in options that change the model.

Between the stages (mmrotate's ``RotatedRetinaHead.filter_bboxes`` / ``refine_bboxes``, which are
functions here): :func:`filter_bboxes` turns the first stage's outputs into one box per location,
:func:`refine_bboxes` a refine head's deltas into the next stage's boxes. The stages themselves are
:class:`rotdet.models.detectors.R3Det` and :class:`rotdet.models.heads.RotatedRetinaHead`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from rotdet.models.config_keys import constructor_kwargs
from rotdet.ops.feature_align import rotated_feature_align

__all__ = ["FeatureRefineModule", "filter_bboxes", "refine_bboxes"]

Decode = Callable[[Tensor, Tensor], Tensor]


@torch.no_grad()
def filter_bboxes(
    cls_scores: Sequence[Tensor],
    bbox_preds: Sequence[Tensor],
    level_anchors: Sequence[Tensor],
    decode: Decode,
) -> list[Tensor]:
    """mmrotate's ``filter_bboxes``: at each location the anchor with the best class score, decoded
    (no centre clamp) and detached.

    Args:
        cls_scores: per level ``[B, A * C, H, W]`` class logits.
        bbox_preds: per level ``[B, A * 5, H, W]`` deltas.
        level_anchors: per level ``[H * W * A, 5]`` the grid anchors (the same for every image).
        decode: the head's ``bbox_coder.decode`` (``[B, K, 5]`` priors and deltas -> boxes).

    Returns:
        per level ``[B, H * W, 5]``.
    """
    batch = cls_scores[0].shape[0]
    out = []
    for cls, reg, anc in zip(cls_scores, bbox_preds, level_anchors, strict=True):
        a = reg.shape[1] // 5
        num_classes = cls.shape[1] // a
        score = cls.float().permute(0, 2, 3, 1).reshape(batch, -1, a, num_classes).max(dim=-1).values
        best = score.argmax(dim=-1, keepdim=True)  # [B, HW, 1]
        pred = reg.float().permute(0, 2, 3, 1).reshape(batch, -1, a, 5)
        best_pred = pred.gather(2, best[..., None].expand(-1, -1, -1, 5)).squeeze(2)
        anchors = anc.reshape(-1, a, 5)[None].expand(batch, -1, -1, -1)
        best_anchor = anchors.gather(2, best[..., None].expand(-1, -1, -1, 5)).squeeze(2)
        out.append(decode(best_anchor, best_pred).detach())  # box by box: batched
    return out


@torch.no_grad()
def refine_bboxes(bbox_preds: Sequence[Tensor], rois: Sequence[Tensor], decode: Decode) -> list[Tensor]:
    """mmrotate's ``refine_bboxes``: a refine head's deltas ``[B, 5, H, W]`` per level applied to
    its anchors ``rois`` (per level ``[B, H * W, 5]``, one per location); per level ``[B, H * W, 5]``,
    detached."""
    batch = bbox_preds[0].shape[0]
    out = []
    for reg, roi in zip(bbox_preds, rois, strict=True):
        pred = reg.float().permute(0, 2, 3, 1).reshape(batch, -1, 5)
        out.append(decode(roi, pred).detach())
    return out


class FeatureRefineModule(nn.Module):
    """mmrotate's ``FeatureRefineModule`` (state-dict names ``conv_5_1``, ``conv_1_5``, ``conv_1_1``)."""

    def __init__(
        self,
        in_channels: int = 256,
        featmap_strides: Sequence[int] = (8, 16, 32, 64, 128),
        points: int = 1,
        mmcv_yx: bool = True,
    ) -> None:
        super().__init__()
        if points not in (1, 5):
            raise ValueError(f"points must be 1 or 5, got {points}")
        self.featmap_strides = list(featmap_strides)
        self.points, self.mmcv_yx = points, mmcv_yx
        self.conv_5_1 = nn.Conv2d(in_channels, in_channels, kernel_size=(5, 1), padding=(2, 0))
        self.conv_1_5 = nn.Conv2d(in_channels, in_channels, kernel_size=(1, 5), padding=(0, 2))
        self.conv_1_1 = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.init_weights()

    @classmethod
    def from_config(cls, cfg: Mapping) -> FeatureRefineModule:
        """From one of R3Det's ``frm_cfgs``."""
        return cls(**constructor_kwargs(cls, cfg, "frm_cfgs"))

    def init_weights(self) -> None:
        """mmcv ``normal_init(std=0.01)``: weights Normal(0, 0.01), biases 0."""
        for conv in (self.conv_5_1, self.conv_1_5, self.conv_1_1):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[Tensor], rois: Sequence[Tensor]) -> list[Tensor]:
        """``feats``: per level ``[B, C, H, W]``; ``rois``: per level ``[B, H*W, 5]`` refined boxes."""
        if len(feats) != len(self.featmap_strides) or len(rois) != len(feats):
            raise ValueError(
                f"{len(feats)} levels / {len(rois)} roi levels for {len(self.featmap_strides)} strides"
            )
        out = []
        for x, boxes, stride in zip(feats, rois, self.featmap_strides, strict=True):
            f = self.conv_5_1(self.conv_1_5(x)) + self.conv_1_1(x)
            out.append(x + rotated_feature_align(f, boxes, 1 / stride, self.points, self.mmcv_yx))
        return out
