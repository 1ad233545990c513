"""Rotated-box ops in pure PyTorch: exact IoU, NMS and point-in-polygon, on CPU and CUDA tensors."""

from rotdet.ops.feature_align import rotated_feature_align
from rotdet.ops.iou import box_iou_rotated, circumscribed_xyxy, rotated_box_intersection
from rotdet.ops.nms import batched_nms_rotated, multiclass_nms_rotated, nms_rotated
from rotdet.ops.points import points_in_polygons

__all__ = [
    "batched_nms_rotated",
    "box_iou_rotated",
    "circumscribed_xyxy",
    "multiclass_nms_rotated",
    "nms_rotated",
    "points_in_polygons",
    "rotated_box_intersection",
    "rotated_feature_align",
]
