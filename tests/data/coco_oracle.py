"""Scenes for the COCO-protocol test, and the script that records pycocotools' numbers for them.

``make_case`` needs numpy only (the legacy ``RandomState`` stream is stable across versions), so the
test rebuilds the same inputs. The boxes are axis-aligned (theta 0), where the rotated IoU of
:func:`rotdet.evaluation.coco.eval_coco` is COCO's box IoU, so ``COCOeval(iouType="bbox")`` is the
reference. Running this file needs pycocotools (the reference oracle's venv has it) and writes
``coco_pycocotools.json`` beside it::

    $REF/venv/bin/python -W ignore tests/data/coco_oracle.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "coco_pycocotools.json"
NUM_IMAGES, NUM_CLASSES = 12, 4  # class 3 has detections but no ground truth
MAX_DETS = {"pycocotools": [1, 10, 100], "mmdet": [100, 300, 1000]}


def make_case(seed: int = 0) -> tuple[list[list[np.ndarray]], list[dict]]:
    """Per image per class ``[K, 6]`` detections and per image ``{"bboxes", "labels"}`` (obbs,
    theta 0). Boxes on a 1/8 px grid, scores with ties; image 3 has 150 detections of class 0."""
    rng = np.random.RandomState(seed)
    dets_all, anns = [], []
    for img in range(NUM_IMAGES):
        gts, labels, per_class = [], [], []
        for c in range(NUM_CLASSES):
            n = 0 if c == 3 else rng.randint(0, 7)
            g = np.stack(
                [
                    rng.uniform(20, 480, n),
                    rng.uniform(20, 480, n),
                    rng.uniform(6, 80, n),
                    rng.uniform(6, 80, n),
                    np.zeros(n),
                ],
                axis=1,
            )
            g = np.round(g * 8) / 8
            gts.append(g)
            labels += [c] * n
            # detections: jittered copies (some twice), plus false positives
            k = rng.randint(0, n + 1) if n else 0
            src = g[rng.randint(0, n, k)] if k else np.zeros((0, 5))
            jitter = rng.normal(0, 0.12, (k, 4)) * np.concatenate([src[:, 2:4], src[:, 2:4]], axis=1)
            d = src.copy()
            d[:, :4] += jitter
            fp_n = rng.randint(0, 4) + (150 if (img == 3 and c == 0) else 0)
            fp = np.stack(
                [
                    rng.uniform(20, 480, fp_n),
                    rng.uniform(20, 480, fp_n),
                    rng.uniform(6, 80, fp_n),
                    rng.uniform(6, 80, fp_n),
                    np.zeros(fp_n),
                ],
                axis=1,
            )
            d = np.round(np.concatenate([d, fp]) * 8) / 8
            d[:, 2:4] = np.maximum(d[:, 2:4], 1)
            scores = np.round(rng.uniform(0.05, 1, len(d)), 2)  # two decimals: ties
            per_class.append(np.concatenate([d, scores[:, None]], axis=1).astype(np.float32))
        dets_all.append(per_class)
        anns.append({"bboxes": np.concatenate(gts).astype(np.float32), "labels": np.array(labels, np.int64)})
    return dets_all, anns


def _xywh(obb) -> list[float]:
    cx, cy, w, h = (float(v) for v in obb[:4])
    return [cx - w / 2, cy - h / 2, w, h]


def record() -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dets, anns = make_case()
    gt = {
        "images": [{"id": i + 1} for i in range(NUM_IMAGES)],
        "categories": [{"id": c + 1} for c in range(NUM_CLASSES)],
        "annotations": [],
    }
    for i, ann in enumerate(anns):
        for box, label in zip(ann["bboxes"], ann["labels"], strict=True):
            xywh = _xywh(box)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
    res = [
        {"image_id": i + 1, "category_id": c + 1, "bbox": _xywh(d), "score": float(d[5])}
        for i, per_class in enumerate(dets)
        for c, cls_dets in enumerate(per_class)
        for d in cls_dets
    ]
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    out = {}
    for name, max_dets in MAX_DETS.items():
        ev = COCOeval(coco, coco.loadRes(res), "bbox")
        ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        prec = ev.eval["precision"][:, :, :, 0, -1]  # [T, R, K] at area "all", the largest maxDets
        per_class = [float(np.mean(p[p > -1])) if (p > -1).any() else -1.0 for p in np.moveaxis(prec, 2, 0)]
        out[name] = {
            "max_dets": max_dets[-1],
            "mAP": float(ev.stats[0]),
            "AP50": float(ev.stats[1]),
            "AP75": float(ev.stats[2]),
            "per_class": per_class,
        }
    return out


if __name__ == "__main__":
    OUT.write_text(json.dumps(record(), indent=1) + "\n")
    print(f"wrote {OUT}")
