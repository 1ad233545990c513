"""Detection models: backbone, neck, anchors, box coders, heads, assigners and targets, detectors."""

# ruff: noqa: F401  (a plain list of re-exports)
from rotdet.models.anchors import AnchorGenerator
from rotdet.models.assigners import Assigner, AssignResult, ATSSAssigner, MaxIoUAssigner
from rotdet.models.backbone import ResNetBackbone
from rotdet.models.coders import DeltaXYWHAOBBoxCoder, bbox2delta, delta2bbox
from rotdet.models.detectors import R3Det, RotatedSingleStageDetector
from rotdet.models.factory import build_model
from rotdet.models.fpn import FPN
from rotdet.models.heads import RotatedRetinaHead
from rotdet.models.mmrotate_import import LoadedWeights, load_weights
