"""DOTA data: annotation I/O, image splitting and merging, transforms, datasets and ToyDOTA.

* :mod:`rotdet.data.dota`: class lists, the labelTxt parser / writer, dataset indexing;
* :mod:`rotdet.data.split`: mmrotate-equivalent image splitting (``rotdet split``);
* :mod:`rotdet.data.merge`: patch detections back to images, Task1 submission files;
* :mod:`rotdet.data.transforms` / :mod:`rotdet.data.dataset`: training and test loading;
* :mod:`rotdet.data.toy`: the synthetic ToyDOTA set (``rotdet make-toy``);
* :mod:`rotdet.data.browse`: drawing annotations (``rotdet browse``).
"""

from rotdet.data.dataset import DOTADataset, collate
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
    read_dota_txt,
    write_dota_txt,
)
from rotdet.data.merge import merge_patch_detections, parse_patch_name, write_task1_submission
from rotdet.data.split import (
    SPLIT_PRESETS,
    SplitConfig,
    poly_window_iof,
    sliding_windows,
    split_dataset,
    split_image,
)
from rotdet.data.toy import TOY_CLASSES, ensure_toy_dota, make_toy_dota, make_toy_image
from rotdet.data.transforms import (
    IMG_NORM_CFG,
    ImageReadError,
    build_pipeline,
    load_image,
    test_pipeline_cfg,
    train_pipeline_cfg,
)

__all__ = [
    "DOTA_CLASSES",
    "DOTA_V1_CLASSES",
    "DOTA_V15_CLASSES",
    "DOTA_V2_CLASSES",
    "DOTADataset",
    "DotaAnnotation",
    "DotaFormatError",
    "IMG_NORM_CFG",
    "ImageReadError",
    "ParseLog",
    "SPLIT_PRESETS",
    "SplitConfig",
    "TOY_CLASSES",
    "build_pipeline",
    "collate",
    "ensure_toy_dota",
    "get_classes",
    "load_dota_infos",
    "load_image",
    "make_toy_dota",
    "make_toy_image",
    "merge_patch_detections",
    "parse_patch_name",
    "poly_window_iof",
    "read_dota_txt",
    "sliding_windows",
    "split_dataset",
    "split_image",
    "test_pipeline_cfg",
    "train_pipeline_cfg",
    "write_dota_txt",
    "write_task1_submission",
]
