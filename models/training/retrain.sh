#!/usr/bin/env bash
# Retrains ctgate's screening models (0.2) from scratch:
#   phantoms (make-dataset.ts: synthetic negatives and covid-like studies the project makes itself)
#   -> train (train_real.py: real COVID-19 slices from ../shared/data + phantom slices)
#   -> export (export.py: ONNX, parity fixtures, manifest) -> check (check-onnx.mjs: onnxruntime-node vs PyTorch)
#   -> evaluate (evaluate_real.py: real test split, real negatives, phantom test split, lung Dice -> MODEL_CARD.md)
# Usage: models/training/retrain.sh   (env: SEG_ITERS CLS_ITERS LR THREADS; ~25-40 min on 2 cores)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-/usr/bin/python3}"
DATA="${DATA:-$HERE/data}"
WORK="${WORK:-$HERE/work}"
SEG_ITERS="${SEG_ITERS:-3000}"
CLS_ITERS="${CLS_ITERS:-800}"
LR="${LR:-0.002}"
THREADS="${THREADS:-2}"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

"$PY" -c 'import torch, onnx, PIL' || { echo "needs PyTorch, onnx and PIL for $PY (Debian: python3-torch python3-onnx python3-pil)"; exit 1; }
[ -d "$ROOT/../shared/data/covid-slices-pseudo" ] || { echo "needs the real slices in ../shared/data (see its README)"; exit 1; }
rm -rf "$DATA" "$WORK"
mkdir -p "$DATA" "$WORK"
stamp "phantoms: train 24 (seed 1), validation 12 (seed 2), test 24 (seed 3) -> $DATA"
for split in "train 24 1" "val 12 2" "test 24 3"; do
  set -- $split
  node --import tsx "$HERE/make-dataset.ts" --out "$DATA/$1" --count "$2" --seed "$3" > "$WORK/dataset-$1.log"
done
stamp "train"
"$PY" "$HERE/train_real.py" --phantoms "$DATA" --work "$WORK" --seg-iters "$SEG_ITERS" --cls-iters "$CLS_ITERS" --lr "$LR" --threads "$THREADS" | tee "$WORK/train.log"
stamp "export"
"$PY" "$HERE/export.py" --work "$WORK" --models "$ROOT/models" 2>&1 | grep -v -i 'warn\|_C._jit\|jit_utils' | tee "$WORK/export.log"
node "$HERE/check-onnx.mjs" "$ROOT/models"
stamp "evaluate"
node --import tsx "$HERE/lung-dice.ts" > "$WORK/lung-dice.json"
"$PY" "$HERE/evaluate_real.py" --phantoms "$DATA" --models "$ROOT/models" --lung-dice "$WORK/lung-dice.json" | tee "$WORK/evaluate.log"
stamp "done: models/lesion-unetpp.onnx, models/covid-resnet.onnx, models/manifest.json, models/MODEL_CARD.md"
