"""Rotated FCOS (mmrotate 0.3.4 ``RotatedFCOS`` with its ``RotatedFCOSHead``): anchor-free, one point
per feature-map location, centre-ness.

* Points: mmdet's ``MlvlPointGenerator`` (offset 0.5): level ``l`` of stride ``s`` has the points
  ``((x + 0.5) s, (y + 0.5) s)``, row-major (:func:`level_points`).
* Head (:class:`RotatedFCOSHead`, mmrotate's state-dict names): two towers of ``stacked_convs`` x
  (3x3 conv + GroupNorm + ReLU), then ``conv_cls`` (sigmoid logits), ``conv_reg`` (distances to the
  four sides ``l, t, r, b``, times a learnt ``scales.i`` per level), ``conv_angle`` (times the learnt
  ``scale_angle``) and ``conv_centerness`` (on the box tower with ``centerness_on_reg``). With
  ``norm_on_bbox`` the distances are ``clamp(min=0)`` in stride units (multiplied by the stride at
  inference), else ``exp``.
* Targets (:meth:`RotatedFCOSHead.targets`): a point is a positive of a ground truth when it lies
  strictly inside the rotated box, with ``center_sampling`` also within ``stride x radius`` of the
  centre along both box axes, and its largest side distance is in the level's ``regress_ranges``;
  among several, the smallest box (area ``w h``, first one on ties) wins.
* Losses: focal loss over all points / ``num_pos``; the box loss on the positives' decoded boxes
  (``RotatedIoULoss``, or with ``separate_angle`` a GIoU loss on the axis-aligned boxes plus an L1
  angle loss / ``num_pos``) weighted by the centre-ness targets / their sum; BCE centre-ness /
  ``num_pos``. ``num_pos`` and the centre-ness sum are averaged over DDP processes, as mmdet's
  ``reduce_mean``.
* Inference: per level the ``nms_pre`` points of best ``score x centre-ness``, decoded; class-wise
  rotated NMS on the sigmoid scores ``> score_thr``, ranked by ``score x centre-ness``.

The losses are returned per FPN level (``[L]``, the positives' and points' share of each level):
their sum is mmrotate's (scalar) loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from rotdet.models.config_keys import constructor_keys, constructor_kwargs
from rotdet.models.detectors import _Detector, pad_to_multiple
from rotdet.models.gaussian_losses import GDLossV1
from rotdet.models.heads import ConvReLU
from rotdet.models.iou_losses import GIoULoss, RotatedIoULoss
from rotdet.models.loss_reduction import EPS, empty_weight_loss
from rotdet.models.losses import LossSpec, build_loss, sigmoid_focal_loss
from rotdet.models.postprocess import TestConfig, unscale_boxes
from rotdet.models.targets import GroundTruths, featmap_sizes
from rotdet.ops.nms import multiclass_nms_rotated
from rotdet.structures.angles import norm_angle
from rotdet.structures.detections import RotatedDetections

__all__ = [
    "DistanceAnglePointCoder",
    "FCOSTargets",
    "RotatedFCOS",
    "RotatedFCOSHead",
    "Scale",
    "distance2bbox",
    "level_points",
]

INF = 1e8  # mmrotate's "no upper bound" regress range and background area


def level_points(featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int], device) -> list[Tensor]:
    """mmdet's ``MlvlPointGenerator(strides, offset=0.5).grid_priors``: per level ``[H * W, 2]``
    float32 points ``(x, y)``, x fastest."""
    out = []
    for (h, w), s in zip(featmap_sizes, strides, strict=True):
        xs = ((torch.arange(w, device=device) + 0.5) * s).float()
        ys = ((torch.arange(h, device=device) + 0.5) * s).float()
        out.append(torch.stack([xs.repeat(h), ys[:, None].repeat(1, w).reshape(-1)], dim=-1))
    return out


def distance2bbox(points: Tensor, distances: Tensor) -> Tensor:
    """mmdet's ``DistancePointBBoxCoder.decode`` (no clipping): ``[N, 2]`` points and ``[N, 4]``
    distances ``l, t, r, b`` -> ``[N, 4]`` ``(x1, y1, x2, y2)``."""
    return torch.cat([points - distances[:, :2], points + distances[:, 2:]], dim=-1)


class DistanceAnglePointCoder:
    """mmrotate's ``DistanceAnglePointCoder``: a rotated box as a point's distances to its four sides
    (``l, t, r, b`` along the box's own axes) and its angle.

    ``decode`` wraps the angle into ``angle_version`` (mmrotate's ``norm_angle``: identity for
    ``oc``) and does not clip (mmrotate's ``max_shape`` is accepted and unused)."""

    def __init__(self, angle_version: str = "oc", clip_border: bool = True) -> None:
        self.angle_version = angle_version
        self.clip_border = bool(clip_border)

    @classmethod
    def from_config(cls, cfg: Mapping) -> DistanceAnglePointCoder:
        return cls(**constructor_kwargs(cls, cfg, "bbox_head.bbox_coder", {"DistanceAnglePointCoder"}))

    @property
    def angle_range(self) -> str:
        """The convention of the decoded boxes (the name the other coders use)."""
        return self.angle_version

    @staticmethod
    def encode(points: Tensor, boxes: Tensor, max_dis: float | None = None, eps: float = 0.1) -> Tensor:
        """``[N, 2]`` points, ``[N, 5]`` boxes -> ``[N, 5]`` ``(l, t, r, b, angle)``; distances
        clamped to ``[0, max_dis - eps]`` when ``max_dis`` is given."""
        ctr, wh, angle = boxes.split([2, 2, 1], dim=1)
        cos, sin = torch.cos(angle[:, 0]), torch.sin(angle[:, 0])
        d = points - ctr
        # the offset in the box's frame (mmrotate's rotation matrix [[c, s], [-s, c]])
        ox, oy = cos * d[:, 0] + sin * d[:, 1], -sin * d[:, 0] + cos * d[:, 1]
        w, h = wh[:, 0], wh[:, 1]
        sides = [w / 2 + ox, h / 2 + oy, w / 2 - ox, h / 2 - oy]
        if max_dis is not None:
            sides = [s.clamp(min=0, max=max_dis - eps) for s in sides]
        return torch.stack([*sides, angle[:, 0]], dim=-1)

    def decode(self, points: Tensor, distances: Tensor, max_shape=None) -> Tensor:
        """``[N, 2]`` points, ``[N, 5]`` ``(l, t, r, b, angle)`` -> ``[N, 5]`` boxes (the angle
        wrapped into ``angle_version``)."""
        sides, angle = distances[:, :4], distances[:, 4:]
        cos, sin = torch.cos(angle[:, 0]), torch.sin(angle[:, 0])
        wh = sides[:, :2] + sides[:, 2:]
        off = (sides[:, 2:] - sides[:, :2]) / 2
        ctr = points + torch.stack([cos * off[:, 0] - sin * off[:, 1], sin * off[:, 0] + cos * off[:, 1]], -1)
        return torch.cat([ctr, wh, norm_angle(angle, self.angle_version)], dim=-1)

    def __repr__(self) -> str:
        return f"DistanceAnglePointCoder(angle_version={self.angle_version!r})"


class Scale(nn.Module):
    """mmcv's ``Scale``: a learnt scalar ``scale`` (shape ``()``) multiplying its input."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


@dataclass(frozen=True)
class FCOSTargets:
    """Per-point training targets of a batch (points of all levels, level by level).

    Attributes:
        labels: ``[B, P]`` int64, ``num_classes`` for background.
        boxes: ``[B, P, 4]`` side distances ``l, t, r, b`` (in stride units with ``norm_on_bbox``).
        angles: ``[B, P, 1]`` the ground truth's angle.
        level_sizes: points per level.
    """

    labels: Tensor
    boxes: Tensor
    angles: Tensor
    level_sizes: list[int]


def _reduce_mean(value: Tensor) -> Tensor:
    """mmdet's ``reduce_mean``: the mean over DDP processes (the value itself without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone()
    dist.all_reduce(value.div_(dist.get_world_size()))
    return value


def _loss_from_config(cfg: Mapping, what: str, allowed: dict[str, type]):
    kind = cfg.get("type")
    if kind not in allowed:
        raise ValueError(f"{what}: type {kind!r} is not supported; expected one of {sorted(allowed)}")
    return allowed[kind](**constructor_kwargs(allowed[kind], cfg, what, {kind}))


@dataclass(frozen=True)
class BCEWithLogitsLoss:
    """mmdet's ``CrossEntropyLoss(use_sigmoid=True)`` on soft targets (Rotated FCOS's centre-ness):
    element-wise binary cross-entropy of logits, summed over ``avg_factor + eps``."""

    loss_weight: float = 1.0
    use_sigmoid: bool = True

    def __post_init__(self) -> None:
        if not self.use_sigmoid:
            raise ValueError("loss_centerness: only CrossEntropyLoss with use_sigmoid=true is supported")

    def elementwise(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


_BOX_LOSSES = {"RotatedIoULoss": RotatedIoULoss, "GIoULoss": GIoULoss, "GDLoss_v1": GDLossV1}


class RotatedFCOSHead(nn.Module):
    """mmrotate's ``RotatedFCOSHead`` (see the module docstring); the constructor's keys are the
    config section's (``bbox_coder``, the losses and ``norm_cfg`` as built objects / a dict)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        regress_ranges: Sequence[Sequence[float]] = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF)),
        center_sampling: bool = False,
        center_sample_radius: float = 1.5,
        norm_on_bbox: bool = False,
        centerness_on_reg: bool = False,
        separate_angle: bool = False,
        scale_angle: bool = True,
        bbox_coder: DistanceAnglePointCoder | None = None,
        loss_cls: LossSpec | None = None,
        loss_bbox: RotatedIoULoss | GIoULoss | GDLossV1 | None = None,
        loss_angle: LossSpec | None = None,
        loss_centerness: BCEWithLogitsLoss | None = None,
        norm_cfg: dict | None = None,
        test_cfg: TestConfig | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.in_channels, self.feat_channels = int(in_channels), int(feat_channels)
        self.strides = [int(s) for s in strides]
        self.regress_ranges = [(float(lo), float(hi)) for lo, hi in regress_ranges]
        if len(self.regress_ranges) != len(self.strides):
            raise ValueError(f"{len(self.regress_ranges)} regress_ranges for {len(self.strides)} strides")
        self.center_sampling = bool(center_sampling)
        self.center_sample_radius = float(center_sample_radius)
        self.norm_on_bbox = bool(norm_on_bbox)
        self.centerness_on_reg = bool(centerness_on_reg)
        self.separate_angle = bool(separate_angle)
        self.bbox_coder = bbox_coder if bbox_coder is not None else DistanceAnglePointCoder()
        self.loss_cls = loss_cls if loss_cls is not None else LossSpec("FocalLoss")
        default_box = GIoULoss() if self.separate_angle else RotatedIoULoss()
        self.loss_bbox = loss_bbox if loss_bbox is not None else default_box
        if isinstance(self.loss_bbox, GIoULoss) != self.separate_angle:
            raise ValueError(
                "bbox_head.loss_bbox: separate_angle regresses axis-aligned boxes (GIoULoss), "
                "otherwise rotated boxes (RotatedIoULoss)"
            )
        self.loss_angle = loss_angle if loss_angle is not None else LossSpec("L1Loss")
        self.loss_centerness = loss_centerness if loss_centerness is not None else BCEWithLogitsLoss()
        self.test_cfg = test_cfg if test_cfg is not None else TestConfig()
        self.num_anchors = 1  # one point per location (the engine's name for priors per location)
        norm_cfg = {"type": "GN", "num_groups": 32} if norm_cfg is None else norm_cfg
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(int(stacked_convs)):
            chn = self.in_channels if i == 0 else self.feat_channels
            self.cls_convs.append(ConvReLU(chn, self.feat_channels, norm_cfg))
            self.reg_convs.append(ConvReLU(chn, self.feat_channels, norm_cfg))
        self.conv_cls = nn.Conv2d(self.feat_channels, self.num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(self.feat_channels, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(self.feat_channels, 1, 3, padding=1)
        self.conv_angle = nn.Conv2d(self.feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.strides])
        self.scale_angle = Scale(1.0) if scale_angle else None
        self.init_weights()

    @classmethod
    def from_config(
        cls, cfg: Mapping, train_cfg: Mapping | None, test_cfg: Mapping | None
    ) -> RotatedFCOSHead:
        """From mmrotate's ``bbox_head`` section (``h_bbox_coder`` must be mmdet's
        ``DistancePointBBoxCoder``, the only one its head uses) and ``test_cfg``; Rotated FCOS has
        no ``train_cfg`` (null in every config)."""
        if train_cfg:
            raise ValueError("RotatedFCOSHead takes no train_cfg (mmrotate's configs set it to null)")
        extra = {"h_bbox_coder", "conv_bias", "dcn_on_last_conv"} | constructor_keys(RotatedFCOSHead)
        c = constructor_kwargs(
            cls, cfg, "bbox_head", {cls.CONFIG_TYPE}, extra=extra - {"test_cfg"}, exclude={"test_cfg"}
        )
        c = cls._config_sections(c)
        h_coder = c.pop("h_bbox_coder", None)
        if h_coder is not None and dict(h_coder).get("type") != "DistancePointBBoxCoder":
            raise ValueError("bbox_head.h_bbox_coder: only DistancePointBBoxCoder is supported")
        if c.pop("conv_bias", "auto") != "auto" or c.pop("dcn_on_last_conv", False):
            raise ValueError("bbox_head: conv_bias other than 'auto' and dcn_on_last_conv are not supported")
        for key, what in (("loss_cls", "FocalLoss"),):
            if key in c:
                c[key] = build_loss(c[key])
                if c[key].type != what:
                    raise ValueError(
                        f"bbox_head.{key}: type {c[key].type!r} is not supported; expected {what}"
                    )
        if "loss_bbox" in c:
            c["loss_bbox"] = _loss_from_config(c["loss_bbox"], "bbox_head.loss_bbox", _BOX_LOSSES)
        if "loss_centerness" in c:
            ce = dict(c["loss_centerness"])
            c["loss_centerness"] = _loss_from_config(
                ce, "bbox_head.loss_centerness", {"CrossEntropyLoss": BCEWithLogitsLoss}
            )
        if "bbox_coder" in c:
            c["bbox_coder"] = DistanceAnglePointCoder.from_config(c["bbox_coder"])
        return cls(test_cfg=TestConfig.from_cfg(test_cfg) if test_cfg is not None else None, **c)

    CONFIG_TYPE = "RotatedFCOSHead"

    @classmethod
    def _config_sections(cls, c: dict) -> dict:
        """The angle loss of a config's ``bbox_head`` built (a subclass builds its own sections)."""
        if "loss_angle" in c:
            c["loss_angle"] = build_loss(c["loss_angle"])
            if c["loss_angle"].type != "L1Loss":
                raise ValueError(
                    f"bbox_head.loss_angle: type {c['loss_angle'].type!r} is not supported; expected L1Loss"
                )
        return c

    def init_weights(self) -> None:
        """mmrotate's init: every conv Normal(0, 0.01) with zero bias, ``conv_cls`` bias for prior
        0.01; GroupNorm (1, 0), scales 1."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.conv_cls.bias, float(-math.log((1 - 0.01) / 0.01)))

    # ------------------------------------------------------------------ forward
    def forward_single(self, x: Tensor, level: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One level ``[B, C_in, H, W]`` -> ``cls [B, C, H, W]`` logits, ``bbox [B, 4, H, W]``
        (float32; pixels in eval mode), ``angle [B, 1, H, W]``, ``centerness [B, 1, H, W]`` logits."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        cls_score = self.conv_cls(cls_feat)
        centerness = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
        bbox_pred = self.scales[level](self.conv_reg(reg_feat)).float()
        if self.norm_on_bbox:
            bbox_pred = bbox_pred.clamp(min=0)
            if not self.training:
                bbox_pred = bbox_pred * self.strides[level]
        else:
            bbox_pred = bbox_pred.exp()
        angle_pred = self.conv_angle(reg_feat)
        if self.scale_angle is not None:
            angle_pred = self.scale_angle(angle_pred).float()
        return cls_score, bbox_pred, angle_pred, centerness

    def forward(
        self, feats: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Per level ``(cls_scores, bbox_preds, angle_preds, centernesses)``."""
        if len(feats) != len(self.strides):
            raise ValueError(f"{len(feats)} feature levels for {len(self.strides)} strides")
        outs = [self.forward_single(x, i) for i, x in enumerate(feats)]
        return tuple([o[k] for o in outs] for k in range(4))  # type: ignore[return-value]

    def points(self, featmap_sizes: Sequence[tuple[int, int]], device) -> list[Tensor]:
        """Per level ``[H * W, 2]`` points (see :func:`level_points`)."""
        return level_points(featmap_sizes, self.strides, device)

    # ------------------------------------------------------------------ training
    def _image_targets(
        self, points: Tensor, ranges: Tensor, radius: Tensor, boxes: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One image: ``points [P, 2]``, ``ranges [P, 2]``, ``radius [P]`` (stride x radius),
        ground truths ``boxes [G, 5]`` / ``labels [G]`` -> labels ``[P]``, sides ``[P, 4]`` (pixels),
        angles ``[P, 1]``."""
        num = points.shape[0]
        if boxes.shape[0] == 0:
            return (
                labels.new_full((num,), self.num_classes),
                boxes.new_zeros(num, 4),
                boxes.new_zeros(num, 1),
            )
        ctr, wh, angle = boxes[None, :, :2], boxes[None, :, 2:4], boxes[None, :, 4]
        cos, sin = torch.cos(angle), torch.sin(angle)
        d = points[:, None, :] - ctr  # [P, G, 2]
        ox = cos * d[..., 0] + sin * d[..., 1]
        oy = -sin * d[..., 0] + cos * d[..., 1]
        w, h = wh[..., 0], wh[..., 1]
        sides = torch.stack([w / 2 + ox, h / 2 + oy, w / 2 - ox, h / 2 - oy], dim=-1)  # [P, G, 4]
        inside = sides.min(-1).values > 0
        if self.center_sampling:
            r = radius[:, None]
            inside = inside & (ox.abs() < r) & (oy.abs() < r)
        longest = sides.max(-1).values
        in_range = (longest >= ranges[:, None, 0]) & (longest <= ranges[:, None, 1])
        areas = (boxes[:, 2] * boxes[:, 3])[None].repeat(num, 1)
        areas[~(inside & in_range)] = INF
        min_area, gt_index = areas.min(dim=1)
        out_labels = labels[gt_index]
        out_labels[min_area == INF] = self.num_classes
        rows = torch.arange(num, device=points.device)
        return out_labels, sides[rows, gt_index], boxes[gt_index, 4:5]

    def targets(self, level_pts: Sequence[Tensor], gts: GroundTruths) -> FCOSTargets:
        """mmrotate's ``get_targets`` for a batch (points of every level, ``gts`` padded)."""
        sizes = [p.shape[0] for p in level_pts]
        points = torch.cat(list(level_pts))
        ranges = torch.cat(
            [
                p.new_tensor(r).expand(n, 2)
                for p, r, n in zip(level_pts, self.regress_ranges, sizes, strict=True)
            ]
        )
        per_level_stride = torch.cat(
            [p.new_full((n,), float(s)) for p, s, n in zip(level_pts, self.strides, sizes, strict=True)]
        )
        labels, sides, angles = [], [], []
        for b in range(gts.boxes.shape[0]):
            keep = gts.valid[b]
            lab, side, ang = self._image_targets(
                points,
                ranges,
                per_level_stride * self.center_sample_radius,
                gts.boxes[b][keep],
                gts.labels[b][keep],
            )
            labels.append(lab)
            sides.append(side / per_level_stride[:, None] if self.norm_on_bbox else side)
            angles.append(ang)
        return FCOSTargets(torch.stack(labels), torch.stack(sides), torch.stack(angles), sizes)

    def angle_targets(self, angles: Tensor) -> Tensor:
        """The angle loss's targets of the positives' ``[N, 1]`` angles (themselves here; CSL's
        head encodes them)."""
        return angles

    def decode_angle(self, angle_preds: Tensor) -> Tensor:
        """``[N, K]`` angle outputs -> ``[N, 1]`` angles (the output itself here, ``K = 1``)."""
        return angle_preds

    @staticmethod
    def centerness_target(sides: Tensor) -> Tensor:
        """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of ``[N, 4]`` positive sides."""
        lr, tb = sides[:, [0, 2]], sides[:, [1, 3]]
        ratio = (lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values)
        return torch.sqrt(ratio)

    def loss(
        self,
        outputs: tuple[Sequence[Tensor], Sequence[Tensor], Sequence[Tensor], Sequence[Tensor]],
        gts: GroundTruths,
    ) -> dict[str, Tensor]:
        """Training losses ``{"loss_cls", "loss_bbox", ["loss_angle",] "loss_centerness"}``, each
        ``[L]`` per level (float32), from :meth:`forward`'s outputs in training mode."""
        cls_scores, bbox_preds, angle_preds, centernesses = outputs
        sizes = featmap_sizes(cls_scores)
        device = cls_scores[0].device
        level_pts = self.points(sizes, device)
        t = self.targets(level_pts, gts)

        def flat(xs: Sequence[Tensor], ch: int) -> Tensor:  # [B, P, ch], levels concatenated
            return torch.cat([x.float().permute(0, 2, 3, 1).reshape(x.shape[0], -1, ch) for x in xs], 1)

        cls, box, ang, ctr = (
            flat(cls_scores, self.num_classes),
            flat(bbox_preds, 4),
            flat(angle_preds, self.conv_angle.out_channels),
            flat(centernesses, 1)[..., 0],
        )
        level_of = torch.cat([torch.full((n,), i, device=device) for i, n in enumerate(t.level_sizes)])
        num_levels = len(t.level_sizes)
        pos = (t.labels >= 0) & (t.labels < self.num_classes)  # [B, P]
        num_pos = torch.clamp(_reduce_mean(pos.sum().float()), min=1.0)

        def per_level(values: Tensor, levels: Tensor) -> Tensor:
            return values.new_zeros(num_levels).index_add_(0, levels, values)

        focal = sigmoid_focal_loss(cls, t.labels, self.loss_cls.gamma, self.loss_cls.alpha).sum(-1)  # [B, P]
        loss_cls = self.loss_cls.loss_weight * per_level(focal.sum(0), level_of) / (num_pos + EPS)
        b_idx, p_idx = pos.nonzero(as_tuple=True)
        pos_levels = level_of[p_idx]
        pos_sides = t.boxes[b_idx, p_idx]
        ctr_targets = self.centerness_target(pos_sides)
        ctr_denorm = torch.clamp(_reduce_mean(ctr_targets.sum().detach()), min=1e-6)
        losses = {"loss_cls": loss_cls}
        pos_box, pos_ang, pos_ctr = box[b_idx, p_idx], ang[b_idx, p_idx], ctr[b_idx, p_idx]
        if p_idx.numel() == 0:
            zero = (pos_box.sum() + pos_ang.sum() + pos_ctr.sum()) * 0 + cls.new_zeros(num_levels)
            losses["loss_bbox"] = zero
            if self.separate_angle:
                losses["loss_angle"] = zero
            losses["loss_centerness"] = zero
            return losses
        pos_points = torch.cat(list(level_pts))[p_idx]
        if self.separate_angle:
            pred_boxes, target_boxes = (
                distance2bbox(pos_points, pos_box),
                distance2bbox(pos_points, pos_sides),
            )
        else:
            pred_boxes = self.bbox_coder.decode(pos_points, torch.cat([pos_box, pos_ang], -1))
            target_boxes = self.bbox_coder.decode(
                pos_points, torch.cat([pos_sides, t.angles[b_idx, p_idx]], -1)
            )
        losses["loss_bbox"] = self._box_loss(
            pred_boxes, target_boxes, ctr_targets, ctr_denorm, pos_levels, num_levels
        )
        if self.separate_angle:
            angle_loss = self.loss_angle.elementwise(pos_ang, self.angle_targets(t.angles[b_idx, p_idx])).sum(
                -1
            )
            losses["loss_angle"] = (
                self.loss_angle.loss_weight * per_level(angle_loss, pos_levels) / (num_pos + EPS)
            )
        bce = self.loss_centerness.elementwise(pos_ctr, ctr_targets)
        losses["loss_centerness"] = (
            self.loss_centerness.loss_weight * per_level(bce, pos_levels) / (num_pos + EPS)
        )
        return losses

    def _box_loss(
        self, pred: Tensor, target: Tensor, weight: Tensor, denorm: Tensor, levels: Tensor, num_levels: int
    ) -> Tensor:
        """The box loss ``[L]`` of the positives' decoded boxes: mmdet's weighted loss
        ``loss(pred, target, weight, avg_factor=denorm)`` split by level; ``GDLoss_v1`` (the KLD
        config) ignores the weights' values and the average factor and is the mean over the
        positives of positive weight, as mmdet's ``_parse_losses`` reduces its unreduced output."""
        loss = self.loss_bbox

        def per_level(values: Tensor, at: Tensor) -> Tensor:
            return values.new_zeros(num_levels).index_add_(0, at, values)

        shortcut = empty_weight_loss(pred, weight, "mean")  # mmdet's: a zero connected to the graph
        if shortcut is not None:
            return shortcut + pred.new_zeros(num_levels)
        if isinstance(loss, GDLossV1):
            keep = weight > 0
            values = loss(pred, target, weight)
            return per_level(values, levels[keep]) / values.shape[0]
        return loss.loss_weight * per_level(loss.elementwise(pred, target) * weight, levels) / (denorm + EPS)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(
        self,
        outputs: tuple[Sequence[Tensor], Sequence[Tensor], Sequence[Tensor], Sequence[Tensor]],
        metas: Sequence[dict],
        rescale: bool = False,
        cfg: TestConfig | None = None,
        with_nms: bool = True,
    ) -> list[RotatedDetections] | list[dict[str, Tensor]]:
        """mmrotate's ``get_bboxes`` of :meth:`forward`'s outputs in eval mode (distances in
        pixels): per image :class:`~rotdet.structures.RotatedDetections` by descending score; with
        ``with_nms=False`` the candidates that go into NMS, ``{"boxes": [M, 5], "scores": [M, C],
        "centerness": [M]}``."""
        cfg = cfg if cfg is not None else self.test_cfg
        cls_scores, bbox_preds, angle_preds, centernesses = outputs
        level_pts = self.points(featmap_sizes(cls_scores), cls_scores[0].device)
        results = []
        for i, meta in enumerate(metas):
            boxes_l, scores_l, ctr_l = [], [], []
            levels = zip(cls_scores, bbox_preds, angle_preds, centernesses, level_pts, strict=True)
            for cls, reg, ang, ctr, pts in levels:
                scores = cls[i].float().permute(1, 2, 0).reshape(-1, self.num_classes).sigmoid()
                ctrness = ctr[i].float().permute(1, 2, 0).reshape(-1).sigmoid()
                dist_ = torch.cat(
                    [
                        reg[i].float().permute(1, 2, 0).reshape(-1, 4),
                        self.decode_angle(ang[i].float().permute(1, 2, 0).reshape(-1, ang.shape[1])),
                    ],
                    1,
                )
                if 0 < cfg.nms_pre < scores.shape[0]:
                    top = (scores * ctrness[:, None]).max(dim=1).values.topk(cfg.nms_pre).indices
                    pts, dist_, scores, ctrness = pts[top], dist_[top], scores[top], ctrness[top]
                boxes_l.append(self.bbox_coder.decode(pts, dist_))
                scores_l.append(scores)
                ctr_l.append(ctrness)
            boxes, scores, ctrness = torch.cat(boxes_l), torch.cat(scores_l), torch.cat(ctr_l)
            if rescale:
                boxes = unscale_boxes(boxes[None], [meta])[0]
            if not with_nms:
                results.append({"boxes": boxes, "scores": scores, "centerness": ctrness})
                continue
            dets, labels, _ = multiclass_nms_rotated(
                boxes, scores, cfg.score_thr, cfg.iou_thr, cfg.max_per_img, score_factors=ctrness
            )
            results.append(
                RotatedDetections(
                    dets[:, :5], dets[:, 5], labels, self.bbox_coder.angle_version, meta.get("id", "image")
                )
            )
        return results


class RotatedFCOS(_Detector):
    """mmrotate's ``RotatedFCOS``: backbone + neck + :class:`RotatedFCOSHead`."""

    def __init__(self, backbone: nn.Module, neck: nn.Module, bbox_head: RotatedFCOSHead) -> None:
        super().__init__(backbone, neck)
        self.bbox_head = bbox_head

    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Raw head outputs per level: ``(cls_scores, bbox_preds, angle_preds, centernesses)``."""
        return self.bbox_head(self.extract_feat(pad_to_multiple(images)))

    def forward_train(
        self,
        images: Tensor,
        targets: Sequence[dict],
        metas: Sequence[dict] | None = None,
        per_level: bool = False,
    ) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_bbox", ["loss_angle",] "loss_centerness"}``: scalars, or ``[L]``."""
        images, metas = self._prepare(images, metas)
        gts = GroundTruths.from_targets(targets, images.device)
        losses = self.bbox_head.loss(self.bbox_head(self.extract_feat(images)), gts)
        return self._reduce(losses, per_level)

    @torch.no_grad()
    def predict(
        self,
        images: Tensor,
        metas: Sequence[dict] | None = None,
        rescale: bool = True,
        cfg: TestConfig | None = None,
        with_nms: bool = True,
    ) -> list[RotatedDetections] | list[dict[str, Tensor]]:
        """Per image detections (:meth:`RotatedFCOSHead.predict`)."""
        images, metas = self._prepare(images, metas)
        outputs = self.bbox_head(self.extract_feat(images))
        return self.bbox_head.predict(outputs, metas, rescale=rescale, cfg=cfg, with_nms=with_nms)


def build_rotated_fcos(model: Mapping) -> RotatedFCOS:
    """A :class:`RotatedFCOS` from mmrotate's ``model`` dict."""
    from rotdet.models import factory  # the factory imports this module lazily
    from rotdet.models.backbone import ResNetBackbone
    from rotdet.models.fpn import FPN

    m = factory._take(model, "model", {"backbone", "neck", "bbox_head", "train_cfg", "test_cfg"})
    backbone = ResNetBackbone.from_config(m["backbone"])
    neck = FPN.from_config(m["neck"], backbone.out_channels)
    from rotdet.models.csl import CSLRFCOSHead

    heads = {"RotatedFCOSHead": RotatedFCOSHead, "CSLRFCOSHead": CSLRFCOSHead}
    kind = m["bbox_head"].get("type")
    if kind not in heads:
        raise ValueError(f"bbox_head: type {kind!r} is not supported; expected one of {sorted(heads)}")
    head = heads[kind].from_config(m["bbox_head"], m.get("train_cfg"), m.get("test_cfg"))
    return RotatedFCOS(backbone, neck, head)
