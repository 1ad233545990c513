"""Batched dense-head inference equals mmrotate's image-by-image post-processing."""

from __future__ import annotations

import math

import torch

from rotdet.configs import load_config
from rotdet.models.factory import build_model
from rotdet.models.postprocess import dense_detections


def test_batched_detections_equal_per_image_ones():
    name = "rotated_retinanet_obb_r50_fpn_1x_dota_le90"  # nine anchors per location
    torch.manual_seed(0)
    overrides = {
        "model.backbone.pretrained": False,
        "model.backbone.depth": 18,
        "model.neck.in_channels": None,
    }
    model = build_model(load_config(name, overrides)).eval()
    head = model.bbox_head
    # Scores around the threshold, so that NMS has work to do.
    torch.nn.init.constant_(head.retina_cls.bias, math.log(0.05 / 0.95))
    images = torch.randn(3, 3, 128, 160)
    metas = [
        {"img_shape": (128, 160, 3), "scale_factor": [1.0, 1.0, 1.0, 1.0]},
        {"img_shape": (120, 150, 3), "scale_factor": [0.5, 0.5, 0.5, 0.5]},
        {"img_shape": (96, 160, 3), "scale_factor": [2.0, 1.5, 2.0, 1.5]},
    ]
    cfg = head.test_cfg
    # nms_pre cuts the first levels (320 locations x A anchors); max_per_img cuts the second config.
    cfg_a = type(cfg)(nms_pre=120, score_thr=cfg.score_thr, iou_thr=cfg.iou_thr, max_per_img=2000)
    cfg_b = type(cfg)(nms_pre=60, score_thr=cfg.score_thr, iou_thr=0.3, max_per_img=20)
    with torch.no_grad():
        cls_scores, bbox_preds = model(images)
        anchors = [
            a[None].expand(3, -1, -1) for a in head.grid_anchors([c.shape[-2:] for c in cls_scores], "cpu")
        ]
        for test_cfg in (cfg_a, cfg_b):
            expected = head.predict(cls_scores, bbox_preds, metas, rescale=True, cfg=test_cfg)
            got = dense_detections(
                cls_scores,
                bbox_preds,
                anchors,
                head.bbox_coder.decode,
                head.num_classes,
                metas,
                test_cfg.nms_pre,
                test_cfg.score_thr,
                test_cfg.iou_thr,
                test_cfg.max_per_img,
                rescale=True,
            )
            assert sum(len(e["scores"]) for e in expected) > 20
            for g, e in zip(got, expected, strict=True):
                torch.testing.assert_close(g["boxes"], e["boxes"], rtol=0, atol=0)
                # sigmoid over a [B, N, C] tensor may round the last bit differently from [N, C]
                torch.testing.assert_close(g["scores"], e["scores"], rtol=1e-6, atol=0)
                assert torch.equal(g["labels"], e["labels"])
