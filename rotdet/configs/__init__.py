"""Model + training configurations as YAML data (never executed code).

The eight seed configurations carry mmrotate 0.3.4's config names and values (its ``model``
dict with the same keys, the DOTA data settings, the 1x schedule); ``demo_atss_le90`` is a small
ResNet-18 variant for ToyDOTA. :func:`load_config` reads one by name (or from a ``.yaml`` path) and
applies ``key=value`` overrides with dotted keys, e.g. ``model.backbone.depth=18``; the value is
parsed as YAML (``[64, 128]``, ``null``, ``0.01``). An unknown key or config name is an error that
names it.

Includes: a file may start with ``_base_: [paths]`` (relative to that file). The bases are merged in
order, then the file itself on top, as mmcv merges configs: mappings merge key by key, anything
else is replaced, and a mapping holding ``_delete_: true`` replaces its base mapping whole.

The angle convention has one source, the top-level ``angle_version``: :func:`resolve_angle_version`
writes it into every box coder (``angle_range``) and ATSS assigner, turns ``assign_by_circumhbbox:
true`` into that version, and fills the coder's ``edge_swap`` / ``proj_xy`` / ``norm_factor`` left
``null`` from :data:`CODER_PRESETS`. A nested value that disagrees with the top-level one is an error
naming both.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

__all__ = [
    "CODER_PRESETS",
    "CONFIG_DIR",
    "SEED_CONFIGS",
    "apply_overrides",
    "list_configs",
    "load_config",
    "resolve_angle_version",
]

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


# The coder settings mmrotate 0.3.4's configs use with each angle version (the values a ``null``
# edge_swap / proj_xy / norm_factor takes; an explicit value in a config wins).
CODER_PRESETS: dict[str, dict] = {
    "oc": {"edge_swap": False, "proj_xy": False, "norm_factor": None},
    "le90": {"edge_swap": True, "proj_xy": True, "norm_factor": None},
    "le135": {"edge_swap": False, "proj_xy": True, "norm_factor": 1},
}
BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
_FIRST_KEYS = ("name", "source", "angle_version")


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2's floats: ``1e-4`` and ``5E3`` are numbers (YAML 1.1,
    which PyYAML follows, wants a dot and a signed exponent and reads them as strings)."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str):
    """A YAML document (or one override value) as rotdet reads configs."""
    return yaml.load(text, Loader=_ConfigLoader)


def list_configs() -> list[str]:
    """Names of the bundled configurations (the include files under ``_base_/`` are not configs)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _kind(value) -> str | None:
    """The kind of value a config key holds, for checking an override; None: anything goes."""
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return None


# Keys whose component takes either kind (mmrotate's RRandomFlip takes one value or a list; mmrotate
# spells assign_by_circumhbbox as an angle version, rotdet as a boolean; classes are a list's name or
# the list; mmcv's fp16 loss scale is 'dynamic', a static number or GradScaler arguments): matched by
# key suffix.
EITHER_KIND_KEYS: dict[str, frozenset[str]] = {
    "train_flip.flip_ratio": frozenset({"a number", "a list"}),
    "train_flip.direction": frozenset({"a string", "a list"}),
    "assign_by_circumhbbox": frozenset({"a boolean (true/false)", "a string"}),
    "data.classes": frozenset({"a string", "a list"}),  # a named list or the names themselves
    "backbone.pretrained": frozenset({"a boolean (true/false)", "a string"}),  # or a local file
    "fp16.loss_scale": frozenset({"a string", "a number", "a mapping"}),
}


def _check_type(key: str, old, new) -> None:
    """An override keeps the kind of the value it replaces (null may replace, or be replaced by,
    anything), so that a typo fails here, naming the key, before anything is built or written."""
    expected = _kind(old)
    if expected is None or new is None or _kind(new) == expected:
        return
    either = next((kinds for suffix, kinds in EITHER_KIND_KEYS.items() if key.endswith(suffix)), frozenset())
    if {expected, _kind(new)} <= either:
        return
    raise ValueError(f"config key {key!r} expects {expected} (it is {old!r}); got {new!r}")


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
                _check_type(key, node[idx], value)
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i]) or "<top level>"
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a mapping)"
            raise KeyError(f"unknown config key {key!r}: {where} has no {part!r}; known: {known}")
        if last:
            _check_type(key, node[part], value)
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
                parsed.append((key.strip(), parse_yaml(text)))
            except yaml.YAMLError as exc:
                raise ValueError(
                    f"override {item!r}: the value is not valid YAML ({_one_line(exc)})"
                ) from None
        items = parsed
    for key, value in items:
        _set(cfg, key, value)
    return cfg


def merge_config(base: dict, child: dict) -> dict:
    """``child`` merged onto a copy of ``base`` (mmcv's rule, see the module docstring)."""
    if child.get(DELETE_KEY):
        return {k: copy.deepcopy(v) for k, v in child.items() if k != DELETE_KEY}
    out = copy.deepcopy(base)
    for key, value in child.items():
        if key == DELETE_KEY:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """One YAML file with its ``_base_`` includes merged in (``chain``: the including files)."""
    if path in chain:
        raise ValueError(f"{chain[-1]}: _base_ include cycle through {path}")
    if not path.is_file():
        raise ValueError(f"{chain[-1]}: _base_ file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            doc = parse_yaml(f.read())
    except yaml.YAMLError as exc:  # the message carries the line and column
        raise ValueError(f"{path} is not valid YAML: {_one_line(exc)}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a mapping of config keys")
    bases = doc.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = merge_config(merged, _read_yaml((path.parent / str(base)).resolve(), (*chain, path)))
    return merge_config(merged, doc)


def _find_config(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown config {str(name_or_path)!r}; valid configs: {', '.join(list_configs())}")
    return path


def load_config(name_or_path: str | Path, overrides: Iterable[str] | dict | None = None) -> dict:
    """Load a bundled config by name (or a YAML file by path), apply ``overrides``, then
    :func:`resolve_angle_version`: the result is the config a model is built from, spelled out."""
    path = _find_config(name_or_path)
    cfg = _read_yaml(path)
    if "model" not in cfg or not isinstance(cfg["model"], dict):
        raise ValueError(f"{path} is not a rotdet config (no 'model' mapping)")
    cfg = {**{k: cfg[k] for k in _FIRST_KEYS if k in cfg}, **cfg}  # name and convention first
    return resolve_angle_version(apply_overrides(cfg, overrides))


def _agree(where: str, value, version: str, key: str = "angle_version") -> None:
    if value is not None and value != version:
        raise ValueError(
            f"{where}={value!r} disagrees with the top-level {key}={version!r}; set the angle "
            f"convention only at the top level ({key}=...), or make both the same"
        )


def _resolve_coder(coder, where: str, version: str, presets: bool = True) -> None:
    if isinstance(coder, dict):
        _agree(f"{where}.angle_range", coder.get("angle_range"), version)
        coder["angle_range"] = version
        for key, value in CODER_PRESETS[version].items() if presets else ():
            if coder.get(key) is None:
                coder[key] = value


def _resolve_two_stage(model: dict, version: str) -> None:
    """Oriented R-CNN: the RPN's ``version`` and midpoint-offset coder (which has no edge_swap /
    proj_xy / norm_factor), the RoI box head's coder."""
    rpn = model.get("rpn_head")
    if isinstance(rpn, dict):
        _agree("model.rpn_head.version", rpn.get("version"), version)
        rpn["version"] = version
        _resolve_coder(rpn.get("bbox_coder"), "model.rpn_head.bbox_coder", version, presets=False)
    box_head = (model.get("roi_head") or {}).get("bbox_head")
    if isinstance(box_head, dict):
        _resolve_coder(box_head.get("bbox_coder"), "model.roi_head.bbox_head.bbox_coder", version)


def _resolve_head(head: dict, where: str, version: str) -> None:
    if head.get("type") in ("RotatedFCOSHead", "CSLRFCOSHead"):  # anchor-free: key angle_version
        for key in ("bbox_coder", "angle_coder"):
            if isinstance(head.get(key), dict):
                _agree(f"{where}.{key}.angle_version", head[key].get("angle_version"), version)
                head[key]["angle_version"] = version
        return
    _resolve_coder(head.get("bbox_coder"), f"{where}.bbox_coder", version)
    circ = head.get("assign_by_circumhbbox", True)  # mmrotate's default: assign on the hbb
    if isinstance(circ, str):
        _agree(f"{where}.assign_by_circumhbbox", circ, version)
    head["assign_by_circumhbbox"] = version if circ else None


def _resolve_assigner(train_cfg: dict | None, where: str, version: str) -> None:
    assigner = (train_cfg or {}).get("assigner")
    if isinstance(assigner, dict) and str(assigner.get("type", "")).startswith("ATSS"):
        _agree(f"{where}.assigner.angle_version", assigner.get("angle_version"), version)
        assigner["angle_version"] = version


def resolve_angle_version(cfg: dict) -> dict:
    """A copy of the whole config ``cfg`` whose model follows its top-level ``angle_version``.

    Raises ValueError naming both values when a nested convention disagrees with the top level."""
    if "angle_version" not in cfg:
        raise ValueError("the config has no top-level angle_version (oc, le90 or le135)")
    version = cfg["angle_version"]
    if version not in CODER_PRESETS:
        raise ValueError(f"angle_version={version!r} is not one of {', '.join(CODER_PRESETS)}")
    cfg = copy.deepcopy(cfg)
    model = cfg["model"]
    heads = [("model.bbox_head", model.get("bbox_head"))]
    heads += [(f"model.refine_heads.{i}", h) for i, h in enumerate(model.get("refine_heads") or [])]
    heads += [(f"model.{k}", model.get(k)) for k in ("fam_head", "odm_head")]  # S2A-Net's two heads
    for where, head in heads:
        if isinstance(head, dict):
            _resolve_head(head, where, version)
    _resolve_two_stage(model, version)
    train_cfg = model.get("train_cfg") or {}
    if "s0" in train_cfg:  # R3Det: the first stage, then one per refine stage
        _resolve_assigner(train_cfg["s0"], "model.train_cfg.s0", version)
        for i, stage in enumerate(train_cfg.get("sr") or []):
            _resolve_assigner(stage, f"model.train_cfg.sr.{i}", version)
    else:
        _resolve_assigner(train_cfg, "model.train_cfg", version)
    return cfg
