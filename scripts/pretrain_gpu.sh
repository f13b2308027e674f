#!/usr/bin/env bash
# Pretrain smilesformer's foundation model on one GPU machine, from the raw MOSES file to a model folder, in
# about 8 minutes of wall time on an H200 (16 CPU cores for RDKit, bf16 on the GPU).
#
#   1. corpus: MOSES made to exercise the SMILES grammar (stereo, salts, P, I, B, isotopes, randomized
#      SMILES) with every benchmark molecule removed (`smilesformer corpus`; needs the benchmark sets);
#   2. pretrain: MLM (30% masking) + MTR on the "fast" RDKit descriptors, several epochs, bf16;
#   3. the model folder (weights in files of at most 15 MB) and the run's logs are copied to $OUT.
#
# Before: copy the data into the checkout's git-ignored data/ folder (moses_train.csv.gz and the benchmark
# sets, from the shared data folder) and, where RDKit is missing, its wheel into .whl/ (see the device notes).
#   SCALE=tiny bash scripts/pretrain_gpu.sh   # a minute on a CPU: the same steps on 3,000 molecules
#   bash scripts/pretrain_gpu.sh              # the real run
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c "import rdkit" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then  # RDKit only where missing
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export SMILESFORMER_DATA=${SMILESFORMER_DATA:-$PWD/data} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}
WORK=${WORK:-/tmp/smilesformer-gpu}
SCALE=${SCALE:-full}

case "$SCALE" in
    full) LIMIT=(); PRESET=small; EPOCHS=3; BATCH=1024; LR=1.5e-3; SAVE=1000 ;;
    tiny) LIMIT=(--limit 3000); PRESET=tiny; EPOCHS=1; BATCH=64; LR=1e-3; SAVE=20 ;;
    *) echo "SCALE must be full or tiny, got $SCALE" >&2; exit 2 ;;
esac

mkdir -p "$WORK" "$OUT"
started=$(date +%s)
"$PY" -m smilesformer corpus --source "$SMILESFORMER_DATA/moses_train.csv.gz" --out "$WORK/corpus.smi.gz" \
    "${LIMIT[@]}"
cp "$WORK/corpus.smi.gz.json" "$OUT/corpus_report.json"
echo "corpus: $(( $(date +%s) - started )) s"
"$PY" -m smilesformer pretrain --corpus "$WORK/corpus.smi.gz" --out "$WORK/run" --objective mlm+mtr \
    --mlm-probability 0.3 --preset "$PRESET" --epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" \
    --save-steps "$SAVE" --keep-checkpoints 0 --logging-steps 50 --precision auto
echo "corpus + pretraining: $(( $(date +%s) - started )) s"
"$PY" -m smilesformer export "$WORK/run/model" --out "$OUT/model" --max-file-mb 15
cp "$WORK/run/history.json" "$OUT/" 2>/dev/null || true
ls -la "$OUT/model"
