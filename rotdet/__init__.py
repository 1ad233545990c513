"""rotdet: oriented object detection for aerial images in pure PyTorch."""

__version__ = "0.1.0.dev0"

# After __version__, so that it is already set while the engine's modules import.
from rotdet.engine.inference import Detections, Detector  # noqa: E402

__all__ = ["Detections", "Detector", "__version__"]
