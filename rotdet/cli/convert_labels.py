"""``rotdet convert-labels``: convert label folders between DOTA, YOLO-OBB, HRSC2016 and DIOR-R."""

from __future__ import annotations

import argparse

from rotdet.data.convert import READABLE, WRITABLE, convert_labels


def add_convert_labels_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="source label folder (DOTA labelTxt, HRSC / DIOR-R XML, YOLO-OBB labels)")
    parser.add_argument("dst", help="output label folder")
    parser.add_argument("--from", dest="src_format", required=True, choices=READABLE, help="source format")
    parser.add_argument("--to", dest="dst_format", required=True, choices=WRITABLE, help="output format")
    parser.add_argument(
        "--images",
        default=None,
        help="the images (their sizes normalise / denormalise YOLO-OBB coordinates when the labels do "
        "not hold them)",
    )
    parser.add_argument(
        "--classes",
        default=None,
        help="class list: a name (dota1.0, dota1.5, dota2.0, hrsc, hrsc-classwise, dior, sar, toy), "
        "comma-separated names, or a YOLO data YAML (default: dota1.0 / hrsc / dior by source)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first malformed label")


def run_convert_labels(args: argparse.Namespace) -> int:
    """``rotdet convert-labels``."""
    result = convert_labels(
        args.src, args.dst, args.src_format, args.dst_format, args.images, args.classes, args.strict
    )
    print(result.summary())
    return 0
