"""DOTA data: annotation I/O, image splitting and merging, transforms, datasets and ToyDOTA.

* :mod:`rotdet.data.dota`: class lists, the labelTxt parser / writer, dataset indexing;
* :mod:`rotdet.data.split`: mmrotate-equivalent image splitting (``rotdet split``);
* :mod:`rotdet.data.merge`: patch detections back to images, Task1 submission files;
* :mod:`rotdet.data.transforms` / :mod:`rotdet.data.dataset`: training and test loading;
* :mod:`rotdet.data.toy`: the synthetic ToyDOTA set (``rotdet make-toy``);
* :mod:`rotdet.data.browse`: drawing annotations (``rotdet browse``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

# Imported on first use (PEP 562): a command that needs one part (the class lists for `rotdet eval`)
# does not import the others' dependencies (torch, OpenCV).
_EXPORTS: dict[str, str] = {
    "DOTADataset": "rotdet.data.dataset",
    "collate": "rotdet.data.dataset",
    "DOTA_CLASSES": "rotdet.data.dota",
    "DOTA_V15_CLASSES": "rotdet.data.dota",
    "DOTA_V1_CLASSES": "rotdet.data.dota",
    "DOTA_V2_CLASSES": "rotdet.data.dota",
    "DotaAnnotation": "rotdet.data.dota",
    "DotaFormatError": "rotdet.data.dota",
    "ParseLog": "rotdet.data.dota",
    "get_classes": "rotdet.data.dota",
    "load_dota_infos": "rotdet.data.dota",
    "read_dota_txt": "rotdet.data.dota",
    "write_dota_txt": "rotdet.data.dota",
    "merge_patch_detections": "rotdet.data.merge",
    "parse_patch_name": "rotdet.data.merge",
    "write_task1_submission": "rotdet.data.merge",
    "SPLIT_PRESETS": "rotdet.data.split",
    "SplitConfig": "rotdet.data.split",
    "poly_window_iof": "rotdet.data.split",
    "sliding_windows": "rotdet.data.split",
    "split_dataset": "rotdet.data.split",
    "split_image": "rotdet.data.split",
    "TOY_CLASSES": "rotdet.data.toy",
    "ensure_toy_dota": "rotdet.data.toy",
    "make_toy_dota": "rotdet.data.toy",
    "make_toy_image": "rotdet.data.toy",
    "IMG_NORM_CFG": "rotdet.data.transforms",
    "ImageReadError": "rotdet.data.transforms",
    "build_pipeline": "rotdet.data.transforms",
    "load_image": "rotdet.data.transforms",
    "test_pipeline_cfg": "rotdet.data.transforms",
    "train_pipeline_cfg": "rotdet.data.transforms",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


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
