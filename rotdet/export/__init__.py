"""Deployment: the detectors as static-shape ONNX / torch.export graphs, and inference on them.

* :mod:`rotdet.export.graph`: :class:`CandidateGraph`, windows in, the NMS candidates out;
* :mod:`rotdet.export.exporter`: :func:`export_detector`, the export folder (graph + metadata);
* :mod:`rotdet.export.postprocess`: the score threshold, class-wise NMS and cap after the graph;
* :mod:`rotdet.export.runtime`: :class:`ExportedDetector` (``Detector.from_export``) on ONNX
  Runtime or the ExportedProgram;
* :mod:`rotdet.cli.export`: ``rotdet export``.

``onnx`` / ``onnxruntime`` (``pip install -e ".[export]"``) are imported only when an ONNX graph is
written or run.
"""

from rotdet.export.exporter import EXPORT_JSON, FORMATS, ExportError, export_detector
from rotdet.export.graph import CandidateGraph
from rotdet.export.postprocess import candidates_to_detections

__all__ = [
    "EXPORT_JSON",
    "FORMATS",
    "CandidateGraph",
    "ExportError",
    "candidates_to_detections",
    "export_detector",
]
