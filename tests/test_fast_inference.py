"""``--fast`` / ``Detector.optimize``: BatchNorms folded into convolutions, channels-last layout; the
same function as the default path up to float rounding, for every detector type."""

from __future__ import annotations

import pytest
import torch
from test_models_detectors import tiny_overrides
from test_oriented_rcnn import tiny_overrides as orcnn_overrides
from test_rotated_fcos import tiny_overrides as fcos_overrides
from test_s2anet import tiny_overrides as s2anet_overrides
from torch import nn

from rotdet.configs import load_config
from rotdet.models import build_model
from rotdet.models.backbone import ResNetBackbone
from rotdet.models.fast_inference import fuse_conv_bn, optimize_for_inference
from rotdet.structures.detections import RotatedDetections

OVERRIDES = {"s2anet": s2anet_overrides, "rotated_fcos": fcos_overrides, "oriented_rcnn": orcnn_overrides}


def _randomise_batch_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, so that folding them changes weights."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def _flat(outputs) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs.flatten()
    if isinstance(outputs, dict) and "proposals" in outputs:
        # Oriented R-CNN: the RPN's outputs (how many proposals survive its NMS may change with
        # the rounding, and the RoI head's outputs with them)
        return _flat(outputs["rpn"])
    if isinstance(outputs, dict):
        outputs = [outputs[k] for k in sorted(outputs)]
    return torch.cat([_flat(o) for o in outputs if isinstance(o, torch.Tensor | list | tuple | dict)])


def test_fuse_conv_bn_keeps_the_function_and_removes_every_batch_norm():
    g = torch.Generator().manual_seed(0)
    backbone = ResNetBackbone(depth=18, pretrained=False).eval()
    _randomise_batch_norms(backbone, g)
    x = torch.randn(2, 3, 64, 96, generator=g)
    with torch.no_grad():
        before = backbone(x)
        fuse_conv_bn(backbone)
        after = backbone(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
    convs_with_bias = [m for m in backbone.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert len(convs_with_bias) == 20  # stem + 16 block convs + 3 downsamples, each took its BN
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_batch_norm_after_a_non_convolution_is_left_alone():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    fuse_conv_bn(seq)
    assert isinstance(seq[2], nn.BatchNorm2d) and seq[0].bias is None


@pytest.mark.parametrize(
    "name",
    [
        "rotated_atss_obb_r50_fpn_1x_dota_le90",
        "r3det_r50_fpn_1x_dota_oc",
        "s2anet_r50_fpn_1x_dota_le135",
        "rotated_fcos_r50_fpn_1x_dota_le90",
        "oriented_rcnn_r50_fpn_1x_dota_le90",
    ],
)
def test_optimized_model_gives_the_same_outputs_and_detections(name):
    family = next((f for f in OVERRIDES if name.startswith(f)), None)
    overrides = OVERRIDES[family]() if family else tiny_overrides(name)
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = build_model(load_config(name, overrides)).eval()
    _randomise_batch_norms(model, g)
    x = torch.randn(1, 3, 128, 160, generator=g)
    metas = [{"img_shape": (128, 160, 3), "scale_factor": [1.0, 1.0, 1.0, 1.0]}]
    with torch.no_grad():
        raw = _flat(model(x))
        cls_convs = [m for n, m in model.named_modules() if n.endswith("cls") and isinstance(m, nn.Conv2d)]
        init_bias = [conv.bias.detach().clone() for conv in cls_convs]
        for conv in cls_convs:
            conv.bias.data.fill_(0.0)  # scores around 0.5: many candidates reach the NMS
        dets = model.predict(x, metas)[0]
        optimize_for_inference(model)
        filters = [p for p in model.parameters() if p.dim() == 4]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in filters)
        fast_dets = model.predict(x, metas)[0]
        for conv, bias in zip(cls_convs, init_bias, strict=True):
            conv.bias.data.copy_(bias)  # back to the init, for the raw outputs
    assert isinstance(fast_dets, RotatedDetections)
    assert len(dets) > 10
    # Rounding may flip a box on the NMS boundary; the best detections are the same boxes.
    top = min(len(dets), len(fast_dets), 10)
    torch.testing.assert_close(fast_dets.scores[:top], dets.scores[:top], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_dets.boxes[:top], dets.boxes[:top], rtol=1e-3, atol=1e-3)
    assert abs(len(fast_dets) - len(dets)) <= max(2, len(dets) // 20)
    with torch.no_grad():
        torch.testing.assert_close(_flat(model(x)), raw, rtol=1e-4, atol=1e-4)
