"""mmrotate 0.3.4's ``OrientedRCNN``: backbone + FPN, :class:`~rotdet.models.rpn.OrientedRPNHead`
(oriented proposals on all five levels) and :class:`~rotdet.models.roi_head.OrientedStandardRoIHead`
(rotated RoI Align on the first four, the shared 2-FC box head).

Training: the RPN's losses (``loss_rpn_cls``, ``loss_rpn_bbox``, per level), its proposals of the
same forward (``train_cfg.rpn_proposal``, detached), the RoI head's losses on them (``loss_cls``,
``acc``, ``loss_bbox``). Inference: proposals with ``test_cfg.rpn``, then the RoI head's detections
(``test_cfg.rcnn``). The random draws of training (the RPN's and the RoI head's samplers)
can be replaced by one ``permutation`` callable (:mod:`rotdet.models.samplers`), given to
:meth:`OrientedRCNN.forward_train` or set as ``model.permutation`` (e.g. draws replayed from mmrotate).

State-dict names are mmrotate's: ``backbone``, ``neck`` (see :mod:`rotdet.models.mmrotate_import`),
``rpn_head.rpn_conv`` / ``rpn_cls`` / ``rpn_reg``, ``roi_head.bbox_head.shared_fcs.{0,1}``,
``fc_cls``, ``fc_reg``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rotdet.models import factory
from rotdet.models.backbone import ResNetBackbone
from rotdet.models.detectors import _Detector, pad_to_multiple
from rotdet.models.fpn import FPN
from rotdet.models.postprocess import TestConfig
from rotdet.models.roi_head import OrientedStandardRoIHead, RotatedShared2FCBBoxHead, rois_of
from rotdet.models.rpn import OrientedRPNHead
from rotdet.models.samplers import Permutation
from rotdet.structures.detections import RotatedDetections

__all__ = ["OrientedRCNN", "build_oriented_rcnn"]


class OrientedRCNN(_Detector):
    """mmrotate's ``OrientedRCNN`` (see the module docstring)."""

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        rpn_head: OrientedRPNHead,
        roi_head: OrientedStandardRoIHead,
    ) -> None:
        super().__init__(backbone, neck)
        self.rpn_head = rpn_head
        self.roi_head = roi_head
        # None: the samplers' torch.randperm on the default generator, as mmdet
        self.permutation: Permutation | None = None

    @property
    def bbox_head(self) -> RotatedShared2FCBBoxHead:
        """The head whose outputs are the detections (the engine's name for it; its ``test_cfg`` is
        ``test_cfg.rcnn``)."""
        return self.roi_head.bbox_head

    def forward(self, images: Tensor) -> dict[str, object]:
        """Raw outputs: ``{"rpn": (cls, reg) per level, "proposals": per image [K, 6],
        "roi": (cls_score [N, C + 1], bbox_pred [N, 5]) of all images' proposals}``."""
        images = pad_to_multiple(images)
        feats = self.extract_feat(images)
        rpn_outs = self.rpn_head(feats)
        metas = [{"img_shape": tuple(images.shape[-2:])} for _ in range(images.shape[0])]
        proposals = self.rpn_head.proposals(*rpn_outs, metas)
        return {"rpn": rpn_outs, "proposals": proposals, "roi": self.roi_head(feats, rois_of(proposals))}

    def forward_train(
        self,
        images: Tensor,
        targets: Sequence[dict],
        metas: Sequence[dict] | None = None,
        per_level: bool = False,
        permutation: Permutation | None = None,
    ) -> dict[str, Tensor]:
        """``{"loss_rpn_cls", "loss_rpn_bbox"}`` (scalars, or ``[L]`` per level) and the RoI head's
        ``{"loss_cls", "acc", "loss_bbox"}`` (scalars)."""
        images, metas = self._prepare(images, metas)
        permutation = permutation or self.permutation
        feats = self.extract_feat(images)
        boxes = [t["boxes"].to(images.device).float() for t in targets]
        labels = [t["labels"].to(images.device).long() for t in targets]
        cls_scores, bbox_preds = self.rpn_head(feats)
        losses = self.rpn_head.loss(cls_scores, bbox_preds, boxes, metas, permutation)
        if not per_level:
            losses = {k: v.sum() for k, v in losses.items()}
        proposals = self.rpn_head.proposals(cls_scores, bbox_preds, metas, self.rpn_head.proposal_cfg)
        losses.update(self.roi_head.loss(feats, proposals, boxes, labels, permutation))
        return losses

    @torch.no_grad()
    def predict(
        self,
        images: Tensor,
        metas: Sequence[dict] | None = None,
        rescale: bool = True,
        cfg: TestConfig | None = None,
    ) -> list[RotatedDetections]:
        """Per image detections (``cfg``: the RoI head's test config, default ``test_cfg.rcnn``)."""
        images, metas = self._prepare(images, metas)
        feats = self.extract_feat(images)
        proposals = self.rpn_head.proposals(*self.rpn_head(feats), metas)
        return self.roi_head.predict(feats, proposals, metas, rescale=rescale, cfg=cfg)


def build_oriented_rcnn(model: dict) -> OrientedRCNN:
    """An :class:`OrientedRCNN` from mmrotate's ``model`` dict (``rpn_head``, ``roi_head``,
    ``train_cfg`` with ``rpn`` / ``rpn_proposal`` / ``rcnn``, ``test_cfg`` with ``rpn`` / ``rcnn``)."""
    m = factory._take(
        model, "model", {"backbone", "neck", "rpn_head", "roi_head", "train_cfg", "test_cfg", "pretrained"}
    )
    if m.pop("pretrained", None) is not None:
        raise ValueError("OrientedRCNN: set model.backbone.pretrained, not model.pretrained")
    backbone = ResNetBackbone.from_config(m["backbone"])
    neck = FPN.from_config(m["neck"], backbone.out_channels)
    train_cfg = m.get("train_cfg")
    if train_cfg is not None:
        train_cfg = factory._take(train_cfg, "train_cfg", {"rpn", "rpn_proposal", "rcnn"})
    test_cfg = factory._take(m.get("test_cfg") or {}, "test_cfg", {"rpn", "rcnn"})
    train_cfg = train_cfg or {}
    rpn = OrientedRPNHead.from_config(
        m["rpn_head"], train_cfg.get("rpn"), train_cfg.get("rpn_proposal"), test_cfg.get("rpn")
    )
    roi = OrientedStandardRoIHead.from_config(m["roi_head"], train_cfg.get("rcnn"), test_cfg.get("rcnn"))
    return OrientedRCNN(backbone, neck, rpn, roi)
