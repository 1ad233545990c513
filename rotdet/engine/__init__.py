"""Training, testing and inference around the :mod:`rotdet.models` detectors.

* :mod:`rotdet.engine.inference`: :class:`Detector` (config + checkpoint -> detections on images of
  any size, sliding windows and merging);
* :mod:`rotdet.engine.train` / :mod:`rotdet.engine.trainer` / :mod:`rotdet.engine.hooks`: training;
  :mod:`rotdet.engine.test`: inference over a dataset and its mAP;
* :mod:`rotdet.engine.bench`: inference and training throughput, peak memory;
* :mod:`rotdet.engine.checkpoint`: saving and loading checkpoints;
* :mod:`rotdet.engine.data`: datasets and loaders from a config;
* :mod:`rotdet.engine.optim`: optimizer and learning-rate schedule;
* :mod:`rotdet.engine.logger`, :mod:`rotdet.engine.distributed`: run logs, multi-GPU helpers.

The command line around these (arguments, printing, exit codes) is :mod:`rotdet.cli`.
"""

from rotdet.engine.inference import Detections, Detector

__all__ = ["Detections", "Detector"]
