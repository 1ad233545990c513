"""``rotdet demo``: train and evaluate the demo model on ToyDOTA."""

from __future__ import annotations

import argparse

from rotdet.engine.demo import run_demo_job


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the demo config")
    parser.add_argument("--work-dir", default="work_dirs/demo", help="outputs (default work_dirs/demo)")
    parser.add_argument(
        "--data-dir", default="data/toydota", help="where ToyDOTA is written (default data/toydota)"
    )
    parser.add_argument("--num-train", type=int, default=192, help="training scenes")
    parser.add_argument("--num-val", type=int, default=32, help="held-out scenes")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the demo config's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument(
        "--amp",
        choices=("auto", "none", "bf16"),
        default="auto",
        help="mixed precision (auto: bf16 where the CPU/GPU runs it natively, about 2x faster)",
    )
    parser.add_argument("--no-progress", action="store_true")


def run_demo(args: argparse.Namespace) -> int:
    run_demo_job(
        args.work_dir,
        args.data_dir,
        args.num_train,
        args.num_val,
        args.overrides,
        args.device,
        progress=not args.no_progress,
        epochs=args.epochs,
        amp=args.amp,
        say=print,
    )
    return 0
