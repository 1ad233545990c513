"""mmrotate 0.3.4's ``RotatedSingleRoIExtractor``: each rotated RoI pooled from one FPN level.

A RoI of scale ``s = sqrt(w * h)`` (image pixels) goes to level ``floor(log2(s / finest_scale + 1e-6))``
clamped to the levels given: with ``finest_scale=56`` and strides 4-32, below 112 px to stride 4,
112-224 to 8, 224-448 to 16, above to 32. Each level has its own :class:`RoIAlignRotated` with
``spatial_scale = 1 / stride``. Like mmrotate's ``force_fp32``, the pooling runs in float32 and the
result comes back in the features' dtype (half under AMP).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from rotdet.models.config_keys import constructor_kwargs
from rotdet.ops.roi_align_rotated import RoIAlignRotated, roi_align_rotated_pyramid

__all__ = ["RotatedSingleRoIExtractor"]

# mmcv's RoIAlignRotated still takes its pre-1.x argument names (a deprecation shim renames them)
_LEGACY_ROI_LAYER_KEYS = {"out_size": "output_size", "sample_num": "sampling_ratio"}
_ROI_LAYER_KEYS = {"output_size", "sampling_ratio", "aligned", "clockwise"}


def _roi_layer_kwargs(cfg: Mapping) -> dict:
    """``roi_layer`` (``type`` RoIAlignRotated, old or new argument names) as RoIAlignRotated's kwargs."""
    c = dict(cfg)
    kind = c.pop("type", None)
    if kind != "RoIAlignRotated":
        raise ValueError(f"roi_layer: type {kind!r} is not supported; expected 'RoIAlignRotated'")
    out = {}
    for key, value in c.items():
        name = _LEGACY_ROI_LAYER_KEYS.get(key, key)
        if name not in _ROI_LAYER_KEYS:
            known = sorted(_ROI_LAYER_KEYS | set(_LEGACY_ROI_LAYER_KEYS))
            raise ValueError(f"roi_layer: unknown key {key!r}; known: {known}")
        if name in out:
            raise ValueError(f"roi_layer: {name!r} is given twice (as {key!r} and its other name)")
        out[name] = value
    if "output_size" not in out:
        raise ValueError("roi_layer: output_size (or out_size) is required")
    return out


class RotatedSingleRoIExtractor(nn.Module):
    """Pool ``[N, 6]`` rotated RoIs from a feature pyramid to ``[N, C, oh, ow]``.

    Args:
        roi_layer: mmrotate's ``roi_layer`` dict, e.g. ``dict(type='RoIAlignRotated', out_size=7,
            sample_num=2, clockwise=True)`` (``output_size`` / ``sampling_ratio`` also accepted).
        out_channels: ``C``, the pyramid's channels.
        featmap_strides: one stride per level, finest first.
        finest_scale: RoIs below ``2 * finest_scale`` pixels (square-root area) use the first level.
    """

    def __init__(
        self,
        roi_layer: Mapping,
        out_channels: int,
        featmap_strides: Sequence[int],
        finest_scale: int = 56,
    ) -> None:
        super().__init__()
        kwargs = _roi_layer_kwargs(roi_layer)
        if not featmap_strides:
            raise ValueError("featmap_strides must name at least one level")
        self.out_channels = int(out_channels)
        self.featmap_strides = tuple(int(s) for s in featmap_strides)
        self.finest_scale = finest_scale
        self.roi_layers = nn.ModuleList(
            RoIAlignRotated(spatial_scale=1 / s, **kwargs) for s in self.featmap_strides
        )

    @classmethod
    def from_config(cls, cfg: Mapping) -> RotatedSingleRoIExtractor:
        """From a config's ``roi_head.bbox_roi_extractor`` (``init_cfg`` is accepted and unused:
        the extractor has no weights)."""
        c = constructor_kwargs(
            cls, cfg, "bbox_roi_extractor", {"RotatedSingleRoIExtractor"}, extra={"init_cfg"}
        )
        c.pop("init_cfg", None)
        return cls(**c)

    @property
    def num_inputs(self) -> int:
        """How many pyramid levels the extractor reads (mmdet passes ``feats[:num_inputs]``)."""
        return len(self.featmap_strides)

    @property
    def output_size(self) -> tuple[int, int]:
        return self.roi_layers[0].output_size

    def map_roi_levels(self, rois: Tensor, num_levels: int) -> Tensor:
        """Level ``[N]`` int64 of each RoI ``[N, 6]`` by its scale ``sqrt(w * h)``."""
        return self.box_levels(rois[:, 1:], num_levels)

    def box_levels(self, boxes: Tensor, num_levels: int) -> Tensor:
        """Level ``[...]`` int64 of each rotated box ``[..., 5]`` by its scale ``sqrt(w * h)``."""
        scale = torch.sqrt(boxes[..., 2] * boxes[..., 3])
        levels = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return levels.clamp(min=0, max=num_levels - 1).long()

    def forward_static(self, feats: Sequence[Tensor], boxes: Tensor) -> Tensor:
        """:meth:`forward` in static shapes for exported graphs: ``boxes [B, P, 5]`` (each image's
        RoIs) -> ``[B * P, C, oh, ow]`` (image-major), every RoI read from its level with one gather
        (:func:`~rotdet.ops.roi_align_rotated.roi_align_rotated_pyramid`; needs a fixed
        ``sampling_ratio``)."""
        layers = self.roi_layers[: len(feats)]
        first = layers[0]
        out_dtype = feats[0].dtype
        with torch.autocast(feats[0].device.type, enabled=False):  # mmrotate's force_fp32
            pooled = roi_align_rotated_pyramid(
                [f.float() for f in feats],
                boxes.float(),
                self.box_levels(boxes, len(feats)),
                [layer.spatial_scale for layer in layers],
                first.output_size,
                first.sampling_ratio,
                first.aligned,
                first.clockwise,
            )
        return pooled.flatten(0, 1).to(out_dtype)

    def forward(
        self,
        feats: Sequence[Tensor],
        rois: Tensor,
        roi_scale_factor: float | tuple[float, float] | None = None,
    ) -> Tensor:
        """RoI features ``[N, C, oh, ow]`` of ``rois`` ``[N, 6]`` (batch index, cx, cy, w, h, angle) from
        ``feats`` (levels ``[B, C, H_l, W_l]``, finest first).

        ``roi_scale_factor`` (one factor, or ``(h, w)``) scales each RoI's w and h after its level is
        chosen (mmrotate's ``roi_rescale``; only with more than one level, as there).
        """
        num_levels = len(feats)
        if not 0 < num_levels <= len(self.roi_layers):
            raise ValueError(f"got {num_levels} feature levels for {len(self.roi_layers)} featmap_strides")
        if any(f.shape[1] != self.out_channels for f in feats):
            raise ValueError(
                f"feature channels {[f.shape[1] for f in feats]} are not out_channels={self.out_channels}"
            )
        out_dtype = feats[0].dtype
        with torch.autocast(feats[0].device.type, enabled=False):  # mmrotate's force_fp32
            feats = [f.float() if f.dtype in (torch.float16, torch.bfloat16) else f for f in feats]
            out = self._pool(feats, rois, roi_scale_factor)
        return out.to(out_dtype)

    def _pool(
        self, feats: Sequence[Tensor], rois: Tensor, roi_scale_factor: float | tuple[float, float] | None
    ) -> Tensor:
        num_levels = len(feats)
        roi_feats = feats[0].new_zeros(rois.shape[0], self.out_channels, *self.output_size)
        if num_levels == 1:
            return roi_feats if rois.shape[0] == 0 else self.roi_layers[0](feats[0], rois)
        levels = self.map_roi_levels(rois, num_levels)
        if roi_scale_factor is not None:
            h_factor, w_factor = (
                roi_scale_factor if isinstance(roi_scale_factor, Sequence) else (roi_scale_factor,) * 2
            )
            rois = rois.clone()
            rois[:, 3] = w_factor * rois[:, 3]
            rois[:, 4] = h_factor * rois[:, 4]
        for i in range(num_levels):
            inds = torch.nonzero(levels == i).flatten()
            if inds.numel() > 0:
                roi_feats[inds] = self.roi_layers[i](feats[i], rois[inds])
            elif torch.is_grad_enabled() and feats[i].requires_grad:
                # as mmrotate: an unused level still joins the graph (DDP needs every level's gradient);
                # without a graph the zero is skipped (it differs only for non-finite features)
                roi_feats = roi_feats + feats[i].sum() * 0.0
        return roi_feats

    def extra_repr(self) -> str:
        strides, scale = self.featmap_strides, self.finest_scale
        return f"out_channels={self.out_channels}, featmap_strides={strides}, finest_scale={scale}"
