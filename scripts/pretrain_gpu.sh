#!/usr/bin/env bash
# Pretrain smilesformer's foundation model on one GPU machine, from the raw MOSES file to a model folder, within
# MINUTES of wall time (default 8), most of them training (16 CPU cores for RDKit, bf16 on the GPU):
#
#   1. corpus: the whole of MOSES (1.58M molecules) made to exercise the SMILES grammar (stereo, salts, P, I, B,
#      isotopes, randomized SMILES), every benchmark molecule removed, and the MTR descriptors computed in the
#      same pass, one RDKit parse per molecule (`smilesformer corpus --descriptors mtr`); with STREAM=1 (the
#      default) it runs in the background on all cores but 4, writing shards of SHARD molecules as they are made;
#   2. pretrain: MLM (30% masking) + MTR in bf16, with `--max-minutes` set to what is left of the window less
#      the export: it fits its steps to the time left and decays the learning rate to zero on the last of them.
#      With STREAM=1 it starts on the first shard and reads the others as they come (STREAM=0: after the corpus);
#   3. the model folder is packed into $OUT as model.tar.gz.part-* (files of at most 15 MB; `cat` them back
#      together and untar), with breakdown.json: where the window's seconds went.
#
# Before: copy the data into the checkout's git-ignored data/ folder (moses_train.csv.gz and the benchmark
# sets, from the shared data folder) and, where RDKit is missing, its wheel into .whl/ (see the device notes).
#   SCALE=tiny MINUTES=2 bash scripts/pretrain_gpu.sh   # a CPU check: the same steps on 3,000 molecules
#   bash scripts/pretrain_gpu.sh                        # the real run; PRESET=medium for the larger shape
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s.%N)
elapsed() { python3 -c "import time; print(round(time.time() - $start, 1))"; }

PY=${PYTHON:-python3}
if ! "$PY" -c "import rdkit" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then  # RDKit only where missing
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export SMILESFORMER_DATA=${SMILESFORMER_DATA:-$PWD/data} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# The benchmark sets' skeletons (20 s of a 16-core window) travel in data/cache when made beforehand with the same
# RDKit: `SMILESFORMER_CACHE=data/cache smilesformer corpus --source data/moses_train.csv.gz --out /tmp/c.smi --limit 10`
[ -d "$SMILESFORMER_DATA/cache" ] && export SMILESFORMER_CACHE=${SMILESFORMER_CACHE:-$SMILESFORMER_DATA/cache}
OUT=${OUT:-runs/gpu}
WORK=${WORK:-/tmp/smilesformer-gpu}
SCALE=${SCALE:-full}
MINUTES=${MINUTES:-8}
EXPORT_SECONDS=${EXPORT_SECONDS:-20}  # kept at the end of the window for the export and the packing
STREAM=${STREAM:-1}
CORES=$(nproc)
JOBS=$(( CORES > 6 ? CORES - 4 : CORES ))  # streaming: 4 cores left to training's data workers

case "$SCALE" in
    full) LIMIT=(${LIMIT:+--limit "$LIMIT"}); PRESET=${PRESET:-small}; BATCH=1024; SHARD=${SHARD:-50000} ;;
    tiny) LIMIT=(--limit 3000); PRESET=${PRESET:-tiny}; BATCH=64; SHARD=${SHARD:-500} ;;
    *) echo "SCALE must be full or tiny, got $SCALE" >&2; exit 2 ;;
esac
case "$PRESET" in  # peak learning rates: small's is the one the shared GPU model was trained at
    medium|base) LR=${LR:-1e-3} ;;
    *) LR=${LR:-1.5e-3} ;;
esac

rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
CORPUS=(-m smilesformer corpus --source "$SMILESFORMER_DATA/moses_train.csv.gz" --out "$WORK/corpus.smi.gz"
        --descriptors mtr "${LIMIT[@]}")
if [ "$STREAM" = 1 ]; then
    "$PY" "${CORPUS[@]}" --shards "$SHARD" --n-jobs "$JOBS" > "$WORK/corpus.log" 2>&1 &
    corpus_pid=$!
    until [ -f "$WORK/corpus.smi.gz.shards/manifest.json" ]; do  # the corpus has started writing
        kill -0 "$corpus_pid" 2>/dev/null || { cat "$WORK/corpus.log" >&2; exit 1; }
        sleep 0.2
    done
else
    "$PY" "${CORPUS[@]}"
fi
corpus_done=$(elapsed)  # streaming: when pretraining may start (the corpus goes on beside it)
echo "corpus started writing: $corpus_done s"
# What is left of the window, less the export; at least 12 s, so a window the corpus overran still ends with a model.
left=$(python3 -c "print(round(max(($MINUTES * 60 - $corpus_done - $EXPORT_SECONDS) / 60, 0.2), 3))")
# Epochs only bound the run: the budget decides how many steps it takes.
"$PY" -m smilesformer pretrain --corpus "$WORK/corpus.smi.gz" --out "$WORK/run" --objective mlm+mtr \
    --mlm-probability 0.3 --preset "$PRESET" --epochs 50 --batch-size "$BATCH" --lr "$LR" --max-minutes "$left" \
    --save-steps 1000000 --keep-checkpoints 1 --logging-steps 200 --precision auto
pretrain_done=$(elapsed)
echo "corpus + pretraining: $pretrain_done s"
corpus_rc=0
if [ "$STREAM" = 1 ]; then  # a corpus that failed half way leaves a model trained on its first shards: export it
    wait "$corpus_pid" || { corpus_rc=$?; echo "the corpus step failed (exit $corpus_rc):" >&2; cat "$WORK/corpus.log" >&2; }
fi
"$PY" -m smilesformer export "$WORK/run/model" --out "$WORK/model" --max-file-mb 15
cp "$WORK/run/history.json" "$WORK/model/" 2>/dev/null || true
tar -C "$WORK" -czf - model | split -b 15M - "$OUT/model.tar.gz.part-"
export_done=$(elapsed)
[ -f "$WORK/corpus.smi.gz.json" ] || echo '{"kept": null, "seconds": null, "stage_seconds": null}' > "$WORK/corpus.smi.gz.json"
"$PY" - "$WORK/model/pretrain_summary.json" "$WORK/corpus.smi.gz.json" "$corpus_done" "$pretrain_done" \
    "$export_done" "$MINUTES" "$PRESET" "$STREAM" <<'PYTHON' | tee "$OUT/breakdown.json"
import json, sys
summary, corpus = (json.load(open(p)) for p in sys.argv[1:3])
corpus_s, pretrain_s, export_s, minutes = (float(v) for v in sys.argv[3:7])
budget = summary["budget"] or {}
training = budget.get("training_seconds", 0.0)
preparation = budget.get("preparation_seconds", 0.0)
window = minutes * 60
print(json.dumps({
    "window_seconds": window, "preset": sys.argv[7], "streamed": sys.argv[8] == "1", "molecules": corpus["kept"],
    "corpus_seconds": corpus["seconds"], "corpus_stages": corpus["stage_seconds"],
    "training_started_at": round(corpus_s + preparation, 1), "pretrain_preparation_seconds": preparation,
    "training_seconds": training, "writing_seconds": round(pretrain_s - corpus_s - preparation - training, 1),
    "export_seconds": round(export_s - pretrain_s, 1), "total_seconds": export_s,
    "preparation_share": round((corpus_s + preparation) / window, 3),
    "training_share": round(training / window, 3),
    "steps": summary["steps"], "molecules_presented": summary["molecules_presented"],
    "epochs_done": summary["epochs_done"], "stopped": budget.get("stopped"),
    "throughput": summary["throughput"], "hardware": summary["hardware"]}, indent=2))
PYTHON
ls -la "$OUT"
exit "$corpus_rc"
