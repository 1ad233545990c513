"""``rotdet test``: evaluate a checkpoint on a config's split; merge patches; write DOTA submission files."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rotdet.cli.predict import add_fast_argument
from rotdet.configs import load_config
from rotdet.data import merge_patch_detections, write_task1_submission
from rotdet.data.dataset import check_images
from rotdet.engine.data import build_dataset
from rotdet.engine.distributed import init_distributed
from rotdet.engine.inference import Detector
from rotdet.engine.runtime import resolve_test_amp
from rotdet.engine.test import describe_split, inference_on_dataset, per_class_results
from rotdet.evaluation import eval_dota_task1, eval_rbbox_map
from rotdet.structures.detections import write_detections_json


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config name or .yaml path")
    parser.add_argument("checkpoint", help="rotdet or mmrotate checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument(
        "--split",
        choices=("val", "test"),
        default=None,
        help="which data section to run (default: test for --format-only, else val)",
    )
    parser.add_argument("--data-root", default=None, help="dataset root (default: the config's data.root)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="merge patch results per original image and evaluate with the official DOTA protocol",
    )
    parser.add_argument(
        "--gt-dir", default=None, help="labelTxt folder of the original (unsplit) images, for --merge"
    )
    parser.add_argument(
        "--format-only",
        action="store_true",
        help="write Task1 submission files and zip (merged) without evaluating",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default work_dirs/<config>/test/<checkpoint name>)"
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--amp",
        choices=("none", "bf16", "fp16"),
        default=None,
        help="mixed precision (default: fp16 on CUDA for a config with an fp16 key, else none)",
    )
    parser.add_argument("--no-progress", action="store_true")
    add_fast_argument(parser)


def run_test(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    info, device = init_distributed(args.device)
    split = args.split or ("test" if args.format_only else "val")
    if args.merge or args.format_only:
        # Every patch of every image: detections in object-free patches are false positives too.
        cfg["data"]["filter_empty_gt"] = False
    dataset = build_dataset(cfg, split, args.data_root, test_mode=True)
    check_images(dataset, split, how_to_skip=None)  # all missing images named before inference
    if info.is_main:
        print(describe_split(cfg, split, args.data_root))
    detector = Detector.from_config(cfg, checkpoint=args.checkpoint, device=device)
    if args.fast:
        detector.optimize()
    # One folder per checkpoint by default, so testing another checkpoint never overwrites results.
    out = Path(args.out or Path("work_dirs") / cfg.get("name", "run") / "test" / Path(args.checkpoint).stem)
    t0 = time.perf_counter()
    results = inference_on_dataset(
        detector.model,
        dataset,
        device,
        args.batch_size,
        args.workers,
        resolve_test_amp(args.amp, cfg, device),
        progress=not args.no_progress,
    )
    if not info.is_main:
        return 0
    elapsed = time.perf_counter() - t0
    print(f"{len(dataset)} images in {elapsed:.1f} s ({len(dataset) / max(elapsed, 1e-9):.2f} images/s)")
    out.mkdir(parents=True, exist_ok=True)
    classes = list(dataset.classes)
    version = cfg["angle_version"]
    if args.merge or args.format_only:
        merged = merge_patch_detections(results)
        task1_dir = out / "Task1"
        files, zip_path = write_task1_submission(task1_dir, merged, classes, version)
        print(
            f"merged {len(dataset)} patches into {len(merged)} images; "
            f"Task1 files in {task1_dir}, zip {zip_path}"
        )
        if args.format_only:
            return 0
        if not args.gt_dir:
            print(
                "error: --merge needs --gt-dir, the labelTxt folder of the original images", file=sys.stderr
            )
            return 2
        res = eval_dota_task1(merged, args.gt_dir, classes)
    else:
        annotations = [dataset.get_ann_info(i) for i in range(len(dataset))]
        if not any(len(a["labels"]) for a in annotations):
            print(f"error: the {split} set has no labels to evaluate; use --format-only", file=sys.stderr)
            return 2
        res = eval_rbbox_map(per_class_results(results), annotations, classes=classes)
    print(res.table())
    res.write_json(out / "metrics.json")
    write_detections_json(out / "results.json", results, polygons=False)
    print(f"mAP {res.map:.4f}; metrics in {out / 'metrics.json'}")
    return 0
