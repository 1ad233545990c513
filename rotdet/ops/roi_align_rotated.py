"""Rotated RoI Align (mmcv-full 1.7.2 ``RoIAlignRotated``) in pure PyTorch, CPU and CUDA.

Each rotated RoI ``(batch_index, cx, cy, w, h, angle)`` is cut into ``oh x ow`` bins along its own
axes; every bin averages a ``gh x gw`` grid of bilinear samples of the feature map. With mmcv's
arithmetic, in the features' dtype:

* ``aligned=True`` shifts the scaled centre by half a pixel (pixel ``i`` covers ``[i, i + 1)``, its
  value sits at ``i + 0.5``); ``aligned=False`` does not shift and widens sizes below 1 to 1.
* the grid is ``sampling_ratio`` per side, or, when it is 0, ``ceil(bin size)`` per side, per RoI
  and per axis (so a RoI of width 0 averages nothing and gives 0).
* a sample point ``p`` relative to the RoI's centre is rotated *counter-clockwise* by ``angle`` in
  image space (``clockwise=True`` negates the angle): ``y = py cos - px sin + cy``,
  ``x = py sin + px cos + cx``.
* bilinear reads: a point beyond ``[-1, H] x [-1, W]`` contributes 0; otherwise coordinates below 0
  become 0 and at or beyond the last row/column read that row/column alone.

The samples of a chunk of RoIs are turned into four (index, weight) pairs each and read with one
gather from the channel-last map, then contracted with a batched matrix product; the gradient to
the features is autograd's (a scatter-add with the same weights, as mmcv's backward). RoIs get no
gradient (mmcv returns none). On the CPU the same weights instead form a sparse matrix
``[N * oh * ow, B * H * W]`` multiplied with the map: no copy of the gathered rows, and its backward
(the transposed product) is 3-4x faster than the gather's scatter-add. With ``sampling_ratio=0``
RoIs are grouped by their grid size.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["RoIAlignRotated", "roi_align_rotated", "roi_align_rotated_pyramid"]

# Values gathered at once (per chunk of RoIs): sampled corners x channels. 2**23 float32 values is
# 32 MB of temporaries per chunk; bigger chunks do not run faster on CPU.
_GATHER_BUDGET = 1 << 23
# The CPU pools with a sparse matrix product (see _sparse_pool); tests turn it off to check the gather
_SPARSE_ON_CPU = True


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"output_size must be an int or (h, w), got {size!r}")
    return int(size[0]), int(size[1])


def _axis_coords(start: Tensor, bin_size: Tensor, bins: int, grid: int, lo: int, hi: int) -> Tensor:
    """Sample offsets from the RoI centre along one axis, ``[n, bins, hi - lo]`` (grid cells ``lo:hi``).

    mmcv's ``start + b * bin + (i + .5) * bin / grid`` with its evaluation order, so that float32
    coordinates agree to the bit.
    """
    b = torch.arange(bins, device=start.device, dtype=start.dtype)
    i = torch.arange(lo, hi, device=start.device, dtype=start.dtype) + 0.5
    first = start[:, None] + b[None, :] * bin_size[:, None]  # [n, bins]
    within = i[None, :] * bin_size[:, None] / grid  # [n, hi - lo]
    return first[:, :, None] + within[:, None, :]


def _bilinear(coord: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """mmcv's border rules along one axis: ``(low, high, weight of low, weight of high)``.

    ``coord`` is already known to lie in ``[-1, size]`` where it matters (the caller zeroes the rest).
    """
    coord = coord.clamp(min=0)
    low = coord.long()  # truncation == floor for coord >= 0
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, low, low + 1)
    coord = torch.where(at_edge, low.to(coord.dtype), coord)
    frac = coord - low
    return low, high, 1.0 - frac, frac


def _pool_block(
    flat: Tensor,
    base: Tensor,
    geom: tuple[Tensor, ...],
    out_hw: tuple[int, int],
    grid_hw: tuple[int, int],
    rows: tuple[int, int],
    cols: tuple[int, int],
    hw: tuple[int, int] | tuple[Tensor, Tensor],
    sparse: bool,
) -> Tensor:
    """Sum over grid cells ``rows x cols`` of every bin's bilinear samples, ``[n, oh * ow, C]``.

    ``flat`` is the channel-last map ``[B * H * W, C]``; ``base`` ``[n]`` each RoI's image offset in it;
    ``geom`` the RoIs' ``(cx, cy, start_w, start_h, bin_w, bin_h, cos, sin)``, each ``[n]``; ``hw``
    the map's size, two ints or (:func:`roi_align_rotated_pyramid`) per-RoI ``[n, 1, 1, 1, 1]`` sizes.
    """
    cx, cy, start_w, start_h, bin_w, bin_h, cos, sin = geom
    (oh, ow), (gh, gw), (height, width) = out_hw, grid_hw, hw
    yy = _axis_coords(start_h, bin_h, oh, gh, *rows)[:, :, :, None, None]  # [n, oh, r, 1, 1]
    xx = _axis_coords(start_w, bin_w, ow, gw, *cols)[:, None, None, :, :]  # [n, 1, 1, ow, c]
    c_, s_ = cos[:, None, None, None, None], sin[:, None, None, None, None]
    y = yy * c_ - xx * s_ + cy[:, None, None, None, None]  # [n, oh, r, ow, c]
    x = yy * s_ + xx * c_ + cx[:, None, None, None, None]
    inside = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
    y_lo, y_hi, hy, ly = _bilinear(y, height)
    x_lo, x_hi, hx, lx = _bilinear(x, width)
    zero = torch.zeros((), dtype=y.dtype, device=y.device)
    hy, ly = torch.where(inside, hy, zero), torch.where(inside, ly, zero)
    row_lo = base[:, None, None, None, None] + y_lo * width
    row_hi = base[:, None, None, None, None] + y_hi * width
    index = torch.stack((row_lo + x_lo, row_lo + x_hi, row_hi + x_lo, row_hi + x_hi), dim=-1)
    weight = torch.stack((hy * hx, hy * lx, ly * hx, ly * lx), dim=-1)
    n = index.shape[0]
    # [n, oh, r, ow, c, 4] -> [n * oh * ow, r * c * 4]: one row of samples per output bin
    index = index.permute(0, 1, 3, 2, 4, 5).reshape(n * oh * ow, -1)
    weight = weight.permute(0, 1, 3, 2, 4, 5).reshape(n * oh * ow, -1).to(flat.dtype)
    if sparse:
        return _sparse_pool(flat, index, weight).view(n, oh * ow, flat.shape[1])
    # index_select copies whole rows (several times faster than advanced indexing on the CPU)
    values = flat.index_select(0, index.reshape(-1)).view(index.shape[0], index.shape[1], flat.shape[1])
    return torch.bmm(weight[:, None, :], values).view(n, oh * ow, flat.shape[1])


def _sparse_pool(flat: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """``[R, C]`` rows of (sparse ``[R, B*H*W]`` with ``weight`` at ``index``, both ``[R, k]``) @ ``flat``.

    The CPU's sparse-times-dense product reads each sampled row once instead of first copying all of
    them out (~2x faster forward, ~3.5x faster backward at Oriented R-CNN's sizes). Within a row the
    columns are unsorted and may repeat (clamped corners); the product sums every stored entry, which
    is what is meant (tested against the gather).
    """
    rows, k = index.shape
    crow = torch.arange(0, rows * k + 1, k, device=index.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        matrix = torch.sparse_csr_tensor(
            crow, index.reshape(-1), weight.reshape(-1), (rows, flat.shape[0]), check_invariants=False
        )
        return matrix @ flat


def _use_sparse(flat: Tensor) -> bool:
    """The sparse product: on the CPU in float32/64 outside tracing (elsewhere the gather; CUDA
    gathers fast, and export wants plain ops)."""
    return (
        _SPARSE_ON_CPU
        and flat.device.type == "cpu"
        and flat.dtype in (torch.float32, torch.float64)
        and not (torch.jit.is_tracing() or torch.compiler.is_compiling())
    )


def _pool_group(
    flat: Tensor,
    base: Tensor,
    geom: tuple[Tensor, ...],
    out_hw: tuple[int, int],
    grid_hw: tuple[int, int],
    hw: tuple[int, int],
) -> Tensor:
    """Pooled ``[n, C, oh, ow]`` of RoIs sharing one ``gh x gw`` grid, chunked to bound memory."""
    (oh, ow), (gh, gw) = out_hw, grid_hw
    n, channels = base.shape[0], flat.shape[1]
    if gh == 0 or gw == 0:  # mmcv: nothing sampled, divided by max(count, 1)
        return flat.new_zeros(n, channels, oh, ow)
    sparse = _use_sparse(flat)
    # values held per RoI per grid cell: the gathered corners' channels, or the sparse entries alone
    per_cell = oh * ow * 4 * (1 if sparse else channels)
    # RoIs per chunk; a RoI whose grid alone is over budget is cut into blocks of grid rows/columns
    cols = min(gw, max(1, _GATHER_BUDGET // per_cell))
    rows = min(gh, max(1, _GATHER_BUDGET // (per_cell * cols)))
    rois_per_chunk = max(1, _GATHER_BUDGET // (per_cell * rows * cols))
    chunks = []
    for start in range(0, n, rois_per_chunk):
        sl = slice(start, start + rois_per_chunk)
        g = tuple(t[sl] for t in geom)
        acc = None
        for r0 in range(0, gh, rows):
            for c0 in range(0, gw, cols):
                r, c = (r0, min(gh, r0 + rows)), (c0, min(gw, c0 + cols))
                part = _pool_block(flat, base[sl], g, out_hw, grid_hw, r, c, hw, sparse)
                acc = part if acc is None else acc + part
        chunks.append(acc)
    pooled = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
    # mmcv divides each bin's sum by the sample count; when the output is a fresh tensor (no
    # autograd history to keep) in place, saving a pass over [N, C, oh, ow]
    pooled = pooled.div_(gh * gw) if not pooled.requires_grad else pooled / (gh * gw)
    return pooled.view(n, oh, ow, channels).permute(0, 3, 1, 2).contiguous()


def _check_rois(rois: Tensor, batch_index: Tensor, batch: int, aligned: bool) -> None:
    """mmcv's size assertion and a batch-index range check, with one host sync."""
    bad_size = ((rois[:, 3] < 0) | (rois[:, 4] < 0)).any() if aligned else torch.zeros((), dtype=torch.bool)
    bad_batch = ((batch_index < 0) | (batch_index >= batch)).any()
    bad_size, bad_batch = torch.stack([bad_size.to(bad_batch.device), bad_batch]).tolist()
    if bad_size:
        raise ValueError("roi_align_rotated: RoIs need non-negative width and height when aligned=True")
    if bad_batch:
        raise ValueError(f"roi_align_rotated: a RoI's batch index is outside [0, {batch})")


def _roi_geometry(
    rois: Tensor,
    spatial_scale: float | Tensor,
    out_hw: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
    clockwise: bool,
) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
    """Per-RoI ``(cx, cy, start_w, start_h, bin_w, bin_h, cos, sin)`` and grid sizes ``gh, gw`` ``[N]``
    (``spatial_scale`` one float, or ``[N]`` per RoI)."""
    offset = 0.5 if aligned else 0.0
    cx = rois[:, 1] * spatial_scale - offset
    cy = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale
    roi_h = rois[:, 4] * spatial_scale
    theta = -rois[:, 5] if clockwise else rois[:, 5]
    if not aligned:  # mmcv keeps this for backward compatibility
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / out_hw[0], roi_w / out_hw[1]
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(cx, sampling_ratio, dtype=torch.long)
    else:  # mmcv's ceilf: the bin size rounded to float32 first
        grid_h, grid_w = torch.ceil(bin_h.float()).long(), torch.ceil(bin_w.float()).long()
    # mmcv's cos / sin of a float are libm's correctly rounded ones; torch's float32 kernels may be
    # an ulp off, which at 256 cells moves a sample by ~1e-5: go through float64
    cos, sin = torch.cos(theta.double()).to(theta.dtype), torch.sin(theta.double()).to(theta.dtype)
    geom = (cx, cy, -roi_w / 2, -roi_h / 2, bin_w, bin_h, cos, sin)
    return geom, grid_h, grid_w


def roi_align_rotated(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int = 0,
    aligned: bool = True,
    clockwise: bool = False,
) -> Tensor:
    """mmcv's ``roi_align_rotated``: features of rotated RoIs, ``[N, C, oh, ow]``.

    Args:
        features: ``[B, C, H, W]`` float feature map.
        rois: ``[N, 6]`` ``(batch_index, cx, cy, w, h, angle)``, image pixels and radians; not
            differentiated (mmcv gives RoIs no gradient).
        output_size: ``oh`` and ``ow`` (or one int for both).
        spatial_scale: feature-map cells per image pixel (``1 / stride``).
        sampling_ratio: samples per bin side; 0 takes ``ceil(bin size)`` per RoI.
        aligned: the half-pixel shift (see the module docstring).
        clockwise: the angle turns clockwise in image space (mmrotate's configs set this).

    Returns:
        ``[N, C, oh, ow]`` in the features' dtype, differentiable with respect to ``features``.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be [B, C, H, W], got {tuple(features.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 6:
        raise ValueError(f"rois must be [N, 6] (batch_index, cx, cy, w, h, angle), got {tuple(rois.shape)}")
    out_hw = _pair(output_size)
    batch, channels, height, width = features.shape
    num = rois.shape[0]
    if num == 0:
        return features.new_zeros(0, channels, *out_hw)
    # mmcv reads the RoIs in the features' dtype; half features get float32 geometry
    geom_dtype = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
    rois = rois.detach().to(device=features.device, dtype=geom_dtype)
    geom, grid_h, grid_w = _roi_geometry(
        rois, float(spatial_scale), out_hw, sampling_ratio, aligned, clockwise
    )
    batch_index = rois[:, 0].long()  # mmcv: int(roi[0]), truncation
    if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
        _check_rois(rois, batch_index, batch, aligned)
    base = batch_index * (height * width)
    flat = features.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    hw = (height, width)
    if sampling_ratio > 0:
        return _pool_group(flat, base, geom, out_hw, (sampling_ratio, sampling_ratio), hw)
    # adaptive grids: one vectorised pass per distinct (gh, gw), results put back in RoI order
    key = grid_h * (int(grid_w.max()) + 1) + grid_w
    keys, inverse = torch.unique(key, return_inverse=True)
    pooled, order = [], []
    for k, (gh, gw) in enumerate(zip(*_split_key(keys, int(grid_w.max()) + 1), strict=True)):
        inds = torch.nonzero(inverse == k).flatten()
        pooled.append(_pool_group(flat, base[inds], tuple(t[inds] for t in geom), out_hw, (gh, gw), hw))
        order.append(inds)
    return torch.cat(pooled)[torch.argsort(torch.cat(order))]


def roi_align_rotated_pyramid(
    feats: Sequence[Tensor],
    boxes: Tensor,
    levels: Tensor,
    spatial_scales: Sequence[float],
    output_size: int | tuple[int, int],
    sampling_ratio: int,
    aligned: bool = True,
    clockwise: bool = False,
    chunk: int = 64,
) -> Tensor:
    """:func:`roi_align_rotated` of every image's RoIs, each from its own pyramid level, in static
    shapes (for exported graphs: no grouping by level, no data-dependent size).

    Args:
        feats: ``L`` levels ``[B, C, H_l, W_l]``.
        boxes: ``[B, P, 5]`` rotated RoIs ``(cx, cy, w, h, angle)`` of each image.
        levels: ``[B, P]`` int64, the level each RoI reads.
        spatial_scales: one per level (``1 / stride``).
        output_size, sampling_ratio, aligned, clockwise: as :func:`roi_align_rotated`; the grid must
            be fixed (``sampling_ratio > 0``).
        chunk: RoIs per image pooled at once (the gathered samples of ``B * chunk`` RoIs are held).

    Returns:
        ``[B, P, C, oh, ow]``: the same samples and weights as :func:`roi_align_rotated` on the RoI's
        level, read with one gather from all levels (the sums may round differently).
    """
    if sampling_ratio <= 0:
        raise ValueError("roi_align_rotated_pyramid needs a fixed grid (sampling_ratio > 0)")
    if len(feats) != len(spatial_scales):
        raise ValueError(f"{len(feats)} feature levels but {len(spatial_scales)} spatial scales")
    out_hw = _pair(output_size)
    channels = int(feats[0].shape[1])
    sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in feats]
    cells = [h * w for h, w in sizes]
    device = boxes.device
    # per level, indexed by each RoI's level: where the level starts in an image's cells, its size
    # and scale; every image holds sum(cells) rows of the channel-last pyramid
    starts = torch.tensor([sum(cells[:i]) for i in range(len(cells))], device=device)
    heights = torch.tensor([h for h, _ in sizes], device=device)
    widths = torch.tensor([w for _, w in sizes], device=device)
    scales = torch.tensor([float(s) for s in spatial_scales], dtype=boxes.dtype, device=device)
    flat = torch.cat([f.flatten(2) for f in feats], dim=2).transpose(1, 2).reshape(-1, channels)
    image = torch.ones_like(levels[:, :1]).cumsum(0) - 1  # [B, 1] (no arange of a traced size)
    base = image * sum(cells) + starts[levels]
    gh = gw = int(sampling_ratio)
    pooled = []
    for p0 in range(0, boxes.shape[1], chunk):
        lv = levels[:, p0 : p0 + chunk].reshape(-1)
        part = boxes[:, p0 : p0 + chunk]
        rois = torch.cat([torch.zeros_like(part[..., :1]), part], dim=-1).reshape(-1, 6)
        geom, _, _ = _roi_geometry(rois, scales[lv], out_hw, sampling_ratio, aligned, clockwise)
        hw = (heights[lv].view(-1, 1, 1, 1, 1), widths[lv].view(-1, 1, 1, 1, 1))
        block = _pool_block(
            flat, base[:, p0 : p0 + chunk].reshape(-1), geom, out_hw, (gh, gw), (0, gh), (0, gw), hw, False
        )
        block = (block / (gh * gw)).view(part.shape[0], part.shape[1], *out_hw, channels)
        pooled.append(block.permute(0, 1, 4, 2, 3))
    return torch.cat(pooled, dim=1)


def _split_key(keys: Tensor, modulus: int) -> tuple[list[int], list[int]]:
    return (keys // modulus).tolist(), (keys % modulus).tolist()


class RoIAlignRotated(nn.Module):
    """mmcv's ``RoIAlignRotated`` module: :func:`roi_align_rotated` with fixed settings.

    ``forward(features [B, C, H, W], rois [N, 6]) -> [N, C, oh, ow]``.
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float,
        sampling_ratio: int = 0,
        aligned: bool = True,
        clockwise: bool = False,
    ) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.clockwise = bool(clockwise)

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return roi_align_rotated(
            features,
            rois,
            self.output_size,
            self.spatial_scale,
            self.sampling_ratio,
            self.aligned,
            self.clockwise,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, clockwise={self.clockwise}"
        )
