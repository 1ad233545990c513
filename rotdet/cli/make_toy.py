"""``rotdet make-toy``: write the synthetic ToyDOTA dataset."""

from __future__ import annotations

from rotdet.data.toy import FLAVOURS, TOY_LAYOUTS, make_toy


def add_make_toy_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output directory (layout by --format)")
    parser.add_argument(
        "--format",
        choices=tuple(TOY_LAYOUTS),
        default="dota",
        help="label format: dota (images/, labelTxt/), yolo-obb (images/, labels/, data.yaml), "
        "hrsc (FullDataSet/, ImageSets/), dior (JPEGImages-trainval/, Annotations/, ImageSets/)",
    )
    parser.add_argument("-n", "--num-images", type=int, default=8, help="number of scenes")
    parser.add_argument(
        "--flavour", choices=FLAVOURS, default="small", help="small (256-512 px) or large (>=3000 px)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="fixed scene size")


def run_make_toy(args) -> int:
    """``rotdet make-toy``."""
    fmt = getattr(args, "format", "dota")
    ids = make_toy(
        args.out, fmt, args.num_images, args.flavour, args.seed, tuple(args.size) if args.size else None
    )
    print(f"wrote {len(ids)} ToyDOTA {args.flavour} scene(s) to {args.out} ({fmt} format)")
    return 0
