"""Oriented R-CNN's proposal NMS (rotdet.ops.hbb_nms): the static-shape mask equals mmcv's
batched_nms as rotdet runs it eagerly, in PyTorch, in ONNX Runtime and through torch.export."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from rotdet.ops.hbb_nms import SPLIT_THR, batched_nms_hbb, batched_nms_hbb_mask, nms_keep_mask


def proposals_like(batch: int, sizes: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RPN-like xyxy boxes ``[B, K, 4]`` and scores ``[B, K]``: clusters of near-duplicates (IoU
    around the 0.8 threshold), exact duplicates with equal scores, zero-size boxes, zero scores."""
    g = torch.Generator().manual_seed(seed)
    k = sum(sizes)
    centre = torch.rand(batch, k // 4 + 1, 2, generator=g) * 250
    centre = centre.repeat_interleave(4, dim=1)[:, :k] + torch.randn(batch, k, 2, generator=g) * 1.5
    half = (4 + torch.rand(batch, k, 2, generator=g) * 30) / 2
    boxes = torch.cat([centre - half, centre + half], dim=2)
    scores = torch.rand(batch, k, generator=g)
    boxes[:, 1::50] = boxes[:, 0::50][:, : boxes[:, 1::50].shape[1]]  # duplicates ...
    scores[:, 1::50] = scores[:, 0::50][:, : scores[:, 1::50].shape[1]]  # ... of equal score
    boxes[:, 7::97, 2:] = boxes[:, 7::97, :2]  # zero-size boxes
    scores[:, 3::89] = 0.0
    return boxes, scores


def groups_of(sizes: list[int]) -> torch.Tensor:
    return torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])


@pytest.mark.parametrize("sizes", [[600, 300, 100], [SPLIT_THR // 2, SPLIT_THR // 2 + 10]])
def test_mask_is_batched_nms_of_each_image(sizes):
    """Both of mmcv's ways (coordinate offsets below SPLIT_THR boxes, one NMS per group above)."""
    boxes, scores = proposals_like(2, sizes, seed=len(sizes))
    mask = batched_nms_hbb_mask(boxes, scores, sizes, 0.8)
    assert mask.shape == scores.shape and mask.dtype == torch.bool
    for b in range(2):
        want = batched_nms_hbb(boxes[b], scores[b], groups_of(sizes), 0.8)
        assert 0 < len(want) < scores.shape[1]
        assert torch.equal(mask[b].nonzero().flatten(), want.sort().values)
    with pytest.raises(ValueError, match="do not add up"):
        batched_nms_hbb_mask(boxes, scores, [1, 2], 0.8)


class _MaskGraph(nn.Module):
    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.sizes = sizes

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return batched_nms_hbb_mask(boxes, scores, self.sizes, 0.8)


def test_onnx_nonmaxsuppression_equals_torchvision():
    """The ONNX graph (NonMaxSuppression + ScatterND, no custom domain) keeps the same boxes for
    every batch size, ties, zero-size boxes and zero scores included."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from rotdet.export.onnx_ops import register_onnx_symbolics

    sizes = [500, 200, 60]
    register_onnx_symbolics(17)
    f = io.BytesIO()
    axes = {"boxes": {0: "batch"}, "scores": {0: "batch"}, "keep": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _MaskGraph(sizes), proposals_like(2, sizes, 0), f, dynamo=False, opset_version=17,
            input_names=["boxes", "scores"], output_names=["keep"], dynamic_axes=axes,
        )  # fmt: skip
    ops = {n.op_type for n in onnx.load_from_string(f.getvalue()).graph.node}
    assert "NonMaxSuppression" in ops and not ops & {"Loop", "If"}
    assert all(n.domain in ("", "ai.onnx") for n in onnx.load_from_string(f.getvalue()).graph.node)
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    for batch, seed in ((1, 1), (2, 2), (3, 3)):
        boxes, scores = proposals_like(batch, sizes, seed)
        (got,) = session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy()})
        want = _MaskGraph(sizes)(boxes, scores).numpy()
        assert got.dtype == np.bool_ and np.array_equal(got, want)


def test_torch_export_keeps_the_operator():
    boxes, scores = proposals_like(2, [300, 100], 4)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        _MaskGraph([300, 100]), (boxes, scores), dynamic_shapes={"boxes": {0: batch}, "scores": {0: batch}}
    )
    assert any(n.target == torch.ops.rotdet.nms_keep_mask.default for n in program.graph.nodes)
    boxes, scores = proposals_like(3, [300, 100], 5)
    assert torch.equal(program.module()(boxes, scores), _MaskGraph([300, 100])(boxes, scores))


def test_empty_and_single_images():
    assert nms_keep_mask(torch.zeros(2, 0, 4), torch.zeros(2, 0), 0.5).shape == (2, 0)
    keep = nms_keep_mask(torch.tensor([[[0.0, 0, 10, 10], [1, 1, 10, 10]]]), torch.tensor([[0.5, 0.9]]), 0.5)
    assert keep.tolist() == [[False, True]]


def test_split_branch_keeps_mmcvs_shift():
    """Above SPLIT_THR boxes mmcv runs one NMS per group but still on the shifted boxes: a pair whose
    IoU crosses the threshold only through the shift's rounding is decided the shifted way."""
    import torchvision

    top = 2047.5  # group 0 fixes the largest coordinate: group 1 moves by top + 1
    n0 = SPLIT_THR
    x = torch.arange(n0, dtype=torch.float32) * (top - 1) / n0
    filler = torch.stack([x, torch.zeros(n0), x + 0.01, torch.full((n0,), top)], dim=1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20000):  # a pair at the threshold whose decision the shift's rounding flips
        a = float(torch.rand((), generator=gen)) * 100
        h = 8.0 + float(torch.randn((), generator=gen)) * 1e-4
        pair = torch.tensor([[a, a, a + 10.0, a + 10.0], [a, a, a + 10.0, a + h]])
        plain = float(torchvision.ops.box_iou(pair[:1], pair[1:]))
        moved = float(torchvision.ops.box_iou(pair[:1] + top + 1, pair[1:] + top + 1))
        if (plain > 0.8) != (moved > 0.8):
            break
    else:
        pytest.fail("no pair at the threshold found")
    boxes = torch.cat([filler, pair])
    scores = torch.cat([torch.rand(n0, generator=gen) * 0.5, torch.tensor([0.9, 0.8])])
    idxs = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(2, dtype=torch.long)])
    keep = batched_nms_hbb(boxes, scores, idxs, 0.8)
    assert (n0 + 1 in keep.tolist()) == (not moved > 0.8)
    mask = batched_nms_hbb_mask(boxes[None], scores[None], [n0, 2], 0.8)
    assert torch.equal(mask[0].nonzero().flatten(), keep.sort().values)
