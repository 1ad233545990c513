"""Batched dense-head inference equals mmrotate's image-by-image post-processing."""

from __future__ import annotations

import math

import torch

from rotdet.configs import load_config
from rotdet.models.factory import build_model
from rotdet.ops import multiclass_nms_rotated
from rotdet.structures import RotatedDetections


def image_by_image(head, cls_scores, bbox_preds, anchors, metas, cfg):
    """mmrotate's ``_get_bboxes_single`` for each image in turn (the reference)."""
    results = []
    for i, meta in enumerate(metas):
        boxes_l, scores_l = [], []
        for cls, reg, anc in zip(cls_scores, bbox_preds, anchors, strict=True):
            scores = cls[i].permute(1, 2, 0).reshape(-1, head.num_classes).sigmoid()
            deltas = reg[i].permute(1, 2, 0).reshape(-1, 5)
            if 0 < cfg.nms_pre < scores.shape[0]:
                top = scores.max(dim=1).values.topk(cfg.nms_pre).indices
                anc, deltas, scores = anc[top], deltas[top], scores[top]
            boxes_l.append(head.bbox_coder.decode(anc, deltas, max_shape=meta["img_shape"][:2]))
            scores_l.append(scores)
        boxes, scores = torch.cat(boxes_l), torch.cat(scores_l)
        boxes = torch.cat([boxes[:, :4] / torch.tensor(meta["scale_factor"]), boxes[:, 4:]], dim=1)
        dets, labels, _ = multiclass_nms_rotated(boxes, scores, cfg.score_thr, cfg.iou_thr, cfg.max_per_img)
        results.append(RotatedDetections(dets[:, :5], dets[:, 5], labels))
    return results


def test_batched_detections_equal_image_by_image_ones():
    torch.manual_seed(0)
    name = "rotated_retinanet_obb_r50_fpn_1x_dota_le90"  # nine anchors per location
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
    # nms_pre cuts the first levels (320 locations x 9 anchors); max_per_img cuts the second config.
    cfg_a = type(cfg)(nms_pre=120, score_thr=cfg.score_thr, iou_thr=cfg.iou_thr, max_per_img=2000)
    cfg_b = type(cfg)(nms_pre=60, score_thr=cfg.score_thr, iou_thr=0.3, max_per_img=20)
    with torch.no_grad():
        cls_scores, bbox_preds = model(images)
        anchors = head.grid_anchors([c.shape[-2:] for c in cls_scores], "cpu")
        for test_cfg in (cfg_a, cfg_b):
            expected = image_by_image(head, cls_scores, bbox_preds, anchors, metas, test_cfg)
            got = head.predict(cls_scores, bbox_preds, metas, rescale=True, cfg=test_cfg)
            assert sum(len(e.scores) for e in expected) > 20
            assert any(len(e.scores) == 20 for e in expected) or test_cfg is cfg_a
            for g, e in zip(got, expected, strict=True):
                torch.testing.assert_close(g.boxes, e.boxes, rtol=0, atol=0)
                # sigmoid over a [B, N, C] tensor may round the last bit differently from [N, C]
                torch.testing.assert_close(g.scores, e.scores, rtol=1e-6, atol=0)
                assert torch.equal(g.labels, e.labels)


def test_box_branch_skipped_where_no_score_passes():
    """On a CPU the detectors run a head's box branch only on levels where some score passes the
    threshold: the detections are bit-identical to running both branches everywhere."""
    from rotdet.models.detectors import R3Det

    def both_branches(model, images):
        images, metas = model._prepare(images, None)
        if isinstance(model, R3Det):
            *_, (i, (cls, reg), rois) = model._stages(model.extract_feat(images))
            return model.refine_head[i].predict(cls, reg, metas, rescale=True, anchors=rois)
        cls, reg = model.bbox_head(model.extract_feat(images))
        return model.bbox_head.predict(cls, reg, metas, rescale=True)

    overrides = {
        "model.backbone.pretrained": False,
        "model.backbone.depth": 18,
        "model.neck.in_channels": None,
    }
    for name in ("rotated_atss_obb_r50_fpn_1x_dota_le90", "r3det_r50_fpn_1x_dota_oc"):
        torch.manual_seed(0)
        model = build_model(load_config(name, overrides)).eval()
        head = model.refine_head[-1] if isinstance(model, R3Det) else model.bbox_head
        images = torch.randn(2, 3, 128, 160)
        calls = []
        hook = head.retina_reg.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        counts = []
        # No score passes, then a few (on some levels only), then many on every level.
        thr = math.log(0.05 / 0.95)
        for bias in (-4.6, thr - 0.3, thr - 0.1, thr - 0.03, thr - 0.01, 2.0):
            torch.nn.init.constant_(head.retina_cls.bias, bias)
            with torch.no_grad():
                expected = both_branches(model, images)
                calls.clear()
                got = model.predict(images)
            counts.append((sum(len(e.scores) for e in expected), len(calls)))
            for g, e in zip(got, expected, strict=True):
                for key in ("boxes", "scores", "labels"):
                    assert torch.equal(getattr(g, key), getattr(e, key)), (name, bias, key)
        hook.remove()
        assert counts[0] == (0, 0) and counts[-1][1] == 5 and counts[-1][0] > 0, counts
        assert any(dets > 0 and 0 < levels < 5 for dets, levels in counts), counts
