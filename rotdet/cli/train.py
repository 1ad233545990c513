"""``rotdet train``: train a config (one process, or several under torchrun)."""

from __future__ import annotations

import argparse

from rotdet.configs import load_config
from rotdet.engine.distributed import get_dist_info
from rotdet.engine.runtime import AMP_DTYPES
from rotdet.engine.train import train
from rotdet.engine.trainer import TrainOptions


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config name (an unknown name lists the valid ones) or a .yaml path")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optimizer.lr=0.005"
    )
    parser.add_argument("--work-dir", default=None, help="output folder (default work_dirs/<config>)")
    parser.add_argument("--data-root", default=None, help="dataset root (default: the config's data.root)")
    parser.add_argument(
        "--resume",
        default="auto",
        metavar="CKPT",
        help="checkpoint to resume from (default: work_dir/latest.pth when present)",
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="start from scratch even if work_dir has a checkpoint"
    )
    parser.add_argument(
        "--load-from", default=None, metavar="CKPT", help="initial weights (rotdet or mmrotate checkpoint)"
    )
    parser.add_argument(
        "--amp",
        choices=[*AMP_DTYPES, "auto"],
        default=None,
        help="mixed precision (default: the config's, fp16 when it has an fp16 key (bf16 off CUDA), "
        "else none; auto: bf16 where native)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    parser.add_argument(
        "--auto-scale-lr", action="store_true", help="linear lr scaling to the total batch size"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per process (default: the config's)"
    )
    parser.add_argument("--workers", type=int, default=None, help="loader workers per process")
    parser.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the config's)")
    parser.add_argument("--max-iters", type=int, default=None, help="stop after this many iterations")
    parser.add_argument("--eval-interval", type=int, default=None, help="evaluate every N epochs (0: never)")
    parser.add_argument(
        "--skip-invalid-images",
        action="store_true",
        help="leave out missing or unreadable images (default: an error listing them all)",
    )
    parser.add_argument("--keep", type=int, default=3, help="epoch checkpoints kept (plus latest and best)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    opts = TrainOptions(
        work_dir=args.work_dir,
        data_root=args.data_root,
        resume=None if args.no_resume else args.resume,
        load_from=args.load_from,
        amp=args.amp,
        seed=args.seed,
        deterministic=args.deterministic,
        auto_scale_lr=args.auto_scale_lr,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        max_epochs=args.epochs,
        max_iters=args.max_iters,
        eval_interval=args.eval_interval,
        skip_invalid=args.skip_invalid_images,
        keep=args.keep,
        progress=not args.no_progress,
    )
    result = train(cfg, opts)
    if get_dist_info().is_main:
        best = f", best mAP {result.best_map:.4f}" if result.best_map is not None else ""
        print(
            f"trained {result.iteration} iterations ({result.epoch} epochs){best}; "
            f"outputs in {result.work_dir}"
        )
    return 0
