"""Oriented R-CNN's second stage: mmrotate 0.3.4's ``OrientedStandardRoIHead`` with its
``RotatedShared2FCBBoxHead``.

The head reads ``7 x 7`` rotated RoI Align features of each rotated proposal
(:class:`~rotdet.models.roi_extractor.RotatedSingleRoIExtractor`, no weights), flattens them, runs
two shared fully connected layers with ReLU (``shared_fcs.0`` / ``.1``) and then ``fc_cls``
(``num_classes + 1`` softmax logits, background last) and ``fc_reg`` (5 deltas, class-agnostic when
``reg_class_agnostic``, else ``5 * num_classes``) for the ``DeltaXYWHAOBBoxCoder``.

Training (:meth:`OrientedStandardRoIHead.loss`), image by image as mmrotate does:

1. the proposals ``[N, 6]`` (their scores dropped) assigned to the rotated ground truths by
   :class:`~rotdet.models.assigners.MaxIoUAssigner` (rotated IoU, ``RBboxOverlaps2D``);
2. :class:`~rotdet.models.samplers.RRandomSampler`: the ground truths put in front of the
   proposals as positives of themselves (``add_gt_as_proposals``), then a random subset;
3. targets: the ground-truth class for positives, ``num_classes`` (background) for negatives, the
   positives' ground truths encoded against them;
4. ``loss_cls``: softmax cross-entropy averaged over the sampled RoIs; ``acc``: its top-1 accuracy
   in percent (mmdet logs it; it is no loss); ``loss_bbox``: smooth L1 of the positives' deltas,
   summed and divided by the number of sampled RoIs of the batch.

Inference (:meth:`OrientedStandardRoIHead.predict`): softmax scores, deltas decoded on the proposals
(centres clamped to the image), optionally divided by the scale factor, then
:func:`~rotdet.ops.nms.multiclass_nms_rotated` (``score_thr``, class-wise rotated NMS,
``max_per_img``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rotdet.models.assigners import MaxIoUAssigner, assigner_from_config
from rotdet.models.coders import DeltaXYWHAOBBoxCoder
from rotdet.models.loss_reduction import EPS  # mmdet's weight_reduce_loss: sum / (avg_factor + eps)
from rotdet.models.losses import smooth_l1_loss
from rotdet.models.postprocess import TestConfig
from rotdet.models.rpn import with_permutation
from rotdet.models.samplers import Permutation, RRandomSampler
from rotdet.ops.nms import multiclass_nms_rotated
from rotdet.structures.detections import RotatedDetections

__all__ = ["OrientedStandardRoIHead", "RCNNTrainConfig", "RotatedShared2FCBBoxHead", "rois_of"]


def rois_of(boxes: Sequence[Tensor]) -> Tensor:
    """mmrotate's ``rbbox2roi``: per image ``[K_i, >=5]`` boxes -> ``[sum K_i, 6]``
    ``(image index, cx, cy, w, h, a)``."""
    rois = [torch.cat([b.new_full((b.shape[0], 1), float(i)), b[:, :5]], dim=1) for i, b in enumerate(boxes)]
    return torch.cat(rois) if rois else torch.zeros(0, 6)


@dataclass(frozen=True)
class RCNNTrainConfig:
    """``train_cfg.rcnn``: its assigner and sampler (built) and ``pos_weight``."""

    assigner: MaxIoUAssigner
    sampler: RRandomSampler
    pos_weight: float = -1

    @classmethod
    def from_cfg(cls, cfg: Mapping) -> RCNNTrainConfig:
        c = dict(cfg)
        c.pop("debug", None)
        assigner = dict(c.pop("assigner"))
        calculator = assigner.get("iou_calculator") or {}
        if calculator.get("type") != "RBboxOverlaps2D":
            raise ValueError("train_cfg.rcnn.assigner: the RoI head assigns on rotated IoU (RBboxOverlaps2D)")
        if assigner.get("type") != "MaxIoUAssigner":
            raise ValueError("train_cfg.rcnn.assigner: only MaxIoUAssigner is supported")
        sampler = RRandomSampler.from_config(c.pop("sampler"))
        if set(c) - {"pos_weight"}:
            raise ValueError(f"train_cfg.rcnn: unknown keys {sorted(set(c) - {'pos_weight'})}")
        return cls(assigner=assigner_from_config(assigner), sampler=sampler, **c)


class RotatedShared2FCBBoxHead(nn.Module):
    """mmrotate's ``RotatedShared2FCBBoxHead`` (layers, coder, loss settings and ``test_cfg``).

    Init as mmrotate's: ``shared_fcs`` Xavier (normal), ``fc_cls`` Normal(0, 0.01), ``fc_reg``
    Normal(0, 0.001), zero biases."""

    def __init__(
        self,
        num_classes: int,
        bbox_coder: DeltaXYWHAOBBoxCoder,
        in_channels: int = 256,
        fc_out_channels: int = 1024,
        roi_feat_size: int = 7,
        reg_class_agnostic: bool = True,
        loss_cls_weight: float = 1.0,
        loss_bbox_beta: float = 1.0,
        loss_bbox_weight: float = 1.0,
        test_cfg: TestConfig | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.bbox_coder = bbox_coder
        self.roi_feat_size = int(roi_feat_size)
        self.reg_class_agnostic = bool(reg_class_agnostic)
        self.loss_cls_weight = float(loss_cls_weight)
        self.loss_bbox_beta = float(loss_bbox_beta)
        self.loss_bbox_weight = float(loss_bbox_weight)
        self.test_cfg = test_cfg or TestConfig()
        flat = in_channels * self.roi_feat_size**2
        self.shared_fcs = nn.ModuleList(
            [nn.Linear(flat, fc_out_channels), nn.Linear(fc_out_channels, fc_out_channels)]
        )
        self.fc_cls = nn.Linear(fc_out_channels, self.num_classes + 1)
        self.fc_reg = nn.Linear(fc_out_channels, 5 if self.reg_class_agnostic else 5 * self.num_classes)
        for fc in self.shared_fcs:
            nn.init.xavier_normal_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.normal_(self.fc_reg.weight, 0.0, 0.001)
        nn.init.zeros_(self.fc_reg.bias)

    @classmethod
    def from_config(cls, cfg: Mapping, test_cfg: Mapping | None = None) -> RotatedShared2FCBBoxHead:
        """From mmrotate's ``roi_head.bbox_head`` and ``test_cfg.rcnn``."""
        c = dict(cfg)
        if c.pop("type", None) != "RotatedShared2FCBBoxHead":
            raise ValueError(
                f"roi_head.bbox_head: type {cfg.get('type')!r} is not supported; "
                "expected 'RotatedShared2FCBBoxHead'"
            )
        coder = DeltaXYWHAOBBoxCoder.from_config(c.pop("bbox_coder"))
        loss_cls = dict(c.pop("loss_cls"))
        if (
            loss_cls.pop("type", None) != "CrossEntropyLoss"
            or loss_cls.pop("use_sigmoid", False)
            or set(loss_cls) - {"loss_weight"}
        ):
            raise ValueError("roi_head.bbox_head.loss_cls: a softmax CrossEntropyLoss is supported")
        loss_bbox = dict(c.pop("loss_bbox"))
        if loss_bbox.pop("type", None) != "SmoothL1Loss" or set(loss_bbox) - {"beta", "loss_weight"}:
            raise ValueError("roi_head.bbox_head.loss_bbox: a SmoothL1Loss is supported")
        known = {"num_classes", "in_channels", "fc_out_channels", "roi_feat_size", "reg_class_agnostic"}
        if set(c) - known:
            raise ValueError(f"roi_head.bbox_head: unknown keys {sorted(set(c) - known)}")
        return cls(
            bbox_coder=coder,
            loss_cls_weight=float(loss_cls.get("loss_weight", 1.0)),
            loss_bbox_beta=float(loss_bbox.get("beta", 1.0)),
            loss_bbox_weight=float(loss_bbox.get("loss_weight", 1.0)),
            test_cfg=TestConfig.from_cfg(test_cfg) if test_cfg else None,
            **c,
        )

    def forward(self, roi_feats: Tensor) -> tuple[Tensor, Tensor]:
        """``[N, C, S, S]`` RoI features -> ``cls_score [N, num_classes + 1]``, ``bbox_pred [N, 5]``."""
        x = roi_feats.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)

    def loss(
        self,
        cls_score: Tensor,
        bbox_pred: Tensor,
        labels: Tensor,
        label_weights: Tensor,
        bbox_targets: Tensor,
    ) -> dict[str, Tensor]:
        """mmdet's ``BBoxHead.loss`` of the sampled RoIs (``labels [N]``, background ``num_classes``;
        ``bbox_targets [N, 5]``, used where positive): ``loss_cls``, ``acc``, ``loss_bbox`` (float32)."""
        cls_score, bbox_pred = cls_score.float(), bbox_pred.float()
        avg = max(float((label_weights > 0).sum()), 1.0)
        ce = F.cross_entropy(cls_score, labels, reduction="none") * label_weights
        loss_cls = self.loss_cls_weight * ce.sum() / (avg + EPS)
        acc = (cls_score.argmax(dim=1) == labels).float().mean() * 100.0
        pos = (labels >= 0) & (labels < self.num_classes)
        if self.reg_class_agnostic:
            pos_pred = bbox_pred[pos]
        else:
            pos_pred = bbox_pred.view(bbox_pred.shape[0], -1, 5)[pos, labels[pos]]
        el = smooth_l1_loss(pos_pred, bbox_targets[pos], self.loss_bbox_beta)
        loss_bbox = self.loss_bbox_weight * el.sum() / (bbox_targets.shape[0] + EPS)
        return {"loss_cls": loss_cls, "acc": acc.detach(), "loss_bbox": loss_bbox}


class OrientedStandardRoIHead(nn.Module):
    """mmrotate's ``OrientedStandardRoIHead``: ``bbox_roi_extractor`` + ``bbox_head`` (see the
    module docstring). ``train_cfg``: ``train_cfg.rcnn``."""

    def __init__(
        self,
        bbox_roi_extractor: nn.Module,
        bbox_head: RotatedShared2FCBBoxHead,
        train_cfg: RCNNTrainConfig | None = None,
    ) -> None:
        super().__init__()
        self.bbox_roi_extractor = bbox_roi_extractor
        self.bbox_head = bbox_head
        self.train_cfg = train_cfg

    @classmethod
    def from_config(
        cls, cfg: Mapping, train_cfg: Mapping | None = None, test_cfg: Mapping | None = None
    ) -> OrientedStandardRoIHead:
        """From mmrotate's ``roi_head``, ``train_cfg.rcnn`` and ``test_cfg.rcnn``."""
        from rotdet.models.roi_extractor import RotatedSingleRoIExtractor

        c = dict(cfg)
        if c.pop("type", None) != "OrientedStandardRoIHead":
            raise ValueError(
                f"roi_head: type {cfg.get('type')!r} is not supported; expected 'OrientedStandardRoIHead'"
            )
        c.pop("version", None)  # mmrotate's OrientedStandardRoIHead never reads it
        if set(c) - {"bbox_roi_extractor", "bbox_head"}:
            raise ValueError(f"roi_head: unknown keys {sorted(set(c) - {'bbox_roi_extractor', 'bbox_head'})}")
        return cls(
            RotatedSingleRoIExtractor.from_config(c["bbox_roi_extractor"]),
            RotatedShared2FCBBoxHead.from_config(c["bbox_head"], test_cfg),
            RCNNTrainConfig.from_cfg(train_cfg) if train_cfg else None,
        )

    def _num_inputs(self) -> int:
        return len(self.bbox_roi_extractor.featmap_strides)

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        """``rois [N, 6]`` (image index first) on the FPN levels -> class logits and deltas."""
        roi_feats = self.bbox_roi_extractor(list(feats[: self._num_inputs()]), rois)
        return self.bbox_head(roi_feats)

    def _sample(
        self, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor, sampler: RRandomSampler
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One image: the sampled boxes ``[P + Q, 5]`` (positives first), their labels, regression
        targets and label weights."""
        head = self.bbox_head
        result = sampler.sample(
            self.train_cfg.assigner.assign(proposals[:, :5], gt_boxes, gt_labels),
            proposals,
            gt_boxes,
            gt_labels,
        )
        num_pos = result.pos_inds.numel()
        sampled = result.bboxes
        labels = torch.full((sampled.shape[0],), head.num_classes, dtype=torch.long, device=sampled.device)
        targets = sampled.new_zeros(sampled.shape[0], 5)
        weights = sampled.new_ones(sampled.shape[0])
        if num_pos:
            labels[:num_pos] = result.pos_gt_labels
            targets[:num_pos] = head.bbox_coder.encode(result.pos_bboxes, result.pos_gt_bboxes)
            if self.train_cfg.pos_weight > 0:
                weights[:num_pos] = self.train_cfg.pos_weight
        return sampled, labels, targets, weights

    def loss(
        self,
        feats: Sequence[Tensor],
        proposals: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        permutation: Permutation | None = None,
    ) -> dict[str, Tensor]:
        """``{"loss_cls", "acc", "loss_bbox"}`` of the batch's proposals (per image ``[N_i, 6]``,
        detached) for its ground truths (``[K_i, 5]``, ``[K_i]``); ``permutation`` replaces the
        sampler's random draws."""
        if self.train_cfg is None:
            raise ValueError("OrientedStandardRoIHead.loss needs train_cfg.rcnn")
        sampler = with_permutation(self.train_cfg.sampler, permutation)
        device = feats[0].device
        parts = [
            self._sample(props.detach().float(), boxes.to(device).float(), labs.to(device), sampler)
            for props, boxes, labs in zip(proposals, gt_boxes, gt_labels, strict=True)
        ]
        sampled, labels, targets, weights = (list(t) for t in zip(*parts, strict=True))
        cls_score, bbox_pred = self(feats, rois_of(sampled).to(device))
        return self.bbox_head.loss(
            cls_score, bbox_pred, torch.cat(labels), torch.cat(weights), torch.cat(targets)
        )

    @torch.no_grad()
    def predict(
        self,
        feats: Sequence[Tensor],
        proposals: Sequence[Tensor],
        metas: Sequence[Mapping],
        rescale: bool = False,
        cfg: TestConfig | None = None,
    ) -> list[RotatedDetections]:
        """Per image :class:`~rotdet.structures.RotatedDetections` of the proposals (``[N_i, 6]``)."""
        cfg = cfg or self.bbox_head.test_cfg
        head = self.bbox_head
        rois = rois_of(proposals).to(feats[0].device)
        cls_score, bbox_pred = self(feats, rois) if rois.shape[0] else (None, None)
        results, start = [], 0
        for props, meta in zip(proposals, metas, strict=True):
            n = props.shape[0]
            image_id = meta.get("id", "image")
            if n == 0:
                empty = rois.new_zeros(0, 5)
                results.append(
                    RotatedDetections(
                        empty, empty[:, 0], empty[:, 0].long(), head.bbox_coder.angle_range, image_id
                    )
                )
                continue
            scores = F.softmax(cls_score[start : start + n].float(), dim=-1)
            boxes = head.bbox_coder.decode(
                rois[start : start + n, 1:],
                bbox_pred[start : start + n].float(),
                max_shape=tuple(meta["img_shape"][:2]),
            )
            start += n
            if rescale:
                factor = torch.as_tensor(
                    meta["scale_factor"], dtype=boxes.dtype, device=boxes.device
                ).reshape(-1)[:4]
                boxes = boxes.view(n, -1, 5)
                boxes = torch.cat([boxes[..., :4] / factor, boxes[..., 4:]], dim=-1).view(n, -1)
            dets, labels, _ = multiclass_nms_rotated(
                boxes, scores[:, :-1], cfg.score_thr, cfg.iou_thr, cfg.max_per_img
            )
            results.append(
                RotatedDetections(dets[:, :5], dets[:, 5], labels, head.bbox_coder.angle_range, image_id)
            )
        return results
