"""``rotdet browse``: draw the annotations of a few samples to PNG files."""

from __future__ import annotations

from rotdet.data.browse import browse, resolve_classes


def add_browse_arguments(parser) -> None:
    parser.add_argument("--ann-dir", required=True, help="labelTxt / annfiles directory")
    parser.add_argument("--img-dir", required=True, help="image directory")
    parser.add_argument("--out", required=True, help="where the drawings go")
    parser.add_argument("-n", "--num", type=int, default=4, help="number of samples")
    parser.add_argument("--version", default="le90", choices=["oc", "le90", "le135"], help="angle version")
    parser.add_argument("--classes", default="v1.0", help="v1.0, v1.5, v2.0, toy, or comma-separated names")
    parser.add_argument("--seed", type=int, default=None, help="pick samples at random with this seed")


def run_browse(args) -> int:
    """``rotdet browse``."""
    paths, problems = browse(
        args.ann_dir, args.img_dir, args.out, resolve_classes(args.classes), args.version, args.num, args.seed
    )
    skipped = f"; skipped {len(problems)} unreadable or missing image(s), see above" if problems else ""
    print(f"drew {len(paths)} sample(s) to {args.out}{skipped}")
    return 0
