"""``rotdet eval DETS GT``: the mAP of detection files (Task1 folders or rotdet JSON) against ground truth."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from rotdet.evaluation.io import read_detections_classes
from rotdet.evaluation.results import EvalInputError
from rotdet.evaluation.runner import PROTOCOLS, evaluate_folder


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dets", help="a folder of Task1_<class>.txt files, or a rotdet JSON results file")
    parser.add_argument(
        "gt",
        help="ground truth: a labelTxt folder, an HRSC / DIOR-R XML folder, a YOLO data YAML or label folder",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="dota",
        help="dota: the official Task1 protocol (DOTA_devkit: polygon IoU > thr, difficult ignored); "
        "mmrotate: mmrotate 0.3.4's eval_rbbox_map (obb IoU >= thr, difficult counted); "
        "hrsc: mmrotate's HRSCDataset.evaluate (eval_rbbox_map at IoU 0.5:0.95, AP50..AP95 and their mean); "
        "coco: COCO mAP@0.5:0.95 with rotated IoU, 101 recall points, AP50, AP75. Default: dota",
    )
    parser.add_argument(
        "--gt-format",
        choices=("dota", "sar", "yolo-obb", "hrsc", "dior"),
        default="dota",
        help="format of the ground truth (default dota)",
    )
    parser.add_argument(
        "--images", default=None, help="the images, for YOLO-OBB labels (their sizes) or to find XML images"
    )
    parser.add_argument(
        "--gt-list",
        default=None,
        help="hrsc / dior: evaluate the image ids of this list (e.g. ImageSets/test.txt), not every XML",
    )
    parser.add_argument(
        "--max-dets",
        type=int,
        default=100,
        help="coco: detections per image and class (default 100, as pycocotools; 1000 for dense scenes)",
    )
    parser.add_argument(
        "--classes",
        default=None,
        help="class list: v1.0, v1.5, v2.0, toy, or comma-separated names (default: the JSON's, else v1.0)",
    )
    parser.add_argument("--iou-thr", type=float, default=0.5, help="IoU threshold (default 0.5)")
    parser.add_argument(
        "--metric",
        choices=("11points", "area"),
        default="11points",
        help="AP: VOC07 11 points (default) or area",
    )
    parser.add_argument(
        "--json", default=None, metavar="OUT", help="also write the per-class table and mAP as JSON"
    )


def _resolve_classes(spec: str | None, dets: str, yolo_gt: str | None = None) -> tuple[str, ...]:
    from rotdet.data.classes import classes_from_text, get_classes

    if spec is None:
        if os.path.isfile(dets):
            return read_detections_classes(dets)
        if yolo_gt is not None and os.path.isfile(yolo_gt):
            from rotdet.data.formats.yolo_obb import read_data_yaml

            return read_data_yaml(yolo_gt).names
        return get_classes("v1.0")
    if spec.lower() == "toy":
        from rotdet.data import TOY_CLASSES

        return tuple(TOY_CLASSES)
    return classes_from_text(spec)


def run_eval(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if not Path(args.dets).exists():
            raise EvalInputError(f"{args.dets}: no such detections folder or file")
        classes = _resolve_classes(args.classes, args.dets, args.gt if args.gt_format == "yolo-obb" else None)
        start = time.perf_counter()
        result = evaluate_folder(
            args.dets,
            args.gt,
            classes,
            protocol=args.protocol,
            iou_thr=args.iou_thr,
            use_07_metric=args.metric == "11points",
            gt_format=args.gt_format,
            images=args.images,
            max_dets=args.max_dets,
            gt_list=args.gt_list,
        )
    except (EvalInputError, ValueError) as e:
        print(f"rotdet eval: error: {e}", file=sys.stderr)
        return 2
    print(result.table())
    print(f"mAP: {result.map:.4f}  ({time.perf_counter() - start:.2f} s)")
    if args.json:
        print(f"wrote {result.write_json(args.json)}")
    return 0
