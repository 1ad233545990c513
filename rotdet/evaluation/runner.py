"""Evaluation from files, for ``rotdet eval DETS GT``: either protocol, Task1 folders or rotdet JSON."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from rotdet.evaluation.dota_task1 import eval_dota_task1, load_task1_detections
from rotdet.evaluation.io import (
    check_one_model,
    list_label_files,
    read_detections_json,
)
from rotdet.evaluation.results import EvalInputError

# The DOTA protocol runs on numpy alone; torch (and rotdet.data) are imported by the other ones, in
# the branch that runs them.

__all__ = ["evaluate_folder", "mmrotate_annotations"]

PROTOCOLS = ("dota", "mmrotate", "coco", "hrsc")


def mmrotate_annotations(
    label_dir: str | os.PathLike, classes: Sequence[str], version: str = "le90"
) -> tuple[list[str], list[dict]]:
    """Image ids and annotations of a labelTxt folder as mmrotate 0.3.4's ``DOTADataset`` loads them
    (difficulty threshold 100, so difficult objects are ordinary; degenerate polygons dropped)."""
    from rotdet.data import load_dota_infos

    list_label_files(label_dir)  # clear errors for a missing or empty folder
    infos = load_dota_infos(label_dir, label_dir, classes, version=version, difficulty=100)
    return [info["id"] for info in infos], [info["ann"] for info in infos]


def _mmrotate_det_results(dets, classes: Sequence[str], image_ids: Sequence[str]) -> list[list[np.ndarray]]:
    """Per image per class ``[K, 6]`` float32 obbs + score for mmrotate's protocol."""
    import torch

    from rotdet.structures import poly2obb

    if isinstance(dets, (str, os.PathLike)) and os.path.isfile(os.fspath(dets)):
        dets = read_detections_json(dets)
    known = set(image_ids)
    if isinstance(dets, list):  # per image RotatedDetections
        unknown = [d.image_id for d in dets if d.image_id not in known]
        if unknown:
            raise EvalInputError(
                f"detections on {len(unknown)} image(s) without a label file, e.g. {', '.join(unknown[:3])}"
            )
        found, _ = check_one_model(dets)
        if dets and found != tuple(classes):
            raise EvalInputError(f"the detections' classes {list(found)} differ from {list(classes)}")
        by_id = {d.image_id: d for d in dets}
        empty = [np.zeros((0, 6), np.float32) for _ in classes]
        return [
            by_id[i].per_class(len(classes), dtype=np.float32) if i in by_id else list(empty)
            for i in image_ids
        ]
    per_class = load_task1_detections(dets, classes)
    index = {img: i for i, img in enumerate(image_ids)}
    out = [[np.zeros((0, 6), np.float32) for _ in classes] for _ in image_ids]
    for c, name in enumerate(classes):
        d = per_class[name]
        if not len(d):
            continue
        unknown = [i for i in dict.fromkeys(d.image_ids) if i not in known]
        if unknown:
            raise EvalInputError(
                f"{name}: detections on {len(unknown)} image(s) without a label file, "
                f"e.g. {', '.join(unknown[:3])}"
            )
        obbs = poly2obb(torch.from_numpy(d.polygons), "le90").numpy()
        rows = np.concatenate([obbs, d.scores[:, None]], axis=1).astype(np.float32)
        img = np.array([index[i] for i in d.image_ids])
        order = np.argsort(img, kind="stable")
        bounds = np.searchsorted(img[order], np.arange(len(image_ids) + 1))
        for i in np.unique(img).tolist():
            out[i][c] = rows[order[bounds[i] : bounds[i + 1]]]
    return out


def evaluate_folder(
    dets,
    gt: str | os.PathLike,
    classes: Sequence[str],
    protocol: str = "dota",
    iou_thr: float = 0.5,
    use_07_metric: bool = True,
    gt_format: str = "dota",
    images: str | os.PathLike | None = None,
    max_dets: int = 100,
    gt_list: str | os.PathLike | None = None,
):
    """Evaluate detections (a Task1 folder, a rotdet JSON file or per image
    :class:`~rotdet.structures.RotatedDetections`) against a
    ground-truth folder by the ``"dota"`` (official, full images, labelTxt only), ``"mmrotate"``,
    ``"hrsc"`` (:func:`rotdet.evaluation.hrsc.eval_hrsc`) or ``"coco"``
    (:func:`rotdet.evaluation.coco.eval_coco`) protocol; ``gt_format`` is any of
    :data:`rotdet.data.formats.FORMATS` (see :func:`rotdet.data.formats.read_ground_truth`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if protocol == "dota":
        if gt_format not in ("dota", "sar"):
            raise EvalInputError(f"the dota protocol reads labelTxt ground truth; for {gt_format} use "
                                 "--protocol mmrotate, hrsc or coco")  # fmt: skip
        return eval_dota_task1(dets, gt, classes, iou_thr=iou_thr, use_07_metric=use_07_metric)
    if gt_format in ("dota", "sar"):
        image_ids, anns = mmrotate_annotations(gt, classes)
    else:
        from rotdet.data.formats import read_ground_truth

        image_ids, anns = read_ground_truth(gt, gt_format, classes, images, ann_file=gt_list)
    det_results = _mmrotate_det_results(dets, classes, image_ids)
    if protocol == "hrsc":
        from rotdet.evaluation.hrsc import eval_hrsc

        return eval_hrsc(det_results, anns, classes, use_07_metric=use_07_metric)
    if protocol == "coco":
        from rotdet.evaluation.coco import eval_coco

        return eval_coco(det_results, anns, classes, max_dets=max_dets, image_ids=image_ids)
    from rotdet.evaluation.mmrotate_map import eval_rbbox_map

    return eval_rbbox_map(det_results, anns, iou_thr=iou_thr, use_07_metric=use_07_metric, classes=classes)


# ------------------------------------------------------------------------------------------ CLI
