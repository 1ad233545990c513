"""``rotdet config``: the resolved config (bases merged, overrides applied, angle convention spelled
out) as the YAML that ``rotdet train`` would write to its work dir, or the list of bundled configs."""

from __future__ import annotations

import argparse
import sys

import yaml

from rotdet.configs import list_configs, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="a bundled config name or a .yaml path")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted-key overrides")
    parser.add_argument("--list", action="store_true", help="list the bundled configs")


def run(args: argparse.Namespace) -> int:
    if args.list or not args.config:
        print("\n".join(list_configs()))
        return 0
    cfg = load_config(args.config, args.overrides)
    sys.stdout.write(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))
    return 0
