#!/usr/bin/env bash
# Teacher training runs for the scaling figures, started side by side on one multi-GPU host.
#
#   experiments/ddp_scaling/ddp_scaling.sh gpu1-s0:0:0 gpu1-s1:1:33000 gpu2-s0:2,3:0
#
# Each argument is NAME:GPUS:SEED (GPUS a CUDA_VISIBLE_DEVICES list, one rank per GPU; SEED the
# --start-seed: initial weights and first simulated scene). Every run trains the segmentation
# teacher for $STEPS steps at the same global batch ($GLOBAL_BATCH, split over its ranks), 15
# simulation workers per rank, scores 48 validation scans every 250 steps and 200 test scans at
# the end. Logs, curves and checks land in $OUT_ROOT/NAME; experiments/ddp_scaling/summarize_ddp.py reads them.
set -u
OUT_ROOT=${OUT_ROOT:-/tmp/ddp}
STEPS=${STEPS:-4000}
GLOBAL_BATCH=${GLOBAL_BATCH:-8}
for run in "$@"; do
  IFS=: read -r name gpus seed <<< "$run"
  n=$(awk -F, '{print NF}' <<< "$gpus")
  mkdir -p "$OUT_ROOT/$name"
  echo "$name: GPUs $gpus, seed $seed, batch $((GLOBAL_BATCH / n)) x $n" | tee "$OUT_ROOT/$name/run.txt"
  CUDA_VISIBLE_DEVICES=$gpus torchrun --standalone --nproc_per_node "$n" \
    -m airside_perception.training.train --arch teacher --tasks segmentation --steps "$STEPS" \
    --no-export --lr 2e-3 --batch $((GLOBAL_BATCH / n)) --workers 15 --start-seed "$seed" \
    --check-every 250 --check-scans 48 --final-check-scans 200 --out-dir "$OUT_ROOT/$name" \
    > "$OUT_ROOT/$name/train.log" 2>&1 &
done
wait
for run in "$@"; do
  name=${run%%:*}
  tail -3 "$OUT_ROOT/$name/train.log"
  cat "$OUT_ROOT/$name/check.csv" 2>/dev/null | tail -2
done
