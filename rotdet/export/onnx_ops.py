"""rotdet's registered operators written as standard ONNX for the TorchScript-based exporter.

``rotdet::nms_keep_mask`` (:func:`rotdet.ops.hbb_nms.nms_keep_mask`, Oriented R-CNN's proposal NMS)
becomes ONNX's ``NonMaxSuppression`` (every image a batch entry, one class, no score threshold, no
cap on the output) and a ``ScatterND`` of its selected indices into a zero ``[B, K]`` mask. ONNX
Runtime's kernel suppresses at IoU strictly above the threshold, as torchvision's does, and
computes the same float32 IoU (checked by ``tests/test_export.py``); no plugin or custom domain is
involved, so any ONNX runtime with opset 11+ runs the graph.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["register_onnx_symbolics"]

_registered: set[int] = set()


def _int64(g, values: list[int]):
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.long))


def _nms_keep_mask(g, boxes, scores, iou_threshold):
    from torch.onnx import symbolic_helper

    iou = symbolic_helper._maybe_get_const(iou_threshold, "f")
    per_class = g.op("Unsqueeze", scores, _int64(g, [1]))  # [B, 1, K]: one class
    max_out = _int64(g, [sys.maxsize])  # no cap (torchvision's export does the same)
    threshold = g.op("Constant", value_t=torch.tensor([float(iou)], dtype=torch.float32))
    selected = g.op("NonMaxSuppression", boxes, per_class, max_out, threshold)  # [M, 3]: (b, 0, k)
    where = g.op("Gather", selected, _int64(g, [0, 2]), axis_i=1)  # [M, 2]
    count = g.op("Shape", g.op("Gather", selected, _int64(g, [0]), axis_i=1))  # [M, 1]
    ones = g.op(
        "ConstantOfShape", g.op("Slice", count, _int64(g, [0]), _int64(g, [1])), value_t=torch.tensor([1.0])
    )
    zeros = g.op("ConstantOfShape", g.op("Shape", scores), value_t=torch.tensor([0.0]))
    mask = g.op("ScatterND", zeros, where, ones)
    return g.op("Cast", mask, to_i=9)  # BOOL


def register_onnx_symbolics(opset: int) -> None:
    """Make ``torch.onnx.export(..., dynamo=False)`` write rotdet's operators at ``opset``."""
    if opset in _registered:
        return
    import rotdet.ops.hbb_nms  # noqa: F401  (registers the operator)

    torch.onnx.register_custom_op_symbolic("rotdet::nms_keep_mask", _nms_keep_mask, opset)
    _registered.add(opset)
