"""``rotdet demo``: the main job on the embedded default dataset, on a CPU in about ten minutes.

1. writes ToyDOTA (256 x 256 scenes: a training set and a held-out validation set from other seeds)
   under ``--data-dir`` unless it is already there;
2. trains ``demo_atss_le90`` (Rotated ATSS, le90, ResNet-18 from scratch) on it;
3. evaluates the final model on the held-out set (mmrotate's mAP at IoU 0.5);
4. writes the held-out images with their detections drawn, and the loss / mAP curves;
5. prints the mAP and where everything is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import torch

__all__ = ["DEMO_CONFIG", "run_demo_job"]

logger = logging.getLogger("rotdet.demo")

DEMO_CONFIG = "demo_atss_le90"
TOY_SIZE = (256, 256)
TRAIN_SEED, VAL_SEED = 0, 1


def prepare_toy_data(data_dir: Path, num_train: int, num_val: int) -> None:
    from rotdet.data import ensure_toy_dota

    ensure_toy_dota(data_dir / "train", num_images=num_train, seed=TRAIN_SEED, size=TOY_SIZE)
    ensure_toy_dota(data_dir / "val", num_images=num_val, seed=VAL_SEED, size=TOY_SIZE)


def draw_examples(detector, image_paths: list[Path], out_dir: Path, score_thr: float = 0.3) -> list[Path]:
    """Detect with the public API (:class:`~rotdet.engine.inference.Detector`) and draw the
    detections with score >= ``score_thr``; small scenes are enlarged 3x first so captions stay legible."""
    from rotdet.data import load_image
    from rotdet.data.visualize import draw_detections

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for image_path in image_paths:
        image = load_image(image_path)
        found = detector.predict(image, score_thr=score_thr, image_id=Path(image_path).stem)
        zoom = 3 if max(image.shape[:2]) < 512 else 1
        if zoom > 1:
            image = cv2.resize(image, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
        drawn = draw_detections(image, found.polygons * zoom, found.labels, found.scores, found.classes)
        path = out_dir / f"{Path(image_path).stem}.png"
        cv2.imwrite(str(path), drawn)
        paths.append(path)
    return paths


def run_demo_job(
    work_dir: str | Path = "work_dirs/demo",
    data_dir: str | Path = "data/toydota",
    num_train: int = 192,
    num_val: int = 32,
    overrides: list[str] | None = None,
    device: str | None = None,
    progress: bool = True,
    num_examples: int = 8,
    epochs: int | None = None,
    amp: str = "auto",
    say: Callable[[str], None] | None = None,
) -> dict:
    """Run the demo; returns ``{"map", "table", "work_dir", "pictures", "curves", "minutes"}``.

    ``say`` receives each step's one-line report (the command line prints them; default: the
    ``rotdet.demo`` logger)."""
    say = say or logging.getLogger("rotdet.demo").info
    from rotdet.configs import load_config
    from rotdet.engine.data import build_dataset
    from rotdet.engine.inference import Detector
    from rotdet.engine.test import evaluate_model
    from rotdet.engine.train import TrainOptions, train

    t0 = time.perf_counter()
    work_dir, data_dir = Path(work_dir), Path(data_dir)
    say(f"[1/4] ToyDOTA in {data_dir} ({num_train} training and {num_val} held-out scenes)")
    prepare_toy_data(data_dir, num_train, num_val)
    cfg = load_config(DEMO_CONFIG, [f"data.root={data_dir.as_posix()}", *(overrides or [])])
    say(f"[2/4] training {DEMO_CONFIG} -> {work_dir}")
    trained = train(
        cfg,
        TrainOptions(
            work_dir=work_dir,
            resume=None,
            device=device,
            progress=progress,
            max_epochs=epochs,
            amp=amp,
            keep=1,
        ),
    )
    say("[3/4] mAP of the final weights on the held-out scenes")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    detector = Detector.from_config(cfg, checkpoint=work_dir / "latest.pth", device=dev)
    val_set = build_dataset(cfg, "val")
    result = trained.last_eval
    if result is None or not trained.history or trained.history[-1].get("mode") != "val":
        # the trainer did not evaluate the final weights
        result = evaluate_model(detector.model, val_set, dev, progress=progress)
        say(result.table())
    result.write_json(work_dir / "metrics.json")
    say("[4/4] drawing detections")
    examples = [Path(info["filename"]) for info in val_set.data_infos[:num_examples]]
    pictures = draw_examples(detector, examples, work_dir / "detections")
    curves = work_dir / "curves.png"
    minutes = (time.perf_counter() - t0) / 60
    say(
        f"\nmAP on the held-out ToyDOTA scenes: {result.map:.3f} ({minutes:.1f} min)\n"
        f"pictures of detections: {work_dir / 'detections'}/ ({len(pictures)} images)\n"
        f"loss and mAP curves: {curves}\n"
        f"checkpoint: {work_dir / 'latest.pth'}   logs: {work_dir / 'log.jsonl'}"
    )
    return {
        "map": result.map,
        "table": result.table(),
        "work_dir": work_dir,
        "pictures": pictures,
        "curves": curves,
        "minutes": minutes,
    }
