"""A map-style DOTA dataset (mmrotate 0.3.4 ``DOTADataset`` semantics) and its batch collation."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from rotdet.data.dota import ParseLog, get_classes, load_dota_infos
from rotdet.data.transforms import (
    Compose,
    ImageReadError,
    build_pipeline,
    test_pipeline_cfg,
    train_pipeline_cfg,
)

logger = logging.getLogger("rotdet.data")

META_KEYS = (
    "id",
    "filename",
    "ori_shape",
    "img_shape",
    "pad_shape",
    "scale_factor",
    "flip",
    "flip_direction",
    "img_norm_cfg",
)


class DOTADataset(torch.utils.data.Dataset):
    """DOTA-format images + labelTxt files (original or split patches, or ToyDOTA).

    Args:
        ann_dir: directory of ``.txt`` label files; None (or no ``.txt`` in it) is the test phase:
            every image of ``img_dir``, without objects.
        img_dir: directory of the images (``<label stem>.png``, or another image extension).
        classes: a class list name (``"v1.0"``, ``"v1.5"``, ``"v2.0"``) or the names themselves.
        version: angle version of ``gt_bboxes``.
        pipeline: transforms (a :class:`Compose` or a list of config dicts); default: mmrotate's
            train pipeline (obb flips) or, in ``test_mode``, its test pipeline.
        test_mode: no empty-gt filtering of images with objects dropped; no flips by default.
        filter_empty_gt: as mmrotate: label files of size 0 are dropped at load (in both modes),
            and outside test mode images left without objects too.
        difficulty: objects with a larger difficulty are dropped (mmrotate keeps <= 100).
        strict: malformed label lines raise instead of being skipped with a warning.
        skip_unreadable: an unreadable image is logged and the next sample given instead of raising.

    A sample is the transformed results dict: ``img`` (float32 CHW tensor), ``gt_bboxes`` [N, 5],
    ``gt_labels`` [N] (int64), ``gt_polygons`` [N, 8] tensors and ``img_metas`` (dict of :data:`META_KEYS`).
    """

    def __init__(
        self,
        ann_dir: str | os.PathLike | None,
        img_dir: str | os.PathLike,
        classes: str | Sequence[str] = "v1.0",
        version: str = "oc",
        pipeline: Compose | Sequence[dict | Callable] | None = None,
        test_mode: bool = False,
        filter_empty_gt: bool = True,
        difficulty: int = 100,
        strict: bool = False,
        skip_unreadable: bool = False,
    ):
        self.classes = get_classes(classes)
        self.version = version
        self.test_mode = test_mode
        self.skip_unreadable = skip_unreadable
        self.parse_log = ParseLog()
        infos = load_dota_infos(
            ann_dir,
            img_dir,
            self.classes,
            version,
            difficulty=difficulty,
            strict=strict,
            log=self.parse_log,
            skip_empty_files=filter_empty_gt,
        )
        if self.parse_log.skipped:
            logger.warning(self.parse_log.summary())
        if filter_empty_gt and not test_mode:
            infos = [i for i in infos if i["ann"]["labels"].size > 0]
        self.data_infos = infos
        if pipeline is None:
            pipeline = test_pipeline_cfg() if test_mode else train_pipeline_cfg(version)
        self.pipeline = pipeline if isinstance(pipeline, Compose) else build_pipeline(pipeline)

    def __len__(self) -> int:
        return len(self.data_infos)

    @property
    def img_ids(self) -> list[str]:
        return [i["id"] for i in self.data_infos]

    def get_ann_info(self, idx: int) -> dict:
        """The untransformed annotation of sample ``idx`` (for evaluation)."""
        return self.data_infos[idx]["ann"]

    def prepare(self, idx: int) -> dict:
        info = self.data_infos[idx]
        ann = info["ann"]
        results = {
            "id": info["id"],
            "filename": info["filename"],
            "gt_bboxes": ann["bboxes"].copy(),
            "gt_labels": ann["labels"].copy(),
            "gt_polygons": ann["polygons"].copy(),
        }
        return format_results(self.pipeline(results))

    def __getitem__(self, idx: int) -> dict:
        if not self.skip_unreadable:
            return self.prepare(idx)
        for k in range(len(self)):
            j = (idx + k) % len(self)
            try:
                return self.prepare(j)
            except ImageReadError as exc:
                logger.warning("skipped sample %d: %s", j, exc)
        raise ImageReadError("no readable image in the dataset")


def format_results(results: dict) -> dict:
    """Tensors for the model (mmdet ``DefaultFormatBundle`` + ``Collect``): CHW float image, box
    tensors, and the metadata gathered under ``img_metas``."""
    img = results["img"]
    if img.ndim == 2:
        img = img[..., None]
    out = {
        "img": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float(),
        "img_metas": {k: results[k] for k in META_KEYS if k in results},
    }
    for key, dtype, width in (("gt_bboxes", torch.float32, 5), ("gt_polygons", torch.float32, 8)):
        if key in results:
            out[key] = torch.as_tensor(np.asarray(results[key]), dtype=dtype).reshape(-1, width)
    if "gt_labels" in results:
        out["gt_labels"] = torch.as_tensor(np.asarray(results["gt_labels"]), dtype=torch.int64).reshape(-1)
    return out


def collate(samples: Sequence[dict], pad_value: float = 0.0) -> dict:
    """Batch samples: images padded bottom/right to the largest in the batch and stacked
    ``[B, C, H, W]``; boxes, labels and polygons as per-image lists; ``img_metas`` a list of dicts
    (``batch_input_shape`` added, as mmdet does)."""
    max_h = max(s["img"].shape[1] for s in samples)
    max_w = max(s["img"].shape[2] for s in samples)
    imgs = samples[0]["img"].new_full((len(samples), samples[0]["img"].shape[0], max_h, max_w), pad_value)
    metas = []
    for i, s in enumerate(samples):
        _, h, w = s["img"].shape
        imgs[i, :, :h, :w] = s["img"]
        metas.append({**s["img_metas"], "batch_input_shape": (max_h, max_w)})
    batch = {"img": imgs, "img_metas": metas}
    for key in ("gt_bboxes", "gt_labels", "gt_polygons"):
        if key in samples[0]:
            batch[key] = [s[key] for s in samples]
    return batch
