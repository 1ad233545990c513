"""``rotdet split``: cut large images into patches as mmrotate's img_split.py does."""

from __future__ import annotations

import sys

from rotdet.data.split import SPLIT_PRESETS, split_dataset


def add_split_arguments(parser) -> None:
    parser.add_argument("--img-dirs", nargs="+", required=True, help="directories of the original images")
    parser.add_argument(
        "--ann-dirs", nargs="+", default=None, help="their labelTxt directories (omit for test)"
    )
    parser.add_argument("--out", "--save-dir", required=True, help="output directory (images/, annfiles/)")
    parser.add_argument(
        "--preset", choices=sorted(SPLIT_PRESETS), default="ss", help="mmrotate's ss or ms setting"
    )
    parser.add_argument("--sizes", nargs="+", type=int, help="override the preset's window sizes")
    parser.add_argument("--gaps", nargs="+", type=int, help="override the preset's gaps")
    parser.add_argument("--rates", nargs="+", type=float, help="override the preset's rates")
    parser.add_argument("--img-rate-thr", type=float, help="minimal share of a window inside the image")
    parser.add_argument("--iof-thr", type=float, help="minimal object/window iof")
    parser.add_argument("--padding-value", nargs="+", type=int, help="BGR padding (1 or 3 values)")
    parser.add_argument("--no-padding", action="store_true", help="do not pad border patches")
    parser.add_argument("--save-ext", help="patch image extension (.png)")
    parser.add_argument("--nproc", type=int, default=1, help="parallel processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_split(args) -> int:
    """``rotdet split``: returns 0, or 1 when some images could not be split (listed on stderr)."""
    import copy

    cfg = copy.deepcopy(SPLIT_PRESETS[args.preset])
    for key in ("sizes", "gaps", "rates", "img_rate_thr", "iof_thr", "padding_value", "save_ext"):
        if getattr(args, key, None) is not None:
            setattr(cfg, key, getattr(args, key))
    cfg.no_padding = cfg.no_padding or args.no_padding
    summary = split_dataset(
        args.img_dirs, args.ann_dirs, args.out, cfg, nproc=args.nproc, progress=not args.quiet
    )
    print(
        f"split {summary['images']} image(s) into {summary['patches']} patch(es)"
        f" ({summary['skipped']} already done) -> {args.out}"
    )
    if summary["skipped_label_lines"]:
        print(
            f"skipped {summary['skipped_label_lines']} malformed label line(s); see the warnings above",
            file=sys.stderr,
        )
    for msg in summary["failed"]:
        print(f"could not split: {msg}", file=sys.stderr)
    return 1 if summary["failed"] else 0
