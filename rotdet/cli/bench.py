"""``rotdet bench``: inference / training speed and peak memory of a config."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rotdet.cli.predict import add_fast_argument, check_device, error_message
from rotdet.engine.bench import benchmark, format_table
from rotdet.engine.checkpoint import CheckpointError


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config name (see rotdet.configs) or .yaml path")
    parser.add_argument("--checkpoint", default=None, help="weights (default: random, see the notes)")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="images per iteration (default: %(default)s)"
    )
    parser.add_argument("--img-size", type=int, default=1024, help="square image side (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=50, help="timed iterations (default: %(default)s)")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed iterations first (default: %(default)s)"
    )
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu... (default: cuda when available)")
    parser.add_argument("--train", action="store_true", help="also time training iterations")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="mixed precision")
    parser.add_argument(
        "--json", default=None, metavar="OUT", help="also write the numbers to this JSON file"
    )
    parser.add_argument(
        "--cfg-options", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (dotted keys)"
    )
    add_fast_argument(parser)


def run_bench(args: argparse.Namespace) -> int:
    """``rotdet bench``: 0, or 2 with a one-line message for a bad config, checkpoint or option."""
    try:
        result = benchmark(
            args.config,
            args.checkpoint,
            batch_size=args.batch_size,
            img_size=args.img_size,
            iters=args.iters,
            warmup=args.warmup,
            device=check_device(args.device),
            train=args.train,
            amp=args.amp,
            overrides=args.cfg_options,
            fast=args.fast,
        )
    except (CheckpointError, ValueError, KeyError) as exc:
        print(f"rotdet bench: {error_message(exc)}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 0
