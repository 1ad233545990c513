"""Dense rotated detection heads: Rotated RetinaNet, Rotated ATSS and R3Det's refine head.

The layers (and their state-dict names) are mmrotate 0.3.4's ``RotatedRetinaHead``: two towers of
``stacked_convs`` x (3x3 conv + ReLU) named ``cls_convs.i.conv`` / ``reg_convs.i.conv``, then
``retina_cls`` (``A * num_classes`` sigmoid logits, channel ``a * C + c``) and ``retina_reg``
(``A * 5`` deltas, channel ``a * 5 + k``), all 3x3.

The head has two separate paths (as detectron2's dense detectors):

* training -- :meth:`RotatedRetinaHead.loss`: anchors, assignment (on the ground truths'
  circumscribed hbb or on the obb), regression targets from the box coder, then the sigmoid focal
  loss and the L1 / SmoothL1 loss, each summed per FPN level and divided by the number of positive
  anchors (at least 1 per image) exactly as mmdet's ``AnchorHead.loss``. mmdet goes image by image;
  here the ground truths are padded to one ``[B, G, 5]`` tensor and every step runs on the whole
  batch (ATSS without a single host sync), which gives the same targets -- a GPU otherwise spends
  more time launching these small steps than the network's own training step (see
  ``benchmarks/bench_launches.py``). Images with padding anchors (valid flags) fall back to image
  by image;
* inference -- :meth:`RotatedRetinaHead.predict`: per level the ``nms_pre`` anchors with the best
  class score, decoding with the centre clamp to the image, optional rescale to the original image,
  then class-wise rotated NMS.

:class:`RotatedATSSHead` only changes the assignment (ATSS with the per-level anchor counts).
R3Det's refine head is a :class:`RotatedRetinaHead` with one anchor per location whose anchors are
given by the caller (the boxes refined by the previous stage).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rotdet.models.anchors import AnchorGenerator
from rotdet.models.coders import DeltaXYWHAOBBoxCoder
from rotdet.models.losses import LossSpec, level_losses
from rotdet.models.postprocess import dense_detections

__all__ = [
    "ConvReLU",
    "RotatedATSSHead",
    "RotatedRetinaHead",
    "TestConfig",
    "TrainConfig",
    "rotated_anchor_inside_flags",
]


@dataclass(frozen=True)
class TestConfig:
    """mmrotate's dense-head ``test_cfg``."""

    __test__ = False  # not a pytest test class, despite its name

    nms_pre: int = 2000
    score_thr: float = 0.05
    iou_thr: float = 0.1
    max_per_img: int = 2000
    min_bbox_size: float = 0

    @classmethod
    def from_cfg(cls, cfg: dict) -> TestConfig:
        cfg = dict(cfg)
        nms = cfg.pop("nms", None)
        if nms is not None:
            cfg["iou_thr"] = nms["iou_thr"]
        return cls(**cfg)


@dataclass(frozen=True)
class TrainConfig:
    """The non-assigner part of mmrotate's dense-head ``train_cfg``."""

    allowed_border: float = -1
    pos_weight: float = -1


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


def rotated_anchor_inside_flags(
    anchors: Tensor, valid_flags: Tensor, img_shape: Sequence[int], allowed_border: float = -1
) -> Tensor:
    """mmrotate's ``rotated_anchor_inside_flags``: valid anchors whose centre is within the image
    (grown by ``allowed_border``); ``allowed_border < 0`` keeps every valid anchor."""
    if allowed_border < 0:
        return valid_flags
    img_h, img_w = int(img_shape[0]), int(img_shape[1])
    cx, cy = anchors[:, 0], anchors[:, 1]
    return (
        valid_flags
        & (cx >= -allowed_border)
        & (cy >= -allowed_border)
        & (cx < img_w + allowed_border)
        & (cy < img_h + allowed_border)
    )


def _sizes_key(featmap_sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple((int(h), int(w)) for h, w in featmap_sizes)


def _levels_to_flat(outputs: Sequence[Tensor], channels: int) -> Tensor:
    """Per-level ``[B, A * channels, H, W]`` -> ``[B, sum(H W A), channels]`` in (y, x, a) order."""
    batch = outputs[0].shape[0]
    return torch.cat([o.permute(0, 2, 3, 1).reshape(batch, -1, channels) for o in outputs], dim=1)


class RotatedRetinaHead(nn.Module):
    """mmrotate's ``RotatedRetinaHead`` (also the base of the ATSS and refine heads).

    Args:
        num_classes: number of object classes (sigmoid classification, no background channel).
        in_channels, feat_channels, stacked_convs: tower shape.
        anchor_generator: grid anchors; ``None`` for a head whose anchors come from the caller
            (R3Det's refine head), then ``strides`` gives the levels and there is one anchor per
            location.
        bbox_coder: the delta coder of targets and predictions.
        loss_cls, loss_bbox: the two losses (``LossSpec``).
        assigner: the training assigner (``None`` for an inference-only head).
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
        loss_bbox: LossSpec | None = None,
        assigner=None,
        assign_by_circumhbbox: str | None = "oc",
        train_cfg: TrainConfig | None = None,
        test_cfg: TestConfig | None = None,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        norm_cfg: dict | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.in_channels, self.feat_channels = int(in_channels), int(feat_channels)
        if anchor_generator is None:
            # One caller-given anchor per location; the generator only supplies valid flags.
            self.anchor_generator = AnchorGenerator(strides=strides, scales=[1.0], ratios=[1.0])
            self.anchors_from_caller = True
        else:
            self.anchor_generator = anchor_generator
            self.anchors_from_caller = False
        self.num_anchors = self.anchor_generator.num_base_anchors
        self.bbox_coder = bbox_coder if bbox_coder is not None else DeltaXYWHAOBBoxCoder()
        self.loss_cls = loss_cls if loss_cls is not None else LossSpec("FocalLoss")
        self.loss_bbox = loss_bbox if loss_bbox is not None else LossSpec("L1Loss")
        self.assigner = assigner
        self.assign_by_circumhbbox = assign_by_circumhbbox
        self.train_cfg = train_cfg if train_cfg is not None else TrainConfig()
        self.test_cfg = test_cfg if test_cfg is not None else TestConfig()

        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(stacked_convs):
            chn = self.in_channels if i == 0 else self.feat_channels
            self.cls_convs.append(ConvReLU(chn, self.feat_channels, norm_cfg))
            self.reg_convs.append(ConvReLU(chn, self.feat_channels, norm_cfg))
        self._anchor_cache: dict[tuple, object] = {}
        self.retina_cls = nn.Conv2d(self.feat_channels, self.num_anchors * self.num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(self.feat_channels, self.num_anchors * 5, 3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        """mmdet's init: every conv Normal(0, 0.01) with zero bias; ``retina_cls`` bias for prior 0.01."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.retina_cls.bias, float(-math.log((1 - 0.01) / 0.01)))

    # ------------------------------------------------------------------ network
    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
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

    # ------------------------------------------------------------------ anchors
    def grid_anchors(self, featmap_sizes: Sequence[tuple[int, int]], device) -> list[Tensor]:
        """Per level the grid anchors ``[H*W*A, 5]`` (float32), made once per feature-map sizes and
        device (DOTA patches all have one size; the cache saves a dozen kernel launches a step)."""
        return self._cached(
            ("levels", _sizes_key(featmap_sizes), str(device)),
            lambda: self.anchor_generator.grid_anchors(featmap_sizes, device=device, dtype=torch.float32),
        )

    def _cached(self, key: tuple, make):
        # Small (a few MB at most) and keyed by shapes, so not part of the state dict.
        value = self._anchor_cache.get(key)
        if value is None:
            if len(self._anchor_cache) >= 16:
                self._anchor_cache.clear()
            value = self._anchor_cache[key] = make()
        return value

    def _image_anchors(
        self, featmap_sizes: Sequence[tuple[int, int]], batch: int, device, anchors: Sequence[Tensor] | None
    ) -> Tensor:
        """``[B, N, 5]`` anchors of every image (all levels): the grid, or the caller's per-level
        ``[B, H*W*A, 5]`` boxes."""
        if anchors is None:
            if self.anchors_from_caller:
                raise ValueError("this head needs its anchors from the caller")
            key = ("flat", _sizes_key(featmap_sizes), str(device))
            flat = self._cached(key, lambda: torch.cat(self.grid_anchors(featmap_sizes, device)))
            return flat[None].expand(batch, -1, -1)
        return torch.cat([a.reshape(batch, -1, 5) for a in anchors], dim=1).detach().float()

    # ------------------------------------------------------------------ training
    def _assign(self, anchors: Tensor, num_level_anchors: list[int], gt_boxes: Tensor, gt_labels: Tensor):
        from rotdet.models.assigners import assign_targets_boxes

        return self.assigner.assign(
            anchors, assign_targets_boxes(gt_boxes, self.assign_by_circumhbbox), gt_labels
        )

    def _assign_batch(
        self, anchors: Tensor, num_level_anchors: list[int], gt_pad: Tensor, gt_valid: Tensor
    ) -> Tensor:
        """``gt_inds [B, N]`` of every image at once, all anchors taking part (no host sync for
        ATSS; one overlap search for the whole batch for MaxIoU)."""
        from rotdet.models.assigners import assign_targets_boxes

        batch, num = anchors.shape[:2]
        if gt_pad.shape[1] == 0 or num == 0:
            return torch.zeros(batch, num, dtype=torch.long, device=anchors.device)
        boxes = assign_targets_boxes(gt_pad.reshape(-1, 5), self.assign_by_circumhbbox).view(gt_pad.shape)
        return self._assigner_batch(anchors, list(num_level_anchors), boxes, gt_valid)

    def _assigner_batch(
        self, anchors: Tensor, num_level_anchors: list[int], gt_boxes: Tensor, gt_valid: Tensor
    ) -> Tensor:
        return self.assigner.assign_batch(anchors, gt_boxes, gt_valid)[0]

    @torch.no_grad()
    def get_targets(
        self,
        anchors: Tensor,
        num_level_anchors: list[int],
        featmap_sizes: Sequence[tuple[int, int]],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        metas: Sequence[dict],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Labels ``[B, N]`` (``num_classes`` = background), label weights ``[B, N]``, box targets and
        weights ``[B, N, 5]`` and mmdet's ``num_total_pos`` (sum over images of ``max(pos, 1)``, a
        0-dim tensor so that nothing here waits for the device)."""
        if self.assigner is None:
            raise RuntimeError("this head was built without an assigner (no train_cfg)")
        batch, num = anchors.shape[:2]
        device = anchors.device
        gts = [g.to(device=device, dtype=torch.float32).reshape(-1, 5) for g in gt_boxes]
        gls = [g.to(device=device, dtype=torch.long).reshape(-1) for g in gt_labels]
        # Ground truths padded to the largest count; validity built on the device (no host copy).
        gt_pad = nn.utils.rnn.pad_sequence(gts, batch_first=True)
        labels_pad = nn.utils.rnn.pad_sequence(gls, batch_first=True)
        gt_valid = nn.utils.rnn.pad_sequence(
            [torch.ones(len(g), dtype=torch.bool, device=device) for g in gts], batch_first=True
        )
        if self.train_cfg.allowed_border < 0 and all(
            self.anchor_generator.all_valid(featmap_sizes, m["pad_shape"]) for m in metas
        ):
            # Every anchor takes part (the usual case: images padded to the batch shape), known
            # from the shapes alone: no flags, no nonzero.
            gt_inds = self._assign_batch(anchors, num_level_anchors, gt_pad, gt_valid)
        else:
            gt_inds = torch.full((batch, num), -1, dtype=torch.long, device=device)  # -1: ignored
            for i in range(batch):
                valid = torch.cat(
                    self.anchor_generator.valid_flags(featmap_sizes, metas[i]["pad_shape"], device)
                )
                inside = rotated_anchor_inside_flags(
                    anchors[i], valid, metas[i]["img_shape"], self.train_cfg.allowed_border
                )
                inside_idx = inside.nonzero().squeeze(1)
                counts = [
                    int(c) for c in torch.stack([f.sum() for f in inside.split(num_level_anchors)]).tolist()
                ]
                result = self._assign(anchors[i][inside_idx], counts, gts[i], gls[i])
                gt_inds[i, inside_idx] = result.gt_inds
        return self._targets_from_assignment(anchors, gt_inds, gt_pad, labels_pad)

    def _targets_from_assignment(
        self, anchors: Tensor, gt_inds: Tensor, gt_pad: Tensor, labels_pad: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """mmdet's ``_get_targets_single`` for every image at once from ``gt_inds [B, N]``.

        The deltas are encoded for every anchor and kept where positive: the coder works pair by
        pair, so the positives get exactly the values of encoding them alone, with no
        data-dependent indexing."""
        pos = gt_inds > 0
        dtype = anchors.dtype
        pw = self.train_cfg.pos_weight
        label_weights = torch.where(pos, 1.0 if pw <= 0 else float(pw), (gt_inds == 0).to(dtype))
        if gt_pad.shape[1] == 0:
            labels = torch.full_like(gt_inds, self.num_classes)
            bbox_targets = anchors.new_zeros(anchors.shape)
        else:
            idx = (gt_inds - 1).clamp(min=0)
            labels = torch.where(pos, labels_pad.gather(1, idx), self.num_classes)
            matched = gt_pad.gather(1, idx[..., None].expand(-1, -1, 5))
            deltas = self.bbox_coder.encode(anchors, matched).to(dtype)
            bbox_targets = torch.where(pos[..., None], deltas, torch.zeros_like(deltas))
        bbox_weights = pos[..., None].to(dtype).expand(-1, -1, 5).contiguous()
        num_total_pos = pos.sum(dim=1).clamp(min=1).sum()
        return labels, label_weights, bbox_targets, bbox_weights, num_total_pos

    def loss(
        self,
        cls_scores: Sequence[Tensor],
        bbox_preds: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        metas: Sequence[dict],
        anchors: Sequence[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """``{"loss_cls": [L], "loss_bbox": [L]}``: per-level losses (float32), as mmdet's lists.

        ``anchors``: per level ``[B, H*W, 5]`` caller-given anchors (R3Det's refine head)."""
        featmap_sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        batch, device = cls_scores[0].shape[0], cls_scores[0].device
        all_anchors = self._image_anchors(featmap_sizes, batch, device, anchors)
        num_level_anchors = [h * w * self.num_anchors for h, w in featmap_sizes]
        # Targets in float32 whatever the training precision, as mmrotate computes them.
        with torch.autocast(device_type=device.type, enabled=False):
            labels, label_weights, bbox_targets, bbox_weights, num_pos = self.get_targets(
                all_anchors, num_level_anchors, featmap_sizes, gt_boxes, gt_labels, metas
            )
        with torch.autocast(device_type=device.type, enabled=False):
            logits = _levels_to_flat([c.float() for c in cls_scores], self.num_classes)
            deltas = _levels_to_flat([b.float() for b in bbox_preds], 5)
            cls_el = self.loss_cls.elementwise(logits, labels) * label_weights[..., None]
            box_el = self.loss_bbox.elementwise(deltas, bbox_targets) * bbox_weights
            loss_cls = self.loss_cls.loss_weight * level_losses(cls_el, num_level_anchors, num_pos)
            loss_bbox = self.loss_bbox.loss_weight * level_losses(box_el, num_level_anchors, num_pos)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}

    # ------------------------------------------------------------------ inference
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
    ) -> list[dict[str, Tensor]]:
        """Per image ``{"boxes": [K, 5], "scores": [K], "labels": [K]}`` by descending score.

        With ``with_nms=False``: ``{"boxes": [M, 5], "scores": [M, C]}``, the candidates that go
        into NMS (mmrotate's ``_get_bboxes_single(with_nms=False)`` without the background column).
        """
        cfg = cfg if cfg is not None else self.test_cfg
        featmap_sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        batch, device = cls_scores[0].shape[0], cls_scores[0].device
        # One pass over the whole batch (rotdet.models.postprocess), same detections as image by image.
        if anchors is None:
            level_anchors = [a[None].expand(batch, -1, -1) for a in self.grid_anchors(featmap_sizes, device)]
        else:
            level_anchors = [a.reshape(batch, -1, 5).float() for a in anchors]
        return dense_detections(
            cls_scores,
            bbox_preds,
            level_anchors,
            self.bbox_coder.decode,
            self.num_classes,
            metas,
            cfg.nms_pre,
            cfg.score_thr,
            cfg.iou_thr,
            cfg.max_per_img,
            rescale=rescale,
            with_nms=with_nms,
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
    ) -> list[dict[str, Tensor]]:
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

    # ------------------------------------------------------------------ R3Det helpers
    @torch.no_grad()
    def filter_bboxes(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor]) -> list[Tensor]:
        """mmrotate's ``filter_bboxes``: per level ``[B, H*W, 5]``, at each location the anchor with
        the best class score decoded (no centre clamp), detached."""
        featmap_sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        batch = cls_scores[0].shape[0]
        out = []
        for cls, reg, anc in zip(
            cls_scores, bbox_preds, self.grid_anchors(featmap_sizes, cls_scores[0].device), strict=True
        ):
            a = self.num_anchors
            score = cls.float().permute(0, 2, 3, 1).reshape(batch, -1, a, self.num_classes).max(dim=-1).values
            best = score.argmax(dim=-1, keepdim=True)  # [B, HW, 1]
            pred = reg.float().permute(0, 2, 3, 1).reshape(batch, -1, a, 5)
            best_pred = pred.gather(2, best[..., None].expand(-1, -1, -1, 5)).squeeze(2)
            anchors = anc.reshape(-1, a, 5)[None].expand(batch, -1, -1, -1)
            best_anchor = anchors.gather(2, best[..., None].expand(-1, -1, -1, 5)).squeeze(2)
            out.append(self.bbox_coder.decode(best_anchor, best_pred).detach())  # box by box: batched
        return out

    @torch.no_grad()
    def refine_bboxes(
        self, bbox_preds: Sequence[Tensor], rois: Sequence[Tensor] | None = None
    ) -> list[Tensor]:
        """Per level ``[B, H*W, 5]``: the head's deltas applied to its anchors (``rois`` for a refine
        head, the grid anchors otherwise; one anchor per location), detached."""
        batch = bbox_preds[0].shape[0]
        if rois is None:
            featmap_sizes = [tuple(b.shape[-2:]) for b in bbox_preds]
            grid = self.grid_anchors(featmap_sizes, bbox_preds[0].device)
            rois = [g[None].expand(batch, -1, -1) for g in grid]
        out = []
        for reg, roi in zip(bbox_preds, rois, strict=True):
            pred = reg.float().permute(0, 2, 3, 1).reshape(batch, -1, 5)
            out.append(self.bbox_coder.decode(roi, pred).detach())
        return out


class RotatedATSSHead(RotatedRetinaHead):
    """mmrotate's ``RotatedATSSHead``: the RetinaNet head with ATSS assignment (per-level counts of
    the anchors inside the image passed to the assigner)."""

    def _assign(self, anchors: Tensor, num_level_anchors: list[int], gt_boxes: Tensor, gt_labels: Tensor):
        from rotdet.models.assigners import assign_targets_boxes

        return self.assigner.assign(
            anchors, num_level_anchors, assign_targets_boxes(gt_boxes, self.assign_by_circumhbbox), gt_labels
        )

    def _assigner_batch(
        self, anchors: Tensor, num_level_anchors: list[int], gt_boxes: Tensor, gt_valid: Tensor
    ) -> Tensor:
        return self.assigner.assign_batch(anchors, num_level_anchors, gt_boxes, gt_valid)[0]
