"""Testing: detections over a dataset, mAP, merging and submission files (``rotdet test``).

* :func:`inference_on_dataset` runs a model over a :class:`~rotdet.data.DOTADataset` (sharded over
  ranks under ``torchrun``, gathered afterwards) and returns mmrotate's result format: per image, per
  class an ``[K, 6]`` float32 array ``(cx, cy, w, h, theta, score)``.
* :func:`evaluate_model` is mmrotate's evaluation of those results on the patches
  (:func:`rotdet.evaluation.eval_rbbox_map`).
* ``rotdet test --merge`` merges patch results per original image (class-wise rotated NMS at 0.1, as
  mmrotate's ``merge_det``) and evaluates them with the official DOTA Task1 protocol against the
  original labelTxt folder; ``--format-only`` writes the Task1 files and zip for the test server.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rotdet.data import DOTADataset, collate
from rotdet.engine.distributed import all_gather_objects, get_dist_info
from rotdet.engine.runtime import autocast
from rotdet.evaluation import EvalResult, eval_rbbox_map
from rotdet.structures.detections import RotatedDetections

__all__ = ["evaluate_model", "inference_on_dataset", "per_class_results"]

logger = logging.getLogger("rotdet.test")


@torch.no_grad()
def inference_on_dataset(
    model: nn.Module,
    dataset: DOTADataset,
    device: torch.device | str,
    batch_size: int = 1,
    num_workers: int = 0,
    amp: str = "none",
    progress: bool = True,
) -> list[RotatedDetections]:
    """Detections of every image of ``dataset`` (in dataset order): float32 numpy, named after the
    dataset's image ids and classes, in the config's angle version.

    Under ``torchrun`` each rank runs every ``world``-th image and all ranks get the gathered list.
    """
    info = get_dist_info()
    device = torch.device(device)
    indices = list(range(info.rank, len(dataset), info.world_size))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
    )
    was_training = model.training
    model.eval()
    results: list[RotatedDetections] = []
    bar = None
    if progress and info.is_main:
        from tqdm import tqdm

        bar = tqdm(total=len(indices), desc="test", dynamic_ncols=True, leave=False)
    for batch in loader:
        images = batch["img"].to(device, non_blocking=True)
        with autocast(device, amp):
            dets = model.predict(images, batch["img_metas"])
        for d, meta in zip(dets, batch["img_metas"], strict=True):
            results.append(d.astype(np.float32).describe(image_id=meta["id"], classes=dataset.classes))
        if bar is not None:
            bar.update(len(dets))
    if bar is not None:
        bar.close()
    model.train(was_training)
    if info.world_size == 1:
        return results
    gathered = all_gather_objects(list(zip(indices, results, strict=True)))
    ordered: list = [None] * len(dataset)
    for part in gathered:
        for idx, res in part:
            ordered[idx] = res
    return ordered


def evaluate_model(
    model: nn.Module,
    dataset: DOTADataset,
    device: torch.device | str,
    batch_size: int = 1,
    amp: str = "none",
    progress: bool = True,
) -> EvalResult:
    """mmrotate's patch mAP of ``model`` on ``dataset`` (IoU 0.5, VOC07 11 points)."""
    results = inference_on_dataset(model, dataset, device, batch_size=batch_size, amp=amp, progress=progress)
    annotations = [dataset.get_ann_info(i) for i in range(len(dataset))]
    return eval_rbbox_map(per_class_results(results), annotations, classes=dataset.classes)


def per_class_results(results: list[RotatedDetections]) -> list[list[np.ndarray]]:
    """mmrotate's ``det_results`` (per image, per class ``[K_c, 6]``) of ``results``: the format its
    ``eval_rbbox_map`` takes."""
    return [d.per_class() for d in results]


def describe_split(cfg: dict, split: str, data_root: str | None = None) -> str:
    """Which folder ``split`` reads, and a warning when it is the training data (mmrotate's DOTA
    configs validate on trainval: a model scored there scores far above the held-out table)."""
    entry = cfg["data"].get(split) or {}
    train = cfg["data"].get("train") or {}
    root = Path(data_root or cfg["data"].get("root", "."))
    where = f"evaluating data.{split}: {root / entry['img_dir']}" if entry.get("img_dir") else f"data.{split}"
    if (
        split != "train"
        and entry
        and {k: entry.get(k) for k in ("img_dir", "ann_file")}
        == {k: train.get(k) for k in ("img_dir", "ann_file")}
    ):
        where += (
            f"\nwarning: data.{split} is the training data (same folder as data.train): the mAP is a "
            "training-set score; split DOTA's val set alone (README) and train on train to score held out"
        )
    return where


# ----------------------------------------------------------------------------------- command line
