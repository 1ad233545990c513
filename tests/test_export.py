"""Export (``rotdet export``) and inference on the export (``rotdet predict model.onnx``,
``Detector.from_export``): the detections of ONNX Runtime and of the torch.export program equal
PyTorch's, end to end (sliced, merged), on real DOTA images and a ToyDOTA scene.

Small seeded variants of every architecture (the demo config; RetinaNet, ATSS and both R3Det
configs with ResNet-18 and 32-channel heads), 256 px windows. The weights are drawn at a unit
scale (not the heads' 0.01 init, which makes every score nearly equal) and the classification
bias shifted so that hundreds of candidates per window pass the score threshold.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import warnings

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from rotdet.cli import main as cli_main
from rotdet.configs import load_config
from rotdet.data import make_toy_image
from rotdet.engine import Detections, Detector
from rotdet.engine.checkpoint import save_checkpoint
from rotdet.models.postprocess import dense_detections
from rotdet.models.roi_head import rois_of

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from rotdet.export import EXPORT_JSON, ExportError, export_detector  # noqa: E402
from rotdet.export import exporter as exporter_module  # noqa: E402
from rotdet.export.exporter import build_graph, weights_sha256  # noqa: E402
from rotdet.export.runtime import ExportedModel  # noqa: E402

SIZE = 256
# The tolerances: boxes 1e-2 px, angles 1e-3 rad, scores 1e-4.
BOX_TOL, ANGLE_TOL, SCORE_TOL = 1e-2, 1e-3, 1e-4
CLASSES = ["plane", "ship", "harbor"]


def small_overrides(name: str, channels: int = 32) -> list[str]:
    """ResNet-18, 32-channel neck and one-conv heads, three classes, 256 px windows."""
    out = [
        "model.backbone.depth=18",
        "model.backbone.pretrained=false",
        "model.neck.in_channels=null",
        f"model.neck.out_channels={channels}",
        f"data.classes=[{','.join(CLASSES)}]",
        f"data.img_scale=[{SIZE},{SIZE}]",
    ]
    if name == "orcnn":  # the RPN's and RoI head's own keys (a 64-wide 2-FC head)
        return out[:4] + [
            f"model.rpn_head.in_channels={channels}",
            f"model.rpn_head.feat_channels={channels}",
            f"model.roi_head.bbox_roi_extractor.out_channels={channels}",
            f"model.roi_head.bbox_head.in_channels={channels}",
            "model.roi_head.bbox_head.fc_out_channels=64",
            f"model.roi_head.bbox_head.num_classes={len(CLASSES)}",
            *out[4:],
        ]
    heads = {
        "r3det": ["model.bbox_head", "model.refine_heads.0"],
        "s2anet": ["model.fam_head", "model.odm_head"],
    }
    for h in heads.get(name, ["model.bbox_head"]):
        out += [f"{h}.in_channels={channels}", f"{h}.feat_channels={channels}", f"{h}.stacked_convs=1"]
        out += [f"{h}.num_classes={len(CLASSES)}"]
    if name.startswith("r3det"):
        out.append(f"model.frm_cfgs.0.in_channels={channels}")
    if name == "s2anet":
        out.append(f"model.align_cfgs.channels={channels}")
    if name == "fcos":
        out.append("model.bbox_head.norm_cfg.num_groups=8")
    return out


# name -> (config, overrides, classification bias shift); the shifts give ~300-900 candidates
# over the threshold per window and 40-300 detections.
ARCHS = {
    "demo": ("demo_atss_le90", [f"data.img_scale=[{SIZE},{SIZE}]"], -4.0),
    # 9 anchors: the per-level top-2000 selects on the first level
    "retinanet_le90": ("rotated_retinanet_obb_r50_fpn_1x_dota_le90", small_overrides("retina"), -8.0),
    # nms_pre 300: the top-k of a one-anchor head
    "atss_le135": (
        "rotated_atss_obb_r50_fpn_1x_dota_le135",
        [*small_overrides("atss"), "model.test_cfg.nms_pre=300"],
        -4.0,
    ),
    # nms_pre 300: the top-k over the refined boxes
    "r3det": ("r3det_r50_fpn_1x_dota_oc", [*small_overrides("r3det"), "model.test_cfg.nms_pre=300"], -4.0),
    "r3det_atss": ("r3det_atss_r50_fpn_1x_dota_oc", small_overrides("r3det"), -6.0),
    # points, scored by score x centre-ness; nms_pre 300: the top-k of the first level
    "fcos": (
        "rotated_fcos_r50_fpn_1x_dota_le90",
        [*small_overrides("fcos"), "model.test_cfg.nms_pre=300"],
        -3.0,
    ),
    # nms_pre 300: the top-k over the FAM head's rois
    "s2anet": (
        "s2anet_r50_fpn_1x_dota_le135",
        [*small_overrides("s2anet"), "model.test_cfg.nms_pre=300"],
        -2.5,
    ),
    # two stages: the RPN's per-level top-2000, its NMS in the graph, 2000 proposals per window;
    # the shift is the RoI classifier's (its background logit raised)
    "orcnn": ("oriented_rcnn_r50_fpn_1x_dota_le90", small_overrides("orcnn"), 2.0),
}


@pytest.fixture(autouse=True)
def _flush_denormals():
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def seed_weights(model: nn.Module, seed: int, cls_bias: float) -> None:
    """Unit-scale random weights (convs N(0, 1 / fan_in), norms near identity), the heads'
    regression damped, the classification bias shifted by ``cls_bias``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, nn.Linear):  # Oriented R-CNN's RoI head
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight.shape[1]))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name, m in model.named_modules():  # the heads' last convs: retina_cls, odm_cls, conv_cls...
            if isinstance(m, nn.Linear) and name.endswith("fc_cls"):
                m.bias[-1] += cls_bias  # the background's logit (a softmax: a shift of all is nothing)
            elif isinstance(m, nn.Linear) and name.endswith("fc_reg"):
                m.weight.mul_(0.3)
            elif isinstance(m, nn.Conv2d) and name.endswith("_cls"):
                m.bias.add_(cls_bias)
            elif isinstance(m, nn.Conv2d) and name.endswith("_reg"):
                # damped deltas; Rotated FCOS's are distances (ReLU x stride): larger boxes, so
                # that its NMS suppresses as the others' does
                m.weight.mul_(3.0 if name == "bbox_head.conv_reg" else 0.3)


@functools.cache
def make_detector(arch: str) -> Detector:
    """The seeded small detector of ``arch`` (one per process: tests must not change it)."""
    name, overrides, bias = ARCHS[arch]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # untrained
        det = Detector.from_config(load_config(name, overrides), device="cpu")
    seed_weights(det.model, 0, bias)
    return det


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, shared_data) -> list:
    """Real DOTA images (read in place) and a ToyDOTA scene, all larger than one window."""
    toy, _ = make_toy_image(5, size=(480, 352))
    path = tmp_path_factory.mktemp("scenes") / "toy_scene.png"
    assert cv2.imwrite(str(path), toy)
    return [
        shared_data / "dota_samples" / "images" / "P1888.png",
        shared_data / "dota_patch" / "images" / "P0004__1__0___0.png",
        path,
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """arch -> (detector, config YAML, checkpoint, export folder): made once per module."""
    made = {}

    def get(arch: str):
        if arch not in made:
            root = tmp_path_factory.mktemp(arch)
            det = make_detector(arch)
            cfg_path = root / "config.yaml"
            cfg_path.write_text(yaml.safe_dump(det.cfg))
            ckpt = save_checkpoint(
                {"state_dict": det.model.state_dict(), "meta": {"config": det.cfg}}, root / "w.pth"
            )
            out = root / "export"
            assert cli_main(["export", str(cfg_path), str(ckpt), "--out", str(out)]) == 0
            made[arch] = (det, cfg_path, ckpt, out)
        return made[arch]

    return get


def assert_same_detections(got: Detections, want: Detections) -> None:
    """Same count per class; every detection paired with one of its class (boxes within 1e-2 px,
    angles 1e-3 rad, scores 1e-4). Pairs by nearest box, as two scores equal up to rounding may
    come in either order."""
    assert got.classes == want.classes and got.image_size == want.image_size
    for c in range(len(want.classes)):
        g, w = np.flatnonzero(got.labels == c), np.flatnonzero(want.labels == c)
        assert len(g) == len(w), f"class {c}: {len(g)} detections, PyTorch {len(w)}"
        if not len(w):
            continue
        gb, wb = got.boxes[g].astype(np.float64), want.boxes[w].astype(np.float64)
        dist = np.abs(gb[:, None, :4] - wb[None, :, :4]).max(axis=2)
        pair = dist.argmin(axis=1)
        assert len(np.unique(pair)) == len(w), f"class {c}: detections do not pair one to one"
        assert dist[np.arange(len(g)), pair].max() <= BOX_TOL
        assert np.abs(gb[:, 4] - wb[pair, 4]).max() <= ANGLE_TOL
        assert np.abs(got.scores[g] - want.scores[w][pair]).max() <= SCORE_TOL


def read_outputs(folder, stems) -> dict[str, Detections]:
    return {s: Detections.read_json(folder / f"{s}.json") for s in stems}


# ---------------------------------------------------------------------------------------- graph
@pytest.mark.parametrize("arch", list(ARCHS))
def test_graph_candidates_are_the_heads_candidates(arch):
    """The graph's static-shape selection gives the head's own NMS candidates (eager, one window);
    through the same NMS they give the model's detections."""
    det = make_detector(arch)
    graph = build_graph(det)
    img = cv2.imread(str(graph_test_image()))[:SIZE, :SIZE]
    x = torch.from_numpy(np.ascontiguousarray(img))[None].repeat(2, 1, 1, 1)
    x[1] = x[1].flip(0)
    sample = det._prepare_patch(img)
    with torch.no_grad():
        normalized = graph.normalize(x[:1])
        assert torch.equal(normalized[0], sample["img"])  # the pipeline's Normalize, bit for bit
        boxes, scores, *factors = graph(x)  # Rotated FCOS: and its centre-ness
        metas = [{"img_shape": (SIZE, SIZE, 3), "scale_factor": [1.0] * 4}] * 2
        model = det.model
        feats = model.extract_feat(graph.normalize(x))
        if arch.startswith("r3det"):
            outs = list(model._stages(feats))[-1]
            (cls, reg), rois = outs[1], outs[2]
            head = model.refine_head[-1]
            ref = head.predict(cls, reg, metas, anchors=rois, with_nms=False)
            want = head.predict(cls, reg, metas, anchors=rois)
        elif arch == "fcos":
            outs = model.bbox_head(feats)
            ref = model.bbox_head.predict(outs, metas, with_nms=False)
            want = model.bbox_head.predict(outs, metas)
        elif arch == "orcnn":  # the RoI head's outputs on the RPN's proposals, before its NMS
            props = model.rpn_head.proposals(*model.rpn_head(feats), metas)
            assert [len(p) for p in props] == [graph.num_candidates] * 2
            cls, reg = model.roi_head(feats, rois_of(props))
            coder = model.roi_head.bbox_head.bbox_coder
            ref = [
                {
                    "boxes": coder.decode(p[:, :5], r, max_shape=(SIZE, SIZE)),
                    "scores": torch.softmax(c_, dim=-1)[:, :-1],
                }
                for p, c_, r in zip(props, cls.chunk(2), reg.chunk(2), strict=True)
            ]
            want = model.roi_head.predict(feats, props, metas)
        elif arch == "s2anet":
            _, rois, aligned = model._stages(feats)
            cls, reg = model.odm_head(aligned)
            ref = model.odm_head.predict(cls, reg, metas, anchors=rois, with_nms=False)
            want = model.odm_head.predict(cls, reg, metas, anchors=rois)
        else:
            cls, reg = model.bbox_head(feats)
            ref = model.bbox_head.predict(cls, reg, metas, with_nms=False)
            want = model.bbox_head.predict(cls, reg, metas)
    c = len(det.class_names)
    assert boxes.shape == (2, graph.num_candidates, 5) and scores.shape == (2, graph.num_candidates, c)
    assert 200 < int((scores > 0.05).sum(dim=(1, 2)).min())  # hundreds of candidates
    # (S2A-Net's deformable convolution in gathers may round a wide box's side by one ulp;
    # Oriented R-CNN's RoI Align sums its samples in another order than the sparse product)
    box_tol, score_tol = ((1e-6, 1e-4), 1e-5) if arch == "orcnn" else ((2.5e-7, 1e-5), 1e-6)
    for i in range(2):
        # (Oriented R-CNN: its proposals in the same order, equal RPN scores of flat image areas too)
        torch.testing.assert_close(boxes[i], ref[i]["boxes"], rtol=box_tol[0], atol=box_tol[1])
        torch.testing.assert_close(scores[i], ref[i]["scores"], rtol=0, atol=score_tol)
        if factors:
            torch.testing.assert_close(factors[0][i], ref[i]["centerness"], rtol=0, atol=1e-6)
    assert bool(factors) == (arch == "fcos") and graph.clamps_centres == (arch != "fcos")
    from rotdet.export.postprocess import candidates_to_detections

    cfg = det._test_cfg(None)
    got = candidates_to_detections(
        boxes,
        scores,
        metas,
        cfg.score_thr,
        cfg.iou_thr,
        cfg.max_per_img,
        score_factors=factors[0] if factors else None,
        clamp_centres=graph.clamps_centres,
    )
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g.labels, w.labels)
        torch.testing.assert_close(g.boxes, w.boxes, rtol=box_tol[0], atol=box_tol[1])
        torch.testing.assert_close(g.scores, w.scores, rtol=0, atol=score_tol)


def graph_test_image():
    from conftest import SHARED_DATA

    path = SHARED_DATA / "dota_samples" / "images" / "P1888.png"
    if not path.is_file():
        pytest.skip(f"real DOTA samples not found at {SHARED_DATA}")
    return path


def test_postprocess_matches_dense_detections_clamp_and_rescale():
    """Windows smaller than the input (whole images): the centre clamp to the window and the
    rescale after the graph equal dense_detections' on the same candidates."""
    torch.manual_seed(0)
    b, k, c = 2, 300, 3
    priors = torch.cat([torch.rand(b, k, 2) * 256, 8 + torch.rand(b, k, 2) * 40, torch.rand(b, k, 1)], 2)
    deltas = torch.randn(b, k, 5) * 0.5
    logits = torch.randn(b, k, c)
    metas = [
        {"img_shape": (256, 180, 3), "scale_factor": [0.5, 0.5, 0.5, 0.5]},
        {"img_shape": (200, 256, 3), "scale_factor": [2.0, 2.0, 2.0, 2.0]},
    ]
    from rotdet.export.postprocess import candidates_to_detections
    from rotdet.models.coders import DeltaXYWHAOBBoxCoder

    coder = DeltaXYWHAOBBoxCoder(angle_range="le90", edge_swap=True, proj_xy=True)
    want = dense_detections(
        [logits.permute(0, 2, 1).reshape(b, c, k, 1)],
        [deltas.permute(0, 2, 1).reshape(b, 5, k, 1)],
        [priors],
        coder.decode,
        c,
        metas,
        nms_pre=0,
        score_thr=0.3,
        iou_thr=0.1,
        max_per_img=50,
        rescale=True,
    )
    boxes = coder.decode(priors, deltas, max_shape=(256, 256))
    got = candidates_to_detections(boxes, logits.sigmoid(), metas, 0.3, 0.1, 50)
    for g, w in zip(got, want, strict=True):
        assert len(w.labels) > 10
        assert torch.equal(g.labels, w.labels)
        assert torch.equal(g.boxes, w.boxes) and torch.equal(g.scores, w.scores)


def test_onnx_graph_is_static_and_metadata_complete(exported):
    det, _, ckpt, out = exported("demo")
    meta = json.loads((out / EXPORT_JSON).read_text())
    model = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"NonZero", "NonMaxSuppression", "Loop", "If", "Compress"}
    (inp,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "images" and dims == ["batch", SIZE, SIZE, 3]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    k = meta["outputs"]["num_candidates"]
    for o, last in zip(model.graph.output, (5, len(det.class_names)), strict=True):
        assert [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] == ["batch", k, last]
    assert meta["config_name"] == "demo_atss_le90" and meta["angle_version"] == "le90"
    assert meta["classes"] == list(det.class_names) and meta["input"]["size"] == [SIZE, SIZE]
    assert meta["input"]["dtype"] == "uint8" and meta["input"]["channels"] == "BGR"
    assert meta["normalization"]["to_rgb"] is True and meta["nms"]["in_graph"] is False
    assert meta["test_cfg"] == {
        "nms_pre": 2000,
        "score_thr": 0.05,
        "iou_thr": 0.1,
        "max_per_img": 2000,
        "min_bbox_size": 0,
    }
    assert meta["graph"]["opset"] == 17 and meta["versions"]["torch"] == torch.__version__
    assert meta["weights_sha256"] == weights_sha256(det.model) and meta["checkpoint"] == ckpt.name
    assert meta["config"]["model"] == det.cfg["model"]


# --------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("arch", list(ARCHS))
def test_predict_cli_onnx_equals_pytorch(arch, exported, scenes, tmp_path, capsys):
    """``rotdet predict model.onnx`` == ``rotdet predict CONFIG CKPT``: sliced (256 px windows,
    batches of 4, the default gap), merged, written, read back."""
    _, cfg_path, ckpt, out = exported(arch)
    if arch != "demo":
        scenes = scenes[1:]  # the 712 x 557 scene (12 windows) for one model, for CI's time
    common = [*map(str, scenes), "--size", str(SIZE), "--batch-size", "4", "--device", "cpu"]
    assert cli_main(["predict", str(cfg_path), str(ckpt), *common, "--out", str(tmp_path / "pt")]) == 0
    assert cli_main(["predict", str(out / "model.onnx"), *common, "--out", str(tmp_path / "onnx")]) == 0
    capsys.readouterr()
    stems = [p.stem for p in scenes]
    want, got = read_outputs(tmp_path / "pt", stems), read_outputs(tmp_path / "onnx", stems)
    assert sum(len(d) for d in want.values()) > 100
    for s in stems:
        assert_same_detections(got[s], want[s])
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == sorted(
        f"{s}.{e}" for s in stems for e in ("json", "png", "txt")
    )


def test_pt2_equals_pytorch(tmp_path, scenes):
    """``--format pt2`` (torch.export) through ``Detector.from_export``: same detections. R3Det
    only, for CI's time (torch.export takes 10-20 s a model here): its graph holds every piece of
    the single-stage ones (9-anchor head, top-k) and the refinement stage."""
    det = make_detector("r3det")
    export_detector(det, tmp_path / "pt2", fmt="pt2")
    assert sorted(p.name for p in (tmp_path / "pt2").iterdir()) == ["model.pt2", EXPORT_JSON]
    ex = Detector.from_export(tmp_path / "pt2" / "model.pt2", device="cpu")
    assert ex.runner.format == "pt2" and ex.window_size == SIZE
    for path in scenes[1:]:
        assert_same_detections(ex.predict(path, batch_size=3), det.predict(path, batch_size=3))


def test_oriented_rcnn_graph_holds_its_proposal_nms(exported, tmp_path):
    """Two stages in one graph: ONNX's own NonMaxSuppression between them, nothing data-dependent
    else, no custom domain; torch.export keeps rotdet's operator and gives the same detections."""
    det, _, _, out = exported("orcnn")
    meta = json.loads((out / EXPORT_JSON).read_text())
    model = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "NonMaxSuppression" in ops and not ops & {"NonZero", "Loop", "If", "Compress"}
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert meta["architecture"] == "OrientedRCNN" and meta["outputs"]["num_candidates"] == 2000
    assert meta["proposals"]["in_graph"] is True and meta["proposals"]["iou_thr"] == 0.8
    assert meta["test_cfg"]["iou_thr"] == 0.1 and meta["nms"]["in_graph"] is False
    with pytest.raises(ExportError, match="TorchScript-based exporter only"):
        export_detector(det, tmp_path / "dynamo", exporter="dynamo")
    assert not (tmp_path / "dynamo").exists()


def test_pt2_oriented_rcnn_equals_pytorch(tmp_path, scenes):
    """Oriented R-CNN as a torch.export program (128 px windows, 300 proposals: CI's time)."""
    name, overrides, bias = ARCHS["orcnn"]
    small = ["data.img_scale=[128,128]", "model.test_cfg.rpn.nms_pre=500"]
    small.append("model.test_cfg.rpn.max_per_img=300")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # untrained
        det = Detector.from_config(load_config(name, [*overrides, *small]), device="cpu")
    seed_weights(det.model, 0, bias)
    export_detector(det, tmp_path / "pt2", fmt="pt2")
    ex = Detector.from_export(tmp_path / "pt2", device="cpu")
    assert ex.runner.format == "pt2" and ex.window_size == 128
    want = det.predict(scenes[2], batch_size=4)
    assert len(want) > 20
    assert_same_detections(ex.predict(scenes[2], batch_size=4), want)


def test_whole_image_that_fills_the_window_equals_pytorch(exported, tmp_path):
    """An image within one window, resized by the pipeline to fill it, runs whole on both."""
    det, _, _, out = exported("retinanet_le90")
    ex = Detector.from_export(out, device="cpu")
    img, _ = make_toy_image(7, size=(200, 200))  # -> 256 x 256, scale 1.28
    want = det.predict(img)
    assert len(want) > 20
    assert_same_detections(ex.predict(img), want)
    # another aspect ratio: the graph sees the image padded to 256 x 256 (documented difference)
    narrow = ex.predict(img[:, :160])
    assert len(narrow) and narrow.boxes[:, 0].max() < 160


# ------------------------------------------------------------------------------------ bad input
def test_export_errors_leave_nothing(exported, tmp_path, capsys, monkeypatch):
    det, cfg_path, ckpt, out = exported("demo")
    target = tmp_path / "out"

    def run(*args):
        rc = cli_main(["export", *map(str, args)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        return err

    assert "unknown config 'no_such_config'" in run("no_such_config", ckpt, "--out", target)
    other_name, other_over, _ = ARCHS["r3det"]
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(load_config(other_name, other_over)))
    assert "does not fit config" in run(other, ckpt, "--out", target)
    assert "does not exist" in run(cfg_path, tmp_path / "nope.pth", "--out", target)
    assert "multiple of 32" in run(cfg_path, ckpt, "--out", target, "--input-size", "250")
    (tmp_path / "file").write_text("x")
    assert "is a file" in run(cfg_path, ckpt, "--out", tmp_path / "file")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert "holds other files" in run(cfg_path, ckpt, "--out", tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"

    def broken(*args, **kwargs):
        raise ExportError("exporter failed half-way")

    monkeypatch.setattr(exporter_module, "_onnx_bytes", broken)
    assert "half-way" in run(cfg_path, ckpt, "--out", target)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "file", "other.yaml"]

    # a previous export is replaced whole, and only at the end
    shutil.copytree(out, target)
    (target / "stale.txt").write_text("old")
    export_detector(det, target)
    assert sorted(p.name for p in target.iterdir()) == ["model.onnx", EXPORT_JSON]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_predict_errors_on_bad_exports(exported, tmp_path, capsys):
    _, _, _, out = exported("demo")
    img = tmp_path / "img.png"
    assert cv2.imwrite(str(img), make_toy_image(1, size=(64, 64))[0])

    def run(model, *extra):
        rc = cli_main(["predict", str(model), str(img), "--out", str(tmp_path / "pred"), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        return err

    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(out / "model.onnx", lone / "model.onnx")
    assert f"{EXPORT_JSON} is missing" in run(lone / "model.onnx")
    other = tmp_path / "other"
    shutil.copytree(out, other)
    meta = json.loads((other / EXPORT_JSON).read_text())
    meta["graph"]["sha256"] = "0" * 64
    (other / EXPORT_JSON).write_text(json.dumps(meta))
    assert "does not match" in run(other)
    (other / EXPORT_JSON).write_text("{not json")
    assert "not readable JSON" in run(other / "model.onnx")
    assert "does not apply to an exported model" in run(out, "--cfg-options", "a.b=1")
    assert not (tmp_path / "pred").exists()

    runner = ExportedModel(out, device="cpu")
    with pytest.raises(ValueError, match=r"uint8 \[B, 256, 256, 3\].*\(1, 128, 128, 3\)"):
        runner(np.zeros((1, 128, 128, 3), np.uint8))
    with pytest.raises(ValueError, match="got float32"):
        runner(np.zeros((1, SIZE, SIZE, 3), np.float32))
    boxes, scores = runner(np.zeros((3, SIZE, SIZE, 3), np.uint8))  # any batch size
    assert boxes.shape[0] == scores.shape[0] == 3
