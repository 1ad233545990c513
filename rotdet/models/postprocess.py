"""Dense-head inference for a whole batch at once: top-k per level, decode, score filter, NMS.

mmrotate walks the images of a batch one by one (``_get_bboxes_single``). The result of each step
does not depend on the other images, so the same steps run on ``[B, ...]`` tensors and the class-wise
NMS of every image runs as a single NMS whose groups are (image, class) pairs. That removes the
per-image launches and syncs that dominate inference on a GPU, and gives the same detections:

* per level, per image, the ``nms_pre`` anchors with the best class score (``topk`` over a row);
* candidates are flattened image-major, then anchor, then class, as mmrotate flattens one image's
  ``[N, C]`` scores, so equal scores are kept in the same order;
* a box only suppresses boxes of its own image and class;
* each image keeps its ``max_per_img`` best detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rotdet.ops import batched_nms_rotated
from rotdet.structures.detections import RotatedDetections

__all__ = ["TestConfig", "dense_detections", "select_detections", "unscale_boxes"]


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


def dense_detections(
    cls_scores: Sequence[Tensor],
    bbox_preds: Sequence[Tensor],
    level_anchors: Sequence[Tensor],
    decode,
    num_classes: int,
    metas: Sequence[dict],
    nms_pre: int,
    score_thr: float,
    iou_thr: float,
    max_per_img: int,
    rescale: bool,
    with_nms: bool = True,
    angle_version: str = "oc",
) -> list[RotatedDetections] | list[dict[str, Tensor]]:
    """Detections of every image of a batch.

    Args:
        cls_scores: per level ``[B, A * C, H, W]`` class logits.
        bbox_preds: per level ``[B, A * 5, H, W]`` deltas.
        level_anchors: per level ``[B, H * W * A, 5]`` priors (anchors, or R3Det's refined boxes).
        decode: ``decode(priors [B, K, 5], deltas [B, K, 5], max_shape=[(h, w)] * B) -> [B, K, 5]``.
        num_classes: C.
        metas: per image dicts with ``img_shape`` and, when ``rescale``, ``scale_factor``.
        nms_pre, score_thr, iou_thr, max_per_img: mmrotate's ``test_cfg``.
        rescale: divide boxes by each image's scale factor (back to the original image).
        with_nms: if False, return the decoded candidates ``{"boxes": [M, 5], "scores": [M, C]}``
            (what goes into NMS: not detections yet).
        angle_version: the convention of the decoded boxes (the coder's ``angle_range``).

    Returns:
        per image :class:`~rotdet.structures.RotatedDetections` (tensors on the inputs' device,
        ``image_id`` from the meta's ``id``) by descending score.
    """
    batch = cls_scores[0].shape[0]
    anchors_l, deltas_l, scores_l = [], [], []
    max_shape = [tuple(m["img_shape"][:2]) for m in metas]
    for cls, reg, anchors in zip(cls_scores, bbox_preds, level_anchors, strict=True):
        scores = cls.float().permute(0, 2, 3, 1).reshape(batch, -1, num_classes).sigmoid()
        deltas = reg.float().permute(0, 2, 3, 1).reshape(batch, -1, 5)
        anchors = anchors.float()
        if 0 < nms_pre < scores.shape[1]:
            top = scores.max(dim=2).values.topk(nms_pre, dim=1).indices  # [B, nms_pre]
            anchors = anchors.gather(1, top[..., None].expand(-1, -1, 5))
            deltas = deltas.gather(1, top[..., None].expand(-1, -1, 5))
            scores = scores.gather(1, top[..., None].expand(-1, -1, num_classes))
        anchors_l.append(anchors)
        deltas_l.append(deltas)
        scores_l.append(scores)
    # Decoding works box by box: one call for all levels gives the same boxes as one per level.
    boxes = decode(torch.cat(anchors_l, dim=1), torch.cat(deltas_l, dim=1), max_shape=max_shape)  # [B, K, 5]
    scores = torch.cat(scores_l, dim=1)  # [B, K, C]
    if rescale:
        boxes = unscale_boxes(boxes, metas)
    if not with_nms:
        return [{"boxes": boxes[i], "scores": scores[i]} for i in range(batch)]

    return select_detections(boxes, scores, metas, score_thr, iou_thr, max_per_img, angle_version)


def unscale_boxes(boxes: Tensor, metas: Sequence[dict]) -> Tensor:
    """``[B, K, 5]`` boxes divided by each image's ``scale_factor`` (back to the image as loaded;
    the angle is unchanged)."""
    factors = torch.stack(
        [
            torch.as_tensor(m["scale_factor"], dtype=boxes.dtype, device=boxes.device).reshape(-1)[:4]
            for m in metas
        ]
    )
    return torch.cat([boxes[..., :4] / factors[:, None, :], boxes[..., 4:]], dim=2)


def select_detections(
    boxes: Tensor,
    scores: Tensor,
    metas: Sequence[dict],
    score_thr: float,
    iou_thr: float,
    max_per_img: int,
    angle_version: str = "oc",
    score_factors: Tensor | None = None,
) -> list[RotatedDetections]:
    """Decoded candidates to detections: mmrotate's ``multiclass_nms_rotated`` for a whole batch.

    Args:
        boxes: ``[B, K, 5]`` decoded candidate boxes; scores: ``[B, K, C]`` class scores.
        metas: per image dicts (``id`` names the detections).
        score_thr, iou_thr, max_per_img: ``test_cfg``.
        score_factors: optional ``[B, K]`` factors multiplied into the scores after the threshold
            (Rotated FCOS's centre-ness).

    Candidates with a class score ``> score_thr`` are flattened image-major, then candidate, then
    class (``nonzero`` order, as mmrotate flattens one image's ``[N, C]`` scores, so equal scores are
    visited in the same order), suppressed by rotated NMS within their (image, class) group, and
    each image keeps its ``max_per_img`` best.
    """
    batch, _, num_classes = scores.shape
    img, anchor, label = (scores > score_thr).nonzero(as_tuple=True)
    cand_boxes = boxes[img, anchor]
    cand_scores = scores[img, anchor, label]
    if score_factors is not None:
        cand_scores = cand_scores * score_factors[img, anchor]
    keep = batched_nms_rotated(cand_boxes, cand_scores, img * num_classes + label, iou_thr)
    # Group the kept boxes by image (a stable sort keeps each image's score order): one host sync
    # for the counts instead of one per image.
    keep_img = img[keep]
    keep = keep[torch.sort(keep_img, stable=True).indices]
    # (bincount would sync once more on a GPU to size its output)
    counts = torch.zeros(batch, dtype=torch.long, device=boxes.device).index_add_(
        0, keep_img, torch.ones_like(keep_img)
    )
    results = []
    for meta, mine in zip(metas, keep.split(counts.tolist()), strict=True):
        if max_per_img > 0:
            mine = mine[:max_per_img]
        image_id = meta.get("id", "image")
        results.append(
            RotatedDetections(cand_boxes[mine], cand_scores[mine], label[mine], angle_version, image_id)
        )
    return results
