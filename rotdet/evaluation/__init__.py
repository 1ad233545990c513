"""DOTA evaluation: mmrotate 0.3.4's patch mAP and the official DOTA Task1 protocol.

* :func:`eval_rbbox_map`: mmrotate's ``eval_rbbox_map`` (obb rotated IoU >= thr, difficult objects
  counted, VOC07 11 points), for patches or in-memory results;
* :func:`eval_dota_task1`: DOTA_devkit's ``dota_evaluation_task1`` (polygon IoU > thr, difficult
  objects ignored, mean over all classes), on merged full images;
* :func:`evaluate_folder`: either protocol from files (``rotdet eval``);
* :mod:`rotdet.evaluation.polygon_iou`: the devkit's polygon IoU, vectorised.

Both return an :class:`EvalResult` (per-class table, mean, ``table()``, ``write_json()``).
"""

from rotdet.evaluation.ap import average_precision_mmdet, average_precision_voc
from rotdet.evaluation.dota_task1 import eval_dota_task1, load_task1_detections
from rotdet.evaluation.io import (
    ClassDetections,
    DetectionSet,
    GroundTruthImage,
    read_detections_json,
    read_labeltxt_folder,
    read_task1_folder,
    task1_from_detection_set,
    write_detections_json,
)
from rotdet.evaluation.mmrotate_map import eval_rbbox_map
from rotdet.evaluation.polygon_iou import polygon_iou, polygon_iou_aligned
from rotdet.evaluation.results import ClassResult, EvalInputError, EvalResult
from rotdet.evaluation.runner import evaluate_folder, mmrotate_annotations

__all__ = [
    "ClassDetections",
    "ClassResult",
    "DetectionSet",
    "EvalInputError",
    "EvalResult",
    "GroundTruthImage",
    "average_precision_mmdet",
    "average_precision_voc",
    "eval_dota_task1",
    "eval_rbbox_map",
    "evaluate_folder",
    "load_task1_detections",
    "mmrotate_annotations",
    "polygon_iou",
    "polygon_iou_aligned",
    "read_detections_json",
    "read_labeltxt_folder",
    "read_task1_folder",
    "task1_from_detection_set",
    "write_detections_json",
]
