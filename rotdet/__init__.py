"""rotdet: oriented object detection for aerial images in pure PyTorch."""

from rotdet._lazy import lazy_exports

__version__ = "0.1.0.dev0"

__all__ = ["Detections", "Detector", "RotatedDetections", "__version__"]

# `from rotdet import Detector` imports the engine (and torch) only when asked for.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Detections": "rotdet.engine.inference",
        "Detector": "rotdet.engine.inference",
        "RotatedDetections": "rotdet.structures.detections",
    },
)
