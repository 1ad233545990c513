"""Model components against mmdet 2.28.2 / mmrotate 0.3.4: anchors, box coder, ResNet backbone, FPN.

``tests/data/models_components_ref.npz`` (~20 KB) holds values produced once by mmrotate 0.3.4's own
``RotatedAnchorGenerator`` and ``DeltaXYWHAOBBoxCoder`` (reference venv, not needed here):

* ``anchors.{retina,atss}.small.l{i}``: all anchors for feature maps (3,4), (2,2), (1,2), (1,1), (1,1);
* ``anchors.{retina,atss}.big.l{i}``: first and last A anchors for a 1024^2 input (128^2 .. 8^2);
* ``anchors.custom.l0``: strides (8, 12), ratios (0.25, 1), scales (2, 3), base size 10, offset 0.5;
* ``valid.{retina,atss}.l{i}``: ``np.packbits`` of the valid flags for maps (13,21) .. (1,2), pad (75,130);
* ``coder.{props,gts,deltas}`` and ``coder.<setting>.{enc,dec,dec_clamp}`` for the settings below.

The optional oracle test compares ResNet-50 + FPN with mmrotate's own FPN outputs; it skips when the
reference dumps (``/work/ref/out``) are absent, as in CI.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet as tv_resnet

from rotdet.models import FPN, AnchorGenerator, DeltaXYWHAOBBoxCoder, ResNetBackbone
from rotdet.models.backbone import PretrainedWeightsError
from rotdet.structures import obb2poly

REF = np.load(Path(__file__).parent / "data" / "models_components_ref.npz")
STRIDES = [8, 16, 32, 64, 128]
GENERATORS = {
    "retina": dict(octave_base_scale=4, scales_per_octave=3, ratios=(1.0, 0.5, 2.0)),
    "atss": dict(octave_base_scale=4, scales_per_octave=1, ratios=(1.0,)),
}
CODER_SETTINGS = {
    "oc": dict(angle_range="oc"),
    "le90": dict(angle_range="le90", edge_swap=True, proj_xy=True),
    "le135": dict(angle_range="le135", norm_factor=1, proj_xy=True),
    "le90_plain": dict(angle_range="le90"),
    "le135_swap": dict(angle_range="le135", edge_swap=True),
    "oc_stds": dict(
        angle_range="oc",
        target_means=(0.1, -0.1, 0.0, 0.2, 0.0),
        target_stds=(0.1, 0.1, 0.2, 0.2, 0.1),
        norm_factor=0.5,
    ),
}
# Opt-in (a development aid, never part of CI): ROTDET_ORACLE_DIR=$REF/out/s0 (the oracle dumps).
ORACLE = Path(os.environ.get("ROTDET_ORACLE_DIR") or "/nonexistent-rotdet-oracle")


# ----------------------------------------------------------------------------------------- anchors
@pytest.mark.parametrize("name", GENERATORS)
def test_anchor_counts_1024(name: str) -> None:
    gen = AnchorGenerator(STRIDES, **GENERATORS[name])
    a = 9 if name == "retina" else 1
    assert gen.num_base_anchors == a and gen.num_levels == 5
    sizes = [(1024 // s, 1024 // s) for s in STRIDES]
    anchors = gen.grid_anchors(sizes)
    assert [t.shape for t in anchors] == [(h * w * a, 5) for h, w in sizes]
    assert all(t.dtype == torch.float32 for t in anchors)
    assert all(bool((t[:, 4] == 0).all()) for t in anchors)
    first, last = anchors[0][0], anchors[0][-1]
    assert first[:2].tolist() == [0.0, 0.0] and first[2:4].tolist() == [32.0, 32.0]  # 4 * stride 8
    assert last[:2].tolist() == [127 * 8.0, 127 * 8.0]


@pytest.mark.parametrize("name", GENERATORS)
def test_anchors_equal_mmrotate(name: str) -> None:
    gen = AnchorGenerator(STRIDES, **GENERATORS[name])
    a = gen.num_base_anchors
    small = gen.grid_anchors([(3, 4), (2, 2), (1, 2), (1, 1), (1, 1)])
    for i, t in enumerate(small):
        np.testing.assert_array_equal(t.numpy(), REF[f"anchors.{name}.small.l{i}"])
    big = gen.grid_anchors([(1024 // s, 1024 // s) for s in STRIDES])
    for i, t in enumerate(big):
        np.testing.assert_array_equal(torch.cat([t[:a], t[-a:]]).numpy(), REF[f"anchors.{name}.big.l{i}"])


def test_anchors_custom_scales_offset_and_rect_stride() -> None:
    gen = AnchorGenerator(
        [(8, 12)], ratios=(0.25, 1.0), scales=(2.0, 3.0), base_sizes=[10], center_offset=0.5
    )
    np.testing.assert_array_equal(gen.grid_anchors([(3, 4)])[0].numpy(), REF["anchors.custom.l0"])
    with pytest.raises(ValueError):
        AnchorGenerator([8], octave_base_scale=4, scales_per_octave=3, scales=(1.0,))
    with pytest.raises(ValueError):
        AnchorGenerator([8])


def test_anchor_ratio_scale_and_grid_order() -> None:
    gen = AnchorGenerator([16], octave_base_scale=4, scales_per_octave=3, ratios=(1.0, 0.5, 2.0))
    anchors = gen.grid_anchors([(2, 3)])[0].view(2, 3, 9, 5)  # (y, x, a)
    base = anchors[0, 0]
    expected = []
    for r in (1.0, 0.5, 2.0):  # ratio-major, then scales; h/w = r
        for i in range(3):
            s = 64 * 2 ** (i / 3)
            expected.append((s / math.sqrt(r), s * math.sqrt(r)))
    np.testing.assert_allclose(base[:, 2:4].numpy(), np.array(expected), rtol=1e-6)
    assert (base[:, :2] == 0).all()
    for y in range(2):
        for x in range(3):  # centres at (x * stride, y * stride), x fastest
            # equal up to rounding only: mmrotate derives (cx, w) from the shifted corners
            np.testing.assert_allclose(anchors[y, x, :, 0].numpy(), 16.0 * x, atol=1e-5)
            np.testing.assert_allclose(anchors[y, x, :, 1].numpy(), 16.0 * y, atol=1e-5)
            np.testing.assert_allclose(anchors[y, x, :, 2:].numpy(), base[:, 2:].numpy(), atol=1e-5)


@pytest.mark.parametrize("name", GENERATORS)
def test_valid_flags_padded(name: str) -> None:
    gen = AnchorGenerator(STRIDES, **GENERATORS[name])
    sizes = [(13, 21), (7, 11), (4, 6), (2, 3), (1, 2)]  # batch padded larger than this image
    flags = gen.valid_flags(sizes, (75, 130, 3))
    a = gen.num_base_anchors
    for i, f in enumerate(flags):
        assert f.dtype == torch.bool and f.shape == (sizes[i][0] * sizes[i][1] * a,)
        np.testing.assert_array_equal(np.packbits(f.numpy()), REF[f"valid.{name}.l{i}"])
    # level 0: ceil(75 / 8) = 10 valid rows of 13, ceil(130 / 8) = 17 valid columns of 21
    grid = flags[0].view(13, 21, a)
    assert grid[:10, :17].all() and not grid[10:].any() and not grid[:, 17:].any()
    # a full-size image: everything valid
    assert all(f.all() for f in gen.valid_flags(sizes, (104, 168)))
    # all_valid decides the same from the shapes alone (the heads' no-sync path)
    for pad in [(104, 168), (75, 130, 3), (97, 168), (104, 161), (100, 160), (1, 1)]:
        assert gen.all_valid(sizes, pad) == all(bool(f.all()) for f in gen.valid_flags(sizes, pad)), pad


# ------------------------------------------------------------------------------------------- coder
@pytest.mark.parametrize("setting", CODER_SETTINGS)
def test_coder_equals_mmrotate(setting: str) -> None:
    coder = DeltaXYWHAOBBoxCoder(**CODER_SETTINGS[setting])
    props, gts, deltas = (torch.from_numpy(REF[f"coder.{k}"]) for k in ("props", "gts", "deltas"))
    # Bit-identical on the machine that recorded the values; elsewhere torch's vectorised sin/cos/
    # atan2/exp may differ in the last bit (seen with torch 2.11 on another CPU), hence ~1 ulp slack.
    close = {"rtol": 2e-6, "atol": 2e-6}
    np.testing.assert_allclose(coder.encode(props, gts).numpy(), REF[f"coder.{setting}.enc"], **close)
    np.testing.assert_allclose(coder.decode(props, deltas).numpy(), REF[f"coder.{setting}.dec"], **close)
    clamped = coder.decode(props, deltas[:, :5], max_shape=(150, 180, 3))
    np.testing.assert_allclose(clamped.numpy(), REF[f"coder.{setting}.dec_clamp"], **close)


def _canonical_boxes(version: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """Random boxes in ``version``'s canonical form, angles kept 0.05 rad from the range ends."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 300
    wh = 5 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 100
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    lo = {"oc": 0.0, "le90": -math.pi / 2, "le135": -math.pi / 4}[version]
    theta = lo + 0.05 + u * (math.pi / 2 if version == "oc" else math.pi) * (1 - 0.1 / math.pi)
    if version != "oc":
        wh = wh.sort(dim=1, descending=True).values
    return torch.cat([xy, wh, theta[:, None]], dim=1).float()


def _same_rectangles(a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    """Each corner of every box in ``a`` lies within ``atol`` of a corner of the same box in ``b``."""
    pa, pb = obb2poly(a.double()).view(-1, 4, 1, 2), obb2poly(b.double()).view(-1, 1, 4, 2)
    dist = (pa - pb).norm(dim=-1).min(dim=-1).values
    assert float(dist.max()) < atol, float(dist.max())


@pytest.mark.parametrize("version", ["oc", "le90", "le135"])
@pytest.mark.parametrize("edge_swap", [False, True])
@pytest.mark.parametrize("proj_xy", [False, True])
def test_coder_round_trip(version: str, edge_swap: bool, proj_xy: bool) -> None:
    gen = torch.Generator().manual_seed(["oc", "le90", "le135"].index(version) * 4 + 2 * edge_swap + proj_xy)
    n = 200
    gts = _canonical_boxes(version, n, gen)
    anchors = _canonical_boxes(version, n, gen)
    anchors[: n // 2, 4] = 0  # grid anchors have angle 0; the rest look like refined boxes
    norm_factor = 1 if version == "le135" else None
    coder = DeltaXYWHAOBBoxCoder(
        angle_range=version,
        norm_factor=norm_factor,
        edge_swap=edge_swap,
        proj_xy=proj_xy,
        target_stds=(0.1, 0.1, 0.2, 0.2, 0.1),
    )
    deltas = coder.encode(anchors, gts)
    decoded = coder.decode(anchors, deltas)
    assert decoded.shape == (n, 5) and deltas.dtype == torch.float32
    _same_rectangles(decoded, gts, atol=2e-3)
    if version != "oc" or not edge_swap:
        # canonical targets come back in the same parameterisation (oc + edge_swap may swap w/h)
        np.testing.assert_allclose(decoded.numpy(), gts.numpy(), atol=2e-3, rtol=1e-5)
    if edge_swap and version != "oc":
        assert (decoded[:, 2] >= decoded[:, 3]).all()


def test_coder_decode_clamps() -> None:
    coder = DeltaXYWHAOBBoxCoder(angle_range="le90", edge_swap=True, proj_xy=True)
    rois = torch.tensor([[50.0, 40.0, 10.0, 20.0, 0.0], [50.0, 40.0, 10.0, 20.0, 0.3]])
    deltas = torch.tensor([[0.0, 0.0, 100.0, -100.0, 0.0], [100.0, -100.0, 0.0, 0.0, 0.0]])
    out = coder.decode(rois, deltas)
    max_ratio = abs(math.log(16 / 1000))
    # |dw|, |dh| clamped to |log(16/1000)|: w = 10 * 62.5, h = 20 * 0.016 (already w >= h, no swap)
    np.testing.assert_allclose(
        out[0, 2:4].numpy(), [10 * math.exp(max_ratio), 20 * math.exp(-max_ratio)], 1e-5
    )
    assert out[1, 0] > 1000 and out[1, 1] < -1000  # no image clamp without max_shape
    out = coder.decode(rois, deltas, max_shape=(64, 96))
    assert out[1, 0].item() == 95.0 and out[1, 1].item() == 0.0  # centres to [0, W-1] x [0, H-1]
    # wh_ratio_clip is a decode argument
    out = coder.decode(rois[:1], deltas[:1], wh_ratio_clip=0.5)
    np.testing.assert_allclose(out[0, 2:4].numpy(), [20.0, 10.0], rtol=1e-6)


def test_coder_angle_quirks() -> None:
    rois = torch.tensor([[10.0, 10.0, 8.0, 8.0, 0.0], [10.0, 10.0, 12.0, 6.0, 0.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0, 3.0]])
    oc = DeltaXYWHAOBBoxCoder(angle_range="oc").decode(rois, deltas)
    assert torch.allclose(oc[:, 4], torch.tensor(3.0))  # 'oc' leaves decoded angles unnormalised
    le90 = DeltaXYWHAOBBoxCoder(angle_range="le90").decode(rois, deltas)
    assert torch.allclose(le90[:, 4], torch.tensor(3.0 - math.pi))
    # edge swap with w == h: strict w > h test, so (h, w, theta + pi/2), then wrapped
    swap = DeltaXYWHAOBBoxCoder(angle_range="le90", edge_swap=True).decode(rois, torch.zeros(2, 5))
    assert torch.allclose(swap[0], torch.tensor([10.0, 10.0, 8.0, 8.0, -math.pi / 2]))
    assert torch.allclose(swap[1], rois[1])
    # le135 config: norm_factor 1 divides the angle target by pi
    le135 = DeltaXYWHAOBBoxCoder(angle_range="le135", norm_factor=1, proj_xy=True)
    gt = torch.tensor([[10.0, 10.0, 12.0, 6.0, 0.5]])
    assert torch.allclose(le135.encode(rois[1:], gt)[0, 4], torch.tensor(0.5 / math.pi))


def test_coder_batched_decode() -> None:
    coder = DeltaXYWHAOBBoxCoder(angle_range="le90", edge_swap=True, proj_xy=True)
    props, deltas = torch.from_numpy(REF["coder.props"]), torch.from_numpy(REF["coder.deltas"])
    rois, d = props.view(2, 6, 5), deltas.view(2, 6, 10)
    out = coder.decode(rois, d)
    assert out.shape == (2, 6, 10)
    torch.testing.assert_close(out.view(12, 10), coder.decode(props, deltas), rtol=0, atol=0)
    shapes = [(150, 180), (60, 70)]
    out = coder.decode(rois, d, max_shape=shapes)
    for b in range(2):
        torch.testing.assert_close(out[b], coder.decode(rois[b], d[b], max_shape=shapes[b]), rtol=0, atol=0)
    with pytest.raises(ValueError):
        coder.decode(props, deltas[:, :4])


# ---------------------------------------------------------------------------------------- backbone
def _bns(module: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_backbone_frozen_and_norm_eval() -> None:
    net = ResNetBackbone(18)
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("conv1.", "bn1.", "layer1.")) for n in frozen)
    assert all(
        not p.requires_grad for n, p in net.named_parameters() if n.startswith(("conv1.", "bn1.", "layer1."))
    )
    assert all(p.requires_grad for n, p in net.named_parameters() if n.startswith("layer2."))
    net.train()
    assert net.training and net.layer2.training and net.layer2[0].conv1.training
    assert not any(bn.training for bn in _bns(net))  # norm_eval
    assert not net.layer1.training and not net.bn1.training
    stats = net.layer3[0].bn1.running_mean.clone()
    out = net(torch.randn(2, 3, 64, 64))
    sum(o.sum() for o in out).backward()
    torch.testing.assert_close(net.layer3[0].bn1.running_mean, stats, rtol=0, atol=0)
    assert net.layer1[0].conv1.weight.grad is None and net.layer2[0].conv1.weight.grad is not None
    assert net.layer2[0].bn1.weight.grad is not None  # unfrozen BN affine still trains

    free = ResNetBackbone(18, frozen_stages=-1, norm_eval=False).train()
    assert all(bn.training for bn in _bns(free)) and all(p.requires_grad for p in free.parameters())
    partial = ResNetBackbone(18, frozen_stages=1, norm_eval=False).train()
    assert partial.layer2[0].bn1.training and not partial.layer1[0].bn1.training and not partial.bn1.training
    partial.eval()
    assert not any(bn.training for bn in _bns(partial))


def test_backbone_shapes_and_init() -> None:
    net = ResNetBackbone(18).eval()
    assert net.out_channels == [64, 128, 256, 512] and net.strides == [4, 8, 16, 32]
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 64, 96))
        odd = net(torch.randn(1, 3, 100, 75))
    assert [tuple(o.shape) for o in outs] == [
        (1, 64, 16, 24),
        (1, 128, 8, 12),
        (1, 256, 4, 6),
        (1, 512, 2, 3),
    ]
    assert [tuple(o.shape[2:]) for o in odd] == [(25, 19), (13, 10), (7, 5), (4, 3)]  # ceil(size / stride)
    sub = ResNetBackbone(18, out_indices=(1, 3))
    assert sub.out_channels == [128, 512] and len(sub(torch.randn(1, 3, 64, 64))) == 2
    # mmdet init: Kaiming normal fan_out for convs, BN weight 1 / bias 0
    w = net.layer3[0].conv2.weight.detach()
    assert abs(float(w.std()) - math.sqrt(2 / (w.shape[0] * 9))) < 0.1 * math.sqrt(2 / (w.shape[0] * 9))
    assert all(bool((bn.weight == 1).all() and (bn.bias == 0).all()) for bn in _bns(net))


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_backbone_keys_equal_torchvision(depth: int) -> None:
    builder = {
        18: tv_resnet.resnet18,
        34: tv_resnet.resnet34,
        50: tv_resnet.resnet50,
        101: tv_resnet.resnet101,
    }
    with torch.device("meta"):
        ours = ResNetBackbone(depth).state_dict()
        ref = builder[depth]().state_dict()
    expected = {k: tuple(v.shape) for k, v in ref.items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected
    assert "layer2.0.downsample.1.running_var" in ours and "bn1.num_batches_tracked" in ours
    with torch.device("meta"):
        assert ResNetBackbone(depth).out_channels == [
            c * (1 if depth < 50 else 4) for c in (64, 128, 256, 512)
        ]


def test_backbone_pretrained_offline_is_an_error_saying_how_to_proceed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def offline(url: str, *args: object, **kwargs: object) -> dict:
        raise OSError(f"no network: {url}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError, match=r"OSError.*pretrained=/path/to/it.*pretrained=false"):
        ResNetBackbone(18, pretrained=True)
    with pytest.raises(PretrainedWeightsError, match="checkpoint not found"):
        ResNetBackbone(18, pretrained="/nonexistent/resnet18.pth")


def test_backbone_pretrained_from_a_local_file(tmp_path, caplog) -> None:
    src = tv_resnet.resnet18()
    torch.nn.init.normal_(src.layer1[0].bn1.weight)
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    with caplog.at_level("INFO", logger="rotdet"):
        net = ResNetBackbone(18, pretrained=str(tmp_path / "r18.pth"), frozen_stages=-1)
    assert net.pretrained_from == str(tmp_path / "r18.pth") and "r18.pth" in caplog.text
    torch.testing.assert_close(net.layer1[0].bn1.weight, src.layer1[0].bn1.weight, rtol=0, atol=0)


def test_backbone_pretrained_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    src = tv_resnet.resnet18()
    torch.nn.init.normal_(src.layer4[1].bn2.weight)
    urls: list[str] = []

    def fake(url: str, *args: object, **kwargs: object) -> dict:
        urls.append(url)
        return src.state_dict()  # includes fc.*, which the backbone drops

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake)
    net = ResNetBackbone(18, pretrained=True)
    assert net.pretrained_from == urls[0] == tv_resnet.ResNet18_Weights.IMAGENET1K_V1.url
    torch.testing.assert_close(net.layer4[1].bn2.weight, src.layer4[1].bn2.weight, rtol=0, atol=0)
    assert not net.layer1[0].conv1.weight.requires_grad


# --------------------------------------------------------------------------------------------- FPN
def test_fpn_keys_and_init() -> None:
    fpn = FPN()
    shapes = {k: tuple(v.shape) for k, v in fpn.state_dict().items()}
    expected = {}
    for i, c in enumerate([512, 1024, 2048]):
        expected[f"lateral_convs.{i}.weight"] = (256, c, 1, 1)
        expected[f"lateral_convs.{i}.bias"] = (256,)
    for i in range(5):
        expected[f"fpn_convs.{i}.weight"] = (256, 2048 if i == 3 else 256, 3, 3)
        expected[f"fpn_convs.{i}.bias"] = (256,)
    assert shapes == expected
    assert fpn.fpn_convs[3].stride == (2, 2) and fpn.fpn_convs[4].stride == (2, 2)
    assert fpn.fpn_convs[0].stride == (1, 1)
    for conv in list(fpn.lateral_convs) + list(fpn.fpn_convs):  # Xavier uniform, zero bias
        fan_in, fan_out = conv.weight[0].numel(), conv.weight.shape[0] * conv.weight[0, 0].numel()
        bound = math.sqrt(6 / (fan_in + fan_out))
        top = float(conv.weight.detach().abs().max())
        assert 0.98 * bound < top <= bound * (1 + 1e-6)  # the bound itself is rounded to float32
        assert (conv.bias == 0).all()


@pytest.mark.parametrize("hw", [(1024, 1024), (1000, 600)])
def test_fpn_output_shapes(hw: tuple[int, int]) -> None:
    chans = [8, 16, 32, 64]
    fpn = FPN(in_channels=chans, out_channels=4)
    h, w = hw
    strides = [4, 8, 16, 32]
    feats = [torch.randn(1, c, -(-h // s), -(-w // s)) for c, s in zip(chans, strides, strict=True)]
    with torch.no_grad():
        outs = fpn(feats)
    expected = []
    for s in STRIDES:
        expected.append((1, 4, math.ceil(h / s), math.ceil(w / s)))
    assert [tuple(o.shape) for o in outs] == expected


def test_fpn_wiring() -> None:
    """P3..P5 from nearest top-down (to the exact size), P6 from C5 (input), P7 from P6 without ReLU."""
    chans = [4, 6, 8, 10]
    fpn = FPN(in_channels=chans, out_channels=5)
    for conv in fpn.modules():
        if isinstance(conv, torch.nn.Conv2d):
            torch.nn.init.normal_(conv.bias)
    sizes = [(26, 38), (13, 19), (7, 10), (4, 5)]
    feats = [torch.randn(2, c, *s) for c, s in zip(chans, sizes, strict=True)]
    with torch.no_grad():
        outs = fpn(feats)
        lat = [conv(feats[i + 1]) for i, conv in enumerate(fpn.lateral_convs)]
        lat[1] = lat[1] + F.interpolate(lat[2], size=lat[1].shape[2:], mode="nearest")
        lat[0] = lat[0] + F.interpolate(lat[1], size=lat[0].shape[2:], mode="nearest")
        p = [fpn.fpn_convs[i](lat[i]) for i in range(3)]
        p6 = fpn.fpn_convs[3](feats[3])
        p.extend([p6, fpn.fpn_convs[4](p6)])
    assert len(outs) == 5
    for got, exp in zip(outs, p, strict=True):
        torch.testing.assert_close(got, exp, rtol=0, atol=0)
    assert (outs[3] < 0).any()  # P6 is not ReLU'd; P7 sees it raw (relu_before_extra_convs=False)
    relu = FPN(in_channels=chans, out_channels=5, relu_before_extra_convs=True)
    relu.load_state_dict(fpn.state_dict())
    with torch.no_grad():
        p7 = relu(feats)[4]
        torch.testing.assert_close(p7, fpn.fpn_convs[4](F.relu(p6)), rtol=0, atol=0)


# ---------------------------------------------------------------------- optional: mmrotate oracle
@pytest.mark.skipif(not ORACLE.is_dir(), reason="mmrotate reference dumps not available")
def test_resnet50_fpn_and_anchors_match_oracle() -> None:
    """Load mmrotate's seed-0 RetinaNet le90 weights; FPN outputs and anchors as mmrotate computed them."""
    root = ORACLE / "rotated_retinanet_obb_r50_fpn_1x_dota_le90"
    if not (root / "model.pth").is_file() or not (root / "oracle.npz").is_file():
        pytest.skip(f"no oracle dump in {root}")
    state = torch.load(root / "model.pth", map_location="cpu", weights_only=True)
    oracle = np.load(root / "oracle.npz")
    backbone, neck = ResNetBackbone(50).eval(), FPN().eval()
    backbone.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("backbone.")}, strict=True)
    # mmdet's ConvModule adds ".conv" to the FPN keys
    neck.load_state_dict(
        {k[5:].replace(".conv.", "."): v for k, v in state.items() if k.startswith("neck.")}, strict=True
    )
    with torch.no_grad():
        outs = neck(backbone(torch.from_numpy(oracle["img"])))
    for i, out in enumerate(outs):
        ref = oracle[f"neck.l{i}"]
        assert out.shape == ref.shape
        assert float(np.abs(out.numpy() - ref).max()) <= 1e-4 * max(1.0, float(np.abs(ref).max()))
    gen = AnchorGenerator(STRIDES, **GENERATORS["retina"])
    for i, anchors in enumerate(gen.grid_anchors([tuple(o.shape[2:]) for o in outs])):
        np.testing.assert_array_equal(anchors.numpy(), oracle[f"anchors.l{i}"])


def test_config_keys_come_from_each_constructor():
    """A component takes exactly its constructor's parameters from its config section."""
    import inspect

    from rotdet.models.anchors import AnchorGenerator
    from rotdet.models.backbone import ResNetBackbone
    from rotdet.models.coders import DeltaXYWHAOBBoxCoder
    from rotdet.models.config_keys import constructor_keys
    from rotdet.models.fpn import FPN
    from rotdet.models.r3det import FeatureRefineModule

    for cls in (AnchorGenerator, ResNetBackbone, DeltaXYWHAOBBoxCoder, FPN, FeatureRefineModule):
        assert constructor_keys(cls) == set(inspect.signature(cls).parameters), cls
    coder = DeltaXYWHAOBBoxCoder.from_config(
        {"type": "DeltaXYWHAOBBoxCoder", "angle_range": "le90", "add_ctr_clamp": True}
    )
    assert coder.angle_range == "le90"
    with pytest.raises(ValueError, match=r"bbox_coder: unknown keys \['edge_swapp'\]; known: .*'edge_swap'"):
        DeltaXYWHAOBBoxCoder.from_config({"type": "DeltaXYWHAOBBoxCoder", "edge_swapp": True})
    with pytest.raises(ValueError, match="backbone: type 'ResNeXt' is not supported"):
        ResNetBackbone.from_config({"type": "ResNeXt", "depth": 50})
    with pytest.raises(ValueError, match="only style='pytorch'"):
        ResNetBackbone.from_config({"type": "ResNet", "depth": 18, "style": "caffe"})
    with pytest.raises(ValueError, match="neck.in_channels .* do not match the backbone's outputs"):
        FPN.from_config({"type": "FPN", "in_channels": [1, 2], "out_channels": 8, "num_outs": 2}, [64, 128])


def test_head_and_assigner_keys_come_from_their_constructors():
    from rotdet.configs import load_config
    from rotdet.models.assigners import MaxIoUAssigner, assigner_from_config
    from rotdet.models.heads import RotatedRetinaHead

    model = load_config("rotated_retinanet_obb_r50_fpn_1x_dota_le90")["model"]
    head = RotatedRetinaHead.from_config(model["bbox_head"], model["train_cfg"], model["test_cfg"])
    assert isinstance(head.assigner, MaxIoUAssigner) and head.test_cfg.nms_pre == 2000
    with pytest.raises(
        ValueError, match=r"bbox_head: unknown keys \['feat_chanels'\]; known: .*'feat_channels'"
    ):
        RotatedRetinaHead.from_config({**model["bbox_head"], "feat_chanels": 8})
    with pytest.raises(
        ValueError, match=r"bbox_head: unknown keys \['strides'\]"
    ):  # from the anchors, not here
        RotatedRetinaHead.from_config({**model["bbox_head"], "strides": [8]})
    assigner = {**model["train_cfg"]["assigner"], "ignore_wrt_candidates": False}  # any constructor key
    assert assigner_from_config(assigner).ignore_wrt_candidates is False
    with pytest.raises(ValueError, match=r"assigner: unknown keys \['pos_iou'\]; known: .*'pos_iou_thr'"):
        assigner_from_config({**assigner, "pos_iou": 0.5})
