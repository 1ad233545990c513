"""Rotated boxes: angle conventions, conversions between boxes and polygons, geometric transforms,
and :class:`RotatedDetections`, the one type for the detections of an image.

Names are imported on first use, so reading detections (``rotdet eval``) does not import torch.
"""

from rotdet._lazy import lazy_exports

_EXPORTS = {
    "ANGLE_VERSIONS": "rotdet.structures.angles",
    "check_version": "rotdet.structures.angles",
    "norm_angle": "rotdet.structures.angles",
    "best_begin_point": "rotdet.structures.conversions",
    "convert_version": "rotdet.structures.conversions",
    "hbb2obb": "rotdet.structures.conversions",
    "obb2hbb": "rotdet.structures.conversions",
    "obb2poly": "rotdet.structures.conversions",
    "obb2poly_np": "rotdet.structures.conversions",
    "obb2xyxy": "rotdet.structures.conversions",
    "poly2obb": "rotdet.structures.conversions",
    "poly2obb_np": "rotdet.structures.conversions",
    "regularize_obb": "rotdet.structures.conversions",
    "FLIP_DIRECTIONS": "rotdet.structures.transforms",
    "flip_obb": "rotdet.structures.transforms",
    "flip_poly": "rotdet.structures.transforms",
    "rescale_obb": "rotdet.structures.transforms",
    "RotatedDetections": "rotdet.structures.detections",
    "ImageMeta": "rotdet.structures.meta",
    "image_meta": "rotdet.structures.meta",
    "read_detections_json": "rotdet.structures.detections",
    "write_detections_json": "rotdet.structures.detections",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
