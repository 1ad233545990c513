"""The ``rotdet`` command line.

Each subcommand lives next to the code it drives and registers itself here through
:data:`SUBCOMMANDS`: a name mapped to ``(help, add_arguments, run)``; ``run(args)`` returns the exit
code. Keeping the table explicit (no plugin discovery) lets a reader see every command in one place.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

import rotdet
from rotdet.data.browse import add_browse_arguments, run_browse
from rotdet.data.split import add_split_arguments, run_split
from rotdet.data.toy import add_make_toy_arguments, run_make_toy
from rotdet.engine.bench import add_bench_arguments, run_bench
from rotdet.engine.checkpoint import CheckpointError
from rotdet.engine.demo import add_demo_arguments, run_demo
from rotdet.engine.predict_cli import add_predict_arguments, run_predict
from rotdet.engine.test import add_test_arguments, run_test
from rotdet.engine.train import NonFiniteLossError, add_train_arguments, run_train
from rotdet.evaluation.runner import add_eval_arguments, run_eval
from rotdet.export.cli import add_export_arguments, run_export
from rotdet.models.mmrotate_import import add_convert_arguments, run_convert

Subcommand = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

SUBCOMMANDS: dict[str, Subcommand] = {
    "demo": ("Train and evaluate the demo model on ToyDOTA (CPU, 5-10 min).", add_demo_arguments, run_demo),
    "train": ("Train a config (single process, or several under torchrun).", add_train_arguments, run_train),
    "test": (
        "Evaluate a checkpoint; merge patches; write DOTA submission files.",
        add_test_arguments,
        run_test,
    ),
    "split": ("Cut large DOTA images into patches (mmrotate img_split).", add_split_arguments, run_split),
    "make-toy": ("Write the synthetic ToyDOTA dataset.", add_make_toy_arguments, run_make_toy),
    "browse": ("Draw the annotations of a few samples to PNG.", add_browse_arguments, run_browse),
    "eval": ("mAP of Task1 files or rotdet JSON vs labelTxt (DOTA, mmrotate).", add_eval_arguments, run_eval),
    "convert": ("Convert an mmrotate 0.3.4 checkpoint to rotdet.", add_convert_arguments, run_convert),
    "predict": ("Detect objects in images of any size.", add_predict_arguments, run_predict),
    "bench": ("Inference / training speed and peak memory of a config.", add_bench_arguments, run_bench),
    "export": (
        "Export a model to ONNX (or torch.export .pt2) for deployment.",
        add_export_arguments,
        run_export,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rotdet", description="Oriented object detection for aerial images."
    )
    parser.add_argument("--version", action="version", version=f"rotdet {rotdet.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, run) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub_parser)
        sub_parser.set_defaults(_run=run)
    return parser


# Errors that come from what the user gave (config, paths, checkpoints, data) and whose message says
# everything: printed as one line instead of a traceback (ROTDET_DEBUG=1 shows the traceback).
USER_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError,
    FileNotFoundError,
    KeyError,
    NonFiniteLossError,
    ValueError,
)


def _console_logging() -> None:
    """rotdet's INFO messages (training progress, evaluation tables) on stderr, once per process."""
    log = logging.getLogger("rotdet")
    if not any(getattr(h, "_rotdet_console", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._rotdet_console = True
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may stand between options (`train CFG --amp bf16 a.b=1 --seed 3`), which
    # argparse cannot give to a positional list: collect them here.
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    unknown = [a for a in extra if a not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        parser.parse_args(argv)  # reports the unrecognised arguments the usual way and exits
    if overrides:
        args.overrides = [*(args.overrides or []), *overrides]
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    _console_logging()
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        if os.environ.get("ROTDET_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"rotdet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"rotdet {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
