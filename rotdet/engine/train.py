"""Training: ``rotdet train CONFIG [key=value ...]`` and :func:`train`.

:func:`train` is the facade over :class:`rotdet.engine.trainer.Trainer` (the loop and its step) and
:mod:`rotdet.engine.hooks` (progress, logs, checkpoints, evaluation, Ctrl-C). The run is described
by the config (model, data, optimizer, lr_config, max_epochs, evaluation) plus :class:`TrainOptions`.

What a user can rely on:

* ``work_dir`` holds ``config.yaml`` (resolved), ``train.log``, ``log.jsonl``, ``tensorboard/``,
  ``curves.png``, ``epoch_N.pth`` (the last ``keep`` of them), ``latest.pth`` and ``best.pth``;
  every file is written atomically, and the temporaries of writes a killed run left are removed at
  the next start.
* ``resume="auto"`` continues from ``work_dir/latest.pth`` when it exists; a checkpoint stores the
  model, optimizer, AMP scaler, epoch, iteration (also within an epoch) and RNG states, and the data
  order and augmentation are functions of (seed, epoch, index), so an interrupted run continues with
  exactly the batches and weights it would have had (bit for bit on the CPU in deterministic mode).
  The checkpoint -> evaluation -> ``best.pth`` sequence resumes where it stopped: a run killed after
  ``epoch_N.pth`` and before its evaluation finished evaluates epoch N first (also the last epoch).
  ``log.jsonl`` loses the records of the killed part, so curves do not overlap.
* A resume checkpoint of another architecture (or widths) is refused in one line naming the file,
  both configs and the tensors that differ, before anything is written.
* Before the first step every train / val image is checked (exists, header reads): one error names
  all the bad ones, or ``skip_invalid`` leaves them out; an image that fails to decode mid-epoch is
  skipped with a warning naming it (more than 10 stop the run).
* Checkpoints' ``meta["weights"]`` records the pretrained and ``load_from`` weights with SHA-256.
* Ctrl-C finishes the current iteration, saves ``latest.pth`` and exits; during an evaluation it
  stops at once (the rerun evaluates that epoch); a second Ctrl-C aborts.
* A NaN/Inf loss term or gradient norm stops the run before the step is taken, with an error naming
  the iteration, the term and the last good checkpoint (or saying there is none); non-finite
  weights are never saved, so resuming from that checkpoint works.
* Under ``torchrun`` with several processes, the model is wrapped in DDP, each rank reads its shard
  of every epoch, evaluation results are gathered from all ranks and rank 0 alone writes files.
"""

from __future__ import annotations

import torch

from rotdet.engine.runtime import seed_everything
from rotdet.engine.trainer import (
    NonFiniteLossError,
    Trainer,
    TrainOptions,
    TrainResult,
    archive_previous_run,
    load_pretrained,
)

__all__ = [
    "NonFiniteLossError",
    "TrainOptions",
    "TrainResult",
    "Trainer",
    "archive_previous_run",
    "load_pretrained",
    "seed_everything",
    "train",
]


def train(cfg: dict, options: TrainOptions | None = None) -> TrainResult:
    """Train ``cfg`` (a config dict from :func:`rotdet.configs.load_config`) as ``options`` say:
    ``Trainer(cfg, options).build().train()``.

    The process-wide switches a run sets (deterministic algorithms, cuDNN autotuning) are restored
    when it returns, so a Python session can go on with other work."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    trainer = Trainer(cfg, options)
    try:
        return trainer.build().train()
    finally:
        trainer.close()
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


# ----------------------------------------------------------------------------------- command line
