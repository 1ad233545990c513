"""Detectors: mmrotate 0.3.4's ``RotatedRetinaNet`` (any single-stage dense head) and ``R3Det``.

Both take a padded image batch ``[B, 3, H, W]`` and per-image metadata dicts (the data pipeline's
``img_metas``: ``img_shape`` (h, w[, c]) of the resized image before padding, ``pad_shape``,
``scale_factor`` (``[sx, sy, sx, sy]``), ``flip``, ...). Images whose batch size is not a multiple
of 32 are padded bottom/right with zeros first; without metadata each image is taken as unpadded and
unscaled.

* ``forward_train(images, targets, metas)`` -> losses (``targets``: per image
  ``{"boxes": [K, 5], "labels": [K]}`` in the config's angle version);
* ``predict(images, metas, rescale=True)`` -> per image ``{"boxes", "scores", "labels"}``, boxes
  in the model's angle version (mmrotate's decoder quirks included, e.g. unnormalised ``oc`` angles),
  rescaled to the original image by ``scale_factor`` when ``rescale`` (mmrotate divides
  ``cx, cy, w, h`` by ``sx, sy, sx, sy``).

Training is the same four steps for every dense head (:func:`dense_head_losses`, detectron2's
``RetinaNet.forward_training``): anchors, assignment, targets (:mod:`rotdet.models.targets`), loss
(:func:`rotdet.models.losses.dense_head_loss`); R3Det runs them for its first head and for each
refine head, whose anchors are the boxes :func:`rotdet.models.r3det.filter_bboxes` /
:func:`~rotdet.models.r3det.refine_bboxes` made from the stage before.

State-dict names follow mmrotate's (``backbone``, ``neck``, ``bbox_head``, R3Det's
``feat_refine_module.i`` and ``refine_head.i``), up to the neck's ``.conv`` level (see
:mod:`rotdet.models.mmrotate_import`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rotdet.models.heads import RotatedRetinaHead
from rotdet.models.losses import dense_head_loss
from rotdet.models.r3det import FeatureRefineModule, filter_bboxes, refine_bboxes
from rotdet.models.targets import GroundTruths, anchor_targets, assign_anchors, dense_anchors, featmap_sizes
from rotdet.structures.meta import ImageMeta, image_meta

__all__ = [
    "R3Det",
    "RotatedSingleStageDetector",
    "default_metas",
    "dense_head_losses",
    "pad_to_multiple",
    "sum_losses",
]

SIZE_DIVISOR = 32


def pad_to_multiple(images: Tensor, divisor: int = SIZE_DIVISOR) -> Tensor:
    """Zero-pad ``[B, C, H, W]`` bottom/right so that H and W are multiples of ``divisor``."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    return F.pad(images, (0, pw, 0, ph)) if ph or pw else images


def default_metas(images: Tensor) -> list[ImageMeta]:
    """Metadata of unpadded, unscaled, unflipped images filling the whole batch tensor."""
    h, w = int(images.shape[-2]), int(images.shape[-1])
    return [image_meta(img_shape=(h, w, 3)) for _ in range(images.shape[0])]


def sum_losses(losses: dict[str, Tensor]) -> Tensor:
    """Total loss (mmdet's ``_parse_losses``: the sum of every ``loss*`` entry, levels included)."""
    return sum(v.sum() for k, v in losses.items() if "loss" in k)


def dense_head_losses(
    head: RotatedRetinaHead,
    cls_scores: Sequence[Tensor],
    bbox_preds: Sequence[Tensor],
    gts: GroundTruths,
    metas: Sequence[dict],
    priors: Sequence[Tensor] | None = None,
) -> dict[str, Tensor]:
    """A dense head's training losses ``{"loss_cls": [L], "loss_bbox": [L]}`` (per level, float32)
    from its outputs (per level ``[B, A*C, H, W]`` and ``[B, A*5, H, W]``): detectron2's
    ``RetinaNet.forward_training`` -- anchors, assignment, targets, loss.

    ``priors``: per level ``[B, H*W, 5]`` anchors given by the caller (R3Det's refine heads).
    """
    if priors is None and head.anchors_from_caller:
        raise ValueError("this head needs its anchors from the caller")
    sizes = featmap_sizes(cls_scores)
    device = cls_scores[0].device
    anchors = dense_anchors(
        head.anchor_generator, sizes, metas, device, priors, head.train_cfg.allowed_border
    )
    gt_inds = assign_anchors(head.assigner, anchors, gts, head.assign_by_circumhbbox)
    targets = anchor_targets(
        anchors,
        gt_inds,
        gts,
        head.bbox_coder,
        head.num_classes,
        head.train_cfg.pos_weight,
        head.reg_decoded_bbox,
    )
    decodes = head.reg_decoded_bbox or getattr(head.loss_bbox, "needs_decoded_pair", False)
    decode = head.bbox_coder.decode if decodes else None
    return dense_head_loss(cls_scores, bbox_preds, targets, head.loss_cls, head.loss_bbox, decode)


class _Detector(nn.Module):
    def __init__(self, backbone: nn.Module, neck: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck

    def extract_feat(self, images: Tensor) -> list[Tensor]:
        return self.neck(self.backbone(images))

    @staticmethod
    def _prepare(images: Tensor, metas: Sequence[dict] | None) -> tuple[Tensor, list[dict]]:
        if images.dim() != 4:
            raise ValueError(f"images must be [B, C, H, W], got {tuple(images.shape)}")
        metas = default_metas(images) if metas is None else list(metas)
        if len(metas) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(metas)} metadata dicts")
        return pad_to_multiple(images), metas

    def loss_batch(self, batch: dict, per_level: bool = False) -> dict[str, Tensor]:
        """Losses of a :func:`rotdet.data.collate` batch (``img``, ``img_metas``, ``gt_bboxes``,
        ``gt_labels``)."""
        targets = [
            {"boxes": b, "labels": lab} for b, lab in zip(batch["gt_bboxes"], batch["gt_labels"], strict=True)
        ]
        return self.forward_train(batch["img"], targets, batch["img_metas"], per_level=per_level)

    @staticmethod
    def _reduce(losses: dict[str, Tensor], per_level: bool) -> dict[str, Tensor]:
        return losses if per_level else {k: v.sum() for k, v in losses.items()}


class RotatedSingleStageDetector(_Detector):
    """Backbone + neck + one dense rotated head (mmrotate's ``RotatedRetinaNet``; with the ATSS
    assigner it is Rotated ATSS)."""

    def __init__(self, backbone: nn.Module, neck: nn.Module, bbox_head: RotatedRetinaHead) -> None:
        super().__init__(backbone, neck)
        self.bbox_head = bbox_head

    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Raw head outputs (per level class logits and box deltas)."""
        return self.bbox_head(self.extract_feat(pad_to_multiple(images)))

    def forward_train(
        self,
        images: Tensor,
        targets: Sequence[dict],
        metas: Sequence[dict] | None = None,
        per_level: bool = False,
    ) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_bbox"}``: scalars (summed over levels), or ``[L]`` per level."""
        images, metas = self._prepare(images, metas)
        gts = GroundTruths.from_targets(targets, images.device)
        cls_scores, bbox_preds = self.bbox_head(self.extract_feat(images))
        losses = dense_head_losses(self.bbox_head, cls_scores, bbox_preds, gts, metas)
        return self._reduce(losses, per_level)

    @torch.no_grad()
    def predict(
        self, images: Tensor, metas: Sequence[dict] | None = None, rescale: bool = True, **kwargs
    ) -> list[dict[str, Tensor]]:
        """Per image detections ``{"boxes": [K, 5], "scores": [K], "labels": [K]}``."""
        images, metas = self._prepare(images, metas)
        return self.bbox_head.predict_features(self.extract_feat(images), metas, rescale=rescale, **kwargs)


class R3Det(_Detector):
    """mmrotate's ``R3Det``: a first dense stage, then ``num_refine_stages`` x (feature refinement
    module + refine head whose anchors are the previous stage's boxes, one per location).

    The first stage's ``filter_bboxes`` gives, per location, its best-scoring anchor decoded and
    detached; each refine head's training loss is scaled by its ``stage_loss_weights`` entry. Loss
    names: ``s0.loss_cls``, ``s0.loss_bbox``, ``sr{i}.loss_cls``, ``sr{i}.loss_bbox``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        bbox_head: RotatedRetinaHead,
        feat_refine_module: Sequence[FeatureRefineModule],
        refine_head: Sequence[RotatedRetinaHead],
        stage_loss_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(backbone, neck)
        if len(feat_refine_module) != len(refine_head) or not refine_head:
            raise ValueError("R3Det needs one feature refinement module per refine head (at least one)")
        self.bbox_head = bbox_head
        self.feat_refine_module = nn.ModuleList(feat_refine_module)
        self.refine_head = nn.ModuleList(refine_head)
        self.num_refine_stages = len(refine_head)
        weights = [1.0] * self.num_refine_stages if stage_loss_weights is None else list(stage_loss_weights)
        if len(weights) != self.num_refine_stages:
            raise ValueError(f"{len(weights)} stage_loss_weights for {self.num_refine_stages} refine stages")
        self.stage_loss_weights = [float(w) for w in weights]

    def _stages(self, feats: list[Tensor]):
        """Yield ``(stage, outs, rois)``: stage -1 the first head, then each refine stage with the
        rois (its anchors) it refined."""
        head = self.bbox_head
        outs = head(feats)
        yield -1, outs, None
        grid = head.grid_anchors(featmap_sizes(outs[0]), outs[0][0].device)
        rois = filter_bboxes(*outs, grid, head.bbox_coder.decode)
        for i in range(self.num_refine_stages):
            x_refine = self.feat_refine_module[i](feats, rois)
            outs = self.refine_head[i](x_refine)
            yield i, outs, rois
            if i + 1 < self.num_refine_stages:
                rois = refine_bboxes(outs[1], rois, self.refine_head[i].bbox_coder.decode)

    def forward(self, images: Tensor) -> dict[str, object]:
        """Raw outputs of every stage: ``{"s0": (cls, reg), "sr0": (cls, reg), "rois0": [...], ...}``."""
        out: dict[str, object] = {}
        for i, outs, rois in self._stages(self.extract_feat(pad_to_multiple(images))):
            if i < 0:
                out["s0"] = outs
            else:
                out[f"sr{i}"], out[f"rois{i}"] = outs, rois
        return out

    def forward_train(
        self,
        images: Tensor,
        targets: Sequence[dict],
        metas: Sequence[dict] | None = None,
        per_level: bool = False,
    ) -> dict[str, Tensor]:
        images, metas = self._prepare(images, metas)
        gts = GroundTruths.from_targets(targets, images.device)
        losses: dict[str, Tensor] = {}
        for i, (cls_scores, bbox_preds), rois in self._stages(self.extract_feat(images)):
            if i < 0:
                stage = dense_head_losses(self.bbox_head, cls_scores, bbox_preds, gts, metas)
                losses.update({f"s0.{k}": v for k, v in stage.items()})
            else:
                head = self.refine_head[i]
                stage = dense_head_losses(head, cls_scores, bbox_preds, gts, metas, priors=rois)
                lw = self.stage_loss_weights[i]
                losses.update({f"sr{i}.{k}": v * lw for k, v in stage.items()})
        return self._reduce(losses, per_level)

    @torch.no_grad()
    def predict(
        self, images: Tensor, metas: Sequence[dict] | None = None, rescale: bool = True, **kwargs
    ) -> list[dict[str, Tensor]]:
        images, metas = self._prepare(images, metas)
        feats = self.extract_feat(images)
        # _stages without the last refine head's forward: predict_features runs it (and skips its
        # box branch where no score passes the threshold).
        head = self.bbox_head
        outs = head(feats)
        grid = head.grid_anchors(featmap_sizes(outs[0]), outs[0][0].device)
        rois = filter_bboxes(*outs, grid, head.bbox_coder.decode)
        for i in range(self.num_refine_stages):
            x_refine = self.feat_refine_module[i](feats, rois)
            if i + 1 == self.num_refine_stages:
                break
            rois = refine_bboxes(
                self.refine_head[i](x_refine)[1], rois, self.refine_head[i].bbox_coder.decode
            )
        return self.refine_head[i].predict_features(x_refine, metas, rescale=rescale, anchors=rois, **kwargs)
