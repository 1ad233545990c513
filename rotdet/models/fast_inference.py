"""Faster inference for the same network: BatchNorms folded into their convolutions and the
channels-last memory layout (``rotdet test / predict / bench --fast``, :meth:`Detector.optimize`).

* :func:`fuse_conv_bn` is mmcv's ``fuse_conv_bn`` (the ``--fuse-conv-bn`` of mmdet's
  ``tools/test.py``): ``y = bn(conv(x))`` becomes one convolution with ``w' = w * g / sqrt(var + eps)``
  and ``b' = (b - mean) * g / sqrt(var + eps) + beta``, one pass over each feature map fewer.
* channels-last (NHWC) lets oneDNN on the CPU (and cuDNN's tensor-core kernels on a GPU) skip the
  layout reorders it makes around every NCHW convolution.

Both compute the same function; floating point rounds it differently (about 1e-5 on the logits of
the seed's models), so a detection whose score sits on the ``score_thr`` boundary, or two boxes whose
IoU sits on the NMS threshold, may come out the other way than in the default path. That is why this
is an option and the default stays bit-for-bit the model mmrotate runs. Inference only: the folded
model has no BatchNorm left to train, so never save or train it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_conv_bn", "optimize_for_inference"]


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution among its siblings (children order =
    execution order, true of torchvision's ResNet blocks and ``downsample`` sequences) into that
    convolution, in place; the BatchNorm becomes an ``nn.Identity``. Returns ``module``."""
    last_conv_name: str | None = None
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and last_conv_name is not None:
            conv = getattr(module, last_conv_name)
            setattr(module, last_conv_name, fuse_conv_bn_eval(conv.eval(), child.eval()))
            setattr(module, name, nn.Identity())
            last_conv_name = None
        elif isinstance(child, nn.Conv2d):
            last_conv_name = name
        else:
            fuse_conv_bn(child)
            last_conv_name = None
    return module


def optimize_for_inference(model: nn.Module, fuse_bn: bool = True, channels_last: bool = True) -> nn.Module:
    """``model`` in eval mode, its BatchNorms folded (``fuse_bn``) and its parameters in channels-last
    layout (``channels_last``; a convolution with channels-last weights gives channels-last outputs,
    so the input needs no conversion), in place. Returns ``model``."""
    model.eval()
    if fuse_bn:
        fuse_conv_bn(model)
    if channels_last:
        # Per parameter: ``model.to(memory_format=...)`` refuses the 5-d filters of S2A-Net's
        # rotation-equivariant convolution.
        for p in model.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model
