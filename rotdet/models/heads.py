"""Dense rotated detection heads: Rotated RetinaNet, Rotated ATSS and R3Det's refine head.

A head is its layers -- mmrotate 0.3.4's ``RotatedRetinaHead``, with its state-dict names: two
towers of ``stacked_convs`` x (3x3 conv + ReLU) named ``cls_convs.i.conv`` / ``reg_convs.i.conv``,
then ``retina_cls`` (``A * num_classes`` sigmoid logits, channel ``a * C + c``) and ``retina_reg``
(``A * 5`` deltas, channel ``a * 5 + k``), all 3x3 -- plus the parts that say what its outputs
mean, kept as plain attributes: the anchor generator, the box coder, the assigner and the losses
it is trained with, its train and test configs. ``forward(features)`` gives per level
``(cls_scores, bbox_preds)``; nothing else runs here:

* training -- anchors, assignment and targets in :mod:`rotdet.models.targets`, the loss in
  :func:`rotdet.models.losses.dense_head_loss`, composed by the detectors
  (:func:`rotdet.models.detectors.dense_head_losses`);
* inference -- :func:`rotdet.models.postprocess.dense_detections` (:meth:`RotatedRetinaHead.predict`
  is a shortcut to it);
* R3Det's ``filter_bboxes`` / ``refine_bboxes`` -- :mod:`rotdet.models.r3det`.

Rotated ATSS is this head with the ATSS assigner (mmrotate's ``RotatedATSSHead`` only passes the
assigner other arguments, and every assigner here takes the same ones: any head trains with any
assigner). R3Det's refine head is this head with one anchor per location, its anchors given by the
caller (the boxes refined by the previous stage).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from rotdet.models.anchors import AnchorGenerator, anchor_generator_from_config
from rotdet.models.assigners import Assigner, assigner_from_config
from rotdet.models.coders import DeltaXYWHAOBBoxCoder
from rotdet.models.config_keys import constructor_kwargs
from rotdet.models.losses import BoxLoss, LossSpec, build_loss
from rotdet.models.postprocess import TestConfig, dense_detections
from rotdet.models.targets import TrainConfig
from rotdet.structures.detections import RotatedDetections

__all__ = ["ConvReLU", "RotatedRetinaHead", "TestConfig", "TrainConfig"]


class ConvReLU(nn.Module):
    """3x3 conv (+ GroupNorm) + ReLU: mmcv's ``ConvModule`` as heads use it, with its names (``conv``,
    ``gn``) and its rule that a conv followed by a norm has no bias.

    ``norm_cfg`` None (every seed config) or ``{"type": "GN", "num_groups": G}`` (mmdet's ATSS head;
    it makes training from scratch, as in the CPU demo, converge much faster).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm_cfg is None)
        self.gn = None
        if norm_cfg is not None:
            cfg = dict(norm_cfg)
            kind = cfg.pop("type")
            if kind != "GN":
                raise ValueError(f"head norm must be GN (or null), got {kind!r}")
            self.gn = nn.GroupNorm(int(cfg.pop("num_groups", 32)), out_channels, **cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.gn is not None:
            x = self.gn(x)
        return torch.relu(x)


class RotatedRetinaHead(nn.Module):
    """mmrotate's ``RotatedRetinaHead`` (also its ``RotatedATSSHead`` and ``RotatedRetinaRefineHead``).

    Args:
        num_classes: number of object classes (sigmoid classification, no background channel).
        in_channels, feat_channels, stacked_convs: tower shape.
        anchor_generator: grid anchors; ``None`` for a head whose anchors come from the caller
            (R3Det's refine head), then ``strides`` gives the levels and there is one anchor per
            location.
        bbox_coder: the delta coder of targets and predictions.
        loss_cls, loss_bbox: the two losses (``LossSpec``; the box loss may also be a Gaussian
            loss of :mod:`rotdet.models.gaussian_losses`).
        reg_decoded_bbox: mmdet's option: the box loss compares the predicted deltas decoded on
            their anchors with the ground-truth boxes (the Gaussian losses need it), instead of the
            deltas with the encoded ground truths.
        assigner: the training assigner, any :class:`~rotdet.models.assigners.Assigner` (``None``
            for an inference-only head).
        assign_by_circumhbbox: angle version of the ground truths' circumscribed hbb the assigner
            sees, or ``None`` to assign on the obb (mmrotate's head default is ``'oc'``).
        train_cfg, test_cfg: see :class:`TrainConfig` / :class:`TestConfig`.
        norm_cfg: GroupNorm in the towers (see :class:`ConvReLU`); None in mmrotate's configs.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        anchor_generator: AnchorGenerator | None = None,
        bbox_coder: DeltaXYWHAOBBoxCoder | None = None,
        loss_cls: LossSpec | None = None,
        loss_bbox: BoxLoss | None = None,
        reg_decoded_bbox: bool = False,
        assigner: Assigner | None = None,
        assign_by_circumhbbox: str | None = "oc",
        train_cfg: TrainConfig | None = None,
        test_cfg: TestConfig | None = None,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        norm_cfg: dict | None = None,
    ) -> None:
        super().__init__()
        if assigner is not None and not isinstance(assigner, Assigner):
            raise TypeError(
                f"assigner {type(assigner).__name__} does not follow rotdet.models.assigners.Assigner "
                "(assign_batch(anchors, num_level_anchors, gt_boxes, gt_valid, anchor_valid))"
            )
        self.num_classes = int(num_classes)
        self.in_channels, self.feat_channels = int(in_channels), int(feat_channels)
        # A head without a generator takes one caller-given anchor per location; its generator
        # then only supplies the levels' valid flags.
        self.anchors_from_caller = anchor_generator is None
        if anchor_generator is None:
            anchor_generator = AnchorGenerator(strides=strides, scales=[1.0], ratios=[1.0])
        self.anchor_generator = anchor_generator
        self.num_anchors = self.anchor_generator.num_base_anchors
        self.bbox_coder = bbox_coder if bbox_coder is not None else DeltaXYWHAOBBoxCoder()
        self.loss_cls = loss_cls if loss_cls is not None else LossSpec("FocalLoss")
        self.loss_bbox = loss_bbox if loss_bbox is not None else LossSpec("L1Loss")
        self.reg_decoded_bbox = bool(reg_decoded_bbox)
        self.assigner = assigner
        self.assign_by_circumhbbox = assign_by_circumhbbox
        self.train_cfg = train_cfg if train_cfg is not None else TrainConfig()
        self.test_cfg = test_cfg if test_cfg is not None else TestConfig()

        self._init_layers(stacked_convs, norm_cfg)
        self.init_weights()

    # mmrotate's dense-head types are this one class: the assigner (any, one protocol) makes a head
    # RetinaNet's or ATSS's, a refine head is one whose anchors come from the caller, and the KFIoU
    # heads are the two others with the KFLoss (which the losses module feeds their decoder).
    CONFIG_TYPES = (
        "RotatedRetinaHead",
        "RotatedATSSHead",
        "RotatedRetinaRefineHead",
        "KFIoURRetinaHead",
        "KFIoURRetinaRefineHead",
    )

    @classmethod
    def from_config(
        cls, cfg: Mapping, train_cfg: Mapping | None = None, test_cfg: Mapping | None = None
    ) -> RotatedRetinaHead:
        """From a config's ``bbox_head`` (or one of R3Det's ``refine_heads``) and its stage's
        ``train_cfg`` (assigner, ``allowed_border``, ``pos_weight``) and ``test_cfg``. The section's
        keys are this constructor's parameters; the anchor generator, coder and losses are built
        from their own sections."""
        c = constructor_kwargs(
            cls, cfg, "bbox_head", cls.CONFIG_TYPES, exclude={"assigner", "train_cfg", "test_cfg", "strides"}
        )
        anchor_cfg = c.pop("anchor_generator")
        anchors = anchor_generator_from_config(anchor_cfg)
        if (anchors is None) != cfg["type"].endswith("RefineHead"):
            raise ValueError(f"{cfg['type']} cannot use a {anchor_cfg['type']}")
        if cfg["type"].startswith("KFIoU") != (cfg["loss_bbox"]["type"] == "KFLoss"):
            raise ValueError(
                f"{cfg['type']} with loss_bbox {cfg['loss_bbox']['type']}: mmrotate's KFIoU heads and "
                "its KFLoss go together"
            )
        assigner, train = None, None
        if train_cfg is not None:
            t = constructor_kwargs(TrainConfig, train_cfg, "train_cfg", extra={"assigner", "debug"})
            assigner = assigner_from_config(t.pop("assigner"))
            t.pop("debug", None)
            train = TrainConfig(**t)
        loss_cls = build_loss(c.pop("loss_cls"))
        if loss_cls.type != "FocalLoss":
            raise ValueError(
                f"bbox_head.loss_cls: type {loss_cls.type!r} is not supported; expected FocalLoss"
            )
        return cls(
            anchor_generator=anchors,
            bbox_coder=DeltaXYWHAOBBoxCoder.from_config(c.pop("bbox_coder")),
            loss_cls=loss_cls,
            loss_bbox=build_loss(c.pop("loss_bbox")),
            assigner=assigner,
            train_cfg=train,
            test_cfg=TestConfig.from_cfg(test_cfg) if test_cfg is not None else None,
            strides=anchor_cfg.get("strides", (8, 16, 32, 64, 128)),
            **c,
        )

    def _init_layers(self, stacked_convs: int, norm_cfg: dict | None) -> None:
        """The towers and the two output convs (mmdet's ``_init_layers``: a subclass with other
        layers, S2A-Net's ODM head, overrides it)."""
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(stacked_convs):
            chn = self.in_channels if i == 0 else self.feat_channels
            self.cls_convs.append(ConvReLU(chn, self.feat_channels, norm_cfg))
            self.reg_convs.append(ConvReLU(chn, self.feat_channels, norm_cfg))
        self.retina_cls = nn.Conv2d(self.feat_channels, self.num_anchors * self.num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(self.feat_channels, self.num_anchors * 5, 3, padding=1)

    def init_weights(self) -> None:
        """mmdet's init: every conv Normal(0, 0.01) with zero bias; ``retina_cls`` bias for prior 0.01."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.retina_cls.bias, float(-math.log((1 - 0.01) / 0.01)))

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One level: ``[B, in_channels, H, W]`` -> ``[B, A*C, H, W]`` logits, ``[B, A*5, H, W]`` deltas."""
        return self._cls_branch(x), self._box_branch(x)

    def _cls_branch(self, x: Tensor) -> Tensor:
        for conv in self.cls_convs:
            x = conv(x)
        return self.retina_cls(x)

    def _box_branch(self, x: Tensor) -> Tensor:
        for conv in self.reg_convs:
            x = conv(x)
        return self.retina_reg(x)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level ``cls_scores [B, A*C, H, W]`` (logits) and ``bbox_preds [B, A*5, H, W]``."""
        outs = [self.forward_single(x) for x in feats]
        return [o[0] for o in outs], [o[1] for o in outs]

    # ------------------------------------------------------------------ shortcuts
    def grid_anchors(self, featmap_sizes: Sequence[tuple[int, int]], device) -> list[Tensor]:
        """Per level the grid anchors ``[H*W*A, 5]`` (float32, cached by the generator)."""
        return self.anchor_generator.level_anchors(featmap_sizes, device)

    @torch.no_grad()
    def predict(
        self,
        cls_scores: Sequence[Tensor],
        bbox_preds: Sequence[Tensor],
        metas: Sequence[dict],
        rescale: bool = False,
        anchors: Sequence[Tensor] | None = None,
        cfg: TestConfig | None = None,
        with_nms: bool = True,
    ) -> list[RotatedDetections] | list[dict[str, Tensor]]:
        """:func:`~rotdet.models.postprocess.dense_detections` of this head's outputs with its grid
        anchors (or the caller's ``anchors``, per level ``[B, H*W*A, 5]``), coder and ``test_cfg``
        (or ``cfg``): per image :class:`~rotdet.structures.RotatedDetections` by descending
        score; with ``with_nms=False`` the candidates that go into NMS, ``{"boxes": [M, 5],
        "scores": [M, C]}``."""
        cfg = cfg if cfg is not None else self.test_cfg
        batch, device = cls_scores[0].shape[0], cls_scores[0].device
        if anchors is None:
            grid = self.grid_anchors([tuple(c.shape[-2:]) for c in cls_scores], device)
            anchors = [a[None].expand(batch, -1, -1) for a in grid]
        else:
            anchors = [a.reshape(batch, -1, 5).float() for a in anchors]
        return dense_detections(
            cls_scores,
            bbox_preds,
            anchors,
            self.bbox_coder.decode,
            self.num_classes,
            metas,
            cfg.nms_pre,
            cfg.score_thr,
            cfg.iou_thr,
            cfg.max_per_img,
            rescale=rescale,
            with_nms=with_nms,
            angle_version=self.bbox_coder.angle_range,
        )

    @torch.no_grad()
    def predict_features(
        self,
        feats: Sequence[Tensor],
        metas: Sequence[dict],
        rescale: bool = False,
        anchors: Sequence[Tensor] | None = None,
        cfg: TestConfig | None = None,
        with_nms: bool = True,
    ) -> list[RotatedDetections] | list[dict[str, Tensor]]:
        """:meth:`predict` of ``self(feats)``. On a CPU the box branch (half of the head's work) runs
        only on the levels where some class score passes ``score_thr``: no other level can give a
        detection, so its deltas are never read and the detections are the same. (On a GPU the
        test would wait for the device; there both branches always run.)"""
        cfg = cfg if cfg is not None else self.test_cfg
        if not with_nms or feats[0].device.type != "cpu":
            cls_scores, bbox_preds = self(feats)
        else:
            cls_scores, bbox_preds = [self._cls_branch(x) for x in feats], []
            for x, cls in zip(feats, cls_scores, strict=True):
                # The test dense_detections applies (sigmoid is elementwise: same values).
                if bool((cls.float().sigmoid() > cfg.score_thr).any()):
                    bbox_preds.append(self._box_branch(x))
                else:
                    bbox_preds.append(cls.new_zeros(cls.shape[0], self.num_anchors * 5, *cls.shape[2:]))
        return self.predict(
            cls_scores, bbox_preds, metas, rescale=rescale, anchors=anchors, cfg=cfg, with_nms=with_nms
        )
