"""Shared benchmark plumbing: machine description, timing, a printed table and a JSON-lines record.

Every benchmark appends one JSON line to ``benchmarks/results.jsonl`` with the machine, library
versions and its numbers, so results from different machines can be compared later. On a shared
CPU only ratios measured in the same run are meaningful; absolute times count on a GPU.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import rotdet

RESULTS = Path(__file__).resolve().parent / "results.jsonl"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    info = {
        "host": platform.node(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def versions(**extra: str) -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "rotdet": rotdet.__version__,
        **extra,
    }


def time_call(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds, synchronising CUDA around each call."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[_fmt(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(c[i]) for c in cells)) for i, col in enumerate(columns)]
    print("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def append_record(bench: str, results: list[dict], out: Path | None = None, **extra: object) -> None:
    """Append one JSON line describing this run to ``out`` (default ``benchmarks/results.jsonl``)."""
    record = {
        "bench": bench,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        **extra,
        "results": results,
    }
    out = Path(out) if out is not None else RESULTS
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"appended to {out}")
