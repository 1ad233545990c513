"""``rotdet convert``: an mmrotate 0.3.4 checkpoint to a rotdet one."""

from __future__ import annotations

import argparse

from rotdet.models.mmrotate_import import convert_checkpoint


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="mmrotate 0.3.4 checkpoint (.pth with state_dict, or a bare state dict)")
    parser.add_argument("dst", help="where to write the rotdet checkpoint")
    parser.add_argument("--config", required=True, help="rotdet config name (one of the seed configs)")
    parser.add_argument("--cfg-options", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")


def run_convert(args: argparse.Namespace) -> int:
    meta = convert_checkpoint(args.src, args.dst, args.config, args.cfg_options)  # errors: one line
    print(f"wrote {args.dst} ({meta['config']}, 0 missing / 0 unexpected keys)")
    return 0
