"""Training, testing and inference around the :mod:`rotdet.models` detectors.

* :mod:`rotdet.engine.inference`: :class:`Detector` (config + checkpoint -> detections on images of
  any size, sliding windows and merging) and :class:`Detections`;
* :mod:`rotdet.engine.predict_cli`: ``rotdet predict`` (drawn images, DOTA lines and JSON per image);
* :mod:`rotdet.engine.bench`: ``rotdet bench`` (inference and training throughput, peak memory);
* :mod:`rotdet.engine.checkpoint`: saving and loading checkpoints;
* :mod:`rotdet.engine.data`: datasets and loaders from a config;
* :mod:`rotdet.engine.optim`: optimizer and learning-rate schedule;
* :mod:`rotdet.engine.logger`, :mod:`rotdet.engine.distributed`: run logs, multi-GPU helpers.
"""

from rotdet.engine.inference import Detections, Detector

__all__ = ["Detections", "Detector"]
