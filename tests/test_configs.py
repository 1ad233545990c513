"""Configs: `_base_` includes, one source for the angle convention, a lazy command line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from test_models_detectors import tiny_overrides
from torch import nn

from rotdet.configs import CODER_PRESETS, CONFIG_DIR, SEED_CONFIGS, load_config, resolve_angle_version
from rotdet.models.assigners import ATSSAssigner
from rotdet.models.coders import DeltaXYWHAOBBoxCoder
from rotdet.models.factory import build_model

VERSIONS = tuple(CODER_PRESETS)
CONFIG_YAML = (CONFIG_DIR / "rotated_atss_obb_r50_fpn_1x_dota_le90.yaml").as_posix()
TINY = ["model.backbone.depth=18", "model.neck.in_channels=null", "model.backbone.pretrained=false"]


def _components(model: nn.Module) -> tuple[list, list, list]:
    """Every box coder, ATSS assigner and ``assign_by_circumhbbox`` value held anywhere in ``model``
    (found by walking the modules' plain attributes, so the test does not depend on where they sit)."""
    coders, assigners, circum = [], [], []
    seen: set[int] = set()

    def visit(obj, depth: int = 0) -> None:
        if id(obj) in seen or depth > 4:
            return
        seen.add(id(obj))
        if isinstance(obj, DeltaXYWHAOBBoxCoder):
            coders.append(obj)
        if isinstance(obj, ATSSAssigner):
            assigners.append(obj)
        attrs = getattr(obj, "__dict__", None)
        if attrs is None:
            return
        for name, value in attrs.items():
            if name == "assign_by_circumhbbox":
                circum.append(value)
            elif isinstance(value, list | tuple):
                for item in value:
                    visit(item, depth + 1)
            elif not isinstance(value, nn.Module | dict) and hasattr(value, "__dict__"):
                visit(value, depth + 1)

    for module in model.modules():
        visit(module)
    return coders, assigners, circum


@pytest.mark.parametrize("name", SEED_CONFIGS)
@pytest.mark.parametrize("version", VERSIONS)
def test_angle_version_override_reaches_every_component(name, version):
    cfg = load_config(name, [f"angle_version={version}", *tiny_overrides(name)])
    coders, assigners, circum = _components(build_model(cfg))
    n_heads = 1 + len(cfg["model"].get("refine_heads") or [])
    assert len(coders) >= n_heads and len(circum) >= n_heads
    preset = CODER_PRESETS[version]
    for coder in coders:
        assert coder.angle_range == version
        assert (coder.edge_swap, coder.proj_xy, coder.norm_factor) == (
            preset["edge_swap"],
            preset["proj_xy"],
            preset["norm_factor"],
        )
    assert ("atss" in name) == bool(assigners)
    assert all(a.angle_version == version for a in assigners)
    # hbb configs assign on the circumscribed box in the config's own version; obb ones on the obb
    assert circum[0] == (version if "hbb" in name or "r3det" in name else None)
    assert all(c is None for c in circum[1:])  # R3Det's refine stage assigns on the obb


@pytest.mark.parametrize("family", ["rotated_atss_obb", "rotated_retinanet_obb"])
@pytest.mark.parametrize(("src", "dst"), [("le90", "le135"), ("le135", "le90")])
def test_angle_version_override_is_the_sibling_config(family, src, dst):
    def without_names(cfg: dict) -> dict:
        return {k: v for k, v in cfg.items() if k not in ("name", "source")}

    overridden = load_config(f"{family}_r50_fpn_1x_dota_{src}", [f"angle_version={dst}"])
    assert without_names(overridden) == without_names(load_config(f"{family}_r50_fpn_1x_dota_{dst}"))


@pytest.mark.parametrize(
    "override",
    [
        "model.bbox_head.bbox_coder.angle_range=le135",
        "model.train_cfg.assigner.angle_version=oc",
        "model.bbox_head.assign_by_circumhbbox=oc",
    ],
)
def test_nested_angle_version_that_disagrees_is_an_error_naming_both(override):
    with pytest.raises(ValueError) as err:
        load_config("rotated_atss_obb_r50_fpn_1x_dota_le90", [override])
    key, value = override.split("=")
    assert key in str(err.value) and repr(value) in str(err.value) and "'le90'" in str(err.value)


def test_build_model_checks_a_hand_edited_resolved_config():
    cfg = load_config("rotated_atss_obb_r50_fpn_1x_dota_le90", TINY)
    cfg["angle_version"] = "le135"  # the nested values still say le90
    with pytest.raises(ValueError, match="disagrees with the top-level angle_version='le135'"):
        build_model(cfg)


def test_explicit_coder_value_wins_over_the_preset():
    cfg = load_config("rotated_atss_obb_r50_fpn_1x_dota_le90", ["model.bbox_head.bbox_coder.edge_swap=false"])
    assert cfg["model"]["bbox_head"]["bbox_coder"]["edge_swap"] is False
    assert cfg["model"]["bbox_head"]["bbox_coder"]["proj_xy"] is True
    assert resolve_angle_version(cfg) == cfg  # idempotent


def test_base_includes_merge_delete_and_report_files(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "angle_version: oc\nmodel: {a: 1, nested: {x: 1, y: 2}, gone: {p: 1}}\nlist: [1, 2]\n"
    )
    (tmp_path / "mid.yaml").write_text("_base_: base.yaml\nmodel: {nested: {y: 3}}\n")
    (tmp_path / "top.yaml").write_text(
        "_base_: [mid.yaml]\nmodel: {gone: {_delete_: true, q: 2}}\nlist: [9]\nname: top\n"
    )
    cfg = load_config(tmp_path / "top.yaml")
    assert cfg["model"] == {"a": 1, "nested": {"x": 1, "y": 3}, "gone": {"q": 2}}
    assert cfg["list"] == [9] and next(iter(cfg)) == "name"

    (tmp_path / "missing.yaml").write_text("_base_: [nope.yaml]\nmodel: {}\n")
    with pytest.raises(ValueError, match=r"missing\.yaml: _base_ file not found: .*nope\.yaml"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "loop.yaml").write_text("_base_: [loop.yaml]\nmodel: {}\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "loop.yaml")


def _imports_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("argv", [["--help"], ["split", "--help"], ["make-toy", "--help"]])
def test_help_does_not_import_torch(argv):
    code = f"from rotdet.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert "torch" not in _imports_after(code)


def test_ops_do_not_load_the_engine():
    loaded = _imports_after("import rotdet.ops")
    assert not any(m.startswith(("rotdet.engine", "rotdet.models", "rotdet.data")) for m in loaded)


def test_python_dash_m_rotdet():
    out = subprocess.run([sys.executable, "-m", "rotdet", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("rotdet ")


def test_config_command_prints_the_resolved_config(capsys):
    from rotdet.cli import main

    assert main(["config", "rotated_atss_hbb_r50_fpn_1x_dota_oc", "angle_version=le90"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == load_config("rotated_atss_hbb_r50_fpn_1x_dota_oc", ["angle_version=le90"])
    assert printed["model"]["bbox_head"]["bbox_coder"]["angle_range"] == "le90"
    assert main(["config", "--list"]) == 0
    assert set(SEED_CONFIGS) <= set(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("override", "value"),
    [("optimizer.lr=1e-4", 1e-4), ("optimizer.lr=5E-3", 5e-3), ("optimizer.weight_decay=1.0e-4", 1e-4)],
)
def test_numbers_in_any_usual_spelling_are_numbers(override, value):
    cfg = load_config("rotated_atss_obb_r50_fpn_1x_dota_le90", [override])
    key = override.split("=")[0].split(".")[1]
    assert cfg["optimizer"][key] == value and isinstance(cfg["optimizer"][key], float)


def test_numbers_in_config_files_too(tmp_path):
    (tmp_path / "c.yaml").write_text(f"_base_: [{CONFIG_YAML}]\noptimizer: {{lr: 2e-4}}\n")
    assert load_config(tmp_path / "c.yaml")["optimizer"]["lr"] == 2e-4


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=abc", "a number"),
        ("data.samples_per_gpu=two", "a number"),
        ("data.img_scale=256", "a list"),
        ("model.bbox_head.num_classes=abc", "a number"),
        ("model.backbone.pretrained=[1]", "a boolean"),
    ],
)
def test_wrong_typed_override_names_key_and_expected_type(override, expected):
    with pytest.raises(ValueError) as err:
        load_config("rotated_atss_obb_r50_fpn_1x_dota_le90", [override])
    assert f"'{override.split('=')[0]}' expects {expected}" in str(err.value)


def test_flip_ratio_takes_a_number_or_a_list():
    cfg = load_config("rotated_atss_obb_r50_fpn_1x_dota_le90", ["data.train_flip.flip_ratio=0.5"])
    assert cfg["data"]["train_flip"]["flip_ratio"] == 0.5
