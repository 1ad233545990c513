#!/usr/bin/env bash
# The engine on a GPU, in one run (issue: "On the GPU"): train rotated_atss_obb_r50_fpn_1x_dota_le90
# from scratch on large ToyDOTA scenes split into 1024x1024 patches (gap 200) for a few minutes, test
# it (patch mAP, then merged per scene with the official DOTA protocol), and `rotdet bench` at batch
# 1 and 8. Everything it writes goes under $OUT (default /tmp/gpu_check); the numbers are in
# $OUT/summary.txt.
#
#   bash benchmarks/gpu_engine_check.sh                 # on the GPU machine
#   DEVICE=cpu EPOCHS=1 MAX_ITERS=2 SCENES=1 BENCH_ITERS=1 WARMUP=0 BENCH_SIZE=256 \
#       bash benchmarks/gpu_engine_check.sh                                           # dry run
set -euo pipefail
OUT=${OUT:-/tmp/gpu_check}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-24}
MAX_ITERS=${MAX_ITERS:-}
SCENES=${SCENES:-8}
BENCH_ITERS=${BENCH_ITERS:-30}
WARMUP=${WARMUP:-5}
BENCH_SIZE=${BENCH_SIZE:-1024}
AMP=${AMP:-bf16}
CONFIG=rotated_atss_obb_r50_fpn_1x_dota_le90
DATA=$OUT/data
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

rotdet make-toy --out "$DATA/scenes/train" --flavour large -n "$SCENES" --seed 0
rotdet make-toy --out "$DATA/scenes/val" --flavour large -n 2 --seed 1
rotdet split --preset ss --img-dirs "$DATA/scenes/train/images" --ann-dirs "$DATA/scenes/train/labelTxt" \
    --out "$DATA/split/trainval" --quiet
rotdet split --preset ss --img-dirs "$DATA/scenes/val/images" --ann-dirs "$DATA/scenes/val/labelTxt" \
    --out "$DATA/split/val" --quiet
echo "patches: train $(ls "$DATA/split/trainval/images" | wc -l), val $(ls "$DATA/split/val/images" | wc -l)" | tee -a "$SUMMARY"

# Batch 8 at the seed's lr for batch 2 scaled linearly (--auto-scale-lr); the 1x schedule's shape
# (x0.1 at 2/3 and 11/12 of the run) stretched over EPOCHS short epochs.
STEPS="[$((EPOCHS * 2 / 3)), $((EPOCHS * 11 / 12))]"
TOY=(
  "data.root=$DATA/split"
  "data.classes=[small-vehicle, large-vehicle, ship, bridge, storage-tank, roundabout]"
  "model.bbox_head.num_classes=6"
  "model.backbone.pretrained=false"
  "data.val.ann_dir=val/annfiles"
  "data.val.img_dir=val/images"
  "data.samples_per_gpu=8"
  "data.workers_per_gpu=6"
)
TRAIN_ONLY=("lr_config.step=$STEPS")
EXTRA=()
if [ -n "$MAX_ITERS" ]; then EXTRA+=(--max-iters "$MAX_ITERS"); fi
start=$(date +%s)
rotdet train "$CONFIG" "${TOY[@]}" "${TRAIN_ONLY[@]}" --work-dir "$OUT/train" --device "$DEVICE" --amp "$AMP" \
    --epochs "$EPOCHS" --eval-interval 4 --auto-scale-lr --no-progress --no-resume "${EXTRA[@]}" \
    2>&1 | tee "$OUT/train.out" | grep -v "^epoch" || true
end=$(date +%s)
python - "$OUT/train/log.jsonl" "$((end - start))" <<'EOF' | tee -a "$SUMMARY"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if r["mode"] == "train"]
val = [r for r in rows if r["mode"] == "val"]
print(f"train: {train[-1]['iter']} iterations in {sys.argv[2]} s (all included), peak memory "
      f"{max(r['memory'] for r in train):.0f} MiB, last loss {train[-1]['loss']:.3f}")
print("val mAP by epoch:", [(r["epoch"], round(r["mAP"], 4)) for r in val])
EOF

rotdet test "$CONFIG" "$OUT/train/latest.pth" "${TOY[@]}" --device "$DEVICE" --out "$OUT/test" --no-progress \
    --merge --gt-dir "$DATA/scenes/val/labelTxt" 2>&1 | tail -12 | tee -a "$SUMMARY"

for bs in 1 8; do
  rotdet bench "$CONFIG" --device "$DEVICE" --batch-size "$bs" --iters "$BENCH_ITERS" --warmup "$WARMUP" \
      --img-size "$BENCH_SIZE" --amp none --json "$OUT/bench_b$bs.json" 2>&1 | tail -8 | tee -a "$SUMMARY"
done
rotdet bench "$CONFIG" --device "$DEVICE" --batch-size 2 --iters "$BENCH_ITERS" --warmup "$WARMUP" \
    --img-size "$BENCH_SIZE" --amp none --train --json "$OUT/bench_train.json" 2>&1 | tail -8 | tee -a "$SUMMARY"
echo "done: $SUMMARY"
