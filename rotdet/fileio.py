"""The package's one copy of two file rules: writes are atomic, ``torch.load`` is safe.

Every file rotdet writes for a user (checkpoints, labels, detections, submissions, configs) goes
through :func:`atomic_write`: a temporary sibling named ``.<name>.<random>.tmp``, fsync, then
``os.replace``. A crash or Ctrl-C mid-write leaves the previous file untouched and, at worst, a
temporary that :func:`remove_stale_temporaries` can clean. Every checkpoint rotdet reads goes
through :func:`safe_torch_load` (``weights_only=True``: a crafted pickle cannot run code).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "TEMP_SUFFIX",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale_temporaries",
    "safe_torch_load",
]

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """A file object whose content replaces ``path`` only when the ``with`` block ends normally.

    The parent folder is created. On any exception (KeyboardInterrupt included) the temporary is
    removed and ``path`` keeps whatever it held before.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        kwargs = {"encoding": encoding or "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation); returns the path."""
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns the path."""
    import torch  # here, not at the top: label / split / evaluation writers must not load torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that killed :func:`atomic_write` calls left in ``folder`` (not
    recursive); returns what was removed. Only call it where no other process is writing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.glob(f".*{TEMP_SUFFIX}"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _safe_globals() -> list:
    """The numpy reconstructors that mmcv's checkpoint ``meta`` may hold (besides plain data)."""
    allowed: list = [np.dtype]
    multiarray = getattr(np, "_core", None) or np.core
    allowed.append(multiarray.multiarray.scalar)
    allowed.append(multiarray.multiarray._reconstruct)
    allowed.append(np.ndarray)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def _unreadable(path: Path, exc: BaseException) -> ValueError:
    """Say what ``path`` is when torch cannot read it: empty, truncated, or not a checkpoint."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    if size == 0:
        what = "is empty (0 bytes)"
    elif head.startswith(b"PK") and not zipfile.is_zipfile(path):
        what = f"is truncated ({size} bytes: the end of its zip archive is missing)"
    elif head[:1] == b"\x80" and isinstance(exc, EOFError | pickle.UnpicklingError):
        what = f"is truncated ({size} bytes: its pickle ends early)"
    elif head.startswith(b"PK"):  # a whole zip archive that torch still cannot read
        what = f"cannot be read as a checkpoint ({type(exc).__name__}: {' '.join(str(exc).split())})"
    else:
        what = f"is not a PyTorch checkpoint (it starts with {head!r})"
    return ValueError(f"{path} {what}; an interrupted write or copy? use another file")


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with the numpy reconstructors mmcv's ``meta`` may need.

    Raises FileNotFoundError, or ValueError with one line that names the file and says what it is
    (empty, truncated, not a checkpoint, or holding objects outside the allow-list)."""
    import torch  # see atomic_torch_save

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):
            raise _unreadable(path, exc) from None
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # pragma: no cover - best effort diagnostics
            unsafe = []
        # torch's own message advises weights_only=False (running the file's code): not repeated.
        raise ValueError(
            f"{path}: refusing to unpickle objects outside the allow-list {unsafe or ''} "
            "(rotdet loads checkpoints with weights_only=True)"
        ) from None
    except Exception as exc:  # a foreign file fails anywhere in the unpickler (even as a KeyError)
        raise _unreadable(path, exc) from None
