"""Rotated boxes: angle conventions, conversions between boxes and polygons, geometric transforms."""

from rotdet.structures.angles import ANGLE_VERSIONS, check_version, norm_angle

__all__ = ["ANGLE_VERSIONS", "check_version", "norm_angle"]
