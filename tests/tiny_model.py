"""Config overrides that shrink ``demo_atss_le90`` to a model that trains and runs in a blink:
ResNet-18, 32-channel neck and a one-conv head, 128 px images (shared by the engine tests)."""

TINY_MODEL = [
    "model.backbone.pretrained=false",
    "model.bbox_head.feat_channels=32",
    "model.bbox_head.stacked_convs=1",
    "model.bbox_head.norm_cfg=null",
    "model.neck.out_channels=32",
    "model.bbox_head.in_channels=32",
    "data.img_scale=[128,128]",
]
