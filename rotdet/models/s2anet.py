"""S2A-Net (mmrotate 0.3.4 ``S2ANet``): a feature alignment module, then an oriented detection module.

1. The FAM head (mmrotate's ``RotatedRetinaHead`` with one anchor per location: here
   :class:`~rotdet.models.heads.RotatedRetinaHead`) predicts a box per location from its grid
   anchor; ``refine_bboxes`` decodes them (detached) into the *rois*, per level ``[B, H * W, 5]``.
2. :class:`AlignConvModule` reads each FPN level again with a 3x3 convolution whose taps are spread
   over each location's roi (:func:`rotdet.ops.align_conv.align_conv`, on torchvision's
   ``deform_conv2d``), then ReLU.
3. :class:`ODMRefineHead`: an oriented convolution (:class:`ORConv2d`, ``arf_config=(1, 8)``: each
   of ``feat_channels / 8`` filters applied at eight 45-degree turns) shared by both branches; the
   box branch reads its ``feat_channels`` orientation-sensitive channels, the class branch their
   maximum over the eight turns (rotation-invariant pooling). Its anchors are the rois.

Training is two dense-head losses (:func:`rotdet.models.detectors.dense_head_losses`), each with its
assigner, coder and losses from the config: ``fam.loss_cls``, ``fam.loss_bbox`` on the grid anchors
and ``odm.loss_cls``, ``odm.loss_bbox`` on the rois. Inference: the ODM head's detections with the
rois as anchors (:func:`rotdet.models.postprocess.dense_detections`, the config's ``test_cfg``).

State-dict names are mmrotate's: ``fam_head.*``, ``align_conv.ac.i.deform_conv.weight``,
``odm_head.or_conv.{weight, bias, indices}``, ``odm_head.cls_convs.i.conv``, ``odm_head.odm_cls``,
``odm_head.odm_reg``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from rotdet.models import factory
from rotdet.models.backbone import ResNetBackbone
from rotdet.models.detectors import _Detector, dense_head_losses, pad_to_multiple
from rotdet.models.fpn import FPN
from rotdet.models.heads import ConvReLU, RotatedRetinaHead
from rotdet.models.r3det import refine_bboxes
from rotdet.models.targets import GroundTruths, featmap_sizes
from rotdet.ops.align_conv import align_conv
from rotdet.ops.orn import active_rotated_filter, orconv_indices, rotation_invariant_pooling
from rotdet.structures.detections import RotatedDetections

__all__ = ["AlignConv", "AlignConvModule", "ODMRefineHead", "ORConv2d", "S2ANet", "build_s2anet"]

ARF_CONFIG = (1, 8)  # the ODM head's (orientations, rotations), fixed in mmrotate's head


class ORConv2d(nn.Module):
    """mmrotate's ``ORConv2d``: ``weight [O, I, N_o, k, k]``, ``bias [O * N_r]`` and the int32
    ``indices`` buffer (saved in checkpoints); the forward is a plain ``conv2d`` with the weight
    expanded by :func:`~rotdet.ops.orn.active_rotated_filter` (``[B, I * N_o, H, W]`` ->
    ``[B, O * N_r, H, W]``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        arf_config: tuple[int, int] = ARF_CONFIG,
        padding: int = 1,
    ) -> None:
        super().__init__()
        self.num_orientations, self.num_rotations = (int(v) for v in arf_config)
        self.padding = int(padding)
        self.register_buffer(
            "indices", orconv_indices(self.num_orientations, self.num_rotations, kernel_size)
        )
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, self.num_orientations, kernel_size, kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels * self.num_rotations))
        # mmrotate's own reset (the ODM head's init then draws Normal(0, 0.01) over it)
        fan_in = in_channels * self.num_orientations * kernel_size * kernel_size
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / fan_in))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # The table is a function of arf_config (saved by mmrotate, never learnt): another one
        # would rotate the filters wrongly without any error, so refuse it.
        table = state_dict.get(prefix + "indices")
        if table is not None and not torch.equal(table.to(self.indices.device, torch.int32), self.indices):
            error_msgs.append(
                f"{prefix}indices is not the ORConv2d index table of arf_config "
                f"({self.num_orientations}, {self.num_rotations})"
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        weight = active_rotated_filter(self.weight, self.indices)
        return F.conv2d(x, weight.to(x.dtype), self.bias.to(x.dtype), padding=self.padding)


class AlignConv(nn.Module):
    """One level of mmrotate's ``AlignConv``: ``deform_conv`` (torchvision's module, used for its
    weight ``[C_out, C_in, k, k]``, no bias) at the offsets of the rois, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 8) -> None:
        super().__init__()
        self.stride = stride
        self.deform_conv = DeformConv2d(
            in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False
        )
        # mmcv's DeformConv2d init (mmrotate never re-initialises it: AlignConvModule is a plain
        # nn.Module, which mmcv's init_weights does not descend into)
        nn.init.kaiming_uniform_(self.deform_conv.weight, nonlinearity="relu")

    def forward(self, x: Tensor, rois: Tensor) -> Tensor:
        """``x [B, C_in, H, W]``, ``rois [B, H * W, 5]`` -> ``[B, C_out, H, W]``."""
        return align_conv(x, rois, self.deform_conv.weight, self.stride)


class AlignConvModule(nn.Module):
    """mmrotate's ``AlignConvModule``: one :class:`AlignConv` per FPN level (``ac.i``)."""

    def __init__(
        self,
        in_channels: int = 256,
        featmap_strides: Sequence[int] = (8, 16, 32, 64, 128),
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.featmap_strides = [int(s) for s in featmap_strides]
        self.ac = nn.ModuleList(
            [AlignConv(in_channels, in_channels, kernel_size, stride=s) for s in self.featmap_strides]
        )

    def forward(self, feats: Sequence[Tensor], rois: Sequence[Tensor]) -> list[Tensor]:
        """``feats``: per level ``[B, C, H, W]``; ``rois``: per level ``[B, H * W, 5]``."""
        if len(feats) != len(self.ac) or len(rois) != len(feats):
            raise ValueError(f"{len(feats)} levels / {len(rois)} roi levels for {len(self.ac)} strides")
        return [ac(x, r) for ac, x, r in zip(self.ac, feats, rois, strict=True)]


class ODMRefineHead(RotatedRetinaHead):
    """mmrotate's ``ODMRefineHead``: a :class:`~rotdet.models.heads.RotatedRetinaHead` whose anchors
    are given by the caller (one per location: the FAM stage's rois) and whose layers are
    ``or_conv`` (:class:`ORConv2d`, ``feat_channels -> feat_channels / 8`` filters x 8 turns), then
    ``stacked_convs`` 3x3 conv + ReLU per branch (the class branch after rotation-invariant
    pooling, so its first conv reads ``feat_channels / 8`` channels) and ``odm_cls`` / ``odm_reg``.

    ``stacked_convs`` and ``norm_cfg`` are honoured here; mmrotate 0.3.4's head drops them (it
    always builds two plain convs per branch), which is what its configs ask for anyway."""

    def _init_layers(self, stacked_convs: int, norm_cfg: dict | None) -> None:
        n_rot = ARF_CONFIG[1]
        if self.feat_channels % n_rot or self.in_channels != self.feat_channels:
            raise ValueError(
                f"ODMRefineHead: feat_channels ({self.feat_channels}) must be a multiple of {n_rot} "
                f"and equal in_channels ({self.in_channels})"
            )
        filters = self.feat_channels // n_rot
        self.or_conv = ORConv2d(self.feat_channels, filters, kernel_size=3, arf_config=ARF_CONFIG, padding=1)
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(stacked_convs):
            self.reg_convs.append(ConvReLU(self.feat_channels, self.feat_channels, norm_cfg))
            self.cls_convs.append(
                ConvReLU(filters if i == 0 else self.feat_channels, self.feat_channels, norm_cfg)
            )
        self.odm_cls = nn.Conv2d(self.feat_channels, self.num_anchors * self.num_classes, 3, padding=1)
        self.odm_reg = nn.Conv2d(self.feat_channels, self.num_anchors * 5, 3, padding=1)

    def init_weights(self) -> None:
        """mmrotate's init: every conv (the oriented one too) Normal(0, 0.01), zero bias;
        ``odm_cls`` bias for prior 0.01."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | ORConv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.odm_cls.bias, float(-math.log((1 - 0.01) / 0.01)))

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        or_feat = self.or_conv(x)
        return self._cls_branch(or_feat), self._box_branch(or_feat)

    def _cls_branch(self, or_feat: Tensor) -> Tensor:
        x = rotation_invariant_pooling(or_feat, ARF_CONFIG[1])
        for conv in self.cls_convs:
            x = conv(x)
        return self.odm_cls(x)

    def _box_branch(self, or_feat: Tensor) -> Tensor:
        x = or_feat
        for conv in self.reg_convs:
            x = conv(x)
        return self.odm_reg(x)

    def predict_features(
        self, feats: Sequence[Tensor], metas: Sequence[dict], rescale: bool = False, **kwargs
    ) -> list[RotatedDetections] | list[dict[str, Tensor]]:
        """:meth:`~rotdet.models.heads.RotatedRetinaHead.predict` of ``self(feats)`` (both branches
        read the oriented features, so there is no box branch to skip)."""
        cls_scores, bbox_preds = self(feats)
        return self.predict(cls_scores, bbox_preds, metas, rescale=rescale, **kwargs)


class S2ANet(_Detector):
    """mmrotate's ``S2ANet``: backbone + neck, FAM head, alignment convolutions, ODM head."""

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        fam_head: RotatedRetinaHead,
        align_conv: AlignConvModule,
        odm_head: ODMRefineHead,
    ) -> None:
        super().__init__(backbone, neck)
        if fam_head.num_anchors != 1 or fam_head.anchors_from_caller:
            raise ValueError("S2ANet's fam_head needs its own grid of one anchor per location")
        if not odm_head.anchors_from_caller:
            raise ValueError("S2ANet's odm_head takes its anchors from the fam stage (PseudoAnchorGenerator)")
        self.fam_head = fam_head
        self.align_conv = align_conv
        self.odm_head = odm_head

    @property
    def bbox_head(self) -> ODMRefineHead:
        """The head whose outputs are the detections (the engine's name for it; not a separate
        module: the state dict has ``odm_head`` only)."""
        return self.odm_head

    def _stages(
        self, feats: list[Tensor]
    ) -> tuple[tuple[list[Tensor], list[Tensor]], list[Tensor], list[Tensor]]:
        """FAM outputs, the rois (per level ``[B, H * W, 5]``, detached) and the aligned features."""
        fam_outs = self.fam_head(feats)
        sizes = featmap_sizes(fam_outs[0])
        batch = feats[0].shape[0]
        grid = [g[None].expand(batch, -1, -1) for g in self.fam_head.grid_anchors(sizes, feats[0].device)]
        rois = refine_bboxes(fam_outs[1], grid, self.fam_head.bbox_coder.decode)
        return fam_outs, rois, self.align_conv(feats, rois)

    def forward(self, images: Tensor) -> dict[str, object]:
        """Raw outputs: ``{"fam": (cls, reg), "rois": [...], "odm": (cls, reg)}`` per level."""
        fam_outs, rois, aligned = self._stages(self.extract_feat(pad_to_multiple(images)))
        return {"fam": fam_outs, "rois": rois, "odm": self.odm_head(aligned)}

    def forward_train(
        self,
        images: Tensor,
        targets: Sequence[dict],
        metas: Sequence[dict] | None = None,
        per_level: bool = False,
    ) -> dict[str, Tensor]:
        """``{"fam.loss_cls", "fam.loss_bbox", "odm.loss_cls", "odm.loss_bbox"}``: scalars, or ``[L]``."""
        images, metas = self._prepare(images, metas)
        gts = GroundTruths.from_targets(targets, images.device)
        (fam_cls, fam_reg), rois, aligned = self._stages(self.extract_feat(images))
        losses = {
            f"fam.{k}": v for k, v in dense_head_losses(self.fam_head, fam_cls, fam_reg, gts, metas).items()
        }
        odm_cls, odm_reg = self.odm_head(aligned)
        odm = dense_head_losses(self.odm_head, odm_cls, odm_reg, gts, metas, priors=rois)
        losses.update({f"odm.{k}": v for k, v in odm.items()})
        return self._reduce(losses, per_level)

    @torch.no_grad()
    def predict(
        self, images: Tensor, metas: Sequence[dict] | None = None, rescale: bool = True, **kwargs
    ) -> list[RotatedDetections] | list[dict[str, Tensor]]:
        """Per image detections of the ODM head, its anchors the rois."""
        images, metas = self._prepare(images, metas)
        _, rois, aligned = self._stages(self.extract_feat(images))
        return self.odm_head.predict_features(aligned, metas, rescale=rescale, anchors=rois, **kwargs)


def build_s2anet(model: dict) -> S2ANet:
    """An :class:`S2ANet` from mmrotate's ``model`` dict (``fam_head``, ``align_cfgs``, ``odm_head``,
    ``train_cfg`` with ``fam_cfg`` / ``odm_cfg``, ``test_cfg``), its heads built and checked by
    :func:`rotdet.models.factory.build_head`."""
    m = factory._take(
        model,
        "model",
        {"backbone", "neck", "fam_head", "align_cfgs", "odm_head", "train_cfg", "test_cfg", "pretrained"},
    )
    if m.pop("pretrained", None) is not None:
        raise ValueError("S2ANet: set model.backbone.pretrained, not model.pretrained")
    backbone = ResNetBackbone.from_config(m["backbone"])
    neck = FPN.from_config(m["neck"], backbone.out_channels)
    train_cfg = m.get("train_cfg")
    if train_cfg is not None:
        train_cfg = factory._take(train_cfg, "train_cfg", {"fam_cfg", "odm_cfg"})
    test_cfg = m.get("test_cfg")
    fam = factory.build_head(m["fam_head"], train_cfg["fam_cfg"] if train_cfg else None, test_cfg)
    align = factory._take(
        m["align_cfgs"], "align_cfgs", {"kernel_size", "channels", "featmap_strides"}, {"AlignConv"}
    )
    odm_cfg = m["odm_head"]
    # build_head reads it as the refine head it is (anchors from the caller), with ODM layers;
    # mmrotate's KFIoU variant is the same head with the KFLoss
    as_refine = {"ODMRefineHead": "RotatedRetinaRefineHead", "KFIoUODMRefineHead": "KFIoURRetinaRefineHead"}
    if odm_cfg.get("type") not in as_refine:
        raise ValueError(
            f"odm_head: type {odm_cfg.get('type')!r} is not supported; expected one of {sorted(as_refine)}"
        )
    odm = factory.build_head(
        {**odm_cfg, "type": as_refine[odm_cfg["type"]]},
        train_cfg["odm_cfg"] if train_cfg else None,
        test_cfg,
        head_class=ODMRefineHead,
    )
    channels = int(align.get("channels", 256))
    if channels != neck.out_channels:
        raise ValueError(
            f"align_cfgs.channels ({channels}) must equal the neck's out_channels ({neck.out_channels})"
        )
    strides = align.get("featmap_strides", (8, 16, 32, 64, 128))
    return S2ANet(
        backbone, neck, fam, AlignConvModule(channels, strides, int(align.get("kernel_size", 3))), odm
    )
