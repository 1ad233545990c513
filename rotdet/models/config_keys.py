"""The one rule for turning a config section into constructor arguments.

A component's ``from_config(cfg)`` (a classmethod beside its ``__init__``, detectron2's
``@configurable`` idea without the decorator) calls :func:`constructor_kwargs`: the keys it accepts
are its constructor's parameters, so there is no second list of keys to keep in step, and a key
the constructor does not take is an error naming the section and the keys it knows.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["constructor_kwargs", "constructor_keys"]


def constructor_keys(cls: type) -> frozenset[str]:
    """The keyword parameters of ``cls.__init__`` (``self`` and ``*args`` / ``**kwargs`` aside)."""
    params = inspect.signature(cls.__init__).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in params if p.kind in kinds and p.name != "self")


def constructor_kwargs(
    cls: type,
    cfg: Mapping[str, Any],
    what: str,
    types: Collection[str | None] | None = None,
    extra: Collection[str] = (),
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """``cfg`` without its ``type``, checked against ``cls``'s constructor.

    Args:
        cls: the component's class.
        cfg: the config section (mmrotate's dict, ``type`` included).
        what: the section's name in messages (``backbone``, ``bbox_head.bbox_coder``...).
        types: the ``type`` values the section may name (None: any).
        extra: keys the caller's ``from_config`` maps itself (they stay in the result).
        exclude: constructor parameters that come from elsewhere, not from this section.
    """
    c = dict(cfg)
    kind = c.pop("type", None)
    if types is not None and kind not in types:
        known = sorted(t for t in types if t is not None)
        raise ValueError(f"{what}: type {kind!r} is not supported; expected one of {known}")
    allowed = (constructor_keys(cls) - set(exclude)) | set(extra)
    unknown = set(c) - allowed
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)}; known: {sorted(allowed)}")
    return c
