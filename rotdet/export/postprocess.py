"""After the exported graph: score threshold, class-wise rotated NMS and ``max_per_img``.

:func:`candidates_to_detections` takes the graph's candidates (``boxes [B, K, 5]``, ``scores
[B, K, C]``: :class:`rotdet.export.graph.CandidateGraph`) and finishes them exactly as
:func:`rotdet.models.postprocess.dense_detections` finishes the same candidates in the PyTorch path:

* centres clamped to each window's ``img_shape`` (the graph clamps to the full window; for a window
  that fills the input this is a no-op, and ``min(min(x, S - 1), w - 1) = min(x, w - 1)``, and the
  clamp commutes with the coder's edge swap, which does not touch the centre);
* boxes divided by the window's ``scale_factor`` (back to the window as cut);
* then the same :func:`rotdet.models.postprocess.select_detections` (score threshold, class-wise
  rotated NMS, ``max_per_img``) as the PyTorch path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rotdet.models.postprocess import select_detections, unscale_boxes
from rotdet.structures.detections import RotatedDetections

__all__ = ["candidates_to_detections"]


def candidates_to_detections(
    boxes: Tensor,
    scores: Tensor,
    metas: Sequence[dict],
    score_thr: float,
    iou_thr: float,
    max_per_img: int,
    rescale: bool = True,
    angle_version: str = "oc",
    score_factors: Tensor | None = None,
    clamp_centres: bool = True,
) -> list[RotatedDetections]:
    """Per image :class:`~rotdet.structures.RotatedDetections` by descending score.

    Args:
        boxes, scores: the graph's outputs ``[B, K, 5]`` / ``[B, K, C]`` (float32).
        metas: per window ``img_shape`` (h, w[, c]) and, when ``rescale``, ``scale_factor``.
        score_thr, iou_thr, max_per_img: the final head's ``test_cfg``.
        angle_version: the boxes' convention (the export's metadata).
        score_factors: Rotated FCOS's ``[B, K]`` centre-ness, multiplied into the scores that pass
            the threshold (mmrotate's ``score_factors``).
        clamp_centres: clamp the centres to each window (the anchor heads' decoders do; Rotated
            FCOS's does not).
    """
    batch = scores.shape[0]
    if len(metas) != batch:
        raise ValueError(f"{batch} windows but {len(metas)} metadata dicts")
    if not clamp_centres:
        if rescale:
            boxes = unscale_boxes(boxes, metas)
        return select_detections(
            boxes, scores, metas, score_thr, iou_thr, max_per_img, angle_version, score_factors
        )
    xmax = boxes.new_tensor([float(m["img_shape"][1] - 1) for m in metas])[:, None]
    ymax = boxes.new_tensor([float(m["img_shape"][0] - 1) for m in metas])[:, None]
    boxes = torch.cat(
        [
            torch.minimum(boxes[..., :1], xmax[..., None]),
            torch.minimum(boxes[..., 1:2], ymax[..., None]),
            boxes[..., 2:],
        ],
        dim=2,
    )
    if rescale:
        boxes = unscale_boxes(boxes, metas)

    return select_detections(
        boxes, scores, metas, score_thr, iou_thr, max_per_img, angle_version, score_factors
    )
