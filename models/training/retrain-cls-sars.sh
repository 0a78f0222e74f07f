#!/usr/bin/env bash
# EXPERIMENT, NOT SHIPPED (issue 17): retrains the classifier only (covid-resnet "0.3" candidate) on the shipped
# lesion model 0.2 with real negatives from sars-cov-2-ct-slices, into a SEPARATE models folder ($MODELS_OUT), and
# scores it per source. It never writes models/. Evaluated on 2026-12-04 and rejected (MODEL_CARD.md, "Classifier
# retraining with real negatives"): better on single slices, but whole normal and pneumonia volumes became covid-19-like.
#   phantoms (make-dataset.ts)
#   -> train the classifier (train_real.py --reuse-seg checkpoints/seg.pt --sars: COVID-SemiSeg slices, phantoms and the
#      sars-cov-2-ct-slices training split; operating point on its validation split)
#   -> export (export.py --classifier-only --models $MODELS_OUT) -> check (check-onnx.mjs $MODELS_OUT)
#   -> cross-source check (train_real.py --cross-source: no COVID-SemiSeg slice; scored on COVID-SemiSeg)
#   -> evaluate_sources.py on $MODELS_OUT (sars-cov-2-ct-slices test split, COVID-SemiSeg, covid-ct-md volumes)
# Usage: models/training/retrain-cls-sars.sh   (env: CLS_ITERS CLS_BATCH MIN_SPEC LR THREADS MODELS_OUT; ~30 min on 2 cores)
# VOLUMES="covid/P002=1 normal/normal002=0 cap/cap002=0" (folders of ../shared/data/covid-ct-md) adds real whole volumes
# as training stacks (train_real.py --volume), dumped with the service's own preprocessing (dump-volume.ts); SKIP_CROSS=1
# skips the cross-source run; INIT_CLS=checkpoints/cls.pt fine-tunes the shipped classifier instead of training anew.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-/usr/bin/python3}"
DATA="${DATA:-$HERE/data}"
WORK="${WORK:-$HERE/work/cls-sars}"
CLS_ITERS="${CLS_ITERS:-4000}"
CLS_BATCH="${CLS_BATCH:-32}"
MIN_SPEC="${MIN_SPEC:-0.98}"
LR="${LR:-0.002}"
THREADS="${THREADS:-2}"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

"$PY" -c 'import torch, onnx, PIL' || { echo "needs PyTorch, onnx and PIL for $PY (Debian: python3-torch python3-onnx python3-pil)"; exit 1; }
[ -d "$ROOT/../shared/data/covid-slices-pseudo" ] || { echo "needs the real slices in ../shared/data (see its README)"; exit 1; }
[ -d "$ROOT/../shared/data/sars-cov-2-ct-slices" ] || { echo "needs ../shared/data/sars-cov-2-ct-slices (see its README)"; exit 1; }
rm -rf "$WORK"
mkdir -p "$DATA" "$WORK"
stamp "phantoms: train 24 (seed 1), validation 12 (seed 2) -> $DATA"
for split in "train 24 1" "val 12 2"; do
  set -- $split
  rm -rf "$DATA/$1"
  node --import tsx "$HERE/make-dataset.ts" --out "$DATA/$1" --count "$2" --seed "$3" > "$WORK/dataset-$1.log"
done
# the shipped lesion model and its training figures (train_real.py --reuse-seg reads train-summary.json beside it)
mkdir -p "$WORK/seg0"
cp "$HERE/checkpoints/seg.pt" "$HERE/checkpoints/train-summary.json" "$WORK/seg0/"
SEG="$WORK/seg0/seg.pt"
# a copy of the shipped models to export the candidate into
MODELS_OUT="${MODELS_OUT:-$WORK/models-candidate}"
mkdir -p "$MODELS_OUT/training/checkpoints"
cp -r "$ROOT/models/"*.onnx "$ROOT/models/manifest.json" "$ROOT/models/MODEL_CARD.md" "$ROOT/models/parity" "$MODELS_OUT/"
cp "$HERE/checkpoints/"* "$MODELS_OUT/training/checkpoints/"
VOLUME_ARGS=()
for v in ${VOLUMES:-}; do
  dir="${v%=*}"
  stamp "dump the service's model inputs for covid-ct-md/$dir"
  node --import tsx "$HERE/dump-volume.ts" --out "$WORK/volumes/$dir" "$ROOT/../shared/data/covid-ct-md/$dir" > "$WORK/dump.log"
  VOLUME_ARGS+=(--volume "$WORK/volumes/$v")
done
stamp "train the classifier (sars-cov-2-ct-slices + COVID-SemiSeg + phantoms${VOLUMES:+ + real volumes: $VOLUMES})"
"$PY" "$HERE/train_real.py" --phantoms "$DATA" --work "$WORK" --reuse-seg "$SEG" --sars --min-spec "$MIN_SPEC" "${VOLUME_ARGS[@]}" ${INIT_CLS:+--init-cls "$INIT_CLS"} \
  --cls-iters "$CLS_ITERS" --cls-batch "$CLS_BATCH" --lr "$LR" --threads "$THREADS" | tee "$WORK/train.log"
stamp "export"
"$PY" "$HERE/export.py" --work "$WORK" --models "$MODELS_OUT" --classifier-only 2>&1 | grep -v -i 'warn\|_C._jit\|jit_utils' | tee "$WORK/export.log"
node "$HERE/check-onnx.mjs" "$MODELS_OUT"
if [ -z "${SKIP_CROSS:-}" ]; then
stamp "cross-source check (no COVID-SemiSeg slice in training; not shipped)"
"$PY" "$HERE/train_real.py" --phantoms "$DATA" --work "$WORK/cross" --reuse-seg "$SEG" --sars --cross-source --min-spec "$MIN_SPEC" \
  --cls-iters 2500 --cls-batch "$CLS_BATCH" --lr "$LR" --threads "$THREADS" | tee "$WORK/train-cross.log"
"$PY" "$HERE/evaluate_sources.py" --checkpoints "$WORK/cross" --no-parity --no-volumes \
  --threshold "$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['threshold'])" "$WORK/cross/train-summary.json")" \
  --out "$WORK/evaluate-sources-cross.json" > "$WORK/evaluate-cross.log"
fi
stamp "evaluate the candidate per source"
CROSS_ARGS=()
[ -f "$WORK/evaluate-sources-cross.json" ] && CROSS_ARGS=(--cross "$WORK/evaluate-sources-cross.json")
"$PY" "$HERE/evaluate_sources.py" --models "$MODELS_OUT" --card "${CROSS_ARGS[@]}" \
  ${BASELINE:+--baseline "$BASELINE"} --out "$WORK/evaluate-sources.json" | tail -n 3
stamp "done: candidate in $MODELS_OUT (models/ untouched); figures in $WORK/evaluate-sources*.json"
