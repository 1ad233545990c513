"""Oriented R-CNN's region proposal network: mmrotate 0.3.4's ``OrientedRPNHead``.

Layers (mmrotate's names): ``rpn_conv`` (3x3, ReLU), then 1x1 ``rpn_cls`` (``A`` sigmoid logits per
location) and ``rpn_reg`` (``A * 6`` midpoint-offset deltas, channel ``a * 6 + k``), every conv
initialised Normal(0, 0.01) with zero bias. Its anchors are horizontal (mmdet's ``AnchorGenerator``,
``[x1, y1, x2, y2]``, row-major ``(y, x, a)`` order).

Training (:meth:`OrientedRPNHead.loss`), image by image as mmdet does:

1. the anchors inside the image (mmdet's ``anchor_inside_flags``: valid for the padded shape and,
   with ``allowed_border >= 0``, the whole box within ``img_shape`` grown by that border);
2. :class:`~rotdet.models.assigners.MaxIoUAssigner` of those anchors to the ground truths'
   circumscribed horizontal boxes (``obb2xyxy`` in the head's angle version) with mmdet's
   horizontal IoU (``iou_calculator="BboxOverlaps2D"``: the rules of every MaxIoU caller, on
   horizontal boxes);
3. a random subset of positives and negatives (:class:`~rotdet.models.samplers.RandomSampler`);
4. targets: label 0 (foreground) for sampled positives, 1 (background) elsewhere; the rotated ground
   truth encoded against its anchor by the midpoint-offset coder;
5. per level binary cross-entropy on the logits and smooth L1 on the deltas, each level's sum over
   the number of sampled anchors of the batch (``loss_rpn_cls``, ``loss_rpn_bbox``: ``[L]``).

Proposals (:meth:`OrientedRPNHead.proposals`, mmrotate's ``_get_bboxes_single``): per level the
``nms_pre`` best anchors by score (a full descending sort, as mmrotate; stable, so that equal scores
come by anchor index on every device and in the exported graph), decoded (``max_shape`` the
image's), boxes narrower or lower than ``min_bbox_size`` dropped, NMS at ``nms.iou_threshold`` on the
proposals' circumscribed horizontal boxes with the levels kept apart (mmcv's ``batched_nms``: its
coordinate-offset trick below 10000 boxes, one NMS per level above), the ``max_per_img`` best kept:
``[K, 6]`` rotated boxes with their scores, by descending score.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rotdet.models.anchors import AnchorGenerator
from rotdet.models.assigners import MaxIoUAssigner, assigner_from_config
from rotdet.models.config_keys import constructor_kwargs
from rotdet.models.loss_reduction import EPS  # mmdet's weight_reduce_loss: sum / (avg_factor + eps)
from rotdet.models.losses import smooth_l1_loss
from rotdet.models.samplers import Permutation, RandomSampler
from rotdet.ops.hbb_nms import batched_nms_hbb
from rotdet.structures import check_version
from rotdet.structures.conversions import obb2xyxy

__all__ = [
    "OrientedRPNHead",
    "ProposalConfig",
    "RPNTrainConfig",
    "with_permutation",
]


def with_permutation(sampler: RandomSampler, permutation: Permutation | None) -> RandomSampler:
    """``sampler`` itself, or a copy drawing with ``permutation`` (a replayed draw)."""
    if permutation is None:
        return sampler
    sampler = copy.copy(sampler)
    sampler.permutation = permutation
    return sampler


@dataclass(frozen=True)
class RPNTrainConfig:
    """``train_cfg.rpn``: the assigner (horizontal IoU), the sampler, ``allowed_border``, ``pos_weight``."""

    assigner: MaxIoUAssigner
    sampler: RandomSampler
    allowed_border: float = 0
    pos_weight: float = -1

    @classmethod
    def from_cfg(cls, cfg: Mapping) -> RPNTrainConfig:
        c = dict(cfg)
        c.pop("debug", None)
        assigner = dict(c.pop("assigner"))
        if assigner.get("type") != "MaxIoUAssigner":
            raise ValueError("train_cfg.rpn.assigner: only MaxIoUAssigner is supported")
        if assigner.get("ignore_iof_thr", -1) > 0:  # the RPN is given no ignore regions
            raise ValueError("train_cfg.rpn.assigner: ignore_iof_thr > 0 is not supported")
        # mmdet's default calculator, and the only one the RPN's horizontal anchors take
        calculator = assigner.setdefault("iou_calculator", {"type": "BboxOverlaps2D"})
        if calculator.get("type") != "BboxOverlaps2D":
            raise ValueError("train_cfg.rpn.assigner: the RPN assigns on horizontal boxes (BboxOverlaps2D)")
        sampler = RandomSampler.from_config(c.pop("sampler"))
        if sampler.add_gt_as_proposals:  # the targets are per anchor: no gt can join them
            raise ValueError("train_cfg.rpn.sampler: add_gt_as_proposals must be false")
        extra = set(c) - set(cls.__dataclass_fields__)
        if extra:
            raise ValueError(f"train_cfg.rpn: unknown keys {sorted(extra)}")
        return cls(assigner=assigner_from_config(assigner), sampler=sampler, **c)


@dataclass(frozen=True)
class ProposalConfig:
    """``train_cfg.rpn_proposal`` / ``test_cfg.rpn``."""

    nms_pre: int = 2000
    max_per_img: int = 2000
    iou_thr: float = 0.8
    min_bbox_size: float = 0

    @classmethod
    def from_cfg(cls, cfg: Mapping) -> ProposalConfig:
        c = dict(cfg)
        nms = dict(c.pop("nms"))
        if nms.pop("type", "nms") != "nms" or set(nms) - {"iou_threshold"}:
            raise ValueError(f"rpn proposals: nms must be {{type: nms, iou_threshold}}, got {cfg['nms']}")
        return cls(iou_thr=float(nms["iou_threshold"]), **c)


class OrientedRPNHead(nn.Module):
    """mmrotate's ``OrientedRPNHead`` (see the module docstring).

    Args:
        in_channels, feat_channels: the FPN's channels and ``rpn_conv``'s.
        anchor_generator: horizontal anchors (mmdet's ``AnchorGenerator``).
        bbox_coder: the midpoint-offset coder (``encode(xyxy [N, 4], rbox [N, 5]) -> [N, 6]``,
            ``decode(xyxy [N, 4], deltas [N, 6], max_shape) -> [N, 5]``).
        version: angle version of the circumscribed boxes (``obb2xyxy``).
        loss_cls_weight, loss_bbox_beta, loss_bbox_weight: the two losses' parameters.
        train_cfg, proposal_cfg, test_cfg: ``train_cfg.rpn``, ``train_cfg.rpn_proposal``, ``test_cfg.rpn``.
    """

    def __init__(
        self,
        in_channels: int,
        feat_channels: int,
        anchor_generator: AnchorGenerator,
        bbox_coder,
        version: str = "le90",
        loss_cls_weight: float = 1.0,
        loss_bbox_beta: float = 1.0 / 9.0,
        loss_bbox_weight: float = 1.0,
        train_cfg: RPNTrainConfig | None = None,
        proposal_cfg: ProposalConfig | None = None,
        test_cfg: ProposalConfig | None = None,
    ) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        self.num_anchors = anchor_generator.num_base_anchors
        self.bbox_coder = bbox_coder
        self.version = check_version(version)
        self.loss_cls_weight = float(loss_cls_weight)
        self.loss_bbox_beta = float(loss_bbox_beta)
        self.loss_bbox_weight = float(loss_bbox_weight)
        self.train_cfg = train_cfg
        self.proposal_cfg = proposal_cfg or ProposalConfig()
        self.test_cfg = test_cfg or ProposalConfig()
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, self.num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, self.num_anchors * 6, 1)
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    @classmethod
    def from_config(
        cls,
        cfg: Mapping,
        train_cfg: Mapping | None = None,
        proposal_cfg: Mapping | None = None,
        test_cfg: Mapping | None = None,
    ) -> OrientedRPNHead:
        """From mmrotate's ``rpn_head`` section and the RPN parts of ``train_cfg`` / ``test_cfg``."""
        from rotdet.models.coders import MidpointOffsetCoder  # rotdet's midpoint-offset coder

        c = dict(cfg)
        if c.pop("type", None) != "OrientedRPNHead":
            raise ValueError(
                f"rpn_head: type {cfg.get('type')!r} is not supported; expected 'OrientedRPNHead'"
            )
        gen = AnchorGenerator(
            **constructor_kwargs(
                AnchorGenerator, c.pop("anchor_generator"), "rpn_head.anchor_generator", {"AnchorGenerator"}
            )
        )
        coder = MidpointOffsetCoder.from_config(c.pop("bbox_coder"))
        loss_cls = dict(c.pop("loss_cls"))
        if (
            loss_cls.pop("type", None) != "CrossEntropyLoss"
            or not loss_cls.pop("use_sigmoid", False)
            or set(loss_cls) - {"loss_weight"}
        ):
            raise ValueError("rpn_head.loss_cls: a sigmoid CrossEntropyLoss is supported")
        loss_bbox = dict(c.pop("loss_bbox"))
        if loss_bbox.pop("type", None) != "SmoothL1Loss" or set(loss_bbox) - {"beta", "loss_weight"}:
            raise ValueError("rpn_head.loss_bbox: a SmoothL1Loss is supported")
        unknown = set(c) - {"in_channels", "feat_channels", "version"}
        if unknown:
            raise ValueError(f"rpn_head: unknown keys {sorted(unknown)}")
        return cls(
            int(c["in_channels"]),
            int(c.get("feat_channels", c["in_channels"])),
            gen,
            coder,
            version=c.get("version", "oc"),
            loss_cls_weight=float(loss_cls.get("loss_weight", 1.0)),
            loss_bbox_beta=float(loss_bbox.get("beta", 1.0)),
            loss_bbox_weight=float(loss_bbox.get("loss_weight", 1.0)),
            train_cfg=RPNTrainConfig.from_cfg(train_cfg) if train_cfg else None,
            proposal_cfg=ProposalConfig.from_cfg(proposal_cfg) if proposal_cfg else None,
            test_cfg=ProposalConfig.from_cfg(test_cfg) if test_cfg else None,
        )

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level ``cls_scores [B, A, H, W]`` (logits) and ``bbox_preds [B, A*6, H, W]``."""
        cls_scores, bbox_preds = [], []
        for x in feats:
            x = F.relu(self.rpn_conv(x))
            cls_scores.append(self.rpn_cls(x))
            bbox_preds.append(self.rpn_reg(x))
        return cls_scores, bbox_preds

    def level_anchors(self, featmap_sizes: Sequence[tuple[int, int]], device) -> list[Tensor]:
        """Per level the horizontal anchors ``[H*W*A, 4]`` (x1, y1, x2, y2), float32."""
        if len(featmap_sizes) != self.anchor_generator.num_levels:
            raise ValueError(
                f"{len(featmap_sizes)} feature maps for {self.anchor_generator.num_levels} levels"
            )
        return [
            self.anchor_generator.single_level_grid_anchors_hbb(s, i, device)
            for i, s in enumerate(featmap_sizes)
        ]

    # ------------------------------------------------------------------ training
    def _image_targets(
        self, anchors: Tensor, valid: Tensor, gt_boxes: Tensor, meta: Mapping, sampler: RandomSampler
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, int, int]:
        """One image's ``labels [N]``, ``label_weights [N]``, ``bbox_targets [N, 6]``,
        ``bbox_weights [N, 6]`` and its sampled positive and negative counts."""
        cfg = self.train_cfg
        n = anchors.shape[0]
        labels = torch.ones(n, dtype=torch.long, device=anchors.device)  # 1: background
        label_weights = anchors.new_zeros(n)
        bbox_targets = anchors.new_zeros(n, 6)
        bbox_weights = anchors.new_zeros(n, 6)
        inside = valid
        if cfg.allowed_border >= 0:
            h, w = int(meta["img_shape"][0]), int(meta["img_shape"][1])
            b = cfg.allowed_border
            inside = (
                valid
                & (anchors[:, 0] >= -b)
                & (anchors[:, 1] >= -b)
                & (anchors[:, 2] < w + b)
                & (anchors[:, 3] < h + b)
            )
        inside_idx = inside.nonzero().flatten()
        if inside_idx.numel() == 0:
            raise ValueError("no anchor lies inside the image (allowed_border)")
        sub = anchors[inside_idx]
        gt_xyxy = obb2xyxy(gt_boxes, self.version)
        assigned = cfg.assigner.assign(sub, gt_xyxy)
        result = sampler.sample(assigned, sub, gt_xyxy)
        pos, neg = result.pos_inds, result.neg_inds
        pos_all, neg_all = inside_idx[pos], inside_idx[neg]
        if pos.numel():
            targets = self.bbox_coder.encode(sub[pos], gt_boxes[result.pos_assigned_gt_inds])
            bbox_targets[pos_all] = targets.to(bbox_targets.dtype)
            bbox_weights[pos_all] = 1.0
            labels[pos_all] = 0
            label_weights[pos_all] = 1.0 if cfg.pos_weight <= 0 else cfg.pos_weight
        label_weights[neg_all] = 1.0
        return labels, label_weights, bbox_targets, bbox_weights, pos.numel(), neg.numel()

    def loss(
        self,
        cls_scores: Sequence[Tensor],
        bbox_preds: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        metas: Sequence[Mapping],
        permutation: Permutation | None = None,
    ) -> dict[str, Tensor]:
        """``{"loss_rpn_cls": [L], "loss_rpn_bbox": [L]}`` (float32) of the head's outputs for the
        ground truths ``gt_boxes`` (per image ``[K, 5]`` rotated boxes); ``permutation`` replaces
        the sampler's random draws (see :mod:`rotdet.models.samplers`)."""
        if self.train_cfg is None:
            raise ValueError("OrientedRPNHead.loss needs train_cfg.rpn")
        sampler = with_permutation(self.train_cfg.sampler, permutation)
        sizes = [(int(c.shape[-2]), int(c.shape[-1])) for c in cls_scores]
        device = cls_scores[0].device
        level_anchors = self.level_anchors(sizes, device)
        anchors = torch.cat(level_anchors)
        level_sizes = [a.shape[0] for a in level_anchors]
        per_image, num_samples = [], 0
        for i, meta in enumerate(metas):
            pad = meta.get("pad_shape", meta["img_shape"])
            valid = torch.cat(self.anchor_generator.valid_flags(sizes, pad, device))
            out = self._image_targets(anchors, valid, gt_boxes[i].to(device).float(), meta, sampler)
            per_image.append(out[:4])
            # mmdet counts an image's positives and negatives as at least one each
            num_samples += max(out[4], 1) + max(out[5], 1)
        labels, label_weights, bbox_targets, bbox_weights = (
            torch.stack(t) for t in zip(*per_image, strict=True)
        )
        batch = len(metas)
        with torch.autocast(device_type=device.type, enabled=False):
            logits = torch.cat([c.float().permute(0, 2, 3, 1).reshape(batch, -1) for c in cls_scores], 1)
            deltas = torch.cat([b.float().permute(0, 2, 3, 1).reshape(batch, -1, 6) for b in bbox_preds], 1)
            cls_el = F.binary_cross_entropy_with_logits(logits, (labels == 0).float(), reduction="none")
            cls_el = cls_el * label_weights
            box_el = smooth_l1_loss(deltas, bbox_targets, self.loss_bbox_beta) * bbox_weights
            denom = num_samples + EPS
            loss_cls = torch.stack([x.sum() for x in cls_el.split(level_sizes, 1)]) / denom
            loss_bbox = torch.stack([x.sum() for x in box_el.split(level_sizes, 1)]) / denom
        return {
            "loss_rpn_cls": self.loss_cls_weight * loss_cls,
            "loss_rpn_bbox": self.loss_bbox_weight * loss_bbox,
        }

    # ------------------------------------------------------------------ proposals
    @torch.no_grad()
    def proposals(
        self,
        cls_scores: Sequence[Tensor],
        bbox_preds: Sequence[Tensor],
        metas: Sequence[Mapping],
        cfg: ProposalConfig | None = None,
    ) -> list[Tensor]:
        """Per image ``[K, 6]`` proposals ``(cx, cy, w, h, a, score)`` by descending score (see the
        module docstring); ``cfg`` defaults to ``test_cfg``."""
        cfg = cfg or self.test_cfg
        sizes = [(int(c.shape[-2]), int(c.shape[-1])) for c in cls_scores]
        level_anchors = self.level_anchors(sizes, cls_scores[0].device)
        out = []
        for i, meta in enumerate(metas):
            scores_l, deltas_l, anchors_l, ids_l = [], [], [], []
            for lvl, (cls, reg, anchors) in enumerate(
                zip(cls_scores, bbox_preds, level_anchors, strict=True)
            ):
                scores = cls[i].float().permute(1, 2, 0).reshape(-1).sigmoid()
                deltas = reg[i].float().permute(1, 2, 0).reshape(-1, 6)
                if 0 < cfg.nms_pre < scores.shape[0]:
                    # stable: equal scores by anchor index, as the exported graph (ONNX's TopK) ranks
                    ranked, order = scores.sort(descending=True, stable=True)
                    top = order[: cfg.nms_pre]
                    scores, deltas, anchors = ranked[: cfg.nms_pre], deltas[top], anchors[top]
                scores_l.append(scores)
                deltas_l.append(deltas)
                anchors_l.append(anchors)
                ids_l.append(torch.full_like(scores, lvl, dtype=torch.long))
            scores, ids = torch.cat(scores_l), torch.cat(ids_l)
            boxes = self.bbox_coder.decode(
                torch.cat(anchors_l), torch.cat(deltas_l), max_shape=tuple(meta["img_shape"][:2])
            )
            if cfg.min_bbox_size > 0:
                keep = (boxes[:, 2] >= cfg.min_bbox_size) & (boxes[:, 3] >= cfg.min_bbox_size)
                boxes, scores, ids = boxes[keep], scores[keep], ids[keep]
            keep = batched_nms_hbb(obb2xyxy(boxes, self.version), scores, ids, cfg.iou_thr)
            keep = keep[: cfg.max_per_img] if cfg.max_per_img > 0 else keep
            out.append(torch.cat([boxes[keep], scores[keep, None]], dim=1))
        return out
