"""Running an export: :class:`ExportedModel` (the graph on ONNX Runtime or as a torch.export
program) and :class:`ExportedDetector`, a :class:`~rotdet.engine.inference.Detector` on it.

::

    det = Detector.from_export("exported/atss_le90")   # or .../model.onnx, .../model.pt2
    found = det.predict("huge_scene.png")              # same sliding windows, merge and output

:class:`ExportedDetector` keeps everything of :meth:`Detector.predict
<rotdet.engine.inference.Detector.predict>` (windows, gap, batches, progress bar, merge) and
replaces one forward pass: each window goes through the test pipeline's ``RResize`` to the graph's
input size (a no-op for windows of that size), stays uint8 BGR, is padded bottom/right to the full
input, runs through the graph, and its candidates go through
:func:`rotdet.export.postprocess.candidates_to_detections` (the config's ``test_cfg``).

Windows that fill the input (every window of a sliced image, and whole images that the resize makes
``S x S``) give PyTorch's detections. A whole image of another aspect ratio is padded to the full
input with the split tool's padding (the BGR mean, i.e. ~0 once normalised, as the PyTorch
pipeline's zero ``Pad``), where PyTorch runs on it padded to a multiple of 32 only: there the
padded area's features reach the border anchors and its anchors compete in the top-k, so border
detections may differ slightly (an intentional difference of a static-shape graph).

ONNX Runtime: the CPU provider everywhere, the CUDA provider for ``device="cuda"`` when the
installed onnxruntime has it (``onnxruntime-gpu``). The metadata file must sit beside the graph
and name its checksum: a missing or mismatched ``rotdet_export.json`` is an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from rotdet.data.transforms import RResize
from rotdet.engine.inference import PATCH_PADDING, Detector, default_device
from rotdet.export.exporter import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    EXPORT_JSON,
    FORMATS,
    INPUT_NAME,
    ExportError,
    file_sha256,
)
from rotdet.export.postprocess import candidates_to_detections
from rotdet.models.heads import TestConfig
from rotdet.structures.detections import RotatedDetections
from rotdet.structures.meta import image_meta

__all__ = ["ExportedDetector", "ExportedModel", "is_export_path", "read_export_metadata"]


def is_export_path(path: str | os.PathLike) -> bool:
    """True for a ``.onnx`` / ``.pt2`` path or a folder holding ``rotdet_export.json``."""
    p = Path(path)
    if p.suffix.lower() in (".onnx", ".pt2"):
        return True
    return p.is_dir() and (p / EXPORT_JSON).is_file()


def read_export_metadata(path: str | os.PathLike) -> tuple[Path, dict]:
    """``(graph file, metadata)`` of an export folder or graph file, checked: the metadata file
    exists beside the graph, is rotdet's, names this graph and its checksum."""
    p = Path(path)
    if p.is_dir():
        folder, given = p, None
    elif p.is_file():
        folder, given = p.parent, p
    else:
        raise ExportError(f"{p}: no such exported model (a model.onnx / model.pt2 or its folder)")
    meta_path = folder / EXPORT_JSON
    if not meta_path.is_file():
        raise ExportError(
            f"{meta_path} is missing: an exported graph needs the metadata `rotdet export` writes beside it"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{meta_path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f'{meta_path}: not rotdet export metadata ("format": "{EXPORT_FORMAT}")')
    if meta.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ExportError(
            f"{meta_path}: format version {meta.get('format_version')}, "
            f"this rotdet reads {EXPORT_FORMAT_VERSION}"
        )
    graph = meta.get("graph") or {}
    name, fmt = graph.get("file"), graph.get("format")
    if fmt not in FORMATS or name != FORMATS[fmt]:
        raise ExportError(f"{meta_path}: bad graph entry {graph!r}")
    graph_path = folder / name
    if given is not None and given.resolve() != graph_path.resolve():
        raise ExportError(f"{meta_path} describes {name}, not {given.name}")
    if not graph_path.is_file():
        raise ExportError(f"{graph_path} is missing (named by {meta_path})")
    if file_sha256(graph_path) != graph.get("sha256"):
        raise ExportError(
            f"{graph_path} does not match {meta_path} (checksum differs): "
            "the metadata belongs to another export"
        )
    return graph_path, meta


def _ort_providers(device: torch.device | None) -> tuple[list[str], torch.device]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    cuda = "CUDAExecutionProvider" in available
    if device is None:
        device = torch.device("cuda") if cuda and torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        if not cuda:
            raise ExportError(
                f"--device {device}: this onnxruntime has no CUDA provider "
                f"(providers: {', '.join(available)}; pip install onnxruntime-gpu)"
            )
        options = {"device_id": device.index or 0}
        return [("CUDAExecutionProvider", options), "CPUExecutionProvider"], device
    if device.type != "cpu":
        raise ExportError(f"--device {device}: ONNX Runtime runs on cpu or cuda here")
    return ["CPUExecutionProvider"], device


class ExportedModel:
    """An exported graph: ``model(images uint8 [B, S, S, 3] BGR) -> (boxes, scores)`` torch tensors.

    Args:
        path: the export folder or its graph file.
        device: cpu / cuda (default: cuda when available to the runtime, else the CPU).
        threads: ONNX Runtime's intra-op threads (default: its own choice).
    """

    def __init__(
        self, path: str | os.PathLike, device: str | torch.device | None = None, threads: int | None = None
    ) -> None:
        self.graph_path, self.meta = read_export_metadata(path)
        self.format = self.meta["graph"]["format"]
        self.size = int(self.meta["input"]["size"][0])
        self.num_candidates = int(self.meta["outputs"]["num_candidates"])
        self.num_classes = len(self.meta["classes"])
        device = torch.device(device) if device is not None else None
        if self.format == "onnx":
            import onnxruntime as ort

            providers, self.device = _ort_providers(device)
            options = ort.SessionOptions()
            options.log_severity_level = 3  # no warnings about unused initialisers etc.
            if threads is not None:
                options.intra_op_num_threads = int(threads)
            self.session = ort.InferenceSession(str(self.graph_path), options, providers=providers)
            self.program = None
        else:
            self.device = default_device(device)
            program = torch.export.load(str(self.graph_path))
            if self.device.type != "cpu":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, self.device)
            self.program = program.module()
            self.session = None

    def check_input(self, images: np.ndarray) -> None:
        """ValueError unless ``images`` is uint8 ``[B, S, S, 3]``."""
        s = self.size
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            shape = getattr(images, "shape", "?")
            raise ValueError(
                f"the exported graph takes uint8 [B, {s}, {s}, 3] BGR windows, got "
                f"{getattr(images, 'dtype', type(images).__name__)} {tuple(shape)}"
            )
        if images.shape[1:] != (s, s, 3) or images.shape[0] < 1:
            raise ValueError(
                f"the exported graph takes uint8 [B, {s}, {s}, 3] BGR windows, got {tuple(images.shape)}"
            )

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The graph's outputs: ``boxes [B, K, 5]``, ``scores [B, K, C]`` and, for Rotated FCOS,
        ``score_factors [B, K]``."""
        self.check_input(images)
        if self.session is not None:
            outputs = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(images)})
            return tuple(torch.from_numpy(o).to(self.device) for o in outputs)
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        return tuple(self.program(x))


class ExportedDetector(Detector):
    """:class:`~rotdet.engine.inference.Detector` on an exported graph (see the module note).

    Attributes (besides the Detector's): ``runner`` (:class:`ExportedModel`), ``meta`` (the
    metadata); ``model`` is None.
    """

    def __init__(
        self, path: str | os.PathLike, device: str | torch.device | None = None, threads: int | None = None
    ) -> None:
        self.runner = ExportedModel(path, device, threads)
        self.meta = self.runner.meta
        self.cfg = dict(self.meta["config"])
        self.device = self.runner.device
        self.model = None
        self.class_names = tuple(str(c) for c in self.meta["classes"])
        self.angle_version = str(self.meta["angle_version"])
        self.window_size = self.runner.size
        self._resize = RResize((self.runner.size, self.runner.size))
        t = self.meta["test_cfg"]
        self._base_cfg = TestConfig(
            nms_pre=int(t["nms_pre"]),
            score_thr=float(t["score_thr"]),
            iou_thr=float(t["iou_thr"]),
            max_per_img=int(t["max_per_img"]),
            min_bbox_size=float(t.get("min_bbox_size", 0)),
        )

    def _test_cfg(self, score_thr: float | None) -> TestConfig:
        if score_thr is None:
            return self._base_cfg
        return dataclasses.replace(self._base_cfg, score_thr=float(score_thr))

    def _detect_batch(self, patches: list[np.ndarray], cfg: TestConfig) -> list[RotatedDetections]:
        s = self.runner.size
        batch = np.empty((len(patches), s, s, 3), dtype=np.uint8)
        metas = []
        for i, patch in enumerate(patches):
            r = self._resize({"img": patch})
            img = r["img"]
            h, w = img.shape[:2]
            if (h, w) != (s, s):
                batch[i] = PATCH_PADDING
            batch[i, :h, :w] = img
            metas.append(image_meta(img_shape=img.shape, scale_factor=r["scale_factor"]))
        boxes, scores, *factors = self.runner(batch)
        return candidates_to_detections(
            boxes,
            scores,
            metas,
            cfg.score_thr,
            cfg.iou_thr,
            cfg.max_per_img,
            angle_version=self.angle_version,
            score_factors=factors[0] if factors else None,
            clamp_centres=bool(self.meta["outputs"].get("centres_clamped", True)),
        )

    def __repr__(self) -> str:
        name = self.meta.get("config_name") or "<config>"
        return (
            f"ExportedDetector({name}, {self.runner.format} {self.runner.graph_path}, "
            f"{len(self.class_names)} classes, {self.angle_version}, {self.device})"
        )
