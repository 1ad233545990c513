"""rotdet: oriented object detection for aerial images in pure PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    from rotdet.engine.inference import Detections, Detector

__all__ = ["Detections", "Detector", "__version__"]


def __getattr__(name: str):
    # Imported on first use (PEP 562), so that `import rotdet.evaluation` (or any light part) does
    # not import torch, torchvision and the models.
    if name in ("Detections", "Detector"):
        from rotdet.engine import inference

        value = getattr(inference, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
