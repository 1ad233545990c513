"""Training engine overhead: a ``rotdet train`` iteration against the network's own cost.

    python benchmarks/bench_train.py                       # demo config on ToyDOTA, CPU, fp32 and bf16
    python benchmarks/bench_train.py --device cuda --amp none bf16

Three numbers per precision, in one run, seconds per iteration at the config's batch size:

* ``network``: forward + backward of the network alone (a dummy loss on the raw head outputs) and
  the optimizer step, on one batch already in memory: the compute floor;
* ``model``: the same with the real losses (anchors, assignment, targets, focal + L1): what the
  detector adds;
* ``engine``: an iteration of :func:`rotdet.engine.train.train` (data loading with the config's
  workers, lr schedule, AMP, gradient clipping, logging, progress), measured as the difference
  between two runs of different length within the first epoch, so that start-up and the final
  checkpoint cancel (end-of-epoch work, a checkpoint and maybe an evaluation, is not included).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_record, print_table  # noqa: E402

from rotdet.configs import load_config  # noqa: E402
from rotdet.data import collate, ensure_toy_dota  # noqa: E402
from rotdet.engine.data import build_dataset  # noqa: E402
from rotdet.engine.optim import build_optimizer  # noqa: E402
from rotdet.engine.runtime import AMP_DTYPES, autocast  # noqa: E402
from rotdet.engine.train import TrainOptions, train  # noqa: E402
from rotdet.models.detectors import sum_losses  # noqa: E402
from rotdet.models.factory import build_model  # noqa: E402


def per_iteration(step, iters: int, device: torch.device) -> float:
    step()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / iters


def bare_steps(cfg: dict, device: torch.device, amp: str, iters: int) -> tuple[float, float]:
    model = build_model(cfg).to(device).train()
    optimizer = build_optimizer(cfg, model)
    dataset = build_dataset(cfg, "train")
    batch = collate([dataset[i] for i in range(cfg["data"]["samples_per_gpu"])])
    batch["img"] = batch["img"].to(device)
    batch["gt_bboxes"] = [b.to(device) for b in batch["gt_bboxes"]]
    batch["gt_labels"] = [b.to(device) for b in batch["gt_labels"]]

    def network():
        with autocast(device, amp):
            cls, reg = model(batch["img"])
            loss = sum(c.float().mean() for c in cls) + sum(r.float().mean() for r in reg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def with_losses():
        with autocast(device, amp):
            loss = sum_losses(model.loss_batch(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return per_iteration(network, iters, device), per_iteration(with_losses, iters, device)


def engine_step(cfg: dict, device: torch.device, amp: str, iters: int, work: Path) -> float:
    def run(n: int) -> float:
        t0 = time.perf_counter()
        opts = TrainOptions(work_dir=work / f"{amp}-{n}", resume=None, device=str(device), amp=amp,
                            max_iters=n, eval_interval=0, progress=False)  # fmt: skip
        train(cfg, opts)
        return time.perf_counter() - t0

    short, long = run(4), run(4 + iters)
    return (long - short) / iters


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="demo_atss_le90")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", nargs="+", default=["none", "bf16"], choices=sorted(AMP_DTYPES))
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument(
        "--images", type=int, default=256, help="ToyDOTA scenes (one epoch outlasts both runs)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ensure_toy_dota(tmp / "toy" / "train", num_images=args.images, seed=0, size=(256, 256))
        ensure_toy_dota(tmp / "toy" / "val", num_images=4, seed=1, size=(256, 256))
        cfg = load_config(args.config, [f"data.root={tmp / 'toy'}", "model.backbone.pretrained=false"])
        for amp in args.amp:
            torch.manual_seed(0)
            network, model = bare_steps(cfg, device, amp, args.iters)
            engine = engine_step(cfg, device, amp, args.iters, tmp)
            rows.append({
                "config": args.config, "amp": amp, "batch": cfg["data"]["samples_per_gpu"],
                "network_s": round(network, 4), "model_s": round(model, 4), "engine_s": round(engine, 4),
                "model/network": round(model / network, 3), "engine/network": round(engine / network, 3),
            })  # fmt: skip
    print_table(rows, list(rows[0]))
    append_record("train", rows, device=str(device))


if __name__ == "__main__":
    main()
