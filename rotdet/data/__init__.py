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
  (``rotdet make-toy``); :mod:`rotdet.data.browse`: drawing annotations (``rotdet browse``);
* :mod:`rotdet.data.visualize`: drawing rotated boxes and their captions (browse, predict, demo).
"""

from rotdet._lazy import lazy_exports

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
    "merge_windows",
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

# Each name imports its module on first use: `rotdet split` must not pay for torch (see rotdet._lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CLASS_LISTS": "rotdet.data.classes",
        "DIOR_CLASSES": "rotdet.data.classes",
        "DOTADataset": "rotdet.data.dataset",
        "DOTA_CLASSES": "rotdet.data.dota",
        "DOTA_V15_CLASSES": "rotdet.data.dota",
        "DOTA_V1_CLASSES": "rotdet.data.dota",
        "DOTA_V2_CLASSES": "rotdet.data.dota",
        "DotaAnnotation": "rotdet.data.dota",
        "DotaFormatError": "rotdet.data.dota",
        "EpochSampler": "rotdet.data.loader",
        "FORMATS": "rotdet.data.formats",
        "HRSC_CLASSES": "rotdet.data.classes",
        "IMG_NORM_CFG": "rotdet.data.transforms",
        "ImageReadError": "rotdet.data.transforms",
        "ImageRecord": "rotdet.data.records",
        "LabelFormatError": "rotdet.data.records",
        "ParseLog": "rotdet.data.dota",
        "PolyRandomRotate": "rotdet.data.rotate",
        "RotatedDataset": "rotdet.data.dataset",
        "SAR_CLASSES": "rotdet.data.classes",
        "SPLIT_PRESETS": "rotdet.data.split",
        "SeededAugmentation": "rotdet.data.loader",
        "SplitConfig": "rotdet.data.split",
        "TOY_CLASSES": "rotdet.data.classes",
        "build_dataset": "rotdet.data.build",
        "build_pipeline": "rotdet.data.transforms",
        "build_train_loader": "rotdet.data.loader",
        "collate": "rotdet.data.dataset",
        "config_pipeline": "rotdet.data.build",
        "ensure_toy_dota": "rotdet.data.toy",
        "get_classes": "rotdet.data.dota",
        "load_dota_infos": "rotdet.data.dota",
        "load_image": "rotdet.data.transforms",
        "make_toy_dota": "rotdet.data.toy",
        "make_toy_image": "rotdet.data.toy",
        "merge_patch_detections": "rotdet.data.merge",
        "merge_windows": "rotdet.data.merge",
        "parse_patch_name": "rotdet.data.merge",
        "pipeline_cfg": "rotdet.data.transforms",
        "poly_window_iof": "rotdet.data.split",
        "read_dota_records": "rotdet.data.dota",
        "read_dota_txt": "rotdet.data.dota",
        "read_split": "rotdet.data.formats",
        "records_to_infos": "rotdet.data.records",
        "resolve_classes": "rotdet.data.build",
        "sliding_windows": "rotdet.data.split",
        "split_dataset": "rotdet.data.split",
        "split_image": "rotdet.data.split",
        "test_pipeline_cfg": "rotdet.data.transforms",
        "train_pipeline_cfg": "rotdet.data.transforms",
        "write_dota_txt": "rotdet.data.dota",
        "write_task1_submission": "rotdet.data.merge",
    },
)
