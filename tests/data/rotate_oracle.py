"""Cases for the ``PolyRandomRotate`` test, and the script that records mmrotate 0.3.4's output on them.

``make_case`` needs numpy only (the legacy ``RandomState`` stream is stable across numpy versions),
so the test rebuilds the same inputs. Each case runs mmrotate's transform ``CALLS`` times in a row on
one instance after ``np.random.seed(seed)`` (so the in-place shuffle of its 90-degree list carries
over between calls, as in a training run) and records, per call, the angle, whether it rotated, and
the output image / boxes / labels (or that it dropped the sample). Running this file needs the
reference oracle's venv (``../shared/reference/README.md``, mmrotate 0.3.4) and writes
``poly_random_rotate.npz`` beside it::

    $REF/venv/bin/python -W ignore tests/data/rotate_oracle.py

Before mmcv-full is compiled there, mmrotate 0.3.4's own source files can be run instead: the
transform needs only numpy, OpenCV and ``mmrotate.core.bbox.transforms``; the imports it does not
use (mmcv's ops, mmdet's other transforms, the registry) are stubbed::

    $REF/venv/bin/python -W ignore tests/data/rotate_oracle.py MMROTATE_0.3.4_SOURCE_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "poly_random_rotate.npz"
CALLS = 4

# name: (version, transform kwargs, image (h, w), seed)
CASES = {
    "le90_range": ("le90", {"rotate_ratio": 0.5, "angles_range": 180}, (37, 53), 0),
    "le90_auto_bound": ("le90", {"rotate_ratio": 1.0, "angles_range": 180, "auto_bound": True}, (37, 53), 1),
    "oc_range": ("oc", {"rotate_ratio": 0.7, "angles_range": 90}, (40, 40), 2),
    "oc_auto_bound": ("oc", {"rotate_ratio": 1.0, "angles_range": 45, "auto_bound": True}, (31, 60), 3),
    "le135_range": ("le135", {"rotate_ratio": 1.0, "angles_range": 180}, (48, 33), 4),
    "le135_auto_bound": ("le135", {"rotate_ratio": 1.0, "angles_range": 30, "auto_bound": True}, (48, 33), 5),
    "le90_value": (
        "le90",
        {"rotate_ratio": 1.0, "mode": "value", "angles_range": [30, -60, 90]},
        (37, 53),
        6,
    ),
    "le90_rect": ("le90", {"rotate_ratio": 1.0, "angles_range": 180, "rect_classes": [1]}, (37, 53), 7),
    "oc_rect_auto": (
        "oc",
        {"rotate_ratio": 1.0, "angles_range": 180, "rect_classes": [2], "auto_bound": True},
        (37, 53),
        8,
    ),
    "le90_negative": (
        "le90",
        {"rotate_ratio": 1.0, "angles_range": 180, "allow_negative": True},
        (20, 24),
        9,
    ),
    "le90_not_rotated": ("le90", {"rotate_ratio": 0.0}, (37, 53), 10),
}


def make_case(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(img uint8 [h, w, 3], gt_bboxes float32 [N, 5] in the case's version, gt_labels int64 [N])``.

    Angles in the version's range (oc (0, pi/2]; le90 [-pi/2, pi/2); le135 [-pi/4, 3pi/4)), w >= h
    for le90 / le135; some boxes are small (sides <= 5 px, dropped by the transform) or near the border."""
    version, _, (h, w), seed = CASES[name]
    rng = np.random.RandomState(100 + seed)
    img = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
    n = 2 if name == "le90_negative" else 7
    cx, cy = rng.uniform(2, w - 2, n), rng.uniform(2, h - 2, n)
    bw, bh = rng.uniform(3, w / 2, n), rng.uniform(3, h / 2, n)
    if name == "le90_negative":
        bw, bh = np.full(n, 4.0), np.full(n, 3.0)  # too small to survive: allow_negative keeps the image
    low = {"oc": 0.0, "le90": -np.pi / 2, "le135": -np.pi / 4}[version]
    theta = low + rng.uniform(0, np.pi / 2 if version == "oc" else np.pi, n)
    if version == "oc":
        theta = np.maximum(theta, 1e-3)
    else:
        bw, bh = np.maximum(bw, bh), np.minimum(bw, bh)
    boxes = np.stack([cx, cy, bw, bh, theta], axis=1).astype(np.float32)
    labels = rng.randint(0, 3, n).astype(np.int64)
    return img, boxes, labels


def _load_from_source(src: Path):
    """mmrotate 0.3.4's ``PolyRandomRotate`` from its source tree, without mmcv / mmdet installed."""
    import types
    from collections.abc import Sequence

    def module(name: str, **attrs) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    def is_seq_of(seq, expected_type, seq_type=None):
        return isinstance(seq, seq_type or Sequence) and all(isinstance(x, expected_type) for x in seq)

    class Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    module("mmcv", is_seq_of=is_seq_of)
    module("mmcv.ops", box_iou_rotated=None)
    for name in ("mmdet", "mmdet.datasets", "mmdet.datasets.pipelines"):
        module(name)
    module(
        "mmdet.datasets.pipelines.transforms",
        Mosaic=object,
        RandomCrop=object,
        RandomFlip=object,
        Resize=object,
    )
    core = module("mmrotate.core")
    exec(
        compile((src / "mmrotate/core/bbox/transforms.py").read_text(), "core/bbox/transforms.py", "exec"),
        core.__dict__,
    )
    for name in ("mmrotate", "mmrotate.datasets"):
        module(name)
    module("mmrotate.datasets.builder", ROTATED_PIPELINES=Registry())
    pipes = module("mmrotate.datasets.pipelines.transforms", __package__="mmrotate.datasets.pipelines")
    path = src / "mmrotate/datasets/pipelines/transforms.py"
    exec(compile(path.read_text(), str(path), "exec"), pipes.__dict__)
    return pipes.PolyRandomRotate


def record(out: Path = OUT, src: Path | None = None) -> None:
    if src is None:
        from mmrotate.datasets.pipelines.transforms import PolyRandomRotate
    else:
        PolyRandomRotate = _load_from_source(src)

    arrays = {}
    for name, (version, kwargs, _, seed) in CASES.items():
        img, boxes, labels = make_case(name)
        np.random.seed(seed)  # noqa: NPY002 - mmrotate draws from the global numpy RNG
        t = PolyRandomRotate(version=version, **kwargs)
        for k in range(CALLS):
            results = {
                "img": img.copy(),
                "img_shape": img.shape,
                "gt_bboxes": boxes.copy(),
                "gt_labels": labels.copy(),
            }
            res = t(results)
            key = f"{name}/{k}"
            arrays[f"{key}/angle"] = np.float64(results["rotate_angle"])
            arrays[f"{key}/rotate"] = np.bool_(results["rotate"])
            arrays[f"{key}/dropped"] = np.bool_(res is None)
            if res is not None:
                arrays[f"{key}/img"] = res["img"]
                arrays[f"{key}/img_shape"] = np.array(res["img_shape"])
                arrays[f"{key}/gt_bboxes"] = np.asarray(res["gt_bboxes"], np.float32).reshape(-1, 5)
                arrays[f"{key}/gt_labels"] = np.asarray(res["gt_labels"], np.int64)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({len(arrays)} arrays)")


if __name__ == "__main__":
    record(src=Path(sys.argv[1]) if len(sys.argv) > 1 else None)
