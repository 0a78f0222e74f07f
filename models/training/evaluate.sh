#!/usr/bin/env bash
# Evaluates the current models (models/training/checkpoints = the weights in models/*.onnx) on the real test data
# and the synthetic test split; rewrites models/MODEL_CARD.md, roc.png, roc.csv and the test metrics in
# models/manifest.json. Regenerates the phantom test split (seed 3, deterministic) when it is missing.
# Usage: models/training/evaluate.sh   (env: DATA)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-/usr/bin/python3}"
DATA="${DATA:-$HERE/data}"
if [ ! -f "$DATA/test/index.jsonl" ] || [ "$(wc -l < "$DATA/test/index.jsonl")" -ne 24 ]; then
  rm -rf "$DATA/test"
  nice -n 19 node --import tsx "$HERE/make-dataset.ts" --out "$DATA/test" --count 24 --seed 3 > /dev/null
fi
node "$HERE/check-onnx.mjs" "$ROOT/models"
mkdir -p "$HERE/work"
node --import tsx "$HERE/lung-dice.ts" > "$HERE/work/lung-dice.json"
nice -n 19 "$PY" "$HERE/evaluate_real.py" --phantoms "$DATA" --models "$ROOT/models" --lung-dice "$HERE/work/lung-dice.json"
