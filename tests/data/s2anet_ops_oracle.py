"""Inputs for the S2A-Net op tests, and the script that records mmcv / mmrotate 0.3.4's outputs on them.

``make_inputs`` needs numpy only (the legacy ``RandomState`` stream is stable across numpy versions), so
the tests rebuild the very same inputs. Running this file needs the reference oracle's venv
(``../shared/reference/README.md``) and writes ``s2anet_ops_mmcv.npz`` beside it::

    $REF/venv/bin/python -W ignore tests/data/s2anet_ops_oracle.py

Recorded: mmrotate's ``ORConv2d`` index tables and mmcv's CPU ``active_rotated_filter`` for several
``arf_config``s, an ``ORConv2d(arf_config=(1, 8))`` forward (the ODM head's), ``RotationInvariantPooling``,
and ``AlignConv`` (its offsets and its forward on mmcv's CPU ``DeformConv2d``) at two strides.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "s2anet_ops_mmcv.npz"
ARF_CONFIGS = ((1, 8), (8, 8), (4, 4), (2, 8), (8, 2), (1, 1))
STRIDES = (8, 16)
FEAT_HW = (9, 11)


def make_inputs() -> dict[str, np.ndarray]:
    """Random weights, features and one rotated box per location (float32)."""
    rng = np.random.RandomState(16)
    d: dict[str, np.ndarray] = {}
    for n_orient in sorted({c[0] for c in ARF_CONFIGS}):
        for k in (1, 3):
            d[f"arf_w_{n_orient}_{k}"] = rng.randn(3, 4, n_orient, k, k)
    d["or_w"] = rng.randn(2, 16, 1, 3, 3)
    d["or_b"] = rng.randn(16)
    d["or_x"] = rng.randn(2, 16, *FEAT_HW)
    d["ac_w"] = rng.randn(12, 16, 3, 3) * 0.1
    h, w = FEAT_HW
    for s in STRIDES:
        ys, xs = np.meshgrid(np.arange(h) * s + s / 2, np.arange(w) * s + s / 2, indexing="ij")
        n = h * w
        boxes = np.stack(
            [
                np.broadcast_to(xs.reshape(-1), (2, n)) + rng.randn(2, n) * s,
                np.broadcast_to(ys.reshape(-1), (2, n)) + rng.randn(2, n) * s,
                rng.rand(2, n) * 8 * s + 1,
                rng.rand(2, n) * 4 * s + 1,
                (rng.rand(2, n) - 0.25) * math.pi,
            ],
            axis=-1,
        )
        d[f"ac_x_{s}"] = rng.randn(2, 16, h, w)
        d[f"ac_boxes_{s}"] = boxes
    return {k: v.astype(np.float32) for k, v in d.items()}


def main() -> None:
    import torch
    from mmcv.ops import active_rotated_filter
    from mmrotate.models.detectors.utils import AlignConv
    from mmrotate.models.utils import ORConv2d, RotationInvariantPooling

    d = {k: torch.from_numpy(v) for k, v in make_inputs().items()}
    out = {}
    for n_orient, n_rot in ARF_CONFIGS:
        for k in (1, 3):
            conv = ORConv2d(4, 3, kernel_size=k, arf_config=(n_orient, n_rot), padding=k // 2)
            out[f"indices_{n_orient}_{n_rot}_{k}"] = conv.indices.numpy()
            arf = active_rotated_filter(d[f"arf_w_{n_orient}_{k}"], conv.indices)
            out[f"arf_{n_orient}_{n_rot}_{k}"] = arf.numpy()
    conv = ORConv2d(16, 2, kernel_size=3, padding=1, arf_config=(1, 8))
    conv.weight.data, conv.bias.data = d["or_w"], d["or_b"]
    with torch.no_grad():
        out["or_out"] = conv(d["or_x"]).numpy()
        out["ripool"] = RotationInvariantPooling(256, 8)(d["or_x"]).numpy()
        for s in STRIDES:
            ac = AlignConv(16, 12, kernel_size=3, stride=s)
            ac.deform_conv.weight.data = d["ac_w"]
            x, boxes = d[f"ac_x_{s}"], d[f"ac_boxes_{s}"]
            offsets = [ac.get_offset(b, x.shape[-2:], s) for b in boxes]
            out[f"ac_offset_{s}"] = torch.stack(offsets).numpy()
            out[f"ac_out_{s}"] = ac(x, boxes.reshape(-1, 5)).numpy()
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
