"""Rotated-box ops in pure PyTorch: exact IoU, NMS, point-in-polygon, rotated RoI Align; CPU and CUDA.

Also mmdet's horizontal IoU (:func:`bbox_overlaps`), which Oriented R-CNN's RPN assigns with.
"""

from rotdet.ops.feature_align import rotated_feature_align
from rotdet.ops.iou import bbox_overlaps, box_iou_rotated, circumscribed_xyxy, rotated_box_intersection
from rotdet.ops.nms import batched_nms_rotated, multiclass_nms_rotated, nms_rotated
from rotdet.ops.points import points_in_polygons
from rotdet.ops.roi_align_rotated import RoIAlignRotated, roi_align_rotated

__all__ = [
    "RoIAlignRotated",
    "batched_nms_rotated",
    "bbox_overlaps",
    "box_iou_rotated",
    "circumscribed_xyxy",
    "multiclass_nms_rotated",
    "nms_rotated",
    "points_in_polygons",
    "roi_align_rotated",
    "rotated_box_intersection",
    "rotated_feature_align",
]
