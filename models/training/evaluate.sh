#!/usr/bin/env bash
# Evaluates the current models (models/training/checkpoints = the weights in models/*.onnx) on the held-out
# synthetic test split and the real COVID-19 slices; rewrites models/MODEL_CARD.md, roc.png, roc.csv and the
# test metrics in models/manifest.json. Regenerates the test split (seed 3, deterministic) when it is missing.
# Usage: models/training/evaluate.sh   (env: TEST_COUNT, default 32; DATA)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-/usr/bin/python3}"
DATA="${DATA:-$HERE/data}"
TEST_COUNT="${TEST_COUNT:-32}"
if [ ! -f "$DATA/test/index.jsonl" ] || [ "$(wc -l < "$DATA/test/index.jsonl")" -ne "$TEST_COUNT" ]; then
  rm -rf "$DATA/test"
  nice -n 19 node --import tsx "$HERE/make-dataset.ts" --out "$DATA/test" --count "$TEST_COUNT" --seed 3 > /dev/null
fi
node "$HERE/check-onnx.mjs" "$ROOT/models"
nice -n 19 "$PY" "$HERE/evaluate.py" --data "$DATA" --models "$ROOT/models"
