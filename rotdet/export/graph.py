"""The exported graph: windows in, the candidates that go into NMS out, static shapes throughout.

:class:`CandidateGraph` wraps a :mod:`rotdet.models` detector (Rotated RetinaNet / ATSS, R3Det,
S2A-Net, Rotated FCOS or Oriented R-CNN) for a fixed window size ``S``:

* input ``images``: uint8 ``[B, S, S, 3]``, BGR (OpenCV's layout, what the split tool writes), the
  batch size free;
* in the graph: the test pipeline's ``Normalize`` (float32, BGR -> RGB when the config says
  ``to_rgb``, ``(x - mean) / std``: mmcv's ``imnormalize`` bit for bit), then the backbone, the neck and
  the head layers (R3Det: every refinement stage with its feature alignment; S2A-Net: the FAM head,
  the alignment convolutions as :func:`rotdet.ops.align_conv.deform_conv2d_gather`, the ODM head);
* per FPN level the ``nms_pre`` anchors with the best class score (``topk``; every anchor when the
  level has no more than ``nms_pre``), decoded by the head's box coder with the centre clamp to the
  window, exactly as :func:`rotdet.models.postprocess.dense_detections` selects them;
* outputs ``boxes`` float32 ``[B, K, 5]`` (the config's angle version, window pixels) and
  ``scores`` float32 ``[B, K, C]`` (sigmoid), ``K = sum_l min(nms_pre, N_l)``; Rotated FCOS also
  ``score_factors`` ``[B, K]`` (its centre-ness: it selects by score x centre-ness, and its
  decoder does not clamp centres, see :attr:`CandidateGraph.clamps_centres`).

Oriented R-CNN holds both stages: the RPN's per-level top ``test_cfg.rpn.nms_pre`` anchors,
decoded by the midpoint-offset coder; their NMS (circumscribed horizontal boxes, levels apart, as
mmcv's ``batched_nms``) as a keep mask, :func:`rotdet.ops.hbb_nms.nms_keep_mask`, which the ONNX
export writes as ONNX's ``NonMaxSuppression``; the ``max_per_img`` best kept proposals (a top-k over
the scores with the suppressed ones put below every kept one); rotated RoI Align of every proposal
from its level in one gather (:meth:`~rotdet.models.roi_extractor.RotatedSingleRoIExtractor.forward_static`);
the 2-FC head; outputs ``boxes [B, P, 5]`` (decoded on each proposal, centres clamped to the
window) and ``scores [B, P, C]`` (softmax without the background; 0 for a padding proposal when
fewer than ``P`` survive the NMS).

Anchors are buffers (constants in the graph); there is no ``nonzero``, boolean indexing or other
data-dependent shape (but the proposal NMS's own output, which goes straight into a fixed-size
mask), and nothing of :mod:`rotdet.ops` but the pure-PyTorch feature alignment, deformable
convolution and rotated RoI Align (the Triton IoU kernel and the rotated NMS stay outside). Score
threshold, class-wise NMS and ``max_per_img`` run after the graph
(:func:`rotdet.export.postprocess.candidates_to_detections`).

The head layers are called through their public pieces (``extract_feat``, ``head(feats)``, the
heads' ``bbox_coder`` and ``anchor_generator``, R3Det's ``feat_refine_module``, S2A-Net's
``fam_head``, ``align_conv`` weights and ``odm_head``); what the heads do between them at inference
(R3Det's ``filter_bboxes`` / ``refine_bboxes``, S2A-Net's rois and offsets, the per-level top-k) is
restated here on static shapes and checked against the model by ``tests/test_export.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rotdet.models.detectors import SIZE_DIVISOR, R3Det, RotatedSingleStageDetector
from rotdet.models.fcos import RotatedFCOS
from rotdet.models.oriented_rcnn import OrientedRCNN
from rotdet.models.s2anet import S2ANet
from rotdet.ops.align_conv import align_conv_offsets, deform_conv2d_gather
from rotdet.ops.hbb_nms import batched_nms_hbb_mask
from rotdet.structures.conversions import obb2xyxy

__all__ = ["CandidateGraph", "featmap_sizes", "num_candidates"]


def _first_head(model: nn.Module) -> nn.Module:
    """The head on the grid anchors (S2A-Net's FAM head, Oriented R-CNN's RPN, otherwise
    ``bbox_head``)."""
    if isinstance(model, OrientedRCNN):
        return model.rpn_head
    return model.fam_head if isinstance(model, S2ANet) else model.bbox_head


def featmap_sizes(model: nn.Module, size: int) -> list[tuple[int, int]]:
    """Per-level feature-map sizes of a ``size`` x ``size`` window (run once, on the CPU)."""
    head = _first_head(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            param = next(model.parameters())
            x = torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)
            cls_scores = head(model.extract_feat(x))[0]
    finally:
        model.train(was_training)
    return [(int(c.shape[-2]), int(c.shape[-1])) for c in cls_scores]


def num_candidates(level_anchors: Sequence[int], nms_pre: int) -> int:
    """``K``: what the per-level selection keeps of ``level_anchors`` anchors."""
    return sum(nms_pre if 0 < nms_pre < n else n for n in level_anchors)


def _stable_top(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest of each row of ``values [B, N]``, equal values by index (a stable descending
    sort): ONNX's TopK promises that order, so the ONNX export writes a TopK (whose exporter has no
    stable sort); eager and ``torch.export`` sort."""
    if torch.jit.is_tracing():
        return values.topk(k, dim=1)
    ranked, order = values.sort(dim=1, descending=True, stable=True)
    return ranked[:, :k], order[:, :k]


def _check_oriented_rcnn(model: OrientedRCNN) -> None:
    """ValueError (one line) for what the static graph does not restate."""
    rpn_cfg = model.rpn_head.test_cfg
    if rpn_cfg.min_bbox_size > 0:
        raise ValueError("cannot export an Oriented R-CNN with test_cfg.rpn.min_bbox_size > 0")
    extractor = model.roi_head.bbox_roi_extractor
    if extractor.roi_layers[0].sampling_ratio <= 0:
        raise ValueError("cannot export an Oriented R-CNN whose RoI Align has sampling_ratio 0 (adaptive)")
    if not model.roi_head.bbox_head.reg_class_agnostic:
        raise ValueError("cannot export an Oriented R-CNN with reg_class_agnostic=False (a box per class)")


class CandidateGraph(nn.Module):
    """``images uint8 [B, S, S, 3] (BGR)`` -> ``(boxes [B, K, 5], scores [B, K, C])``.

    Args:
        model: a :class:`~rotdet.models.detectors.RotatedSingleStageDetector`,
            :class:`~rotdet.models.detectors.R3Det`, :class:`~rotdet.models.s2anet.S2ANet`,
            :class:`~rotdet.models.fcos.RotatedFCOS` or :class:`~rotdet.models.oriented_rcnn.OrientedRCNN`
            (eval mode; its weights are shared, not copied).
        size: the window size ``S`` (a multiple of 32).
        mean, std, to_rgb: the config's ``img_norm`` (mean / std in RGB order when ``to_rgb``).
        nms_pre: the final head's ``test_cfg.nms_pre`` (Oriented R-CNN: unused, its RPN's
            ``test_cfg.rpn`` decides).
    """

    def __init__(
        self,
        model: nn.Module,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        to_rgb: bool,
        nms_pre: int,
    ) -> None:
        super().__init__()
        if not isinstance(model, (RotatedSingleStageDetector, R3Det, S2ANet, RotatedFCOS, OrientedRCNN)):
            # A ValueError, so the command line prints one line.
            raise ValueError(
                f"cannot export a {type(model).__name__}: rotdet export takes RetinaNet / ATSS, "
                "R3Det, S2A-Net, Rotated FCOS and Oriented R-CNN models"
            )
        if isinstance(model, OrientedRCNN):
            _check_oriented_rcnn(model)
        if size < SIZE_DIVISOR or size % SIZE_DIVISOR:
            raise ValueError(f"the input size must be a multiple of {SIZE_DIVISOR} (>= 32), got {size}")
        self.model = model
        self.size = int(size)
        self.to_rgb = bool(to_rgb)
        self.nms_pre = int(nms_pre)
        self.is_r3det = isinstance(model, R3Det)
        self.is_s2anet = isinstance(model, S2ANet)
        self.is_fcos = isinstance(model, RotatedFCOS)
        self.is_two_stage = isinstance(model, OrientedRCNN)
        if self.is_two_stage:  # the proposals' top-k is the RPN's (test_cfg.rpn)
            self.nms_pre = int(model.rpn_head.test_cfg.nms_pre)
        self.architecture = type(model).__name__
        # Rotated FCOS ranks and suppresses by score x centre-ness (a third output) and, as
        # mmrotate's, never clamps its centres to the image
        self.output_names = ("boxes", "scores", "score_factors") if self.is_fcos else ("boxes", "scores")
        self.clamps_centres = not self.is_fcos
        self.final_head = model.refine_head[-1] if self.is_r3det else model.bbox_head
        self.num_classes = int(self.final_head.num_classes)
        # mmcv's imnormalize: OpenCV subtracts the mean from the float32 image (exact in float32)
        # and multiplies by 1 / std in double, rounding once; over the 256 values of a uint8
        # channel that is float32 ``(x - mean) / std`` bit for bit (checked by the tests).
        self.register_buffer("mean", torch.from_numpy(np.float32(mean)), persistent=False)
        self.register_buffer("std", torch.from_numpy(np.float32(std)), persistent=False)
        self.sizes = featmap_sizes(model, self.size)
        device = self.mean.device
        if self.is_fcos:  # its priors are the points, one per location
            anchors = model.bbox_head.points(self.sizes, device)
        elif self.is_two_stage:  # horizontal xyxy anchors
            anchors = model.rpn_head.level_anchors(self.sizes, device)
        else:
            anchors = _first_head(model).anchor_generator.grid_anchors(
                self.sizes, device=device, dtype=torch.float32
            )
        self.level_anchors = [int(a.shape[0]) for a in anchors]
        for i, a in enumerate(anchors):
            self.register_buffer(f"anchors_{i}", a.contiguous(), persistent=False)
        # R3Det's refine heads and S2A-Net's ODM head have one anchor (a refined box) per location
        final_per_level = (
            [h * w for h, w in self.sizes]
            if self.is_r3det or self.is_s2anet
            else [int(a.shape[0]) for a in anchors]
        )
        self.num_candidates = num_candidates(final_per_level, self.nms_pre)
        if self.is_two_stage:  # the RoI head's candidates: one per proposal
            self.num_proposals_before_nms = self.num_candidates
            max_proposals = int(model.rpn_head.test_cfg.max_per_img)
            if 0 < max_proposals < self.num_candidates:
                self.num_candidates = max_proposals

    def _anchors(self) -> list[Tensor]:
        return [getattr(self, f"anchors_{i}") for i in range(len(self.sizes))]

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 ``[B, S, S, 3]`` BGR -> float32 ``[B, 3, S, S]`` as the test pipeline's Normalize."""
        x = images.to(torch.float32)
        if self.to_rgb:
            x = x.flip(-1)
        x = (x - self.mean) / self.std
        return x.permute(0, 3, 1, 2)

    # ------------------------------------------------------------------ R3Det's stages
    def _filter_bboxes(self, head, cls_scores: list[Tensor], bbox_preds: list[Tensor]) -> list[Tensor]:
        """``RotatedRetinaHead.filter_bboxes``: per location the best-scoring anchor, decoded (one
        decode for every level: the coder works box by box, so the boxes are the same)."""
        batch = cls_scores[0].shape[0]
        a, c = head.num_anchors, head.num_classes
        best_anchors, best_preds = [], []
        for cls, reg, anc in zip(cls_scores, bbox_preds, self._anchors(), strict=True):
            score = cls.float().permute(0, 2, 3, 1).reshape(batch, -1, a, c).max(dim=-1).values
            best = score.argmax(dim=-1, keepdim=True)[..., None].expand(-1, -1, -1, 5)  # [B, HW, 1, 5]
            pred = reg.float().permute(0, 2, 3, 1).reshape(batch, -1, a, 5)
            best_preds.append(pred.gather(2, best).squeeze(2))
            anchors = anc.reshape(1, -1, a, 5).expand(batch, -1, -1, -1)
            best_anchors.append(anchors.gather(2, best).squeeze(2))
        boxes = head.bbox_coder.decode(torch.cat(best_anchors, dim=1), torch.cat(best_preds, dim=1))
        return list(boxes.split([h * w for h, w in self.sizes], dim=1))

    def _refine_bboxes(self, head, bbox_preds: list[Tensor], rois: list[Tensor]) -> list[Tensor]:
        """``RotatedRetinaHead.refine_bboxes`` with the rois given (a refine head), one decode."""
        batch = bbox_preds[0].shape[0]
        deltas = torch.cat([reg.float().permute(0, 2, 3, 1).reshape(batch, -1, 5) for reg in bbox_preds], 1)
        boxes = head.bbox_coder.decode(torch.cat(rois, dim=1), deltas)
        return list(boxes.split([h * w for h, w in self.sizes], dim=1))

    def _s2anet_outputs(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """S2A-Net: the FAM head's boxes on the grid anchors are the rois; each level read again by
        its alignment convolution at the rois' offsets, ReLU; the ODM head on that."""
        model = self.model
        batch = feats[0].shape[0]
        _, fam_reg = model.fam_head(feats)
        grid = [a[None].expand(batch, -1, -1) for a in self._anchors()]
        rois = self._refine_bboxes(model.fam_head, fam_reg, grid)
        aligned = []
        for x, roi, ac, size in zip(feats, rois, model.align_conv.ac, self.sizes, strict=True):
            weight = ac.deform_conv.weight
            k = int(weight.shape[-1])
            offsets = align_conv_offsets(roi, size, ac.stride, k)
            out = deform_conv2d_gather(x.float(), offsets.float(), weight.float(), (k - 1) // 2)
            aligned.append(torch.relu(out).to(x.dtype))
        cls_scores, bbox_preds = model.odm_head(aligned)
        return cls_scores, bbox_preds, rois

    def _head_outputs(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """The final head's per-level logits, deltas and priors ``[B, N_l, 5]`` (or ``[N_l, 5]``)."""
        model = self.model
        if self.is_s2anet:
            return self._s2anet_outputs(feats)
        cls_scores, bbox_preds = model.bbox_head(feats)
        if not self.is_r3det:
            return cls_scores, bbox_preds, self._anchors()
        rois = self._filter_bboxes(model.bbox_head, cls_scores, bbox_preds)
        for i in range(model.num_refine_stages):
            x_refine = model.feat_refine_module[i](feats, rois)
            cls_scores, bbox_preds = model.refine_head[i](x_refine)
            if i + 1 < model.num_refine_stages:
                rois = self._refine_bboxes(model.refine_head[i], bbox_preds, rois)
        return cls_scores, bbox_preds, rois

    def _fcos_candidates(self, feats: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated FCOS: per level the ``nms_pre`` points with the best score x centre-ness, decoded
        from their distances and angle (``RotatedFCOSHead.predict``, batched)."""
        head = self.model.bbox_head
        batch, c = feats[0].shape[0], self.num_classes
        boxes_l, scores_l, factors_l = [], [], []
        outputs = zip(*head(feats), self._anchors(), strict=True)
        for cls, reg, ang, ctr, pts in outputs:
            scores = cls.float().permute(0, 2, 3, 1).reshape(batch, -1, c).sigmoid()
            factors = ctr.float().permute(0, 2, 3, 1).reshape(batch, -1).sigmoid()
            n = scores.shape[1]
            angles = head.decode_angle(ang.float().permute(0, 2, 3, 1).reshape(batch * n, -1))
            dist = torch.cat(
                [reg.float().permute(0, 2, 3, 1).reshape(batch, n, 4), angles.reshape(batch, n, 1)], 2
            )
            pts = pts[None].expand(batch, -1, -1)
            if 0 < self.nms_pre < n:
                top = (scores * factors[..., None]).max(dim=2).values.topk(self.nms_pre, dim=1).indices
                pts = pts.gather(1, top[..., None].expand(-1, -1, 2))
                dist = dist.gather(1, top[..., None].expand(-1, -1, 5))
                scores = scores.gather(1, top[..., None].expand(-1, -1, c))
                factors = factors.gather(1, top)
            k = pts.shape[1]
            boxes_l.append(
                head.bbox_coder.decode(pts.reshape(-1, 2), dist.reshape(-1, 5)).reshape(batch, k, 5)
            )
            scores_l.append(scores)
            factors_l.append(factors)
        return torch.cat(boxes_l, dim=1), torch.cat(scores_l, dim=1), torch.cat(factors_l, dim=1)

    def _two_stage_candidates(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Oriented R-CNN: the RPN's proposals (:meth:`~rotdet.models.rpn.OrientedRPNHead.proposals`
        in static shapes), then the RoI head's decoded boxes and class scores on every proposal."""
        model = self.model
        rpn, roi_head = model.rpn_head, model.roi_head
        batch = feats[0].shape[0]
        cls_scores, bbox_preds = rpn(feats)
        scores_l, deltas_l, anchors_l = [], [], []
        for cls, reg, anchors in zip(cls_scores, bbox_preds, self._anchors(), strict=True):
            scores = cls.float().permute(0, 2, 3, 1).reshape(batch, -1).sigmoid()
            deltas = reg.float().permute(0, 2, 3, 1).reshape(batch, -1, 6)
            anchors = anchors[None].expand(batch, -1, -1)
            if 0 < self.nms_pre < scores.shape[1]:
                # the RPN's stable sort (ONNX's TopK also puts equal scores by index): the NMS
                # then sees the proposals in the same order and keeps the same ones among ties
                scores, top = _stable_top(scores, self.nms_pre)
                deltas = deltas.gather(1, top[..., None].expand(-1, -1, 6))
                anchors = anchors.gather(1, top[..., None].expand(-1, -1, 4))
            scores_l.append(scores)
            deltas_l.append(deltas)
            anchors_l.append(anchors)
        scores = torch.cat(scores_l, dim=1)
        anchors, deltas = torch.cat(anchors_l, dim=1), torch.cat(deltas_l, dim=1)
        boxes = rpn.bbox_coder.decode(anchors.reshape(-1, 4), deltas.reshape(-1, 6)).reshape(batch, -1, 5)
        # the levels' NMS as a mask; suppressed proposals rank below every kept one (scores >= 0)
        kept = batched_nms_hbb_mask(
            obb2xyxy(boxes, rpn.version), scores, [s.shape[1] for s in scores_l], rpn.test_cfg.iou_thr
        )
        ranked, top = _stable_top(torch.where(kept, scores, -1.0), self.num_candidates)
        proposals = boxes.gather(1, top[..., None].expand(-1, -1, 5))
        roi_feats = roi_head.bbox_roi_extractor.forward_static(feats[: roi_head._num_inputs()], proposals)
        cls_score, bbox_pred = roi_head.bbox_head(roi_feats)
        c = self.num_classes
        # fewer proposals than candidates survive the NMS only on a nearly empty window: the
        # others score 0 and never pass the threshold
        scores = F.softmax(cls_score.float(), dim=-1)[:, :c].reshape(batch, -1, c)
        scores = scores * (ranked >= 0).to(scores)[..., None]
        boxes = self.final_head.bbox_coder.decode(
            proposals.reshape(-1, 5), bbox_pred.float(), max_shape=(self.size, self.size)
        )
        return boxes.reshape(batch, -1, 5), scores

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        batch = images.shape[0]
        c = self.num_classes
        if self.is_fcos:
            return self._fcos_candidates(self.model.extract_feat(self.normalize(images)))
        if self.is_two_stage:
            return self._two_stage_candidates(self.model.extract_feat(self.normalize(images)))
        cls_scores, bbox_preds, priors = self._head_outputs(self.model.extract_feat(self.normalize(images)))
        priors_l, deltas_l, scores_l = [], [], []
        for cls, reg, prior in zip(cls_scores, bbox_preds, priors, strict=True):
            scores = cls.float().permute(0, 2, 3, 1).reshape(batch, -1, c).sigmoid()
            deltas = reg.float().permute(0, 2, 3, 1).reshape(batch, -1, 5)
            if prior.dim() == 2:
                prior = prior[None].expand(batch, -1, -1)
            if 0 < self.nms_pre < scores.shape[1]:
                top = scores.max(dim=2).values.topk(self.nms_pre, dim=1).indices[..., None]  # [B, k, 1]
                prior = prior.gather(1, top.expand(-1, -1, 5))
                deltas = deltas.gather(1, top.expand(-1, -1, 5))
                scores = scores.gather(1, top.expand(-1, -1, c))
            priors_l.append(prior)
            deltas_l.append(deltas)
            scores_l.append(scores)
        boxes = self.final_head.bbox_coder.decode(
            torch.cat(priors_l, dim=1), torch.cat(deltas_l, dim=1), max_shape=(self.size, self.size)
        )
        return boxes, torch.cat(scores_l, dim=1)
