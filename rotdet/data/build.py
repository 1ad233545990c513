"""Datasets and their pipelines from a config: the one place a config's ``data`` section is read.

The ``data`` section::

    data:
      format: dota          # dota (default) | sar | yolo-obb | hrsc | dior  (rotdet.data.formats)
      root: data/hrsc       # the split folders below are relative to it
      yaml: null            # yolo-obb: an Ultralytics dataset YAML; its path / train / val / test
                            # / names stand in for root, the split sections and classes
      classes: hrsc         # a list name (rotdet.data.classes), a list of names, or "yaml"
      train: {ann_dir: FullDataSet/Annotations, img_dir: FullDataSet/AllImages,
              ann_file: ImageSets/trainval.txt}        # ann_file: hrsc / dior id lists
      val: {...}
      test: {...}
      img_scale: [800, 512]
      train_flip: {flip_ratio: [0.25, 0.25, 0.25], direction: [horizontal, vertical, diagonal]}
      train_rotate: {rotate_ratio: 0.5, angles_range: 180, auto_bound: false, rect_classes: [9, 11]}
      size_divisor: 32
      img_norm: {mean: [...], std: [...], to_rgb: true}
      filter_empty_gt: true # optional: training drops images without objects (mmdet's default)
      difficulty: 100       # optional: objects with a larger difficulty are dropped
      strict: false         # optional: the first malformed label raises instead of being skipped

Only ``format``, ``yaml``, ``classes`` and the split sections choose what is read; the rest is the
pipeline (:func:`config_pipeline`, the only builder of one).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rotdet.data.classes import get_classes
from rotdet.data.dataset import RotatedDataset
from rotdet.data.formats import check_format, read_split
from rotdet.data.formats.yolo_obb import YoloDataYaml, read_data_yaml
from rotdet.data.records import ParseLog, records_to_infos
from rotdet.data.transforms import IMG_NORM_CFG, pipeline_cfg

logger = logging.getLogger("rotdet.data")

__all__ = [
    "build_dataset",
    "check_num_classes",
    "config_pipeline",
    "data_yaml",
    "dataset_paths",
    "resolve_classes",
    "resolve_data_config",
    "split_entry",
]

_SPLITS = ("train", "val", "test")


def data_yaml(cfg: dict, data_root: str | os.PathLike | None = None) -> YoloDataYaml | None:
    """The YOLO dataset YAML named by ``data.yaml`` (a path as given, else relative to the data
    root), or None when the config names none."""
    name = cfg["data"].get("yaml")
    if not name:
        return None
    path = Path(name)
    if not path.is_file() and not path.is_absolute():
        path = Path(data_root if data_root is not None else cfg["data"].get("root", ".")) / name
    if not path.is_file():
        raise FileNotFoundError(f"data.yaml: YOLO dataset YAML {name} does not exist")
    return read_data_yaml(path)


def resolve_classes(cfg: dict, data_root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The config's class names: ``data.classes`` as a list name or the names, or (``yaml``, or
    no ``data.classes`` with a ``data.yaml``) the YOLO dataset YAML's ``names``."""
    spec = cfg["data"].get("classes")
    if spec is None or (isinstance(spec, str) and spec.lower() == "yaml"):
        yml = data_yaml(cfg, data_root)
        if yml is None:
            raise ValueError("data.classes is 'yaml' (or missing) but the config names no data.yaml")
        return yml.names
    return tuple(get_classes(spec))


def check_num_classes(cfg: dict, classes: tuple[str, ...]) -> None:
    """A model whose heads predict another number of classes than ``classes`` is an error that
    says which override fixes it."""
    model = cfg.get("model", {})
    heads = [("model.bbox_head", model.get("bbox_head"))]
    heads += [(f"model.refine_heads.{i}", h) for i, h in enumerate(model.get("refine_heads") or [])]
    heads += [(f"model.{k}", model.get(k)) for k in ("fam_head", "odm_head")]  # S2A-Net's
    # Oriented R-CNN's
    heads += [("model.roi_head.bbox_head", (model.get("roi_head") or {}).get("bbox_head"))]
    for where, head in heads:
        if not isinstance(head, dict) or "num_classes" not in head:
            continue
        n = head["num_classes"]
        if n != len(classes):
            raise ValueError(
                f"{where}.num_classes is {'not set' if n is None else n} but data.classes has "
                f"{len(classes)} name(s) "
                f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); "
                f"set {where}.num_classes={len(classes)}"
            )


def resolve_data_config(cfg: dict, data_root: str | os.PathLike | None = None) -> dict:
    """A copy of ``cfg`` with ``data.classes`` as the list of names (a list name or the YOLO YAML's
    ``names`` resolved) and every head's ``num_classes`` that is null set to its length, so that a
    saved config (``config.yaml``, a checkpoint's) no longer depends on the YAML file; a
    ``num_classes`` that disagrees is an error (:func:`check_num_classes`)."""
    import copy

    cfg = copy.deepcopy(cfg)
    classes = resolve_classes(cfg, data_root)
    cfg["data"]["classes"] = list(classes)
    model = cfg.get("model", {})
    for head in [
        model.get("bbox_head"),
        *(model.get("refine_heads") or []),
        model.get("fam_head"),
        model.get("odm_head"),
        (model.get("roi_head") or {}).get("bbox_head"),
    ]:
        if isinstance(head, dict) and head.get("num_classes", 0) is None:
            head["num_classes"] = len(classes)
    check_num_classes(cfg, classes)
    return cfg


def split_entry(cfg: dict, split: str) -> dict | None:
    """The config's ``data.<split>`` section (None when a data.yaml stands in for it)."""
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {_SPLITS}")
    data = cfg["data"]
    entry = data.get(split)
    if entry is None and data.get("yaml"):
        return None
    if entry is None:
        raise ValueError(f"config {cfg.get('name', '?')!r} has no data.{split} section")
    return entry


def _root(cfg: dict, data_root: str | os.PathLike | None) -> Path:
    return Path(data_root if data_root is not None else cfg["data"].get("root", "."))


def _check_paths(cfg: dict, split: str, entry: dict, root: Path) -> None:
    for key, what in (("img_dir", "image folder"), ("ann_dir", "annotation folder"), ("ann_file", "list")):
        values = entry.get(key)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if not value:
                continue
            path = Path(value) if Path(value).is_absolute() else root / value
            if not path.exists():  # (training adds its own hint: --eval-interval 0 for a missing val)
                raise FileNotFoundError(
                    f"{split} {what} {path} does not exist (data root {root}; "
                    f"set --data-root or data.root=... to where the dataset is)"
                )


def dataset_paths(
    cfg: dict, split: str, data_root: str | os.PathLike | None = None
) -> tuple[Path | None, Path]:
    """``(ann_dir or None, img_dir)`` of ``split`` (train / val / test), relative paths joined to
    ``data_root`` (default: the config's ``data.root``). A missing folder is an error naming it."""
    entry = split_entry(cfg, split)
    if entry is None:
        raise ValueError(f"data.{split} comes from data.yaml; it has no folders of its own")
    root = _root(cfg, data_root)
    _check_paths(cfg, split, entry, root)
    return (root / entry["ann_dir"] if entry.get("ann_dir") else None), root / entry["img_dir"]


def config_pipeline(cfg: dict, train: bool) -> list[dict]:
    """The transforms of ``cfg`` as config dicts: load, resize, (train: flip, rotate), normalize, pad."""
    data = cfg["data"]
    return pipeline_cfg(
        train,
        cfg["angle_version"],
        data["img_scale"],
        flip=data.get("train_flip"),
        rotate=data.get("train_rotate"),
        img_norm=data.get("img_norm", IMG_NORM_CFG),
        size_divisor=data.get("size_divisor", 32),
    )


def build_dataset(
    cfg: dict, split: str, data_root: str | os.PathLike | None = None, test_mode: bool | None = None
) -> RotatedDataset:
    """The ``split`` dataset of ``cfg`` with its pipeline (flips and rotation only for ``train``),
    read by the reader of ``data.format``.

    A missing folder, a class list that does not match the model's heads, or an empty dataset (no
    usable image / label pair) is an error that names what to fix. What the reader skipped or
    noticed is logged as one summary line.
    """
    data = cfg["data"]
    fmt = check_format(data.get("format"))
    train = split == "train"
    test_mode = (not train) if test_mode is None else test_mode
    classes = resolve_classes(cfg, data_root)
    check_num_classes(cfg, classes)
    entry = split_entry(cfg, split)
    root = _root(cfg, data_root)
    yml = data_yaml(cfg, data_root)
    if entry is None:  # the YOLO dataset YAML's split
        entry, root = {}, yml.root
        if split == "test" and not yml.splits.get("test"):
            split_name = "val"
        else:
            split_name = split
    else:
        _check_paths(cfg, split, entry, root)
        split_name = split
    filter_empty = data.get("filter_empty_gt", True)
    log = ParseLog()
    records = read_split(
        fmt,
        entry,
        root,
        classes,
        strict=data.get("strict", False),
        log=log,
        skip_empty_files=filter_empty and fmt in ("dota", "sar"),
        split=split_name,
        yaml_file=yml.file if yml is not None else None,
    )
    infos = records_to_infos(records, cfg["angle_version"], data.get("difficulty", 100), log)
    if filter_empty and not test_mode:
        infos = [i for i in infos if i["ann"]["labels"].size > 0]
    (logger.warning if log.problems else logger.info)("%s %s set: %s", fmt, split, log.summary())
    ds = RotatedDataset(
        infos,
        classes,
        cfg["angle_version"],
        pipeline=config_pipeline(cfg, train),
        test_mode=test_mode,
        parse_log=log,
        group_by_aspect=fmt not in ("dota", "sar"),  # mmrotate's DOTADataset: one group
    )
    if len(ds) == 0:
        where = ", ".join(f"{k}={v}" for k, v in entry.items() if v) or f"{split} of {yml.file}"
        raise ValueError(f"the {split} dataset is empty: no usable image/label pair in {root} ({where})")
    return ds
