"""Box coders: rotated boxes <-> regression deltas, with mmrotate 0.3.4's exact semantics.

``DeltaXYWHAOBBoxCoder`` turns a rotated prior (an anchor or a refined box) ``(px, py, pw, ph, pa)``
and a target ``(gx, gy, gw, gh, ga)`` into deltas ``(dx, dy, dw, dh, da)`` and back. How the eight
seed configurations set it up:

========================== ============ ========= ======= ===========
config family              angle_range  edge_swap proj_xy norm_factor
========================== ============ ========= ======= ===========
``*_le90``                 ``le90``     True      True    None
``*_le135``                ``le135``    False     True    1
``*_oc`` (incl. R3Det)     ``oc``       False     False   None
========================== ============ ========= ======= ===========

mmrotate quirks reproduced on purpose (each is also marked where it happens):

* ``oc``: angle normalisation is the identity, so decoded angles are ``pa + da`` unwrapped (they
  leave (0, pi/2]) and w/h are not reordered.
* ``le135`` (``proj_xy`` and ``norm_factor=1`` without ``edge_swap``): decoded angles are wrapped to
  [-pi/4, 3pi/4) but w < h is possible.
* The clamp of the centre to ``max_shape`` happens *before* the edge swap and uses ``W - 1``/``H - 1``.
* With ``edge_swap`` a decoded box with ``w == h`` gets ``theta + pi/2`` (strict ``w > h`` test).
* ``encode`` casts both inputs to float32; ``decode`` keeps the input dtype.

``MidpointOffsetCoder`` (Oriented R-CNN's RPN) encodes a rotated target against a *horizontal*
anchor as its circumscribed box's deltas plus two midpoint offsets, and decodes through a polygon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from rotdet.models.config_keys import constructor_kwargs
from rotdet.structures.angles import check_version, norm_angle
from rotdet.structures.conversions import obb2poly, obb2xyxy, poly2obb

__all__ = [
    "DeltaXYWHAOBBoxCoder",
    "MidpointOffsetCoder",
    "bbox2delta",
    "delta2bbox",
    "midpoint_offset_decode",
    "midpoint_offset_encode",
]

MaxShape = Sequence[int] | torch.Tensor | Sequence[Sequence[int]] | None


def bbox2delta(
    proposals: torch.Tensor,
    gt: torch.Tensor,
    means: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
    stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0),
    angle_range: str = "oc",
    norm_factor: float | None = None,
    edge_swap: bool = False,
    proj_xy: bool = False,
) -> torch.Tensor:
    """Deltas that move ``proposals`` [..., 5] onto ``gt`` [..., 5]; returns float32 [..., 5]."""
    if proposals.shape != gt.shape:
        raise ValueError(f"proposals {tuple(proposals.shape)} and gt {tuple(gt.shape)} differ in shape")
    proposals = proposals.float()
    gt = gt.float()
    px, py, pw, ph, pa = proposals.unbind(dim=-1)
    gx, gy, gw, gh, ga = gt.unbind(dim=-1)

    if proj_xy:
        # offsets expressed in the prior's own (rotated) frame
        cos, sin = torch.cos(pa), torch.sin(pa)
        dx = (cos * (gx - px) + sin * (gy - py)) / pw
        dy = (-sin * (gx - px) + cos * (gy - py)) / ph
    else:
        dx = (gx - px) / pw
        dy = (gy - py) / ph

    if edge_swap:
        # pick whichever of (w, h, a) and (h, w, a + pi/2) needs the smaller rotation
        dtheta1 = norm_angle(ga - pa, angle_range)
        dtheta2 = norm_angle(ga - pa + math.pi / 2, angle_range)
        keep = torch.abs(dtheta1) < torch.abs(dtheta2)  # ties go to the swapped edges
        gw_reg = torch.where(keep, gw, gh)
        gh_reg = torch.where(keep, gh, gw)
        da = torch.where(keep, dtheta1, dtheta2)
        dw = torch.log(gw_reg / pw)
        dh = torch.log(gh_reg / ph)
    else:
        da = norm_angle(ga - pa, angle_range)  # identity for 'oc'
        dw = torch.log(gw / pw)
        dh = torch.log(gh / ph)

    if norm_factor:  # mmrotate tests truthiness: norm_factor=0 means "off"
        da = da / (norm_factor * math.pi)

    deltas = torch.stack([dx, dy, dw, dh, da], dim=-1)
    return (deltas - deltas.new_tensor(means)) / deltas.new_tensor(stds)


def _clamp_centres(
    gx: torch.Tensor, gy: torch.Tensor, max_shape: MaxShape, batch: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clamp decoded centres to [0, W-1] x [0, H-1]; per image when ``batch`` and shapes are given."""
    if batch is not None and not isinstance(max_shape, torch.Tensor) and isinstance(max_shape[0], Sequence):
        if len(max_shape) != batch:
            raise ValueError(f"max_shape has {len(max_shape)} entries for a batch of {batch}")
        xmax = gx.new_tensor([float(s[1] - 1) for s in max_shape]).view(batch, *([1] * (gx.dim() - 1)))
        ymax = gy.new_tensor([float(s[0] - 1) for s in max_shape]).view(batch, *([1] * (gy.dim() - 1)))
        zero = gx.new_zeros(())
        return torch.minimum(torch.maximum(gx, zero), xmax), torch.minimum(torch.maximum(gy, zero), ymax)
    return gx.clamp(min=0, max=max_shape[1] - 1), gy.clamp(min=0, max=max_shape[0] - 1)


def delta2bbox(
    rois: torch.Tensor,
    deltas: torch.Tensor,
    means: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
    stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0),
    max_shape: MaxShape = None,
    wh_ratio_clip: float = 16 / 1000,
    add_ctr_clamp: bool = False,
    ctr_clamp: float = 32,
    angle_range: str = "oc",
    norm_factor: float | None = None,
    edge_swap: bool = False,
    proj_xy: bool = False,
) -> torch.Tensor:
    """Apply ``deltas`` to ``rois``; the inverse of :func:`bbox2delta`.

    Shapes: ``rois`` [N, 5] with ``deltas`` [N, 5k] (k boxes per roi, e.g. class-specific), or a batch
    ``rois`` [B, N, 5] with ``deltas`` [B, N, 5k]. Returns boxes shaped like ``deltas``.
    ``max_shape`` is (H, W[, C]) (or, for a batch, one such shape per image): decoded centres are
    clamped to the image; sizes are never clamped to it.
    """
    batch = None
    if rois.dim() == 3:
        batch = rois.shape[0]
    elif rois.dim() != 2:
        raise ValueError(f"rois must be [N, 5] or [B, N, 5], got {tuple(rois.shape)}")
    if deltas.shape[:-1] != rois.shape[:-1] or deltas.shape[-1] % 5 != 0:
        raise ValueError(f"deltas {tuple(deltas.shape)} do not match rois {tuple(rois.shape)}")
    k = deltas.shape[-1] // 5
    d = deltas.reshape(*deltas.shape[:-1], k, 5)
    d = d * d.new_tensor(stds) + d.new_tensor(means)
    dx, dy, dw, dh, da = d.unbind(dim=-1)  # each [..., k]
    if norm_factor:
        da = da * (norm_factor * math.pi)
    px, py, pw, ph, pa = (t.unsqueeze(-1).expand_as(dx) for t in rois.unbind(dim=-1))

    dx_width = pw * dx
    dy_height = ph * dy
    max_ratio = abs(math.log(wh_ratio_clip))
    if add_ctr_clamp:
        # YOLOF-style: clamp the centre shift, and only the upper end of dw/dh
        dx_width = dx_width.clamp(min=-ctr_clamp, max=ctr_clamp)
        dy_height = dy_height.clamp(min=-ctr_clamp, max=ctr_clamp)
        dw = dw.clamp(max=max_ratio)
        dh = dh.clamp(max=max_ratio)
    else:
        dw = dw.clamp(min=-max_ratio, max=max_ratio)
        dh = dh.clamp(min=-max_ratio, max=max_ratio)
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    if proj_xy:
        # quirk: uses the raw dx*pw (not the ctr-clamped shift), exactly as mmrotate
        gx = dx * pw * torch.cos(pa) - dy * ph * torch.sin(pa) + px
        gy = dx * pw * torch.sin(pa) + dy * ph * torch.cos(pa) + py
    else:
        gx = px + dx_width
        gy = py + dy_height
    ga = norm_angle(pa + da, angle_range)  # quirk: identity for 'oc', angles stay unwrapped
    if max_shape is not None:
        gx, gy = _clamp_centres(gx, gy, max_shape, batch)  # quirk: before the edge swap

    if edge_swap:
        longer = gw > gh  # quirk: w == h counts as "swap", adding pi/2
        w_reg = torch.where(longer, gw, gh)
        h_reg = torch.where(longer, gh, gw)
        theta = norm_angle(torch.where(longer, ga, ga + math.pi / 2), angle_range)
        out = torch.stack([gx, gy, w_reg, h_reg, theta], dim=-1)
    else:
        out = torch.stack([gx, gy, gw, gh, ga], dim=-1)
    return out.reshape(deltas.shape)


class DeltaXYWHAOBBoxCoder:
    """mmrotate's ``DeltaXYWHAOBBoxCoder``: (cx, cy, w, h, a) boxes <-> (dx, dy, dw, dh, da) deltas.

    Args:
        target_means, target_stds: delta normalisation (deltas = (raw - mean) / std).
        angle_range: ``oc``, ``le90`` or ``le135`` -- the convention angle differences are wrapped in.
        norm_factor: if truthy, ``da`` is divided by ``norm_factor * pi`` (le135 configs use 1).
        edge_swap: encode the target as whichever of (w, h, a) / (h, w, a + pi/2) rotates less, and
            decode to w >= h (le90 configs).
        proj_xy: express centre offsets in the prior's rotated frame (le90 and le135 configs).
        add_ctr_clamp, ctr_clamp: YOLOF's centre-shift clamp (unused by the seed configs).
    """

    def __init__(
        self,
        target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
        target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0),
        angle_range: str = "oc",
        norm_factor: float | None = None,
        edge_swap: bool = False,
        proj_xy: bool = False,
        add_ctr_clamp: bool = False,
        ctr_clamp: float = 32,
    ) -> None:
        if len(target_means) != 5 or len(target_stds) != 5:
            raise ValueError("target_means and target_stds need 5 values each")
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.angle_range = check_version(angle_range)
        self.norm_factor = norm_factor
        self.edge_swap = edge_swap
        self.proj_xy = proj_xy
        self.add_ctr_clamp = add_ctr_clamp
        self.ctr_clamp = ctr_clamp

    @classmethod
    def from_config(cls, cfg: Mapping) -> DeltaXYWHAOBBoxCoder:
        """From a head's ``bbox_coder``."""
        return cls(**constructor_kwargs(cls, cfg, "bbox_coder", {"DeltaXYWHAOBBoxCoder"}))

    def encode(self, bboxes: torch.Tensor, gt_bboxes: torch.Tensor) -> torch.Tensor:
        """Deltas [N, 5] (float32) taking priors ``bboxes`` [N, 5] to ``gt_bboxes`` [N, 5]."""
        if bboxes.shape[0] != gt_bboxes.shape[0] or bboxes.shape[-1] != 5 or gt_bboxes.shape[-1] != 5:
            raise ValueError(f"cannot encode {tuple(gt_bboxes.shape)} against {tuple(bboxes.shape)}")
        return bbox2delta(
            bboxes,
            gt_bboxes,
            self.means,
            self.stds,
            self.angle_range,
            self.norm_factor,
            self.edge_swap,
            self.proj_xy,
        )

    def decode(
        self,
        bboxes: torch.Tensor,
        pred_bboxes: torch.Tensor,
        max_shape: MaxShape = None,
        wh_ratio_clip: float = 16 / 1000,
    ) -> torch.Tensor:
        """Boxes from priors ``bboxes`` [N, 5] / [B, N, 5] and deltas [N, 5k] / [B, N, 5k].

        ``max_shape`` (H, W) clamps decoded centres to the image (test time); ``|dw|, |dh|`` are
        clamped to ``|log(wh_ratio_clip)|``. Returns the shape of ``pred_bboxes``.
        """
        if pred_bboxes.shape[0] != bboxes.shape[0]:
            raise ValueError(f"cannot decode {tuple(pred_bboxes.shape)} against {tuple(bboxes.shape)}")
        return delta2bbox(
            bboxes,
            pred_bboxes,
            self.means,
            self.stds,
            max_shape,
            wh_ratio_clip,
            self.add_ctr_clamp,
            self.ctr_clamp,
            self.angle_range,
            self.norm_factor,
            self.edge_swap,
            self.proj_xy,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(angle_range={self.angle_range!r}, norm_factor={self.norm_factor}, "
            f"edge_swap={self.edge_swap}, proj_xy={self.proj_xy}, means={self.means}, stds={self.stds})"
        )


# --------------------------------------------------------------------------- midpoint offsets
def _gt_polygons(gt: torch.Tensor, version: str) -> torch.Tensor:
    """Corners ``[N, 8]`` of ``gt`` ``[N, 5]`` with mmrotate's per-version arithmetic.

    ``le90`` / ``le135`` rotate the centred corners with a batched 2 x 2 matrix product, ``oc`` adds
    the rotated half-edges (:func:`obb2poly`); same corners, but float32 rounding differs by ~1e-5 px,
    which moves the midpoint offsets' 0.1 px vertex test and the targets' last bits.
    """
    if version == "oc":
        return obb2poly(gt, version)
    half_w, half_h = gt[:, 2] * 0.5, gt[:, 3] * 0.5
    corners = torch.stack([-half_w, half_w, half_w, -half_w, -half_h, -half_h, half_h, half_h], -1).view(
        -1, 2, 4
    )
    cos, sin = torch.cos(gt[:, 4]), torch.sin(gt[:, 4])
    rot = torch.stack([cos, -sin, sin, cos], -1).view(-1, 2, 2)
    turned = rot.matmul(corners)  # [N, 2 (x, y), 4 corners]
    return (turned + gt[:, :2, None]).transpose(1, 2).reshape(-1, 8)


def midpoint_offset_encode(
    proposals: torch.Tensor,
    gt: torch.Tensor,
    means: Sequence[float] = (0.0,) * 6,
    stds: Sequence[float] = (1.0,) * 6,
    version: str = "oc",
) -> torch.Tensor:
    """Oriented R-CNN's targets ``[N, 6]`` (float32): horizontal ``proposals`` ``[N, 4]`` (x1, y1, x2,
    y2) against rotated ``gt`` ``[N, 5]``.

    ``(dx, dy, dw, dh)`` move the proposal onto the gt's circumscribed box (mmdet's deltas); ``da``
    is where the gt's top vertex sits along that box's top edge, ``db`` where its right vertex sits
    down the right edge, both relative to the centre and in units of the box's width / height.
    As mmrotate: the top (right) vertex is the rightmost (lowest) of the corners within 0.1 px of
    the polygon's smallest y (largest x).
    """
    proposals = proposals.float()
    gt = gt.float()
    px = (proposals[..., 0] + proposals[..., 2]) * 0.5
    py = (proposals[..., 1] + proposals[..., 3]) * 0.5
    pw = proposals[..., 2] - proposals[..., 0]
    ph = proposals[..., 3] - proposals[..., 1]

    poly = _gt_polygons(gt, version)
    if version == "le135":  # mmrotate's obb2xyxy_le135: the extremes of the same polygon
        hbb = torch.cat(
            [
                poly[..., 0::2].amin(-1, keepdim=True),
                poly[..., 1::2].amin(-1, keepdim=True),
                poly[..., 0::2].amax(-1, keepdim=True),
                poly[..., 1::2].amax(-1, keepdim=True),
            ],
            -1,
        )
    else:
        hbb = obb2xyxy(gt, version)
    gx = (hbb[..., 0] + hbb[..., 2]) * 0.5
    gy = (hbb[..., 1] + hbb[..., 3]) * 0.5
    gw = hbb[..., 2] - hbb[..., 0]
    gh = hbb[..., 3] - hbb[..., 1]

    xs, ys = poly[..., 0::2], poly[..., 1::2]
    far = torch.full_like(xs, -1000.0)  # mmrotate's "not a candidate" value
    top = ~(torch.abs(ys - ys.amin(dim=-1, keepdim=True)) > 0.1)  # written so that NaN stays a candidate
    right = ~(torch.abs(xs - xs.amax(dim=-1, keepdim=True)) > 0.1)
    ga = torch.where(top, xs, far).amax(dim=-1)
    gb = torch.where(right, ys, far).amax(dim=-1)

    deltas = torch.stack(
        [
            (gx - px) / pw,
            (gy - py) / ph,
            torch.log(gw / pw),
            torch.log(gh / ph),
            (ga - gx) / gw,
            (gb - gy) / gh,
        ],
        dim=-1,
    )
    return (deltas - deltas.new_tensor(means)) / deltas.new_tensor(stds)


def midpoint_offset_decode(
    rois: torch.Tensor,
    deltas: torch.Tensor,
    means: Sequence[float] = (0.0,) * 6,
    stds: Sequence[float] = (1.0,) * 6,
    wh_ratio_clip: float = 16 / 1000,
    version: str = "oc",
) -> torch.Tensor:
    """Rotated boxes ``[N, 5]`` in ``version`` from horizontal ``rois`` ``[N, 4]`` and ``deltas`` ``[N, 6]``.

    The circumscribed box comes from ``(dx, dy, dw, dh)`` (``|dw|, |dh|`` clamped to
    ``|log(wh_ratio_clip)|``); ``da, db`` (clamped to [-0.5, 0.5]) place the four edge midpoints'
    vertices, symmetric about the centre: a parallelogram. As mmrotate, each vertex is then pushed out
    along its diagonal to the longest diagonal's length (a rectangle) and read by ``poly2obb``.
    Keeps the input dtype; no clamp to the image (mmrotate ignores ``max_shape`` here).
    """
    d = deltas * deltas.new_tensor(stds) + deltas.new_tensor(means)
    dx, dy, dw, dh, da, db = d.unbind(dim=-1)
    max_ratio = abs(math.log(wh_ratio_clip))
    dw = dw.clamp(min=-max_ratio, max=max_ratio)
    dh = dh.clamp(min=-max_ratio, max=max_ratio)
    px = (rois[:, 0] + rois[:, 2]) * 0.5
    py = (rois[:, 1] + rois[:, 3]) * 0.5
    pw = rois[:, 2] - rois[:, 0]
    ph = rois[:, 3] - rois[:, 1]
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    gx = px + pw * dx
    gy = py + ph * dy
    x1, y1 = gx - gw * 0.5, gy - gh * 0.5
    x2, y2 = gx + gw * 0.5, gy + gh * 0.5
    da = da.clamp(min=-0.5, max=0.5)
    db = db.clamp(min=-0.5, max=0.5)
    ga, gb = gx + da * gw, gy + db * gh
    # corners: top (ga, y1), right (x2, gb), bottom (2gx - ga, y2), left (x1, 2gy - gb)
    xs = torch.stack([ga, x2, gx - da * gw, x1], dim=-1) - gx[:, None]
    ys = torch.stack([y1, gb, y2, gy - db * gh], dim=-1) - gy[:, None]
    diag = torch.sqrt(xs * xs + ys * ys)
    scale = diag.amax(dim=-1, keepdim=True) / diag
    polys = torch.stack([xs * scale + gx[:, None], ys * scale + gy[:, None]], dim=-1).flatten(-2)
    return poly2obb(polys, version)


class MidpointOffsetCoder:
    """mmrotate's ``MidpointOffsetCoder`` (Oriented R-CNN's RPN): horizontal anchors ``[N, 4]`` <->
    rotated boxes ``[N, 5]`` through ``(dx, dy, dw, dh, da, db)`` deltas.

    Args:
        target_means, target_stds: delta normalisation, 6 values each (deltas = (raw - mean) / std).
        angle_range: ``oc``, ``le90`` or ``le135``: the gt's convention (encode) and the decoded boxes'.
    """

    def __init__(
        self,
        target_means: Sequence[float] = (0.0,) * 6,
        target_stds: Sequence[float] = (1.0,) * 6,
        angle_range: str = "oc",
    ) -> None:
        if len(target_means) != 6 or len(target_stds) != 6:
            raise ValueError("target_means and target_stds need 6 values each")
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.angle_range = check_version(angle_range)

    @classmethod
    def from_config(cls, cfg: Mapping) -> MidpointOffsetCoder:
        """From a head's ``bbox_coder``."""
        return cls(**constructor_kwargs(cls, cfg, "bbox_coder", {"MidpointOffsetCoder"}))

    def encode(self, bboxes: torch.Tensor, gt_bboxes: torch.Tensor) -> torch.Tensor:
        """Deltas ``[N, 6]`` (float32) taking anchors ``bboxes`` ``[N, 4]`` to ``gt_bboxes`` ``[N, 5]``."""
        if bboxes.shape[0] != gt_bboxes.shape[0] or bboxes.shape[-1] != 4 or gt_bboxes.shape[-1] != 5:
            raise ValueError(f"cannot encode {tuple(gt_bboxes.shape)} against {tuple(bboxes.shape)}")
        return midpoint_offset_encode(bboxes, gt_bboxes, self.means, self.stds, self.angle_range)

    def decode(
        self,
        bboxes: torch.Tensor,
        pred_bboxes: torch.Tensor,
        max_shape: MaxShape = None,
        wh_ratio_clip: float = 16 / 1000,
    ) -> torch.Tensor:
        """Rotated boxes ``[N, 5]`` from anchors ``bboxes`` ``[N, 4]`` and deltas ``[N, 6]``.

        ``max_shape`` is accepted and, as in mmrotate, not used: decoded boxes are not clipped.
        """
        if bboxes.dim() != 2 or pred_bboxes.dim() != 2:
            raise ValueError(
                f"decode takes [N, 4] and [N, 6], got {tuple(bboxes.shape)}, {tuple(pred_bboxes.shape)}"
            )
        if pred_bboxes.shape[0] != bboxes.shape[0] or bboxes.shape[-1] != 4 or pred_bboxes.shape[-1] != 6:
            raise ValueError(f"cannot decode {tuple(pred_bboxes.shape)} against {tuple(bboxes.shape)}")
        return midpoint_offset_decode(
            bboxes, pred_bboxes, self.means, self.stds, wh_ratio_clip, self.angle_range
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(angle_range={self.angle_range!r}, means={self.means}, stds={self.stds})"
        )
