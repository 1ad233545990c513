"""Kernel launches and host syncs outside the network: what limits a fast GPU.

    python benchmarks/bench_launches.py                              # CPU is enough: counts, not times
    python benchmarks/bench_launches.py --as-gpu                     # the GPU's code path, on the CPU
    python benchmarks/bench_launches.py --device cuda                # adds CUDA's own sync count

On a GPU every eager PyTorch op is one or more kernel launches (5-10 us of host time each) and every
host sync (``nonzero``, boolean indexing, ``.item()``, ``.tolist()``) stalls the host until the GPU
has finished everything queued, after which the GPU idles while the host queues the next kernels.
Anchors, assignment, targets, losses, decoding and NMS are small work for a GPU, so their cost is
almost entirely these two counts -- which do not depend on the device and can be read on a CPU.

For each config: one training step (``forward_train`` + backward) and one ``predict``, counted with
a ``TorchDispatchMode`` (every ATen op that reaches a kernel), minus the same count for the bare
network (forward + backward, resp. forward) on the same batch: the remainder is the detector's own
overhead. "syncs" counts the ops that force a host sync on CUDA (``nonzero``, ``_local_scalar_dense``
behind ``item``/``bool``/``int``, boolean-mask indexing, ``masked_select``, ``unique``,
``repeat_interleave`` without ``output_size``); ``.tolist()`` on a CPU tensor dispatches no op and is
missed on the CPU. On CUDA the run also reports the syncs CUDA itself saw
(``torch.cuda.set_sync_debug_mode``), which are exact.

Inputs as in ``bench_model.py``: random weights with the classification bias shifted so that about
``--candidates`` class scores per image pass the test threshold, ``--gts`` DOTA-like ground truths
per training image.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import calibrate_scores_, random_targets, tensors_of  # noqa: E402
from common import append_record, print_table  # noqa: E402

from rotdet.configs import load_config  # noqa: E402
from rotdet.models.factory import build_model  # noqa: E402
from rotdet.ops import iou as iou_module  # noqa: E402
from rotdet.ops import nms as nms_module  # noqa: E402

DEFAULT_CONFIGS = ",".join(
    (
        "rotated_atss_obb_r50_fpn_1x_dota_le90",
        "rotated_retinanet_obb_r50_fpn_1x_dota_le90",
        "r3det_atss_r50_fpn_1x_dota_oc",
    )
)
_SYNC_OPS = {
    "nonzero",
    "_local_scalar_dense",
    "masked_select",
    "unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
}


def _is_sync(func, args, kwargs) -> bool:
    name = func.overloadpacket.__name__
    if name in _SYNC_OPS:
        return True
    if name == "repeat_interleave" and func._overloadname in ("Tensor", "self_Tensor"):
        return kwargs.get("output_size") is None
    if name in ("index", "index_put", "index_put_"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", [])
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
    return False


def _is_view(func) -> bool:
    """Views (slices, reshapes, transposes) run no kernel: they are not counted."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


class OpCounter(TorchDispatchMode):
    """Counts ATen ops that run a kernel (views excluded), and those among them that sync the host on CUDA."""

    active: OpCounter | None = None

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.paused = False
        self.syncs = Counter()

    def __enter__(self):
        OpCounter.active = self
        return super().__enter__()

    def __exit__(self, *exc):
        OpCounter.active = None
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused:
            return func(*args, **kwargs)
        if not _is_view(func):
            self.ops += 1
        if _is_sync(func, args, kwargs):
            self.syncs[func.overloadpacket.__name__] += 1
        return func(*args, **kwargs)


class _OneKernelIntersection:
    """Stands in for rotdet's Triton IoU kernel with ``--as-gpu``: computes with the PyTorch path
    and counts one launch, which is what the fused kernel is on a GPU."""

    @staticmethod
    def available(device) -> bool:
        return True

    @staticmethod
    def intersection(*pose):
        counter = OpCounter.active
        if counter is None:
            return iou_module._intersection_torch(*pose)
        counter.paused = True
        try:
            return iou_module._intersection_torch(*pose)
        finally:
            counter.paused = False
            counter.ops += 1


def count(fn, device: str, warmup: bool = True) -> dict:
    """Ops and syncs of one call of ``fn`` (after a warm-up call that fills the caches)."""
    if warmup or device.startswith("cuda"):
        fn()
    cuda_syncs = None
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        cuda_syncs = sum("synchroniz" in str(w.message) for w in caught)
    with OpCounter() as counter:
        fn()
    return {
        "ops": counter.ops,
        "syncs": sum(counter.syncs.values()),
        "cuda_syncs": cuda_syncs,
        "kinds": counter.syncs,
    }


def bench_config(name: str, args, rng: np.random.Generator) -> list[dict]:
    device = args.device
    cfg = load_config(name, {"model.backbone.pretrained": False})
    model = build_model(cfg).to(device)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    calibrate_scores_(model, images[:1], args.candidates, cfg["model"]["test_cfg"]["score_thr"])
    num_classes = cfg["model"]["bbox_head"]["num_classes"]
    targets = random_targets(rng, args.batch, args.size, args.gts, num_classes, device)

    def train_step() -> None:
        losses = model.forward_train(images, targets)
        sum(v.sum() for v in losses.values()).backward()
        model.zero_grad(set_to_none=True)

    def network_step() -> None:
        sum(t.float().mean() for t in tensors_of(model(images)) if t.requires_grad).backward()
        model.zero_grad(set_to_none=True)

    model.train()
    train = count(train_step, device)
    network = count(network_step, device, warmup=False)
    model.eval()
    with torch.no_grad():
        infer = count(lambda: model.predict(images), device)
        forward = count(lambda: model(images), device, warmup=False)
        dets = model.predict(images)
    rows = []
    for mode, full, bare in (("train", train, network), ("infer", infer, forward)):
        rows.append(
            {
                "config": name,
                "mode": mode,
                "batch": args.batch,
                "network_ops": bare["ops"],
                "overhead_ops": full["ops"] - bare["ops"],
                "overhead_syncs": full["syncs"] - bare["syncs"],
                "cuda_syncs": None if full["cuda_syncs"] is None else full["cuda_syncs"] - bare["cuda_syncs"],
                "sync_kinds": dict(full["kinds"] - bare["kinds"]),
            }
        )
    rows[-1]["dets_per_img"] = sum(len(d.scores) for d in dets) / args.batch
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--gts", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--as-gpu", action="store_true", help="count the GPU's code path, on the CPU")
    args = parser.parse_args()
    if args.as_gpu:
        # The GPU's code path on the CPU, so that the counts are those a GPU runs: its NMS and IoU
        # chunk tuning, and the fused IoU kernel counted as the one launch it is.
        nms_module._TUNING.pop("cpu", None)
        iou_module._PAIRS_PER_CHUNK.pop("cpu", None)
        iou_module._triton_iou = _OneKernelIntersection
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rows = []
    for name in args.configs.split(","):
        rows += bench_config(name, args, rng)
        print_table(rows[-2:], list(rows[-2]))
        sys.stdout.flush()
    print_table(rows, list(rows[0]))
    append_record(
        "launches",
        rows,
        args.out,
        size=args.size,
        gts=args.gts,
        candidates=args.candidates,
        as_gpu=args.as_gpu,
    )


if __name__ == "__main__":
    main()
