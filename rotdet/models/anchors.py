"""Anchor generation with mmdet 2.x ``AnchorGenerator`` / mmrotate 0.3.4 ``RotatedAnchorGenerator`` semantics.

Per level, the base anchors are horizontal boxes centred at ``center_offset * base_size`` (0 by
default) with sizes ``base_size * w_ratio * scale`` x ``base_size * h_ratio * scale``, where
``h_ratio = sqrt(r)``, ``w_ratio = 1 / h_ratio`` and the order is ratio-major (all scales of the first
ratio, then all scales of the second, ...: mmdet's ``scale_major=True``). They are shifted over the
feature grid by ``stride`` in row-major order -- index ``(y * W + x) * A + a`` -- and finally turned
into rotated boxes ``(cx, cy, w, h, 0)`` from their corners, exactly as mmrotate does (corner
arithmetic first, so rounding matches: ``cx = (x1 + x2) / 2``, ``w = x2 - x1``).

Seed configurations: RetinaNet / R3Det ``octave_base_scale=4, scales_per_octave=3,
ratios=(1.0, 0.5, 2.0)`` (9 anchors); ATSS ``octave_base_scale=4, scales_per_octave=1,
ratios=(1.0,)`` (1 anchor); strides 8, 16, 32, 64, 128.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from rotdet.models.config_keys import constructor_kwargs

__all__ = ["AnchorGenerator"]

Device = torch.device | str | None


def _pair(stride: int | float | Sequence[int | float]) -> tuple[int | float, int | float]:
    if isinstance(stride, Sequence):
        if len(stride) != 2:
            raise ValueError(f"a stride is a number or a (w, h) pair, got {stride!r}")
        return stride[0], stride[1]
    return stride, stride


def _sizes_key(featmap_sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple((int(h), int(w)) for h, w in featmap_sizes)


class AnchorGenerator:
    """Rotated anchors (angle 0) on multi-level feature grids.

    Args:
        strides: per level, a stride or a ``(stride_w, stride_h)`` pair, in input pixels.
        octave_base_scale, scales_per_octave: scales ``octave_base_scale * 2 ** (i / scales_per_octave)``
            for ``i < scales_per_octave``; mutually exclusive with ``scales``.
        ratios: height / width ratios.
        scales: explicit scales.
        base_sizes: per level base size; default the (smaller) stride.
        center_offset: anchor centre within a grid cell, in units of the base size (mmdet v2: 0).
    """

    def __init__(
        self,
        strides: Sequence[int | float | Sequence[int | float]],
        octave_base_scale: float | None = None,
        scales_per_octave: int | None = None,
        ratios: Sequence[float] = (1.0,),
        scales: Sequence[float] | None = None,
        base_sizes: Sequence[int | float] | None = None,
        center_offset: float = 0.0,
    ) -> None:
        if not 0.0 <= center_offset <= 1.0:
            raise ValueError(f"center_offset must be in [0, 1], got {center_offset}")
        self.strides = [_pair(s) for s in strides]
        self.base_sizes = [min(s) for s in self.strides] if base_sizes is None else list(base_sizes)
        if len(self.base_sizes) != len(self.strides):
            raise ValueError(f"{len(self.strides)} strides but {len(self.base_sizes)} base sizes")
        octave = octave_base_scale is not None and scales_per_octave is not None
        if octave == (scales is not None):
            raise ValueError("give either scales or octave_base_scale with scales_per_octave, not both")
        if scales is not None:
            self.scales = torch.tensor([float(s) for s in scales], dtype=torch.float32)
        else:
            # computed in float64 (numpy), then stored as float32, as mmdet does
            octave_scales = np.array([2 ** (i / scales_per_octave) for i in range(scales_per_octave)])
            self.scales = torch.from_numpy(octave_scales * octave_base_scale).float()
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        self.ratios = torch.tensor([float(r) for r in ratios], dtype=torch.float32)
        self.center_offset = float(center_offset)
        self.base_anchors = [self._base_anchors(b) for b in self.base_sizes]
        # Anchors and valid flags keyed by shapes and device (a few MB at most; DOTA patches all
        # have one size, so a training run makes them once and saves a dozen launches a step).
        self._cache: dict[tuple, object] = {}

    @classmethod
    def from_config(cls, cfg: Mapping) -> AnchorGenerator:
        """From a head's ``anchor_generator`` (mmrotate's ``RotatedAnchorGenerator``)."""
        return cls(**constructor_kwargs(cls, cfg, "anchor_generator", {"RotatedAnchorGenerator"}))

    @property
    def num_levels(self) -> int:
        """Number of feature levels."""
        return len(self.strides)

    @property
    def num_base_anchors(self) -> int:
        """Anchors per feature-map location (the same on every level)."""
        return int(self.ratios.numel() * self.scales.numel())

    def _base_anchors(self, base_size: int | float) -> torch.Tensor:
        """Horizontal base anchors [A, 4] (x1, y1, x2, y2) around ``center_offset * base_size``."""
        x_center = self.center_offset * base_size
        y_center = self.center_offset * base_size
        h_ratios = torch.sqrt(self.ratios)
        w_ratios = 1 / h_ratios
        # ratio-major: index = ratio_index * num_scales + scale_index
        ws = (base_size * w_ratios[:, None] * self.scales[None, :]).reshape(-1)
        hs = (base_size * h_ratios[:, None] * self.scales[None, :]).reshape(-1)
        return torch.stack(
            [x_center - 0.5 * ws, y_center - 0.5 * hs, x_center + 0.5 * ws, y_center + 0.5 * hs], dim=-1
        )

    def single_level_grid_anchors_hbb(
        self,
        featmap_size: tuple[int, int],
        level: int,
        device: Device = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Horizontal anchors [H*W*A, 4] (x1, y1, x2, y2) of one level, ordered (y, x, a)."""
        feat_h, feat_w = int(featmap_size[0]), int(featmap_size[1])
        stride_w, stride_h = self.strides[level]
        base = self.base_anchors[level].to(device=device, dtype=dtype)
        shift_x = torch.arange(0, feat_w, device=device).to(dtype) * stride_w
        shift_y = torch.arange(0, feat_h, device=device).to(dtype) * stride_h
        xx = shift_x.repeat(feat_h)
        yy = shift_y.view(-1, 1).repeat(1, feat_w).view(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        return (base[None, :, :] + shifts[:, None, :]).view(-1, 4)

    def single_level_grid_anchors(
        self,
        featmap_size: tuple[int, int],
        level: int,
        device: Device = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Rotated anchors [H*W*A, 5] (cx, cy, w, h, 0) of one level, ordered (y, x, a)."""
        hbb = self.single_level_grid_anchors_hbb(featmap_size, level, device, dtype)
        # from the corners, exactly as mmrotate's RotatedAnchorGenerator (keeps its float rounding)
        xy = (hbb[:, 2:] + hbb[:, :2]) / 2
        wh = hbb[:, 2:] - hbb[:, :2]
        return torch.cat([xy, wh, xy.new_zeros((hbb.shape[0], 1))], dim=1)

    def grid_anchors(
        self,
        featmap_sizes: Sequence[tuple[int, int]],
        device: Device = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[torch.Tensor]:
        """Per level, rotated anchors [H_l*W_l*A, 5] for feature maps of size (H_l, W_l)."""
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"{len(featmap_sizes)} feature maps for {self.num_levels} anchor levels")
        return [self.single_level_grid_anchors(s, i, device, dtype) for i, s in enumerate(featmap_sizes)]

    def _cached(self, key: tuple, make):
        value = self._cache.get(key)
        if value is None:
            if len(self._cache) >= 16:
                self._cache.clear()
            value = self._cache[key] = make()
        return value

    def level_anchors(
        self, featmap_sizes: Sequence[tuple[int, int]], device: Device = None
    ) -> list[torch.Tensor]:
        """:meth:`grid_anchors` in float32, made once per feature-map sizes and device and then
        shared: per level ``[H_l*W_l*A, 5]`` (read-only)."""
        key = ("levels", _sizes_key(featmap_sizes), str(torch.device(device or "cpu")))
        return self._cached(key, lambda: self.grid_anchors(featmap_sizes, device=device, dtype=torch.float32))

    def flat_anchors(self, featmap_sizes: Sequence[tuple[int, int]], device: Device = None) -> torch.Tensor:
        """``[N, 5]``: :meth:`level_anchors` concatenated (levels in order), cached the same way."""
        key = ("flat", _sizes_key(featmap_sizes), str(torch.device(device or "cpu")))
        return self._cached(key, lambda: torch.cat(self.level_anchors(featmap_sizes, device)))

    def batch_valid_flags(
        self,
        featmap_sizes: Sequence[tuple[int, int]],
        pad_shapes: Sequence[Sequence[int]],
        device: Device = None,
    ) -> torch.Tensor | None:
        """``[B, N]`` bool: :meth:`valid_flags` of each image (its own ``pad_shape``), levels
        concatenated; ``None`` when every anchor of every image is valid, decided from the shapes
        on the host (the usual case: images padded to the batch shape). Cached per shapes."""
        if all(self.all_valid(featmap_sizes, p) for p in pad_shapes):
            return None
        pads = tuple((int(p[0]), int(p[1])) for p in pad_shapes)
        key = ("valid", _sizes_key(featmap_sizes), pads, str(torch.device(device or "cpu")))
        return self._cached(
            key, lambda: torch.stack([torch.cat(self.valid_flags(featmap_sizes, p, device)) for p in pads])
        )

    def _valid_extents(self, featmap_sizes: Sequence[tuple[int, int]], pad_shape: Sequence[int]):
        """Per level ``(feat_h, feat_w, valid_h, valid_w)``: mmdet's rule, the first
        ``min(ceil(pad / stride), feat)`` rows / columns lie within the padded image."""
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"{len(featmap_sizes)} feature maps for {self.num_levels} anchor levels")
        pad_h, pad_w = int(pad_shape[0]), int(pad_shape[1])
        for (feat_h, feat_w), (stride_w, stride_h) in zip(featmap_sizes, self.strides, strict=True):
            feat_h, feat_w = int(feat_h), int(feat_w)
            yield (
                feat_h,
                feat_w,
                min(math.ceil(pad_h / stride_h), feat_h),
                min(math.ceil(pad_w / stride_w), feat_w),
            )

    def all_valid(self, featmap_sizes: Sequence[tuple[int, int]], pad_shape: Sequence[int]) -> bool:
        """True when :meth:`valid_flags` would be all True (decided from the shapes, on the host)."""
        return all(vh == fh and vw == fw for fh, fw, vh, vw in self._valid_extents(featmap_sizes, pad_shape))

    def valid_flags(
        self,
        featmap_sizes: Sequence[tuple[int, int]],
        pad_shape: Sequence[int],
        device: Device = None,
    ) -> list[torch.Tensor]:
        """Per level, bool [H_l*W_l*A]: the anchor's grid cell lies within the padded image.

        mmdet's rule: on a level with stride s the valid rows/cols are the first
        ``min(ceil(pad / s), feat)``; with ``allowed_border = -1`` these flags are the only filter.
        ``pad_shape`` is the (H, W[, C]) of this image after padding (not the batch's).
        """
        flags = []
        for feat_h, feat_w, valid_h, valid_w in self._valid_extents(featmap_sizes, pad_shape):
            valid_x = torch.zeros(feat_w, dtype=torch.bool, device=device)
            valid_y = torch.zeros(feat_h, dtype=torch.bool, device=device)
            valid_x[:valid_w] = True
            valid_y[:valid_h] = True
            valid = valid_y[:, None] & valid_x[None, :]  # [H, W], row-major like the anchors
            flags.append(valid.reshape(-1, 1).expand(-1, self.num_base_anchors).reshape(-1))
        return flags

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(strides={self.strides}, ratios={self.ratios.tolist()}, "
            f"scales={self.scales.tolist()}, base_sizes={self.base_sizes}, "
            f"center_offset={self.center_offset})"
        )


def anchor_generator_from_config(cfg: Mapping) -> AnchorGenerator | None:
    """A head's ``anchor_generator``: the grid of mmrotate's ``RotatedAnchorGenerator``, or None for
    its ``PseudoAnchorGenerator`` (a refine head's anchors are the previous stage's boxes)."""
    if cfg.get("type") == "PseudoAnchorGenerator":
        constructor_kwargs(AnchorGenerator, cfg, "anchor_generator", {"PseudoAnchorGenerator"})
        return None
    return AnchorGenerator.from_config(cfg)
