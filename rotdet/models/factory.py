"""``build_model(cfg)``: a config (see :mod:`rotdet.configs`) -> plain detector classes.

Every ``type`` a config may name is handled explicitly below; the only lookup table is
:data:`DETECTORS` (``RotatedRetinaNet`` / ``R3Det``). Unknown types and unknown keys are errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import nn

from rotdet.configs import resolve_angle_version
from rotdet.models.backbone import ResNetBackbone
from rotdet.models.detectors import R3Det, RotatedSingleStageDetector
from rotdet.models.fpn import FPN
from rotdet.models.heads import RotatedRetinaHead
from rotdet.models.r3det import FeatureRefineModule

__all__ = ["DETECTORS", "build_model"]

logger = logging.getLogger("rotdet.models")


def _take(cfg: dict, what: str, allowed: set[str], expected_type: set[str] | None = None) -> dict:
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if expected_type is not None and kind not in expected_type:
        raise ValueError(f"{what}: type {kind!r} is not supported; expected one of {sorted(expected_type)}")
    unknown = set(cfg) - allowed
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)}; known: {sorted(allowed)}")
    return cfg


def build_head(
    cfg: dict, train_cfg: dict | None, test_cfg: dict | None, head_class: type = RotatedRetinaHead
) -> RotatedRetinaHead:
    """A dense head (``head_class``, a :class:`RotatedRetinaHead` subclass) from its sections."""
    return head_class.from_config(cfg, train_cfg, test_cfg)


def _build_single_stage(model: dict) -> RotatedSingleStageDetector:
    m = _take(model, "model", {"backbone", "neck", "bbox_head", "train_cfg", "test_cfg"})
    backbone = ResNetBackbone.from_config(m["backbone"])
    neck = FPN.from_config(m["neck"], backbone.out_channels)
    head = build_head(m["bbox_head"], m.get("train_cfg"), m.get("test_cfg"))
    return RotatedSingleStageDetector(backbone, neck, head)


def _build_r3det(model: dict) -> R3Det:
    m = _take(
        model,
        "model",
        {
            "backbone",
            "neck",
            "bbox_head",
            "frm_cfgs",
            "num_refine_stages",
            "refine_heads",
            "train_cfg",
            "test_cfg",
        },
    )
    n = int(m["num_refine_stages"])
    if len(m["frm_cfgs"]) != n or len(m["refine_heads"]) != n:
        raise ValueError(f"R3Det: num_refine_stages={n} needs as many frm_cfgs and refine_heads")
    backbone = ResNetBackbone.from_config(m["backbone"])
    neck = FPN.from_config(m["neck"], backbone.out_channels)
    train_cfg = m.get("train_cfg")
    if train_cfg is not None:
        train_cfg = _take(train_cfg, "train_cfg", {"s0", "sr", "stage_loss_weights"})
    test_cfg = m.get("test_cfg")
    head = build_head(m["bbox_head"], train_cfg["s0"] if train_cfg else None, test_cfg)
    frms = []
    for f in m["frm_cfgs"]:
        frms.append(FeatureRefineModule.from_config(f))
    refine = [
        build_head(h, train_cfg["sr"][i] if train_cfg else None, test_cfg)
        for i, h in enumerate(m["refine_heads"])
    ]
    weights = train_cfg.get("stage_loss_weights") if train_cfg else None
    return R3Det(backbone, neck, head, frms, refine, stage_loss_weights=weights)


def _build_s2anet(model: dict) -> nn.Module:
    from rotdet.models.s2anet import build_s2anet  # it builds its parts with this module's builders

    return build_s2anet(model)


def _build_oriented_rcnn(model: dict) -> nn.Module:
    from rotdet.models.oriented_rcnn import build_oriented_rcnn  # it builds its parts with this module's

    return build_oriented_rcnn(model)


def _build_rotated_fcos(model: dict) -> nn.Module:
    from rotdet.models.fcos import build_rotated_fcos  # anchor-free: its own head and losses

    return build_rotated_fcos(model)


DETECTORS: dict[str, Callable[[dict], nn.Module]] = {
    "RotatedRetinaNet": _build_single_stage,
    "R3Det": _build_r3det,
    "S2ANet": _build_s2anet,
    "OrientedRCNN": _build_oriented_rcnn,
    "RotatedFCOS": _build_rotated_fcos,
}


def build_model(cfg: dict) -> nn.Module:
    """The detector of a config dict: the whole config (its top-level ``angle_version`` is then
    the model's only angle convention, see :func:`rotdet.configs.resolve_angle_version`) or a
    ``model`` part spelled out in full."""
    if "model" in cfg:
        cfg = resolve_angle_version(cfg)
        coder = (cfg["model"].get("bbox_head") or cfg["model"].get("odm_head") or {}).get("bbox_coder", {})
        logger.debug(  # config.yaml in a work dir holds them too
            "angle_version %s: box coder edge_swap=%s proj_xy=%s norm_factor=%s",
            cfg["angle_version"],
            coder.get("edge_swap"),
            coder.get("proj_xy"),
            coder.get("norm_factor"),
        )
    model = cfg["model"] if "model" in cfg else cfg
    kind = model.get("type")
    if kind not in DETECTORS:
        raise ValueError(f"model type {kind!r} is not supported; expected one of {sorted(DETECTORS)}")
    return DETECTORS[kind](model)
