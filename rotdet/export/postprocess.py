"""After the exported graph: score threshold, class-wise rotated NMS and ``max_per_img``.

:func:`candidates_to_detections` takes the graph's candidates (``boxes [B, K, 5]``, ``scores
[B, K, C]``: :class:`rotdet.export.graph.CandidateGraph`) and finishes them exactly as
:func:`rotdet.models.postprocess.dense_detections` finishes the same candidates in the PyTorch path:

* centres clamped to each window's ``img_shape`` (the graph clamps to the full window; for a window
  that fills the input this is a no-op, and ``min(min(x, S - 1), w - 1) = min(x, w - 1)``, and the
  clamp commutes with the coder's edge swap, which does not touch the centre);
* boxes divided by the window's ``scale_factor`` (back to the window as cut);
* candidates with a class score ``> score_thr``, flattened image-major, then candidate, then class
  (``nonzero`` order), so that equal scores are visited in the same order by the NMS;
* :func:`rotdet.ops.batched_nms_rotated` with groups (image, class) at ``test_cfg``'s IoU, each
  image's kept boxes in descending score order, at most ``max_per_img`` of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rotdet.ops import batched_nms_rotated

__all__ = ["candidates_to_detections"]


def candidates_to_detections(
    boxes: Tensor,
    scores: Tensor,
    metas: Sequence[dict],
    score_thr: float,
    iou_thr: float,
    max_per_img: int,
    rescale: bool = True,
) -> list[dict[str, Tensor]]:
    """Per image ``{"boxes": [k, 5], "scores": [k], "labels": [k]}`` by descending score.

    Args:
        boxes, scores: the graph's outputs ``[B, K, 5]`` / ``[B, K, C]`` (float32).
        metas: per window ``img_shape`` (h, w[, c]) and, when ``rescale``, ``scale_factor``.
        score_thr, iou_thr, max_per_img: the final head's ``test_cfg``.
    """
    batch, _, num_classes = scores.shape
    if len(metas) != batch:
        raise ValueError(f"{batch} windows but {len(metas)} metadata dicts")
    device = boxes.device
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
        factors = torch.stack(
            [
                torch.as_tensor(m["scale_factor"], dtype=boxes.dtype, device=device).reshape(-1)[:4]
                for m in metas
            ]
        )
        boxes = torch.cat([boxes[..., :4] / factors[:, None, :], boxes[..., 4:]], dim=2)

    img, cand, label = (scores > score_thr).nonzero(as_tuple=True)
    cand_boxes = boxes[img, cand]
    cand_scores = scores[img, cand, label]
    keep = batched_nms_rotated(cand_boxes, cand_scores, img * num_classes + label, iou_thr)
    keep_img = img[keep]
    keep = keep[torch.sort(keep_img, stable=True).indices]
    counts = torch.bincount(keep_img, minlength=batch).tolist()
    results = []
    for mine in keep.split(counts):
        if max_per_img > 0:
            mine = mine[:max_per_img]
        results.append({"boxes": cand_boxes[mine], "scores": cand_scores[mine], "labels": label[mine]})
    return results
