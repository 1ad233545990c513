"""``rotdet predict CONFIG CKPT PATHS...``: detect objects in image files or folders.

For every image ``<stem>.<ext>`` it writes, under ``--out``: ``<stem>.png`` (the detections drawn),
``<stem>.txt`` (DOTA lines ``x1 y1 ... x4 y4 class score``) and ``<stem>.json`` (rotdet's detections
JSON, readable by ``rotdet eval``). GeoTIFFs and other GDAL rasters go window by window through
:mod:`rotdet.cli.predict_raster` instead (``<stem>.geojson``, ``.gpkg``, ``.txt``, ``.json``,
``_preview.png``). An unreadable image is reported and skipped (exit code 1 at the end); a bad
config or checkpoint stops at once with a one-line message (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from rotdet.cli.predict_raster import add_raster_arguments, geo_check, predict_raster_file, wants_raster
from rotdet.data.dota import IMAGE_EXTENSIONS, list_images
from rotdet.data.transforms import ImageReadError, load_image
from rotdet.data.visualize import draw_detections
from rotdet.engine.checkpoint import CheckpointError
from rotdet.engine.inference import Detector, check_window, default_gap
from rotdet.engine.runtime import resolve_test_amp
from rotdet.export.runtime import is_export_path
from rotdet.fileio import atomic_write_bytes
from rotdet.geo import RasterError

__all__ = ["add_predict_arguments", "check_device", "collect_images", "error_message", "run_predict"]


def error_message(exc: BaseException) -> str:
    """One line for the user: a KeyError's own text without the quotes ``str()`` adds to it."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def check_device(device: str | None) -> torch.device | None:
    """``device`` parsed, or ValueError with a one-line reason (bad name, CUDA not available)."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"bad --device {device!r}: {exc}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return parsed


def collect_images(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Image files of ``paths`` (files as given, folders' images sorted by name) and the problems
    found (a missing path, a file that is not an image, a folder without images)."""
    images: list[Path] = []
    problems: list[str] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = list_images(entry)
            if not found:
                problems.append(f"{entry}: no image ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            images += found
        elif entry.is_file():
            images.append(entry)
        else:
            problems.append(f"{entry}: no such file or folder")
    return images, problems


# Every file `rotdet predict` may write for an input named <stem> (pictures, DOTA lines, JSON, map layers).
OUTPUT_SUFFIXES = (".png", ".txt", ".json", ".geojson", ".gpkg", "_preview.png")


def overwritten_input(images: list[Path], out: Path) -> str | None:
    """Why writing the outputs of ``images`` into ``out`` would destroy a user's file (an input image,
    or a label file beside it), or None. ``out`` being the images' own folder is refused outright."""
    out = out.resolve()
    for img in images:
        folder = img.resolve().parent
        if folder == out:
            return (
                f"--out {out} is the folder of the input {img.name}: the outputs (.png, .txt, ...) would "
                "overwrite inputs or their labels; choose another folder"
            )
        for suffix in OUTPUT_SUFFIXES:
            target = out / f"{img.stem}{suffix}"
            if target == img.resolve():
                return f"--out {out}: {target.name} would overwrite the input {img}; choose another folder"
    return None


def add_fast_argument(parser: argparse.ArgumentParser) -> None:
    """``--fast`` (``rotdet predict / test / bench``): :meth:`Detector.optimize`."""
    parser.add_argument(
        "--fast",
        action="store_true",
        help="fold BatchNorms into convolutions and run channels-last (mmdet's --fuse-conv-bn and more): "
        "faster, same detections up to float rounding (~1e-5 on the logits), not bit for bit",
    )


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        help="config name (see rotdet.configs) or .yaml path; or an exported model.onnx / model.pt2 "
        "(or its folder, see `rotdet export`), then no checkpoint follows",
    )
    parser.add_argument("checkpoint", help="checkpoint: rotdet's, or mmrotate 0.3.4's")
    parser.add_argument(
        "paths", nargs="*", help="image or raster (GeoTIFF...) files and/or folders of images"
    )
    parser.add_argument("--out", default="work_dirs/predict", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--size", type=int, default=None, help="sliding-window size (default: the config's scale)"
    )
    parser.add_argument(
        "--gap", type=int, default=None, help="window overlap (default: 200 at 1024 px, in proportion)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, help="windows per forward pass (default: %(default)s)"
    )
    parser.add_argument(
        "--score-thr", type=float, default=None, help="score threshold (default: the config's)"
    )
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu... (default: cuda when available)")
    parser.add_argument(
        "--cfg-options", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (dotted keys)"
    )
    parser.add_argument(
        "--amp",
        choices=("none", "bf16", "fp16", "auto"),
        default=None,
        help="mixed precision for the network (auto: bf16 where native; default: fp16 on CUDA for a "
        "config with an fp16 key, as mmrotate, else none); not mmrotate's exact numbers",
    )
    add_fast_argument(parser)
    add_raster_arguments(parser)


class _SetupError(Exception):
    """A problem found before any image is processed: printed on one line, exit code 2."""


def _inputs(args: argparse.Namespace, exported: bool) -> tuple[list[Path], list[str]]:
    """The images to process and the path problems to report (raises :class:`_SetupError`)."""
    # An exported model carries its weights: what stands in the checkpoint's place is an image.
    paths = [args.checkpoint, *args.paths] if exported else list(args.paths)
    if not paths:
        raise _SetupError("no image given (CONFIG CHECKPOINT PATHS..., or EXPORT PATHS...)")
    images, problems = collect_images(paths)
    if not images:
        raise _SetupError(
            "\n".join([*(f"rotdet predict: {m}" for m in problems), "no image to process"])[15:]
        )
    stems: dict[str, Path] = {}
    for img in images:
        if img.stem in stems:
            raise _SetupError(
                f"two images named {img.stem!r} ({stems[img.stem]}, {img}) would write the same output files"
            )
        stems[img.stem] = img
    clash = overwritten_input(images, Path(args.out))
    if clash:
        raise _SetupError(clash)
    return images, problems


def _detector(args: argparse.Namespace, exported: bool):
    """The detector (a config + checkpoint, or an export), its window checked (raises
    :class:`_SetupError` with the message of a wrong name, path or architecture)."""
    try:
        device = check_device(args.device)
        if exported:
            if args.cfg_options or args.fast or args.amp not in (None, "none"):
                flag = "--cfg-options" if args.cfg_options else "--fast" if args.fast else "--amp"
                raise ValueError(f"{flag} does not apply to an exported model (fixed at export time)")
            detector = Detector.from_export(args.config, device)
        else:
            detector = Detector.from_config(args.config, args.checkpoint, device, args.cfg_options)
            if args.fast:
                detector.optimize()
            detector.set_amp(resolve_test_amp(args.amp, detector.cfg, detector.device))
        size = args.size if args.size is not None else detector.window_size
        check_window(size, args.gap if args.gap is not None else default_gap(size), args.batch_size)
    except (CheckpointError, ValueError, KeyError) as exc:
        # The message says which; a traceback would only bury it.
        raise _SetupError(error_message(exc)) from None
    return detector


def _predict_image(detector, path: Path, out: Path, args: argparse.Namespace) -> str:
    """Detect in one image and write ``<stem>.png`` (drawn), ``.txt`` (DOTA lines) and ``.json``;
    returns the line to print (raises ImageReadError for an unreadable image)."""
    start = time.perf_counter()
    image = load_image(path)
    found = detector.predict(
        image,
        size=args.size,
        gap=args.gap,
        batch_size=args.batch_size,
        score_thr=args.score_thr,
        progress=True,
        image_id=path.stem,
    )
    drawn = draw_detections(image, found.polygons, found.labels, found.scores, detector.class_names)
    ok, png = cv2.imencode(".png", drawn)
    if not ok:  # pragma: no cover - encoding a uint8 BGR image as PNG does not fail
        raise RuntimeError(f"cannot encode the drawing of {path}")
    atomic_write_bytes(out / f"{path.stem}.png", png.tobytes())
    found.write_dota_txt(out / f"{path.stem}.txt")
    found.write_json(out / f"{path.stem}.json")
    elapsed = time.perf_counter() - start
    return f"{path.name}: {len(found)} detection(s) in {elapsed:.2f} s -> {out / path.stem}.{{png,txt,json}}"


def run_predict(args: argparse.Namespace) -> int:
    """``rotdet predict``: 0 when every image was processed, 1 when some failed, 2 on a setup error."""
    exported = is_export_path(args.config)
    try:
        images, problems = _inputs(args, exported)
        use_gdal, geo_problem, geo_note = geo_check(images, args)
        if geo_problem:
            raise _SetupError(geo_problem)
        detector = _detector(args, exported)
    except _SetupError as exc:
        print(f"rotdet predict: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for msg in problems + ([geo_note] if geo_note else []):
        print(f"rotdet predict: {msg}", file=sys.stderr)
    unreadable = 0
    bar = tqdm(images, desc="predict", unit="img", disable=len(images) < 2)
    for path in bar:
        try:
            if use_gdal and wants_raster(path, args):
                tqdm.write(predict_raster_file(detector, path, out, args))
            else:
                tqdm.write(_predict_image(detector, path, out, args))
        except (RasterError, ImageReadError) as exc:
            unreadable += 1
            tqdm.write(f"rotdet predict: skipped {exc}", file=sys.stderr)
    bar.close()
    summary = f"predicted {len(images) - unreadable} of {len(images)} image(s) into {out}"
    if unreadable:
        summary += f"; {unreadable} unreadable"
    if problems:
        summary += f"; {len(problems)} path(s) skipped"
    print(summary)
    return 1 if unreadable + len(problems) else 0
