"""``rotdet export CONFIG CKPT --out DIR``: a static-shape ONNX graph (or ``--format pt2``) and its
metadata, for ``rotdet predict DIR/model.onnx IMAGES`` and ``Detector.from_export(DIR)``.

A wrong config name, a checkpoint of another config, a bad ``--input-size`` or an ``--out`` that
is a file or a folder of other files stop with one line (exit code 2), before anything is written;
the folder appears whole at the end, or not at all.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from rotdet.cli.predict import error_message
from rotdet.engine.checkpoint import CheckpointError
from rotdet.engine.inference import Detector
from rotdet.export.exporter import (
    DEFAULT_OPSET,
    EXPORT_JSON,
    FORMATS,
    ExportError,
    check_out_folder,
    export_detector,
)

__all__ = ["add_export_arguments", "run_export"]


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config name (see rotdet.configs) or .yaml path")
    parser.add_argument("checkpoint", help="checkpoint: rotdet's, or mmrotate 0.3.4's")
    parser.add_argument(
        "--out", required=True, help="export folder (created; a previous export there is replaced)"
    )
    parser.add_argument(
        "--format", choices=sorted(FORMATS), default="onnx", help="onnx (default) or pt2 (torch.export)"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="window size of the graph, a multiple of 32 (default: the config's test scale)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help="ONNX opset (default: %(default)s; the dynamo exporter writes 18 at least)",
    )
    parser.add_argument(
        "--onnx-exporter",
        choices=["torchscript", "dynamo"],
        default="torchscript",
        help="torch.onnx's exporter (default: %(default)s, several times faster)",
    )
    parser.add_argument(
        "--cfg-options", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (dotted keys)"
    )


def run_export(args: argparse.Namespace) -> int:
    """``rotdet export``: 0 on success, 2 on a bad request."""

    try:
        if args.format == "onnx":
            _require("onnx", "onnxruntime")
        out = check_out_folder(args.out)
        if not Path(args.checkpoint).is_file():
            raise ExportError(f"checkpoint {args.checkpoint} does not exist")
        detector = Detector.from_config(args.config, args.checkpoint, "cpu", args.cfg_options)
        start = time.perf_counter()
        export_detector(
            detector,
            out,
            fmt=args.format,
            input_size=args.input_size,
            opset=args.opset,
            exporter=args.onnx_exporter,
            checkpoint=args.checkpoint,
        )
    except (CheckpointError, ValueError, KeyError) as exc:
        print(f"rotdet export: {error_message(exc)}", file=sys.stderr)
        return 2
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    name = detector.cfg.get("name", args.config)
    print(f"exported {name} to {out} ({files}) in {time.perf_counter() - start:.1f} s")
    print(f"  rotdet predict {out / FORMATS[args.format]} IMAGES... --out preds/   (reads {EXPORT_JSON})")
    return 0


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f'{", ".join(missing)} not installed: pip install -e ".[export]"')
