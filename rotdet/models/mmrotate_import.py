"""Load mmrotate 0.3.4 checkpoints (the eight seed configurations) into rotdet models.

An mmrotate checkpoint is a ``.pth`` with ``state_dict`` (and ``meta``, maybe ``optimizer``), or a
bare state dict. It is read with ``torch.load(weights_only=True)``: nothing in it can run code. The
only globals allowed beyond torch's defaults are numpy's scalar and dtype reconstructors (mmcv's
``meta`` may hold numpy scalars); anything else is refused with an error naming it.

Names: rotdet keeps mmrotate's module names (``backbone.*`` = torchvision's = mmdet's ResNet,
``bbox_head.cls_convs.i.conv``, ``bbox_head.retina_cls``, R3Det's ``feat_refine_module.i.*`` and
``refine_head.i.*``) except the FPN, whose convs are plain ``nn.Conv2d``:
``neck.lateral_convs.i.conv.weight`` -> ``neck.lateral_convs.i.weight`` (same for ``fpn_convs``).
The conversion requires zero missing and zero unexpected keys and equal shapes.

CLI: ``rotdet convert IN.pth OUT.pth --config NAME`` writes ``{"state_dict", "meta"}`` with rotdet
names (``meta``: config name, source file, mmrotate's ``CLASSES`` when present).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from rotdet.fileio import atomic_torch_save, safe_torch_load

__all__ = [
    "convert_checkpoint",
    "load_mmrotate_checkpoint",
    "LoadedWeights",
    "load_weights",
    "mmrotate_to_rotdet_key",
    "mmrotate_to_rotdet_state_dict",
    "rotdet_to_mmrotate_key",
]

_NECK_CONV = re.compile(r"^(neck\.(?:lateral_convs|fpn_convs)\.\d+)\.conv\.(weight|bias)$")
_NECK_PLAIN = re.compile(r"^(neck\.(?:lateral_convs|fpn_convs)\.\d+)\.(weight|bias)$")


def mmrotate_to_rotdet_key(key: str) -> str:
    """rotdet's name of an mmrotate state-dict key."""
    m = _NECK_CONV.match(key)
    return f"{m.group(1)}.{m.group(2)}" if m else key


def rotdet_to_mmrotate_key(key: str) -> str:
    """mmrotate's name of a rotdet state-dict key."""
    m = _NECK_PLAIN.match(key)
    return f"{m.group(1)}.conv.{m.group(2)}" if m else key


def load_mmrotate_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """``(state_dict, meta)`` of an mmrotate checkpoint (``meta`` is ``{}`` for a bare state dict)."""
    obj = safe_torch_load(path)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return _state_and_meta(obj, path)


def _state_and_meta(obj: Mapping, where) -> tuple[dict[str, Tensor], dict]:
    if "state_dict" in obj:
        state, meta = obj["state_dict"], obj.get("meta") or {}
    else:
        state, meta = obj, {}
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{where}: the state dict holds non-tensor values")
    # mmcv strips "module." when saving; accept checkpoints saved from a wrapped model too
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return state, dict(meta)


def mmrotate_to_rotdet_state_dict(state: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """mmrotate's state dict renamed for ``model``; raises unless keys and shapes match exactly."""
    ours = model.state_dict()
    mapped = {mmrotate_to_rotdet_key(k): v for k, v in state.items()}
    missing = sorted(set(ours) - set(mapped))
    unexpected = sorted(set(mapped) - set(ours))
    wrong = sorted(k for k in set(ours) & set(mapped) if tuple(ours[k].shape) != tuple(mapped[k].shape))
    if missing or unexpected or wrong:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing: {show([rotdet_to_mmrotate_key(k) for k in missing])}")
        if unexpected:
            parts.append(f"unexpected: {show([rotdet_to_mmrotate_key(k) for k in unexpected])}")
        if wrong:
            parts.append(
                "shape mismatch: "
                + show([f"{k} {tuple(mapped[k].shape)} vs {tuple(ours[k].shape)}" for k in wrong])
            )
        raise ValueError("checkpoint does not fit the model (" + "; ".join(parts) + ")")
    return {k: mapped[k].to(dtype=ours[k].dtype) for k in ours}


@dataclass
class LoadedWeights:
    """What :func:`load_weights` loaded: the checkpoint's ``meta``, the number of tensors loaded, the
    checkpoint's names it skipped and the model's names it left as initialised (the last two are
    empty in strict mode)."""

    meta: dict
    loaded: int
    skipped: list[str]
    missing: list[str]


def load_weights(model: nn.Module, source: str | os.PathLike | Mapping, strict: bool = True) -> LoadedWeights:
    """Load weights into ``model``: the one loader for rotdet and mmrotate 0.3.4 checkpoints.

    Args:
        source: a checkpoint file, or an already loaded checkpoint dict (``{"state_dict", "meta"}``)
            or bare state dict; mmrotate's names and a DDP ``module.`` prefix are accepted.
        strict: every tensor of the model must come from the checkpoint with its shape, and every
            tensor of the checkpoint must be used (a ValueError lists what differs, in mmrotate's
            names), as for testing or predicting with a trained model; else load the tensors
            whose name and shape match and leave the rest as initialised (``--load-from``
            fine-tuning; a ValueError when no tensor matches).
    """
    if isinstance(source, Mapping):
        state, meta = _state_and_meta(source, "checkpoint")
    else:
        state, meta = load_mmrotate_checkpoint(source)
    if strict:
        model.load_state_dict(mmrotate_to_rotdet_state_dict(state, model), strict=True)
        return LoadedWeights(meta, len(state), [], [])
    own = model.state_dict()
    loaded, skipped = {}, []
    for key, value in state.items():
        name = key if key in own else mmrotate_to_rotdet_key(key)
        if name in own and own[name].shape == value.shape:
            loaded[name] = value
        else:
            skipped.append(key)
    if not loaded:
        raise ValueError("no tensor matches the model (is it a checkpoint of another detector?)")
    model.load_state_dict(loaded, strict=False)
    return LoadedWeights(meta, len(loaded), skipped, sorted(set(own) - set(loaded)))


def convert_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, config: str, overrides: list[str] | None = None
) -> dict:
    """Convert ``src`` (mmrotate) to a rotdet checkpoint at ``dst`` for the named config; returns its meta."""
    from rotdet.configs import load_config
    from rotdet.models.factory import build_model

    state, src_meta = load_mmrotate_checkpoint(src)  # a bad file fails before any model is built
    cfg = load_config(config, ["model.backbone.pretrained=false", *(overrides or [])])
    model = build_model(cfg)
    converted = mmrotate_to_rotdet_state_dict(state, model)
    meta = {
        "config": cfg["name"],
        "converted_from": "mmrotate 0.3.4",
        "source_file": os.path.basename(str(src)),
    }
    for key in ("CLASSES", "epoch", "iter", "mmcv_version"):
        if key in src_meta:
            value = src_meta[key]
            meta[key] = list(value) if isinstance(value, tuple) else value
    atomic_torch_save({"state_dict": converted, "meta": meta}, dst)
    return meta
