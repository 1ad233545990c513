"""Writing an export folder: ``model.onnx`` (or ``model.pt2``) + ``rotdet_export.json``.

:func:`export_detector` builds the :class:`~rotdet.export.graph.CandidateGraph` of a
:class:`~rotdet.engine.inference.Detector`, exports it, runs the exported graph once on a random
batch against the eager graph (an export that does not reproduce it is an error, not a file), and
writes the folder: both files go into a temporary sibling folder (each through
:func:`rotdet.fileio.atomic_write`), which is renamed to ``out`` at the end. A failure anywhere
leaves ``out`` as it was (absent, or the previous export).

ONNX goes through PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
on torch 2.11-2.14 it is still there (deprecated since 2.9), gives the same graph and is 4-8x
faster than the torch.export-based one (small R3Det: 12 s vs 100 s on two busy CPU cores), which
``exporter="dynamo"`` selects (it needs ``onnxscript``) and which is taken when the TorchScript one
is gone. ``.pt2`` is :func:`torch.export.export`'s ExportedProgram saved by
:func:`torch.export.save`. Either way the batch size is dynamic, everything else static.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import rotdet
from rotdet.data.transforms import IMG_NORM_CFG
from rotdet.export.graph import CandidateGraph
from rotdet.export.onnx_ops import register_onnx_symbolics
from rotdet.fileio import atomic_write, atomic_write_bytes
from rotdet.models.detectors import SIZE_DIVISOR

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_FORMAT_VERSION",
    "EXPORT_JSON",
    "FORMATS",
    "ExportError",
    "build_graph",
    "export_detector",
    "file_sha256",
    "weights_sha256",
]

EXPORT_JSON = "rotdet_export.json"
EXPORT_FORMAT = "rotdet-export"
EXPORT_FORMAT_VERSION = 1
# format -> graph file name in the folder
FORMATS = {"onnx": "model.onnx", "pt2": "model.pt2"}
DEFAULT_OPSET = 17
INPUT_NAME = "images"  # the outputs: CandidateGraph.output_names
# The exported graph must reproduce the eager one on a random batch (checked at export time).
VERIFY_SCORE_ATOL, VERIFY_BOX_ATOL, VERIFY_BOX_RTOL, VERIFY_SWAP = 1e-4, 1e-2, 1e-4, 4


class ExportError(ValueError):
    """A bad export request or a bad export folder (the message says which file and why)."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """A checksum of the state dict: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _jsonable(value):
    """Config values as JSON (tuples as lists, numpy scalars as numbers)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def build_graph(detector, input_size: int | None = None) -> CandidateGraph:
    """The eval-mode candidate graph of ``detector`` (a :class:`~rotdet.engine.inference.Detector`)
    on the CPU, for windows of ``input_size`` (default the detector's window size)."""
    size = int(input_size) if input_size is not None else int(detector.window_size)
    if size < SIZE_DIVISOR or size % SIZE_DIVISOR:
        raise ExportError(f"--input-size must be a multiple of {SIZE_DIVISOR} (>= 32), got {size}")
    model = detector.model
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    norm = detector.cfg["data"].get("img_norm", IMG_NORM_CFG)
    cfg = detector._test_cfg(None)
    return CandidateGraph(
        model.eval(), size, norm["mean"], norm["std"], norm.get("to_rgb", True), cfg.nms_pre
    ).eval()


def _legacy_onnx_available() -> bool:
    try:
        from torch.onnx._internal.torchscript_exporter import utils  # noqa: F401
    except ImportError:
        return hasattr(torch.onnx, "utils") and hasattr(torch.onnx.utils, "export")  # torch < 2.9
    return True


def _onnx_bytes(graph: CandidateGraph, example: torch.Tensor, opset: int, exporter: str) -> tuple[bytes, str]:
    if exporter == "torchscript" and not _legacy_onnx_available():
        exporter = "dynamo"
    names = {"input_names": [INPUT_NAME], "output_names": list(graph.output_names)}
    if exporter == "dynamo" and graph.is_two_stage:
        raise ExportError(
            "Oriented R-CNN exports to ONNX through the TorchScript-based exporter only "
            "(--exporter torchscript; its proposal NMS has no dynamo translation yet)"
        )
    if exporter == "torchscript":
        register_onnx_symbolics(opset)
        f = io.BytesIO()
        axes = {name: {0: "batch"} for name in (INPUT_NAME, *graph.output_names)}
        with warnings.catch_warnings():
            # "You are using the legacy TorchScript-based ONNX export": chosen on purpose (see above)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                graph, (example,), f, dynamo=False, opset_version=opset, dynamic_axes=axes, **names
            )
        return _static_output_shapes(f.getvalue(), graph), exporter
    if exporter != "dynamo":
        raise ExportError(f"unknown ONNX exporter {exporter!r}; use 'torchscript' or 'dynamo'")
    program = _torch_export(graph, example)
    # Its own translation targets opset 18; converting down fails on this graph's Reduce ops.
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
        onnx_program = torch.onnx.export(program, dynamo=True, opset_version=max(opset, 18), **names)
    return onnx_program.model_proto.SerializeToString(), exporter


def _static_output_shapes(data: bytes, graph: CandidateGraph) -> bytes:
    """State the outputs' static sizes (the TorchScript exporter leaves K and C symbolic)."""
    import onnx

    model = onnx.load_from_string(data)
    k = graph.num_candidates
    sizes = {"boxes": (k, 5), "scores": (k, graph.num_classes), "score_factors": (k,)}
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, size in zip(dims[1:], sizes[out.name], strict=True):
            dim.ClearField("dim_param")
            dim.dim_value = size
    return model.SerializeToString()


def _torch_export(graph: CandidateGraph, example: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=1024)
    return torch.export.export(graph, (example,), dynamic_shapes={"images": {0: batch}})


def _check_outputs(fmt: str, got: tuple[np.ndarray, ...], want: tuple[torch.Tensor, ...]) -> None:
    """The exported graph's candidates match the eager graph's, each within a few places of its
    own (two anchors whose best scores differ by a rounding error may swap places in the top-k;
    the NMS orders by score anyway), all but a few."""
    # (Rotated FCOS's third output, the centre-ness, is compared as one more score column)
    boxes, *scores = (np.asarray(g, dtype=np.float64) for g in got)
    ref_boxes, *ref_scores = (w.double().numpy() for w in want)
    scores = np.concatenate([scores[0], *(f[..., None] for f in scores[1:])], axis=2)
    ref_scores = np.concatenate([ref_scores[0], *(f[..., None] for f in ref_scores[1:])], axis=2)
    if boxes.shape != ref_boxes.shape or scores.shape != ref_scores.shape:
        raise ExportError(
            f"the exported {fmt} graph gives shapes {boxes.shape} / {scores.shape}, "
            f"PyTorch {ref_boxes.shape} / {ref_scores.shape}"
        )
    k = boxes.shape[1]
    ok = np.zeros(boxes.shape[:2], dtype=bool)
    for shift in range(-VERIFY_SWAP, VERIFY_SWAP + 1):
        lo, hi = max(0, shift), min(k, k + shift)  # compare place i with the reference's i - shift
        b, s = boxes[:, lo:hi], scores[:, lo:hi]
        rb, rs = ref_boxes[:, lo - shift : hi - shift], ref_scores[:, lo - shift : hi - shift]
        close = (np.abs(s - rs) <= VERIFY_SCORE_ATOL).all(axis=2) & np.isclose(
            b, rb, rtol=VERIFY_BOX_RTOL, atol=VERIFY_BOX_ATOL
        ).all(axis=2)
        ok[:, lo:hi] |= close
    # A rounding error can also swap the last candidate of a level with the first one left out;
    # a broken export differs nearly everywhere.
    if (~ok).sum() > max(VERIFY_SWAP, 0.01 * ok.size):
        raise ExportError(
            f"the exported {fmt} graph does not reproduce PyTorch on a random batch "
            f"({int((~ok).sum())} of {ok.size} candidates differ)"
        )


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out`` (replacing a previous export there)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", suffix=".tmp", dir=out.parent))
    os.replace(out, old)  # an empty folder is replaced by a rename
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_out_folder(out: str | os.PathLike) -> Path:
    """``out`` as a Path, or ExportError when it is a file or a non-empty folder that is not an
    export (an export folder is replaced whole)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_JSON).is_file():
        raise ExportError(
            f"--out {out} is a folder that holds other files (no {EXPORT_JSON}); not replacing it"
        )
    return out


def export_detector(
    detector,
    out: str | os.PathLike,
    fmt: str = "onnx",
    input_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    checkpoint: str | os.PathLike | None = None,
    verify: bool = True,
) -> Path:
    """Export ``detector`` (a :class:`~rotdet.engine.inference.Detector`) to the folder ``out``.

    Args:
        fmt: ``onnx`` (``model.onnx``) or ``pt2`` (``model.pt2``, a torch.export ExportedProgram).
        input_size: the window size ``S`` of the graph (default: the config's test scale).
        opset: the ONNX opset (the dynamo exporter writes 18 at least); the metadata records the graph's.
        exporter: ``torchscript`` or ``dynamo`` (ONNX only; see the module note).
        checkpoint: recorded in the metadata (its file name).
        verify: run the exported graph once against the eager graph (default).

    Returns:
        the folder.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {sorted(FORMATS)}")
    out = check_out_folder(out)
    graph = build_graph(detector, input_size)
    gen = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (2, graph.size, graph.size, 3), dtype=torch.uint8, generator=gen)
    with torch.no_grad():
        data, exporter, run = _serialise(graph, example, fmt, opset, exporter)
        if verify:
            probe = torch.randint(0, 256, (1, graph.size, graph.size, 3), dtype=torch.uint8, generator=gen)
            _check_outputs(fmt, run(probe), graph(probe))
    meta = export_metadata(detector, graph, fmt, data, exporter, checkpoint)
    _write_export_folder(out, FORMATS[fmt], data, meta)
    return out


def _serialise(graph: nn.Module, example: Tensor, fmt: str, opset: int, exporter: str):
    """``(file bytes, exporter used, run)`` for ``graph`` in ``fmt``; ``run(uint8 batch)`` executes
    the serialised graph (ONNX Runtime's CPU provider, or the ExportedProgram) for the check."""
    if fmt == "onnx":
        data, exporter = _onnx_bytes(graph, example, opset, exporter)

        def run(batch: Tensor):
            import onnxruntime as ort

            sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            return sess.run(None, {INPUT_NAME: batch.numpy()})

        return data, exporter, run
    program = _torch_export(graph, example)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue(), "torch.export", lambda batch: tuple(t.numpy() for t in program.module()(batch))


def export_metadata(detector, graph, fmt: str, data: bytes, exporter: str, checkpoint=None) -> dict:
    """The ``rotdet_export.json`` document of an export (everything ``rotdet predict`` and
    ``Detector.from_export`` need besides the graph file)."""
    cfg = detector.cfg
    test_cfg = detector._test_cfg(None)
    norm = cfg["data"].get("img_norm", IMG_NORM_CFG)
    size = graph.size
    versions = {"rotdet": rotdet.__version__, "torch": torch.__version__}
    opset = None
    if fmt == "onnx":
        import onnx
        import onnxruntime

        versions.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
        proto = onnx.load_from_string(data)
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "config_name": str(cfg.get("name", "")),
        "architecture": graph.architecture,
        "classes": list(detector.class_names),
        "angle_version": detector.angle_version,
        "graph": {
            "file": FORMATS[fmt],
            "format": fmt,
            "sha256": hashlib.sha256(data).hexdigest(),
            "opset": opset,
            "exporter": exporter,
        },
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", size, size, 3],
            "dtype": "uint8",
            "layout": "NHWC",
            "channels": "BGR",
            "size": [size, size],
        },
        "normalization": {
            "in_graph": True,
            "mean": [float(v) for v in norm["mean"]],
            "std": [float(v) for v in norm["std"]],
            "to_rgb": bool(norm.get("to_rgb", True)),
        },
        "outputs": {
            "boxes": {"shape": ["batch", graph.num_candidates, 5], "dtype": "float32"},
            "scores": {"shape": ["batch", graph.num_candidates, graph.num_classes], "dtype": "float32"},
            **(
                {"score_factors": {"shape": ["batch", graph.num_candidates], "dtype": "float32"}}
                if "score_factors" in graph.output_names
                else {}
            ),
            "num_candidates": graph.num_candidates,
            "box_format": f"cx, cy, w, h, theta (radians, {detector.angle_version}), window pixels",
            "centres_clamped": graph.clamps_centres,
        },
        "test_cfg": {
            "nms_pre": test_cfg.nms_pre,
            "score_thr": test_cfg.score_thr,
            "iou_thr": test_cfg.iou_thr,
            "max_per_img": test_cfg.max_per_img,
            "min_bbox_size": test_cfg.min_bbox_size,
        },
        "nms": {"in_graph": False, "method": "rotdet.ops.batched_nms_rotated (class-wise, greedy)"},
        **({"proposals": _proposal_metadata(graph)} if graph.is_two_stage else {}),
        "weights_sha256": weights_sha256(graph.model),
        "checkpoint": Path(checkpoint).name if checkpoint is not None else None,
        "versions": versions,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": _jsonable(cfg),
    }


def _proposal_metadata(graph: CandidateGraph) -> dict:
    """Oriented R-CNN: how the graph makes its proposals (``test_cfg.rpn``, NMS in the graph)."""
    cfg = graph.model.rpn_head.test_cfg
    return {
        "in_graph": True,
        "nms_pre": cfg.nms_pre,
        "iou_thr": cfg.iou_thr,
        "max_per_img": cfg.max_per_img,
        "candidates_before_nms": graph.num_proposals_before_nms,
        "method": "NMS of the circumscribed horizontal boxes, FPN levels apart (mmcv batched_nms; "
        "ONNX NonMaxSuppression)",
    }


def _write_export_folder(out: Path, graph_file: str, data: bytes, meta: dict) -> None:
    """Write the graph and its metadata into a temporary sibling folder and move it to ``out`` in
    one rename, so ``out`` is never half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would stay on the renamed folder
        atomic_write_bytes(tmp / graph_file, data)
        with atomic_write(tmp / EXPORT_JSON, "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
