"""mAP exactly as mmrotate 0.3.4's ``eval_rbbox_map`` computes it (what its ``DOTADataset.evaluate``
reports on split patches).

Semantics reproduced (from mmrotate 0.3.4 ``core/evaluation/eval_map.py`` and mmdet 2.x):

* per class and image, each detection's best ground truth is the ``argmax`` (first maximum) of its
  rotated IoUs with the image's ground truths followed by its ignored ground truths; it matches when
  that IoU is **>=** ``iou_thr``. Detections are visited by descending score (per image,
  ``np.argsort(-score)``): the first to match a ground truth is a TP, later ones are FPs (even if
  another free ground truth overlaps them enough), and one whose best is an ignored ground truth is
  neither. Unmatched detections are FPs;
* IoU: float32 boxes, :func:`rotdet.ops.box_iou_rotated` (exact, rounded to float32 as mmcv returns);
* the class's detections are ranked with ``np.argsort(-score)`` over all images stacked in order,
  TP/FP cumulated in float32, recall ``tp / max(num_gts, eps)``, precision in float32, and the AP is
  mmdet's ``average_precision`` (VOC07 11 points by default, or ``"area"``);
* the mAP is the float32 mean of the APs of the classes that have ground truths.

Difficult objects are ordinary ground truths here: mmrotate's DOTA loader keeps every object whose
difficulty is <= 100 and puts nothing into ``bboxes_ignore``. Scale ranges are not supported (they
raise ``NotImplementedError`` inside mmrotate 0.3.4 as well).

The matching is vectorised: candidate pairs come from one sweep over circumscribed boxes of all
images, the greedy score-order matching reduces to "the highest-scored matching detection of each
ground truth", and ties in score are broken by numpy's own ``argsort`` on the same arrays as mmrotate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rotdet.evaluation._matching import best_per_row, first_in_group, same_image_pairs
from rotdet.evaluation.ap import average_precision_mmdet
from rotdet.evaluation.results import ClassResult, EvalResult
from rotdet.ops import box_iou_rotated
from rotdet.ops.iou import circumscribed_xyxy

__all__ = ["eval_rbbox_map"]


def _as_rows(a, width: int) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.size == 0:
        return a.reshape(0, width)
    if a.ndim != 2 or a.shape[1] < width:
        raise ValueError(f"expected an array of shape [K, {width}], got {a.shape}")
    return a


def _class_gts(annotations: Sequence[dict], class_id: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    gts, ignores = [], []
    for ann in annotations:
        labels = np.asarray(ann["labels"]).reshape(-1)
        gts.append(_as_rows(ann["bboxes"], 5)[labels == class_id, :5])
        if ann.get("labels_ignore") is not None:
            ign_labels = np.asarray(ann["labels_ignore"]).reshape(-1)
            ignores.append(_as_rows(ann["bboxes_ignore"], 5)[ign_labels == class_id, :5])
        else:
            ignores.append(np.zeros((0, 5), np.float32))
    return gts, ignores


def _tp_fp_one_class(
    cls_dets: list[np.ndarray], gts: list[np.ndarray], ignores: list[np.ndarray], iou_thr: float
):
    """TP / FP flags (float32, in stacked image order) of one class, as ``tpfp_default`` per image."""
    counts = np.array([len(d) for d in cls_dets], np.int64)
    num_dets = int(counts.sum())
    tp = np.zeros(num_dets, np.float32)
    fp = np.zeros(num_dets, np.float32)
    if num_dets == 0:
        return tp, fp
    det_img = np.repeat(np.arange(len(cls_dets)), counts)
    det_local = np.arange(num_dets) - np.repeat(np.cumsum(counts) - counts, counts)
    dets = np.concatenate([d[:, :5] for d in cls_dets if len(d)]).astype(np.float32)
    scores = np.concatenate([d[:, -1] for d in cls_dets if len(d)])

    # Per image the ground truths are stacked as [gts; ignored gts], as mmrotate does.
    all_gts = [
        np.concatenate([g, i]).astype(np.float32).reshape(-1, 5) for g, i in zip(gts, ignores, strict=True)
    ]
    gt_counts = np.array([len(g) for g in all_gts], np.int64)
    num_gts = int(gt_counts.sum())
    if num_gts == 0:
        fp[:] = 1
        return tp, fp
    gt_boxes = np.concatenate(all_gts)
    gt_img = np.repeat(np.arange(len(all_gts)), gt_counts)
    gt_start = np.cumsum(gt_counts) - gt_counts
    gt_local = np.arange(num_gts) - gt_start[gt_img]
    gt_ignored = np.concatenate(
        [np.r_[np.zeros(len(g), bool), np.ones(len(i), bool)] for g, i in zip(gts, ignores, strict=True)]
    )

    d_t, g_t = torch.from_numpy(dets), torch.from_numpy(gt_boxes)
    rows, cols = same_image_pairs(
        circumscribed_xyxy(d_t.double()).numpy(),
        det_img,
        circumscribed_xyxy(g_t.double()).numpy(),
        gt_img,
        0.5,
    )
    if len(rows):
        ious = box_iou_rotated(d_t[torch.from_numpy(rows)], g_t[torch.from_numpy(cols)], aligned=True).numpy()
    else:
        ious = np.zeros(0, np.float32)
    best, pair = best_per_row(rows, gt_local[cols], ious.astype(np.float64), num_dets)
    has_gt = gt_counts[det_img] > 0
    # A row of mmrotate's dense IoU matrix that is all zeros has its argmax at the image's first gt.
    best_gt = np.full(num_dets, -1, np.int64)
    best_gt[pair >= 0] = cols[pair[pair >= 0]]  # (no candidate pair at all is possible)
    zero_row = has_gt & ((pair < 0) | (best <= 0))
    best = np.where(zero_row, 0.0, best)
    best_gt = np.where(zero_row, gt_start[det_img], best_gt)

    matched = has_gt & (best >= iou_thr)
    fp[~matched] = 1
    cand = np.flatnonzero(matched & ~gt_ignored[np.maximum(best_gt, 0)])
    if len(cand):
        rank = _score_rank_within_image(cls_dets, det_img, det_local, scores, cand, best_gt)
        win = first_in_group(best_gt[cand], rank)
        tp[cand[win]] = 1
        fp[cand[~win]] = 1
    return tp, fp


def _score_rank_within_image(cls_dets, det_img, det_local, scores, cand, best_gt) -> np.ndarray:
    """Rank of each candidate in its image's visiting order ``np.argsort(-score)``.

    Only the order among candidates of one ground truth matters. Descending score decides it except
    between equal scores, where numpy's argsort order (not necessarily stable) decides, so it is
    looked up by calling ``np.argsort`` on exactly mmrotate's array for those images only.
    """
    s = scores[cand].astype(np.float64)
    # Default: by descending score, then by index (a stable order).
    order = np.lexsort((det_local[cand], -s, best_gt[cand]))
    rank = np.empty(len(cand), np.int64)
    rank[order] = np.arange(len(cand))
    g = best_gt[cand][order]
    ss = s[order]
    tie = (g[1:] == g[:-1]) & (ss[1:] == ss[:-1])
    if tie.any():
        tied_imgs = np.unique(det_img[cand[order[1:][tie]]])
        for img in tied_imgs.tolist():
            d = np.asarray(cls_dets[img])
            pos = np.empty(len(d), np.int64)
            pos[np.argsort(-d[:, -1])] = np.arange(len(d))
            in_img = det_img[cand] == img
            # Within this image rank by numpy's visiting order; other images keep theirs (groups
            # never span images).
            rank[in_img] = pos[det_local[cand[in_img]]] - len(scores) - 1
    return rank


def eval_rbbox_map(
    det_results: Sequence[Sequence[np.ndarray]],
    annotations: Sequence[dict],
    iou_thr: float = 0.5,
    use_07_metric: bool = True,
    classes: Sequence[str] | None = None,
    scale_ranges=None,
) -> EvalResult:
    """mmrotate 0.3.4's ``eval_rbbox_map`` (same inputs, same numbers), vectorised.

    Args:
        det_results: per image, per class an array ``[K, 6]`` ``(cx, cy, w, h, theta, score)``
            (numpy or torch; mmrotate's test output format).
        annotations: per image a dict with ``bboxes`` ``[N, 5]`` and ``labels`` ``[N]``, optionally
            ``bboxes_ignore`` / ``labels_ignore`` (as :func:`rotdet.data.load_dota_infos`'s ``ann``).
        iou_thr: a detection matches when its best IoU is >= this.
        use_07_metric: VOC07 11-point AP (mmrotate's default) or the area under the curve.
        classes: class names for the table (default ``"0"``, ``"1"``, ...).

    Returns:
        :class:`EvalResult` (``protocol="mmrotate"``); ``map`` is mmrotate's ``mean_ap``.
    """
    if scale_ranges is not None:
        raise NotImplementedError("scale ranges are not supported (mmrotate 0.3.4 raises on them too)")
    if len(det_results) != len(annotations):
        raise ValueError(f"{len(det_results)} detection entries for {len(annotations)} annotations")
    if not det_results:
        raise ValueError("no images to evaluate")
    num_classes = len(det_results[0])
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes of detections")
    mode = "11points" if use_07_metric else "area"
    eps = np.finfo(np.float32).eps
    rows: list[ClassResult] = []
    for c in range(num_classes):
        cls_dets = [_as_rows(img_res[c], 6) for img_res in det_results]
        gts, ignores = _class_gts(annotations, c)
        tp, fp = _tp_fp_one_class(cls_dets, gts, ignores, iou_thr)
        num_gts = np.zeros(1, dtype=int)
        num_gts[0] = sum(g.shape[0] for g in gts)
        stacked = np.vstack(cls_dets)
        sort_inds = np.argsort(-stacked[:, -1])
        tp_c = np.cumsum(tp[None, sort_inds], axis=1)
        fp_c = np.cumsum(fp[None, sort_inds], axis=1)
        recalls = (tp_c / np.maximum(num_gts[:, np.newaxis], eps))[0]
        precisions = (tp_c / np.maximum(tp_c + fp_c, eps))[0]
        ap = average_precision_mmdet(recalls, precisions, mode)
        rows.append(
            ClassResult(
                name=names[c],
                num_gts=int(num_gts[0]),
                num_dets=int(stacked.shape[0]),
                recall=float(recalls[-1]) if recalls.size else 0.0,
                ap=float(ap),
                recalls=recalls,
                precisions=precisions,
            )
        )
    aps = [np.float32(r.ap) for r in rows if r.num_gts > 0]
    mean_ap = np.array(aps).mean().item() if aps else 0.0
    return EvalResult("mmrotate", mean_ap, rows, iou_thr=iou_thr, metric=mode, num_images=len(det_results))
