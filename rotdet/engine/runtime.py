"""Process-wide state shared by training, testing and benchmarking: mixed precision (and a
config's ``fp16`` loss scaling), memory readings, and the seeds and RNG states a resumable run
saves and restores."""

from __future__ import annotations

import os
import random
import resource
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "AMP_DTYPES",
    "LossScaling",
    "autocast",
    "config_loss_scaling",
    "peak_memory_mib",
    "resolve_amp",
    "resolve_train_amp",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(amp: str, device: torch.device) -> str:
    """Check an ``--amp`` value for ``device`` and resolve ``auto``: ``bf16`` where bfloat16 runs
    natively (CUDA with bf16 support, or a CPU with AVX512-BF16 / AMX, where it halves the step
    time), else ``none``. fp16 needs CUDA (it relies on a gradient scaler)."""
    if amp == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "none"
        native = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return "bf16" if any(getattr(torch.cpu, name, lambda: False)() for name in native) else "none"
    if amp not in AMP_DTYPES:
        raise ValueError(f"unknown amp mode {amp!r}; use none, bf16, fp16 or auto")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")
    return amp


# mmcv 1.x's Fp16OptimizerHook: the loss scale of an ``fp16`` mapping without ``loss_scale``.
MMCV_DEFAULT_LOSS_SCALE = 512.0
# The keyword arguments of torch.amp.GradScaler a ``loss_scale`` mapping may set (mmcv passes the
# mapping to GradScaler as it is).
GRAD_SCALER_KEYS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval", "enabled")


@dataclass(frozen=True)
class LossScaling:
    """How fp16 training scales the loss: a config's ``fp16.loss_scale`` as mmcv 1.x reads it.

    Attributes:
        scaler_kwargs: keyword arguments of ``torch.amp.GradScaler`` (empty: torch's defaults,
            a dynamic scale from 2**16).
        fixed_scale: a static scale, which every step resets the scaler to (a step with
            non-finite gradients is still skipped); None: the scale is dynamic.
    """

    scaler_kwargs: dict = field(default_factory=dict)
    fixed_scale: float | None = None

    def grad_scaler(self, device_type: str, enabled: bool = True) -> torch.amp.GradScaler:
        """The scaler for ``device_type`` (``enabled=False``: a pass-through, as without fp16)."""
        kwargs = dict(self.scaler_kwargs)
        enabled = enabled and kwargs.pop("enabled", True)
        return torch.amp.GradScaler(device_type, enabled=enabled, **kwargs)

    def describe(self) -> str:
        if self.fixed_scale is not None:
            return f"static loss scale {self.fixed_scale:g}"
        settings = ", ".join(f"{k}={v}" for k, v in self.scaler_kwargs.items())
        return f"dynamic loss scale ({settings or 'torch defaults'})"


def _positive_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def loss_scaling(loss_scale: str | float | dict = "dynamic") -> LossScaling:
    """The :class:`LossScaling` of an mmcv ``loss_scale``: ``"dynamic"`` (torch's GradScaler
    defaults), a number (a static scale: ``init_scale`` and the reset after every step), or a
    mapping of GradScaler keyword arguments. Raises ValueError naming what is wrong."""
    if loss_scale == "dynamic":
        return LossScaling({})
    # mmcv asks for a float; an integer (``512`` in YAML) means the same scale.
    if _positive_number(loss_scale):
        return LossScaling({"init_scale": float(loss_scale)}, fixed_scale=float(loss_scale))
    if not isinstance(loss_scale, dict):
        raise ValueError(
            f"fp16.loss_scale must be 'dynamic', a positive number (a static scale) or a mapping of "
            f"GradScaler arguments ({', '.join(GRAD_SCALER_KEYS)}); got {loss_scale!r}"
        )
    unknown = sorted(set(loss_scale) - set(GRAD_SCALER_KEYS))
    if unknown:
        raise ValueError(f"fp16.loss_scale has unknown keys {unknown}; known: {', '.join(GRAD_SCALER_KEYS)}")
    # GradScaler checks these only when enabled (on CUDA): checked here so a CPU run fails alike.
    for key in ("init_scale", "growth_factor", "backoff_factor", "growth_interval"):
        if key in loss_scale and not _positive_number(loss_scale[key]):
            raise ValueError(f"fp16.loss_scale.{key} must be a positive number; got {loss_scale[key]!r}")
    if not isinstance(loss_scale.get("growth_interval", 1), int):
        raise ValueError(
            f"fp16.loss_scale.growth_interval must be an integer; got {loss_scale['growth_interval']!r}"
        )
    if loss_scale.get("growth_factor", 2.0) <= 1.0 or loss_scale.get("backoff_factor", 0.5) >= 1.0:
        raise ValueError("fp16.loss_scale needs growth_factor > 1 and backoff_factor < 1")
    if not isinstance(loss_scale.get("enabled", True), bool):
        raise ValueError(f"fp16.loss_scale.enabled must be true or false; got {loss_scale['enabled']!r}")
    return LossScaling(dict(loss_scale))


def config_loss_scaling(cfg: dict) -> LossScaling | None:
    """The loss scaling of a config's top-level ``fp16`` key (mmcv's ``fp16 = dict(loss_scale=...)``,
    which trains the config with fp16 mixed precision); None when the config has none (or null)."""
    fp16 = cfg.get("fp16")
    if fp16 is None:
        return None
    if not isinstance(fp16, dict):
        raise ValueError(f"config key 'fp16' must be a mapping such as {{loss_scale: dynamic}}; got {fp16!r}")
    unknown = sorted(set(fp16) - {"loss_scale"})
    if unknown:
        raise ValueError(f"config key 'fp16' has unknown keys {unknown}; known: loss_scale")
    return loss_scaling(fp16.get("loss_scale", MMCV_DEFAULT_LOSS_SCALE))


def resolve_train_amp(amp: str | None, cfg: dict, device: torch.device) -> tuple[str, str | None]:
    """The precision a training of ``cfg`` on ``device`` runs in, and a warning to log (or None).

    An explicit ``amp`` wins (:func:`resolve_amp`). ``None`` takes the config's: ``fp16`` when it
    has an ``fp16`` key, else ``none``; fp16 needs CUDA, so on another device the config's fp16
    becomes ``bf16`` (the mixed precision a CPU has), with a warning saying so. The config's ``fp16``
    key is checked either way, so a bad one fails on every device."""
    scaling = config_loss_scaling(cfg)
    if amp is not None:
        return resolve_amp(amp, device), None
    if scaling is None:
        return "none", None
    if device.type == "cuda":
        return "fp16", None
    return "bf16", (
        f"the config asks for fp16 mixed precision (fp16: {cfg['fp16']}), which needs CUDA; "
        f"training on {device.type} in bf16 instead (--amp none for float32)"
    )


def autocast(device: torch.device, amp: str) -> torch.autocast:
    """``torch.autocast`` for an ``amp`` mode (``none`` gives a disabled context)."""
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory so far: allocated tensors on a GPU, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # macOS: bytes, Linux: KiB


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy's legacy global RNG and torch; ``deterministic`` also asks for
    deterministic algorithms (bitwise-reproducible runs on the CPU)."""
    random.seed(seed)
    # The legacy global numpy RNG is what third-party transforms draw from.
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def rng_state() -> dict:
    """The torch, numpy, Python (and CUDA) RNG states, as tensors and plain data that
    ``torch.load(weights_only=True)`` reads back."""
    np_state = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only on as many devices)."""
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
