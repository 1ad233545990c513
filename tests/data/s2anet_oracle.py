"""Record mmrotate 0.3.4's S2A-Net (``s2anet_r50_fpn_1x_dota_le135``) for ``tests/test_s2anet.py``.

Needs the reference oracle's venv and harness (``../shared/reference/README.md``); the inputs are the
harness's (``dump_model.make_inputs``: seeded image and ground truths, ``poly2obb_np`` le135), the
weights mmrotate's init for the seed (or after ``--train-steps`` SGD steps on that image, so that
scores are peaked and the default ``score_thr`` keeps detections)::

    $REF/venv/bin/python -W ignore tests/data/s2anet_oracle.py $REF/oracle DIR/s2anet_r50_fpn_1x_dota_le135
    ROTDET_ORACLE_DIR=DIR pytest tests/test_s2anet.py

Writes ``model.pth`` (the state dict), ``oracle.npz`` (``img``, ``gt_bboxes``, ``gt_labels``,
``loss.<name>`` per level, ``fam.cls_score.l{i}`` / ``fam.bbox_pred.l{i}``, ``rois.l{i}``,
``odm.cls_score.l{i}`` / ``odm.bbox_pred.l{i}``, and per test variant ``det.<v>`` ``[N, 7]``,
``det.<v>.prenms_bboxes`` / ``prenms_scores`` and ``det.<v>.cfg``) and ``keys.json`` (state-dict
keys and shapes, the record in ``tests/mmrotate_s2anet_state_dict_keys.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

NAME = "s2anet_r50_fpn_1x_dota_le135"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("harness", help="the reference oracle's folder ($REF/oracle)")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--img-size", type=int, default=512)
    p.add_argument("--num-gts", type=int, default=5)
    p.add_argument("--train-steps", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--low-nms-pre", type=int, default=0, help="also a score_thr 0 variant with this nms_pre")
    args = p.parse_args()
    sys.path.insert(0, args.harness)
    import numpy as np
    import torch
    from common import apply_cpu_patches, find_config
    from dump_model import (
        dets_to_array,
        img_metas_for,
        loss_to_np,
        make_inputs,
        seed_everything,
        strip_pretrained,
        train_steps,
    )
    from mmcv import Config
    from mmrotate.models import build_detector

    apply_cpu_patches()
    cfg = strip_pretrained(Config.fromfile(find_config(NAME)))
    args.out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    model = build_detector(cfg.model)
    model.init_weights()
    size = (args.img_size, args.img_size)
    metas = img_metas_for(size)
    _, img_np, _, _, gt_np, _, lab_np = make_inputs(cfg, args.seed, size, args.num_gts, 15, "le135")
    img, gt_bboxes, gt_labels = (
        torch.from_numpy(img_np),
        [torch.from_numpy(gt_np)],
        [torch.from_numpy(lab_np)],
    )
    if args.train_steps:
        args.backward = False
        train_steps(model, cfg, img, metas, gt_bboxes, gt_labels, args, args.seed)
    state = model.state_dict()
    torch.save(state, args.out / "model.pth")
    (args.out / "keys.json").write_text(json.dumps({k: list(v.shape) for k, v in state.items()}))
    out = {"img": img_np, "gt_bboxes": gt_np, "gt_labels": lab_np, "img_shape": np.array([*size, 3])}

    model.train()
    seed_everything(args.seed)
    losses = model.forward_train(img, metas, gt_bboxes, gt_labels)
    out.update({f"loss.{k}": loss_to_np(v) for k, v in losses.items()})
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(img)
        fam_cls, fam_reg = model.fam_head(feats)
        rois = model.fam_head.refine_bboxes(fam_cls, fam_reg)
        odm_cls, odm_reg = model.odm_head(model.align_conv(feats, rois))
        for i in range(len(feats)):
            out[f"fam.cls_score.l{i}"], out[f"fam.bbox_pred.l{i}"] = fam_cls[i].numpy(), fam_reg[i].numpy()
            out[f"rois.l{i}"] = rois[0][i].numpy()
            out[f"odm.cls_score.l{i}"], out[f"odm.bbox_pred.l{i}"] = odm_cls[i].numpy(), odm_reg[i].numpy()
        variants = [("default", copy.deepcopy(model.test_cfg))]
        if args.low_nms_pre:
            low = copy.deepcopy(model.test_cfg)
            low.score_thr, low.nms_pre = 0.0, args.low_nms_pre
            variants.append(("low", low))
        for name, test_cfg in variants:
            model.test_cfg = model.odm_head.test_cfg = test_cfg
            out[f"det.{name}"] = dets_to_array(model.simple_test(img, metas, rescale=False)[0])
            boxes, scores = model.odm_head._get_bboxes_single(
                [c[0] for c in odm_cls],
                [b[0] for b in odm_reg],
                rois[0],
                metas[0]["img_shape"],
                metas[0]["scale_factor"],
                test_cfg,
                rescale=False,
                with_nms=False,
            )
            out[f"det.{name}.prenms_bboxes"], out[f"det.{name}.prenms_scores"] = boxes.numpy(), scores.numpy()
            out[f"det.{name}.cfg"] = np.array(json.dumps(dict(test_cfg)))
    np.savez(args.out / "oracle.npz", **out)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {float(np.sum(out[f'loss.{k}'])):.4f}" for k in losses))


if __name__ == "__main__":
    main()
