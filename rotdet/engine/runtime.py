"""Process-wide state shared by training, testing and benchmarking: mixed precision, memory
readings, and the seeds and RNG states a resumable run saves and restores."""

from __future__ import annotations

import os
import random
import resource
import sys

import numpy as np
import torch

__all__ = [
    "AMP_DTYPES",
    "autocast",
    "peak_memory_mib",
    "resolve_amp",
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
