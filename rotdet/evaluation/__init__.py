"""DOTA evaluation: mmrotate 0.3.4's patch mAP and the official DOTA Task1 protocol.

* :func:`eval_rbbox_map`: mmrotate's ``eval_rbbox_map`` (obb rotated IoU >= thr, difficult objects
  counted, VOC07 11 points), for patches or in-memory results;
* :func:`eval_dota_task1`: DOTA_devkit's ``dota_evaluation_task1`` (polygon IoU > thr, difficult
  objects ignored, mean over all classes), on merged full images;
* :func:`evaluate_folder`: either protocol from files (``rotdet eval``);
* :mod:`rotdet.evaluation.polygon_iou`: the devkit's polygon IoU, vectorised.

Both return an :class:`EvalResult` (per-class table, mean, ``table()``, ``write_json()``).

Everything here but :func:`eval_rbbox_map` runs on numpy alone; that one (rotated IoU in torch) is
imported on first use, so that the DOTA protocol does not import torch.
"""

from typing import TYPE_CHECKING

from rotdet.evaluation.ap import average_precision_mmdet, average_precision_voc
from rotdet.evaluation.dota_task1 import eval_dota_task1, load_task1_detections
from rotdet.evaluation.io import (
    ClassDetections,
    GroundTruthImage,
    read_detections_json,
    read_labeltxt_folder,
    read_task1_folder,
    task1_from_detections,
)
from rotdet.evaluation.polygon_iou import polygon_iou, polygon_iou_aligned
from rotdet.evaluation.results import ClassResult, EvalInputError, EvalResult
from rotdet.evaluation.runner import evaluate_folder, mmrotate_annotations

if TYPE_CHECKING:
    from rotdet.evaluation.mmrotate_map import eval_rbbox_map


def __getattr__(name: str):
    if name == "eval_rbbox_map":
        from rotdet.evaluation.mmrotate_map import eval_rbbox_map

        globals()[name] = eval_rbbox_map
        return eval_rbbox_map
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClassDetections",
    "ClassResult",
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
    "task1_from_detections",
]
