#!/usr/bin/env bash
# Evaluates the current models (models/training/checkpoints = the weights in models/*.onnx) on the real test data
# and the synthetic test split (evaluate_real.py), then per source with 95 % CIs (evaluate_sources.py:
# sars-cov-2-ct-slices test split, COVID-SemiSeg doctor test split, covid-ct-md volumes through `ctgate analyze`);
# rewrites models/MODEL_CARD.md, roc.png, roc.csv and the test metrics in models/manifest.json. Regenerates the
# phantom test split (seed 3, deterministic) when it is missing.
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
# Per source: the 0.2 figures (checkpoints/evaluate-sources-0.2.json) and the cross-source model's
# (checkpoints/evaluate-sources-cross.json, written by retrain.sh) are shown beside the shipped model's.
EXTRA=()
[ -f "$HERE/checkpoints/evaluate-sources-0.2.json" ] && EXTRA+=(--baseline "$HERE/checkpoints/evaluate-sources-0.2.json")
[ -f "$HERE/checkpoints/evaluate-sources-cross.json" ] && EXTRA+=(--cross "$HERE/checkpoints/evaluate-sources-cross.json")
nice -n 19 "$PY" "$HERE/evaluate_sources.py" --models "$ROOT/models" --card "${EXTRA[@]}" --out "$HERE/work/evaluate-sources.json" | tail -n 3
