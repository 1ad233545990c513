"""Detection models: backbone, neck, anchors, box coders, heads, detectors."""

# ruff: noqa: F401  (a plain list of re-exports; append new ones below)
from rotdet.models.anchors import AnchorGenerator
from rotdet.models.backbone import ResNetBackbone
from rotdet.models.coders import DeltaXYWHAOBBoxCoder, bbox2delta, delta2bbox
from rotdet.models.fpn import FPN
