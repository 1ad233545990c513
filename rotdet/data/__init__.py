"""DOTA data: annotation I/O, image splitting and merging, transforms, datasets and ToyDOTA.

* :mod:`rotdet.data.dota`: class lists, the labelTxt parser / writer, dataset indexing;
* :mod:`rotdet.data.split`: mmrotate-equivalent image splitting (``rotdet split``);
* :mod:`rotdet.data.merge`: patch detections back to images, Task1 submission files;
* :mod:`rotdet.data.transforms` / :mod:`rotdet.data.dataset`: training and test loading;
* :mod:`rotdet.data.toy`: the synthetic ToyDOTA set (``rotdet make-toy``);
* :mod:`rotdet.data.browse`: drawing annotations (``rotdet browse``);
* :mod:`rotdet.data.visualize`: drawing rotated boxes and their captions (browse, predict, demo).
"""

from rotdet._lazy import lazy_exports

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

# Each name imports its module on first use: `rotdet split` must not pay for torch (see rotdet._lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DOTADataset": "rotdet.data.dataset",
        "DOTA_CLASSES": "rotdet.data.dota",
        "DOTA_V15_CLASSES": "rotdet.data.dota",
        "DOTA_V1_CLASSES": "rotdet.data.dota",
        "DOTA_V2_CLASSES": "rotdet.data.dota",
        "DotaAnnotation": "rotdet.data.dota",
        "DotaFormatError": "rotdet.data.dota",
        "IMG_NORM_CFG": "rotdet.data.transforms",
        "ImageReadError": "rotdet.data.transforms",
        "ParseLog": "rotdet.data.dota",
        "SPLIT_PRESETS": "rotdet.data.split",
        "SplitConfig": "rotdet.data.split",
        "TOY_CLASSES": "rotdet.data.toy",
        "build_pipeline": "rotdet.data.transforms",
        "collate": "rotdet.data.dataset",
        "ensure_toy_dota": "rotdet.data.toy",
        "get_classes": "rotdet.data.dota",
        "load_dota_infos": "rotdet.data.dota",
        "load_image": "rotdet.data.transforms",
        "make_toy_dota": "rotdet.data.toy",
        "make_toy_image": "rotdet.data.toy",
        "merge_patch_detections": "rotdet.data.merge",
        "parse_patch_name": "rotdet.data.merge",
        "poly_window_iof": "rotdet.data.split",
        "read_dota_txt": "rotdet.data.dota",
        "sliding_windows": "rotdet.data.split",
        "split_dataset": "rotdet.data.split",
        "split_image": "rotdet.data.split",
        "test_pipeline_cfg": "rotdet.data.transforms",
        "train_pipeline_cfg": "rotdet.data.transforms",
        "write_dota_txt": "rotdet.data.dota",
        "write_task1_submission": "rotdet.data.merge",
    },
)
