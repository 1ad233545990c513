"""Mixed precision and memory readings shared by training, testing and benchmarking."""

from __future__ import annotations

import resource
import sys

import torch

__all__ = ["AMP_DTYPES", "autocast", "peak_memory_mib", "resolve_amp"]

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
