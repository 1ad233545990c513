"""rotdet: oriented object detection for aerial images in pure PyTorch."""

__version__ = "0.1.0.dev0"
