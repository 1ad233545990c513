"""The ``rotdet`` command line.

Each subcommand lives next to the code it drives and registers itself here through
:data:`SUBCOMMANDS`: a name mapped to ``(help, add_arguments, run)``; ``run(args)`` returns the exit
code. Keeping the table explicit (no plugin discovery) lets a reader see every command in one place.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import rotdet
from rotdet.data.browse import add_browse_arguments, run_browse
from rotdet.data.split import add_split_arguments, run_split
from rotdet.data.toy import add_make_toy_arguments, run_make_toy
from rotdet.evaluation.runner import add_eval_arguments, run_eval
from rotdet.models.mmrotate_import import add_convert_arguments, run_convert

Subcommand = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

SUBCOMMANDS: dict[str, Subcommand] = {
    "split": ("Cut large DOTA images into patches (mmrotate img_split).", add_split_arguments, run_split),
    "make-toy": ("Write the synthetic ToyDOTA dataset.", add_make_toy_arguments, run_make_toy),
    "browse": ("Draw the annotations of a few samples to PNG.", add_browse_arguments, run_browse),
    "eval": ("mAP of Task1 files or rotdet JSON vs labelTxt (DOTA, mmrotate).", add_eval_arguments, run_eval),
    "convert": ("Convert an mmrotate 0.3.4 checkpoint to rotdet.", add_convert_arguments, run_convert),
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
