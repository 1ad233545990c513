"""The official DOTA Task1 evaluation (DOTA_devkit's ``dota_evaluation_task1.py``), vectorised.

Semantics reproduced, per class:

* ground truth: every object of the class in the image's labelTxt file, as float64 quadrilaterals;
  ``difficult`` objects (non-zero difficulty) do not count in the number of positives;
* detections: the class's Task1 lines (``imagename score x1 y1 ... x4 y4``) ranked by
  ``np.argsort(-score)`` over the file order (numpy's own sort, so ties fall as in the devkit);
* a detection's candidates are the image's ground truths whose horizontal boxes overlap its own in
  the devkit's ``+1`` pixel convention (gap < 1 px); its best is the first maximum of the polygon
  IoU (:mod:`rotdet.evaluation.polygon_iou`, the devkit's signed-triangle ``iou_poly``) over them; a
  NaN among them makes the maximum NaN (as ``np.max``), hence no match;
* it matches when that IoU is **>** ``iou_thr``: then it is ignored if the ground truth is
  difficult, a TP if it is the first (in rank order) to match that ground truth, else an FP;
  everything else is an FP;
* recall ``tp / npos`` and precision ``tp / max(tp + fp, eps64)`` in float64, AP by the devkit's
  ``voc_ap`` (VOC07 11 points by default, or the area), mAP = the plain mean over **all** classes
  (a class without ground truth contributes 0, unlike mmrotate's mean).

Inputs the devkit would crash on (a detection on an image without a label file, an empty Task1
file) are an error or zero detections here.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence

import numpy as np

from rotdet.evaluation._matching import best_per_row, first_in_group, same_image_pairs
from rotdet.evaluation.ap import average_precision_voc
from rotdet.evaluation.io import (
    ClassDetections,
    GroundTruthImage,
    read_detections_json,
    read_labeltxt_folder,
    read_task1_folder,
    task1_from_detections,
)
from rotdet.evaluation.polygon_iou import polygon_hbbs, polygon_iou_aligned
from rotdet.evaluation.results import ClassResult, EvalInputError, EvalResult
from rotdet.structures.detections import RotatedDetections

__all__ = ["eval_dota_task1", "load_task1_detections"]


def load_task1_detections(
    dets, classes: Sequence[str], as_written: bool = True
) -> dict[str, ClassDetections]:
    """Normalise any accepted detection input to ``{class name: ClassDetections}``:

    * a folder of ``Task1_<class>.txt`` files, or a rotdet JSON detections file (path);
    * a sequence of :class:`~rotdet.structures.RotatedDetections`, one per image (what
      :func:`rotdet.data.merge_patch_detections` returns);
    * ``{class name: ClassDetections}`` (returned as is).

    Boxes become polygons as :func:`rotdet.data.write_task1_submission` writes them (rounded to two
    decimals when ``as_written``), so in-memory results score exactly as their submission files.
    """
    if isinstance(dets, (str, os.PathLike)):
        path = os.fspath(dets)
        if os.path.isdir(path):
            return read_task1_folder(path, classes)
        if os.path.isfile(path):
            dets = read_detections_json(path)
        else:
            raise EvalInputError(f"{path}: no such detections folder or file")
    if isinstance(dets, Mapping):
        if all(isinstance(v, ClassDetections) for v in dets.values()):
            return {c: dets.get(c, ClassDetections.empty()) for c in classes}
    elif isinstance(dets, Sequence) and all(isinstance(d, RotatedDetections) for d in dets):
        by_name = task1_from_detections(dets, as_written=as_written)
        unknown = sorted(set(by_name) - set(classes))
        if unknown and any(len(by_name[u]) for u in unknown):
            raise EvalInputError(f"detections of classes not in the class list: {', '.join(unknown)}")
        return {c: by_name.get(c, ClassDetections.empty()) for c in classes}
    raise TypeError(f"unsupported detections input: {type(dets).__name__}")


def _eval_class(
    name: str,
    det: ClassDetections,
    image_index: dict[str, int],
    gt_polys: np.ndarray,
    gt_img: np.ndarray,
    gt_difficult: np.ndarray,
    iou_thr: float,
    use_07_metric: bool,
) -> ClassResult:
    """One class; its ground truths in image order, each image's in file order (so that, among one
    image's, the smaller index is the devkit's earlier ``BBGT`` row)."""
    npos = int((~gt_difficult).sum())
    nd = len(det)
    if not set(det.image_ids) <= image_index.keys():
        unknown = [i for i in dict.fromkeys(det.image_ids) if i not in image_index]
        raise EvalInputError(
            f"{name}: detections on {len(unknown)} image(s) without a label file in the ground truth, "
            f"e.g. {', '.join(unknown[:3])}"
        )
    sorted_ind = np.argsort(-det.scores)
    polys = det.polygons[sorted_ind]
    det_img = np.fromiter(map(image_index.__getitem__, det.image_ids), np.int64, count=nd)[sorted_ind]

    ovmax = np.full(nd, -np.inf)
    jmax = np.full(nd, -1, np.int64)
    if nd and len(gt_polys):
        d_hbb, g_hbb = polygon_hbbs(polys), polygon_hbbs(gt_polys)
        rows, cols = same_image_pairs(d_hbb, det_img, g_hbb, gt_img, pad=1.5)
        # The devkit's own pre-filter, same float64 expressions: inters / uni > 0.
        ixmin = np.maximum(g_hbb[cols, 0], d_hbb[rows, 0])
        iymin = np.maximum(g_hbb[cols, 1], d_hbb[rows, 1])
        ixmax = np.minimum(g_hbb[cols, 2], d_hbb[rows, 2])
        iymax = np.minimum(g_hbb[cols, 3], d_hbb[rows, 3])
        iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
        ih = np.maximum(iymax - iymin + 1.0, 0.0)
        inters = iw * ih
        uni = (
            (d_hbb[rows, 2] - d_hbb[rows, 0] + 1.0) * (d_hbb[rows, 3] - d_hbb[rows, 1] + 1.0)
            + (g_hbb[cols, 2] - g_hbb[cols, 0] + 1.0) * (g_hbb[cols, 3] - g_hbb[cols, 1] + 1.0)
            - inters
        )
        keep = inters / uni > 0
        rows, cols = rows[keep], cols[keep]
        ious = polygon_iou_aligned(gt_polys[cols], polys[rows])
        nan = np.isnan(ious)
        ovmax, pair = best_per_row(rows[~nan], cols[~nan], ious[~nan], nd)
        has = pair >= 0  # (no candidate pair at all is possible: then nothing is indexed)
        jmax[has] = cols[~nan][pair[has]]
        if nan.any():  # np.max over candidates holding a NaN is NaN: never a match
            ovmax[np.unique(rows[nan])] = np.nan

    matched = ovmax > iou_thr
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    fp[~matched] = 1.0
    cand = np.flatnonzero(matched)
    cand = cand[~gt_difficult[jmax[cand]]]
    win = first_in_group(jmax[cand], cand)  # rank = position in the sorted order
    tp[cand[win]] = 1.0
    fp[cand[~win]] = 1.0

    fp_c = np.cumsum(fp)
    tp_c = np.cumsum(tp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp_c / float(npos)
    prec = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
    ap = average_precision_voc(rec, prec, use_07_metric)
    return ClassResult(
        name=name,
        num_gts=npos,
        num_dets=nd,
        recall=float(rec[-1]) if nd and npos else 0.0,
        ap=ap,
        num_difficult=int(gt_difficult.sum()),
        recalls=rec,
        precisions=prec,
    )


def _cat(parts: list[np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(shape, dtype)


def eval_dota_task1(
    dets,
    gt: str | os.PathLike | Mapping[str, GroundTruthImage],
    classes: Sequence[str],
    iou_thr: float = 0.5,
    use_07_metric: bool = True,
    as_written: bool = True,
) -> EvalResult:
    """mAP by the official DOTA Task1 protocol (DOTA_devkit), on full images.

    Args:
        dets: detections: a folder of ``Task1_<class>.txt``, a rotdet JSON file, per image
            :class:`~rotdet.structures.RotatedDetections` or ``{class: ClassDetections}`` (see
            :func:`load_task1_detections`).
        gt: a labelTxt folder (every ``*.txt`` is an image of the evaluated set) or its parsed form
            ``{image id: GroundTruthImage}``.
        classes: class names, in order.
        iou_thr: a detection matches when its polygon IoU is > this.
        use_07_metric: VOC07 11-point AP (the official setting) or the area under the curve.
        as_written: round polygons made from boxes to two decimals, as the Task1 files hold them.

    Returns:
        :class:`EvalResult` with ``protocol="dota"``; ``map`` is the devkit's ``map``.
    """
    classes = list(classes)
    gts = read_labeltxt_folder(gt) if isinstance(gt, (str, os.PathLike)) else dict(gt)
    if not gts:
        raise EvalInputError("no ground-truth image to evaluate")
    per_class = load_task1_detections(dets, classes, as_written=as_written)
    image_ids = list(gts)
    image_index = {img: i for i, img in enumerate(image_ids)}

    # Every ground truth's class (-1: not evaluated), then the classes' ground truths in image order.
    names = list(itertools.chain.from_iterable(g.names for g in gts.values()))
    class_index = {c: k for k, c in enumerate(classes)}
    lookup = {n: class_index.get(n, -1) for n in set(names)}
    code = np.fromiter(map(lookup.__getitem__, names), np.int64, count=len(names))
    counts = [len(g.names) for g in gts.values()]
    polys = _cat(
        [np.asarray(g.polygons, np.float64).reshape(-1, 8) for g in gts.values()], (0, 8), np.float64
    )
    difficult = _cat([np.asarray(g.difficult).reshape(-1) != 0 for g in gts.values()], (0,), bool)
    img = np.repeat(np.arange(len(image_ids)), counts)
    order = np.argsort(code, kind="stable")
    bounds = np.searchsorted(code[order], np.arange(len(classes) + 1))
    results = []
    for c, name in enumerate(classes):
        sel = order[bounds[c] : bounds[c + 1]]
        results.append(
            _eval_class(
                name,
                per_class[name],
                image_index,
                polys[sel],
                img[sel],
                difficult[sel],
                iou_thr,
                use_07_metric,
            )
        )
    total = 0.0
    for r in results:
        total = total + r.ap
    mean_ap = total / len(classes) if classes else 0.0
    metric = "11points" if use_07_metric else "area"
    return EvalResult(
        "dota", float(mean_ap), results, iou_thr=iou_thr, metric=metric, num_images=len(image_ids)
    )
