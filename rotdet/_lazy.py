"""Package re-exports that import their module on first use (PEP 562).

``import rotdet`` or ``import rotdet.data.split`` then costs only what is used: ``rotdet --help`` and
``rotdet split`` never import torch, and ``import rotdet.ops`` does not load the engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package`` whose names map to the module defining each."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
