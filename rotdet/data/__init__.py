"""Data: label formats, datasets from a config, transforms, splitting and merging, ToyDOTA.

* :mod:`rotdet.data.classes`: named class lists (DOTA v1.0 / v1.5 / v2.0, HRSC2016, DIOR-R, SAR);
* :mod:`rotdet.data.records`: :class:`ImageRecord`, the one record every reader returns, and the
  :class:`ParseLog` summary of what a read skipped or noticed;
* :mod:`rotdet.data.dota` and :mod:`rotdet.data.formats` (``yolo_obb``, ``hrsc``, ``dior``): readers
  and writers of each label format;
* :mod:`rotdet.data.build`: a config's dataset and pipeline (``data.format``, ``data.classes``);
* :mod:`rotdet.data.transforms` / :mod:`rotdet.data.rotate` / :mod:`rotdet.data.dataset` /
  :mod:`rotdet.data.loader`: training and test loading;
* :mod:`rotdet.data.split` / :mod:`rotdet.data.merge`: mmrotate-equivalent image splitting
  (``rotdet split``), patch detections back to images and Task1 files;
* :mod:`rotdet.data.convert`: ``rotdet convert-labels``; :mod:`rotdet.data.toy`: ToyDOTA
  (``rotdet make-toy``); :mod:`rotdet.data.browse`: drawing annotations (``rotdet browse``).
"""

from rotdet.data.build import build_dataset, config_pipeline, resolve_classes
from rotdet.data.classes import (
    CLASS_LISTS,
    DIOR_CLASSES,
    HRSC_CLASSES,
    SAR_CLASSES,
    TOY_CLASSES,
)
from rotdet.data.dataset import DOTADataset, RotatedDataset, collate
from rotdet.data.dota import (
    DOTA_CLASSES,
    DOTA_V1_CLASSES,
    DOTA_V2_CLASSES,
    DOTA_V15_CLASSES,
    DotaAnnotation,
    DotaFormatError,
    ParseLog,
    get_classes,
    load_dota_infos,
    read_dota_records,
    read_dota_txt,
    write_dota_txt,
)
from rotdet.data.formats import FORMATS, read_split
from rotdet.data.loader import EpochSampler, SeededAugmentation, build_train_loader
from rotdet.data.merge import merge_patch_detections, parse_patch_name, write_task1_submission
from rotdet.data.records import ImageRecord, LabelFormatError, records_to_infos
from rotdet.data.rotate import PolyRandomRotate
from rotdet.data.split import (
    SPLIT_PRESETS,
    SplitConfig,
    poly_window_iof,
    sliding_windows,
    split_dataset,
    split_image,
)
from rotdet.data.toy import ensure_toy_dota, make_toy_dota, make_toy_image
from rotdet.data.transforms import (
    IMG_NORM_CFG,
    ImageReadError,
    build_pipeline,
    load_image,
    pipeline_cfg,
    test_pipeline_cfg,
    train_pipeline_cfg,
)

__all__ = [
    "CLASS_LISTS",
    "DIOR_CLASSES",
    "DOTA_CLASSES",
    "DOTA_V1_CLASSES",
    "DOTA_V15_CLASSES",
    "DOTA_V2_CLASSES",
    "DOTADataset",
    "DotaAnnotation",
    "DotaFormatError",
    "EpochSampler",
    "FORMATS",
    "HRSC_CLASSES",
    "IMG_NORM_CFG",
    "ImageReadError",
    "ImageRecord",
    "LabelFormatError",
    "ParseLog",
    "PolyRandomRotate",
    "RotatedDataset",
    "SAR_CLASSES",
    "SPLIT_PRESETS",
    "SeededAugmentation",
    "SplitConfig",
    "TOY_CLASSES",
    "build_dataset",
    "build_pipeline",
    "build_train_loader",
    "collate",
    "config_pipeline",
    "ensure_toy_dota",
    "get_classes",
    "load_dota_infos",
    "load_image",
    "make_toy_dota",
    "make_toy_image",
    "merge_patch_detections",
    "parse_patch_name",
    "pipeline_cfg",
    "poly_window_iof",
    "read_dota_records",
    "read_dota_txt",
    "read_split",
    "records_to_infos",
    "resolve_classes",
    "sliding_windows",
    "split_dataset",
    "split_image",
    "test_pipeline_cfg",
    "train_pipeline_cfg",
    "write_dota_txt",
    "write_task1_submission",
]
