"""The readers agree: the same ToyDOTA scenes as DOTA, YOLO-OBB and HRSC2016 files train a tiny model
to the same losses (same objects, different files), with flips and PolyRandomRotate in the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_model import TINY_MODEL

from rotdet.configs import load_config
from rotdet.data.toy import make_toy
from rotdet.engine.train import TrainOptions, train

FORMATS = ("dota", "yolo-obb", "hrsc")
SPLITS = {
    "dota": {"ann_dir": "labelTxt", "img_dir": "images"},
    "hrsc": {
        "ann_dir": "FullDataSet/Annotations",
        "img_dir": "FullDataSet/AllImages",
        "ann_file": "ImageSets/trainval.txt",
    },
}


def _cfg(root: Path, fmt: str) -> dict:
    cfg = load_config("demo_atss_le90", [*TINY_MODEL, "data.samples_per_gpu=2", "data.workers_per_gpu=0"])
    data = cfg["data"]
    for split in ("train", "val", "test"):
        del data[split]
        if fmt in SPLITS:
            data[split] = dict(SPLITS[fmt])
    data.update(format=fmt, root=str(root / fmt), classes="toy")
    if fmt == "yolo-obb":
        data.update(yaml=str(root / fmt / "data.yaml"), classes="yaml")
    data["train_rotate"] = {"rotate_ratio": 0.5, "angles_range": 180, "rect_classes": [4, 5]}
    return cfg


def test_dota_yolo_hrsc_encodings_train_to_the_same_losses(tmp_path):
    for fmt in FORMATS:
        make_toy(tmp_path / fmt, fmt, 4, seed=3, size=(128, 128))
    runs = {}
    for fmt in FORMATS:
        opts = TrainOptions(
            work_dir=tmp_path / "work" / fmt,
            max_iters=3,
            log_interval=1,
            eval_interval=0,
            device="cpu",
            progress=False,
            deterministic=True,
            seed=7,
        )
        result = train(_cfg(tmp_path, fmt), opts)
        losses = [
            {k: v for k, v in r.items() if k.startswith(("loss", "s0", "sr"))}
            for r in result.history
            if r["mode"] == "train"
        ]
        state = torch.load(tmp_path / "work" / fmt / "latest.pth", map_location="cpu", weights_only=False)
        runs[fmt] = (losses, state["state_dict"])
    ref_losses, ref_state = runs["dota"]
    assert len(ref_losses) == 3 and all(r for r in ref_losses)
    for fmt in FORMATS[1:]:
        losses, state = runs[fmt]
        assert losses == ref_losses, fmt
        assert all(torch.equal(state[k], ref_state[k]) for k in ref_state), fmt


@pytest.mark.parametrize("fmt", ["yolo-obb", "hrsc"])
def test_val_sets_agree_too(tmp_path, fmt):
    from rotdet.data import build_dataset

    for f in ("dota", fmt):
        make_toy(tmp_path / f, f, 2, seed=5, size=(96, 96))
    a, b = build_dataset(_cfg(tmp_path, "dota"), "val"), build_dataset(_cfg(tmp_path, fmt), "val")
    assert a.img_ids == b.img_ids
    for i in range(len(a)):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["img"], sb["img"]) and torch.equal(sa["gt_bboxes"], sb["gt_bboxes"])
