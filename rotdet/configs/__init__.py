"""Model + training configurations as YAML data (never executed code).

The eight seed configurations carry mmrotate 0.3.4's config names and values (its ``model``
dict with the same keys, the DOTA data settings, the 1x schedule); ``demo_atss_le90`` is a small
ResNet-18 variant for ToyDOTA. :func:`load_config` reads one by name (or from a ``.yaml`` path) and
applies ``key=value`` overrides with dotted keys, e.g. ``model.backbone.depth=18``; the value is
parsed as YAML (``[64, 128]``, ``null``, ``0.01``). An unknown key or config name is an error that
names it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import yaml

__all__ = ["CONFIG_DIR", "SEED_CONFIGS", "apply_overrides", "list_configs", "load_config"]

CONFIG_DIR = Path(__file__).resolve().parent

# The eight configurations of the Rotated ATSS table (mmrotate's names), in the table's order.
SEED_CONFIGS: tuple[str, ...] = (
    "rotated_retinanet_hbb_r50_fpn_1x_dota_oc",
    "rotated_retinanet_obb_r50_fpn_1x_dota_le90",
    "rotated_retinanet_obb_r50_fpn_1x_dota_le135",
    "rotated_atss_hbb_r50_fpn_1x_dota_oc",
    "rotated_atss_obb_r50_fpn_1x_dota_le90",
    "rotated_atss_obb_r50_fpn_1x_dota_le135",
    "r3det_r50_fpn_1x_dota_oc",
    "r3det_atss_r50_fpn_1x_dota_oc",
)


def list_configs() -> list[str]:
    """Names of the bundled configurations."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _set(cfg: dict, key: str, value) -> None:
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise KeyError(f"unknown config key {key!r}: no item {part!r} in a list of {len(node)}")
            idx = int(part)
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i]) or "<top level>"
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a mapping)"
            raise KeyError(f"unknown config key {key!r}: {where} has no {part!r}; known: {known}")
        if last:
            node[part] = value
        else:
            node = node[part]


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def apply_overrides(cfg: dict, overrides: Iterable[str] | dict | None) -> dict:
    """A copy of ``cfg`` with ``key=value`` strings (or a ``{dotted key: value}`` dict) applied."""
    cfg = copy.deepcopy(cfg)
    if not overrides:
        return cfg
    items = overrides.items() if isinstance(overrides, dict) else []
    if not isinstance(overrides, dict):
        parsed = []
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not key=value")
            key, text = item.split("=", 1)
            try:
                parsed.append((key.strip(), yaml.safe_load(text)))
            except yaml.YAMLError as exc:
                raise ValueError(
                    f"override {item!r}: the value is not valid YAML ({_one_line(exc)})"
                ) from None
        items = parsed
    for key, value in items:
        _set(cfg, key, value)
    return cfg


def load_config(name_or_path: str | Path, overrides: Iterable[str] | dict | None = None) -> dict:
    """Load a bundled config by name (or a YAML file by path) and apply ``overrides``."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(
                f"unknown config {str(name_or_path)!r}; valid configs: {', '.join(list_configs())}"
            )
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as exc:  # the message carries the line and column
        raise ValueError(f"{path} is not valid YAML: {_one_line(exc)}") from None
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ValueError(f"{path} is not a rotdet config (no 'model' mapping)")
    return apply_overrides(cfg, overrides)
