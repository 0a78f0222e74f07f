#!/usr/bin/env bash
# Retrains ctgate's reference models from scratch on synthetic data the project makes itself:
#   dataset (make-dataset.ts) -> train (train.py) -> export (export.py: ONNX, parity fixtures, manifest)
#   -> evaluate (evaluate.py: test metrics, real-slice Dice, MODEL_CARD.md, roc.png/csv)
# Usage: models/training/retrain.sh        (from anywhere; everything runs at nice 19 on 2 threads)
# Sizes can be changed with env vars: TRAIN_COUNT VAL_COUNT TEST_COUNT SEG_ITERS CLS_EPOCHS LR
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-/usr/bin/python3}"
DATA="${DATA:-$HERE/data}"
WORK="${WORK:-$HERE/work}"
TRAIN_COUNT="${TRAIN_COUNT:-64}"
VAL_COUNT="${VAL_COUNT:-16}"
TEST_COUNT="${TEST_COUNT:-32}"
SEG_ITERS="${SEG_ITERS:-250}"
CLS_EPOCHS="${CLS_EPOCHS:-25}"
LR="${LR:-0.002}"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

"$PY" -c 'import torch, onnx' || { echo "needs PyTorch and onnx for $PY (Debian: python3-torch python3-onnx)"; exit 1; }
rm -rf "$DATA" "$WORK"
mkdir -p "$DATA" "$WORK"
stamp "dataset: train $TRAIN_COUNT (seed 1), validation $VAL_COUNT (seed 2), test $TEST_COUNT (seed 3) -> $DATA"
# Two generator processes at once (the machine has 2 cores).
nice -n 19 node --import tsx "$HERE/make-dataset.ts" --out "$DATA/train" --count "$TRAIN_COUNT" --seed 1 > "$WORK/dataset-train.log" &
p1=$!
( nice -n 19 node --import tsx "$HERE/make-dataset.ts" --out "$DATA/val" --count "$VAL_COUNT" --seed 2 &&
  nice -n 19 node --import tsx "$HERE/make-dataset.ts" --out "$DATA/test" --count "$TEST_COUNT" --seed 3 ) > "$WORK/dataset-eval.log" &
p2=$!
wait $p1
wait $p2
stamp "train"
nice -n 19 "$PY" "$HERE/train.py" --data "$DATA" --work "$WORK" --seg-iters "$SEG_ITERS" --cls-epochs "$CLS_EPOCHS" --lr "$LR" | tee "$WORK/train.log"
stamp "export"
nice -n 19 "$PY" "$HERE/export.py" --work "$WORK" --models "$ROOT/models" 2>&1 | grep -v -i 'warn\|_C._jit\|jit_utils' | tee "$WORK/export.log"
node "$HERE/check-onnx.mjs" "$ROOT/models"
stamp "evaluate"
nice -n 19 "$PY" "$HERE/evaluate.py" --data "$DATA" --models "$ROOT/models" | tee "$WORK/evaluate.log"
stamp "done: models/lesion-unetpp.onnx, models/covid-resnet.onnx, models/manifest.json, models/MODEL_CARD.md"
