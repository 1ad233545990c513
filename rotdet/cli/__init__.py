"""The ``rotdet`` command line.

:data:`COMMANDS` lists every command in one place: a name mapped to its help line and its module in
this package (``rotdet/cli/<command>.py``), which defines the command's arguments, its printing and
its exit codes (``add_*_arguments(parser)``, ``run_*(args) -> exit code``) around library functions
that return results. A command's module is imported only when that command runs (or shows its
help), so ``rotdet --help`` and ``rotdet split`` never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NamedTuple

import rotdet


class Command(NamedTuple):
    help: str
    module: str  # the module defining the two functions below
    add_arguments: str
    run: str


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "Train and evaluate the demo model on ToyDOTA (CPU, 5-10 min).",
        "rotdet.cli.demo",
        "add_demo_arguments",
        "run_demo",
    ),
    "train": Command(
        "Train a config (single process, or several under torchrun).",
        "rotdet.cli.train",
        "add_train_arguments",
        "run_train",
    ),
    "test": Command(
        "Evaluate a checkpoint; merge patches; write DOTA submission files.",
        "rotdet.cli.test",
        "add_test_arguments",
        "run_test",
    ),
    "split": Command(
        "Cut large DOTA images into patches (mmrotate img_split).",
        "rotdet.cli.split",
        "add_split_arguments",
        "run_split",
    ),
    "make-toy": Command(
        "Write the synthetic ToyDOTA dataset (DOTA, YOLO-OBB, HRSC2016 or DIOR-R files).",
        "rotdet.cli.make_toy",
        "add_make_toy_arguments",
        "run_make_toy",
    ),
    "convert-labels": Command(
        "Convert label folders between DOTA, YOLO-OBB, HRSC2016 and DIOR-R.",
        "rotdet.cli.convert_labels",
        "add_convert_labels_arguments",
        "run_convert_labels",
    ),
    "browse": Command(
        "Draw the annotations of a few samples to PNG.",
        "rotdet.cli.browse",
        "add_browse_arguments",
        "run_browse",
    ),
    "eval": Command(
        "mAP of Task1 files or rotdet JSON vs labelTxt (DOTA, mmrotate).",
        "rotdet.cli.eval",
        "add_eval_arguments",
        "run_eval",
    ),
    "convert": Command(
        "Convert an mmrotate 0.3.4 checkpoint to rotdet.",
        "rotdet.cli.convert",
        "add_convert_arguments",
        "run_convert",
    ),
    "predict": Command(
        "Detect objects in images of any size.",
        "rotdet.cli.predict",
        "add_predict_arguments",
        "run_predict",
    ),
    "export": Command(
        "Export a model to ONNX (or torch.export .pt2) for deployment.",
        "rotdet.cli.export",
        "add_export_arguments",
        "run_export",
    ),
    "config": Command(
        "Print a config resolved (bases, overrides, angle convention) or list them.",
        "rotdet.cli.config",
        "add_arguments",
        "run",
    ),
    "bench": Command(
        "Inference / training speed and peak memory of a config.",
        "rotdet.cli.bench",
        "add_bench_arguments",
        "run_bench",
    ),
}


def _requested_command(argv: list[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to give it its arguments."""
    parser = argparse.ArgumentParser(
        prog="rotdet", description="Oriented object detection for aerial images."
    )
    parser.add_argument("--version", action="version", version=f"rotdet {rotdet.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if name == command:
            module = importlib.import_module(cmd.module)
            getattr(module, cmd.add_arguments)(sub_parser)
            sub_parser.set_defaults(_run=getattr(module, cmd.run))
    return parser


# Errors that come from what the user gave (config, paths, checkpoints, data) and whose message says
# everything: printed as one line instead of a traceback (ROTDET_DEBUG=1 shows the traceback). The
# rotdet ones are looked up only where their module is loaded (a raised one always is).
BUILTIN_USER_ERRORS: tuple[type[BaseException], ...] = (OSError, KeyError, ValueError)
ROTDET_USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("rotdet.engine.checkpoint", "CheckpointError"),
    ("rotdet.engine.trainer", "NonFiniteLossError"),
    ("rotdet.models.backbone", "PretrainedWeightsError"),
)


def user_errors() -> tuple[type[BaseException], ...]:
    loaded = [getattr(sys.modules[m], n) for m, n in ROTDET_USER_ERRORS if m in sys.modules]
    return (*BUILTIN_USER_ERRORS, *loaded)


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
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _requested_command(argv)
    parser = build_parser(command if command in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may stand between options (`train CFG --amp bf16 a.b=1 --seed 3`), which
    # argparse cannot give to a positional list: collect them here.
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    unknown = [a for a in extra if a not in overrides]
    # Likewise the trailing list of paths (`predict CFG CKPT --size 512 scene.tif`): argparse closes
    # a `*` positional at its first chunk, so later words land here.
    if isinstance(getattr(args, "paths", None), list):
        words = [a for a in unknown if not a.startswith("-")]
        if len(words) == len(unknown):
            args.paths, unknown = [*args.paths, *words], []
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
    except Exception as exc:
        if not isinstance(exc, user_errors()) or os.environ.get("ROTDET_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"rotdet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"rotdet {args.command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130
