"""Datasets and loaders from a config: kept here for existing imports; they live in
:mod:`rotdet.data.build` (datasets and pipelines of every label format) and
:mod:`rotdet.data.loader` (seeded, resumable training loaders)."""

from rotdet.data.build import (
    build_dataset,
    config_pipeline,
    dataset_paths,
    resolve_classes,
)
from rotdet.data.loader import EpochSampler, SeededAugmentation, build_train_loader

__all__ = [
    "EpochSampler",
    "SeededAugmentation",
    "build_dataset",
    "build_train_loader",
    "config_pipeline",
    "dataset_paths",
    "resolve_classes",
]
