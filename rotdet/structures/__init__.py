"""Rotated boxes: angle conventions, conversions between boxes and polygons, geometric transforms."""

from rotdet.structures.angles import ANGLE_VERSIONS, check_version, norm_angle
from rotdet.structures.conversions import (
    best_begin_point,
    convert_version,
    hbb2obb,
    obb2hbb,
    obb2poly,
    obb2poly_np,
    obb2xyxy,
    poly2obb,
    poly2obb_np,
    regularize_obb,
)
from rotdet.structures.transforms import FLIP_DIRECTIONS, flip_obb, flip_poly, rescale_obb

__all__ = [
    "ANGLE_VERSIONS",
    "FLIP_DIRECTIONS",
    "best_begin_point",
    "check_version",
    "convert_version",
    "flip_obb",
    "flip_poly",
    "hbb2obb",
    "norm_angle",
    "obb2hbb",
    "obb2poly",
    "obb2poly_np",
    "obb2xyxy",
    "poly2obb",
    "poly2obb_np",
    "regularize_obb",
    "rescale_obb",
]
