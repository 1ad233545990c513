"""Map-style datasets (any label format; DOTA with mmrotate 0.3.4 ``DOTADataset`` semantics) and
batch collation."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from rotdet.data.classes import get_classes
from rotdet.data.dota import load_dota_infos
from rotdet.data.records import ParseLog, image_size
from rotdet.data.transforms import (
    Compose,
    ImageReadError,
    build_pipeline,
    test_pipeline_cfg,
    train_pipeline_cfg,
)
from rotdet.structures.meta import image_meta

logger = logging.getLogger("rotdet.data")


class RotatedDataset(torch.utils.data.Dataset):
    """A map-style dataset of annotation dicts (:func:`rotdet.data.records.records_to_infos`), from
    any label format, with a transform pipeline.

    Args:
        infos: ``{"id", "filename", "ann": {"bboxes", "labels", "polygons", "difficulties"}}`` dicts
            (``width`` / ``height`` optional).
        classes: the class names (label ``i`` is ``classes[i]``).
        version: angle version of ``ann["bboxes"]``.
        pipeline: transforms (a :class:`Compose` or config dicts); default: mmrotate's DOTA train
            pipeline (obb flips) or, in ``test_mode``, its test pipeline.
        test_mode: no flips by default; as mmdet, a sample the pipeline drops is an error.
        skip_unreadable: an unreadable image is logged and the next sample given instead of raising;
            after :attr:`max_unreadable` distinct such images (in this process) it raises after all.
        parse_log: what reading the labels skipped or noticed (kept for the caller to report).
        group_by_aspect: a dropped sample is replaced by one of the same orientation (mmdet's
            ``CustomDataset`` flags; mmrotate's DOTA / SAR datasets put every image in one group).

    A sample is the transformed results dict: ``img`` (float32 CHW tensor), ``gt_bboxes`` [N, 5],
    ``gt_labels`` [N] (int64), ``gt_polygons`` [N, 8] tensors and ``img_metas``
    (:class:`~rotdet.structures.ImageMeta`).
    A training transform that drops a sample (``PolyRandomRotate`` leaving no box) makes the dataset
    draw another index, from the images of the same orientation (width > height or not, when the
    sizes are known and ``group_by_aspect``), as mmdet's ``CustomDataset`` does; the draw uses
    torch's RNG, which the training loader seeds per sample.
    """

    MAX_REDRAWS = 1000
    max_unreadable = 10  # images a run may skip mid-epoch: beyond, the data is broken, not one file

    def __init__(
        self,
        infos: Sequence[dict],
        classes: Sequence[str],
        version: str = "oc",
        pipeline: Compose | Sequence[dict | Callable] | None = None,
        test_mode: bool = False,
        skip_unreadable: bool = False,
        parse_log: ParseLog | None = None,
        group_by_aspect: bool = True,
    ):
        self.classes = tuple(classes)
        self.group_by_aspect = group_by_aspect
        self.version = version
        self.test_mode = test_mode
        self.skip_unreadable = skip_unreadable
        self.parse_log = parse_log if parse_log is not None else ParseLog()
        self.data_infos = list(infos)
        if pipeline is None:
            pipeline = test_pipeline_cfg() if test_mode else train_pipeline_cfg(version)
        self.pipeline = pipeline if isinstance(pipeline, Compose) else build_pipeline(pipeline)
        self._flags: np.ndarray | None = None
        self._unreadable: dict[str, None] = {}  # the messages of the images skipped so far

    def __len__(self) -> int:
        return len(self.data_infos)

    @property
    def img_ids(self) -> list[str]:
        return [i["id"] for i in self.data_infos]

    def get_ann_info(self, idx: int) -> dict:
        """The untransformed annotation of sample ``idx`` (for evaluation)."""
        return self.data_infos[idx]["ann"]

    def prepare(self, idx: int) -> dict | None:
        """Sample ``idx`` through the pipeline (None when a transform drops it)."""
        info = self.data_infos[idx]
        ann = info["ann"]
        results = {
            "id": info["id"],
            "filename": info["filename"],
            "gt_bboxes": ann["bboxes"].copy(),
            "gt_labels": ann["labels"].copy(),
            "gt_polygons": ann["polygons"].copy(),
        }
        results = self.pipeline(results)
        return None if results is None else format_results(results)

    def _another(self, idx: int) -> int:
        """A random index of the same orientation group as ``idx`` (mmdet's ``_rand_another``)."""
        if self._flags is None:
            wide = [
                bool(i.get("width") and i.get("height") and i["width"] / i["height"] > 1)
                for i in self.data_infos
            ]
            self._flags = np.array(wide if self.group_by_aspect else [False] * len(self), np.int64)
        pool = np.flatnonzero(self._flags == self._flags[idx])
        return int(pool[int(torch.randint(len(pool), ()))])

    def _get(self, idx: int) -> dict:
        for _ in range(self.MAX_REDRAWS):
            data = self.prepare(idx)
            if data is not None:
                return data
            if self.test_mode:
                raise ValueError(f"the pipeline dropped test sample {idx} ({self.data_infos[idx]['id']})")
            idx = self._another(idx)
        raise ValueError(f"the pipeline dropped {self.MAX_REDRAWS} samples in a row (no box survives it?)")

    def __getitem__(self, idx: int) -> dict:
        if not self.skip_unreadable:
            return self._get(idx)
        for k in range(len(self)):
            j = (idx + k) % len(self)
            try:
                return self._get(j)
            except ImageReadError as exc:
                self._unreadable[str(exc)] = None
                if len(self._unreadable) > self.max_unreadable:
                    shown = "; ".join(list(self._unreadable)[:5])
                    raise ImageReadError(
                        f"{len(self._unreadable)} image(s) could not be read while training (more than "
                        f"the {self.max_unreadable} a run skips): {shown}; ..."
                    ) from None
                logger.warning("skipped sample %d, the next one is used instead: %s", j, exc)
        raise ImageReadError("no readable image in the dataset")

    def remove(self, filenames: set[str]) -> None:
        """Leave out the samples of the image files ``filenames``."""
        self.data_infos = [i for i in self.data_infos if i["filename"] not in filenames]
        self._flags = None


class DOTADataset(RotatedDataset):
    """DOTA-format images + labelTxt files (original or split patches, SSDD / HRSID as mmrotate
    prepares them, or ToyDOTA): mmrotate 0.3.4 ``DOTADataset`` semantics.

    Args:
        ann_dir: directory of ``.txt`` label files; None (or no ``.txt`` in it) is the test phase:
            every image of ``img_dir``, without objects.
        img_dir: directory of the images (``<label stem>.png``, or another image extension).
        classes: a class list name (``"v1.0"``, ``"dota1.5"``, ``"sar"``...) or the names themselves.
        version: angle version of ``gt_bboxes``.
        pipeline, test_mode, skip_unreadable: see :class:`RotatedDataset`.
        filter_empty_gt: as mmrotate: label files of size 0 are dropped at load (in both modes),
            and outside test mode images left without objects too.
        difficulty: objects with a larger difficulty are dropped (mmrotate keeps <= 100).
        strict: malformed label lines raise instead of being skipped with a warning.

    Unlike mmrotate, objects wholly outside their image, or with a corner farther outside than its
    size (``1e30``), are skipped with a warning naming ``file:line``: not a target anyone meant.
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
        classes = get_classes(classes)
        log = ParseLog()
        infos = load_dota_infos(
            ann_dir,
            img_dir,
            classes,
            version,
            difficulty=difficulty,
            strict=strict,
            log=log,
            skip_empty_files=filter_empty_gt,
            check_bounds=True,  # objects wholly or absurdly far outside their image: skipped
        )
        if log.skipped:
            logger.warning(log.summary())
        if filter_empty_gt and not test_mode:
            infos = [i for i in infos if i["ann"]["labels"].size > 0]
        super().__init__(
            infos, classes, version, pipeline, test_mode, skip_unreadable, log, group_by_aspect=False
        )


def scan_images(infos: Sequence[dict]) -> list[tuple[str, str]]:
    """``(image file, problem)`` for each image of ``infos`` that is missing, or whose header cannot
    be read (Pillow, no decoding) when its size is unknown: the readers that read each image's header
    (DOTA, SAR, YOLO-OBB) leave the size unset exactly where it failed. Milliseconds per thousand
    images; a truncated body is found only when the image is decoded (then skipped, see
    :class:`RotatedDataset`'s ``skip_unreadable``)."""
    problems = []
    for info in infos:
        path = info["filename"]
        if not os.path.isfile(path):
            problems.append((path, "no such image file"))
        elif not (info.get("width") and info.get("height")) and image_size(path) is None:
            problems.append((path, "not a readable image (its header cannot be read)"))
    return problems


def check_images(
    dataset: RotatedDataset,
    split: str,
    skip_invalid: bool = False,
    how_to_skip: str | None = "--skip-invalid-images (data.skip_invalid: true)",
) -> list[tuple[str, str]]:
    """Scan the images of ``dataset`` (:func:`scan_images`) before it is used: one
    :class:`ImageReadError` names every problem (the first ten, and all of them in the log when
    there are more), or with ``skip_invalid`` those samples are left out with a warning naming them.
    ``how_to_skip``: the option the error suggests (None: none). Returns the problems."""
    problems = scan_images(dataset.data_infos)
    if not problems:
        return problems
    if len(problems) > 10:  # the message below names ten
        for path, why in problems:
            logger.warning("%s set: %s: %s", split, path, why)
    shown = "; ".join(f"{p}: {why}" for p, why in problems[:10])
    more = f"; and {len(problems) - 10} more (all listed in the log)" if len(problems) > 10 else ""
    if not skip_invalid:
        raise ImageReadError(
            f"{len(problems)} of the {len(dataset)} {split} images cannot be used: {shown}{more}. "
            "Fix or remove them" + (f", or leave them out with {how_to_skip}" if how_to_skip else "")
        )
    dataset.remove({p for p, _ in problems})
    logger.warning(
        "%s set: left out %d unusable image(s) (skip_invalid): %s%s", split, len(problems), shown, more
    )
    if len(dataset) == 0:
        raise ImageReadError(f"the {split} dataset is empty once its unusable images are left out")
    return problems


def format_results(results: dict) -> dict:
    """Tensors for the model (mmdet ``DefaultFormatBundle`` + ``Collect``): CHW float image, box
    tensors, and the metadata gathered under ``img_metas``."""
    img = results["img"]
    if img.ndim == 2:
        img = img[..., None]
    out = {
        "img": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float(),
        "img_metas": image_meta(results),
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
