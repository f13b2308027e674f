"""Fine-tuning and pretraining data-parallel (DDP) under `torchrun --nproc_per_node 2` on the CPU (gloo),
as on several GPUs or nodes: the run must be one DDP run (steps halve), written once, and load and predict."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch.distributed as dist

from smilesformer import SmilesModel
from smilesformer.embeddings import embed, load_encoder

from .conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

MOSES = SHARED_DATA / "moses_train.csv.gz"


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 -m smilesformer ...` (a free port, so parallel runs do not clash)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "smilesformer", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_finetune_ddp(esol50_path, esol50, tmp_path):
    out = tmp_path / "run"
    torchrun("finetune", "--data", str(esol50_path), "--target", "logS", "--model", "random:tiny", "--epochs", "2",
             "--batch-size", "32", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(math.isfinite(v) for v in metrics["test"]["per_target"]["logS"].values())
    # 40 training molecules, 32 per process and step: one step per epoch with 2 processes (two alone).
    history = json.loads((out / "history.json").read_text())
    assert max(h["step"] for h in history) == 2
    assert not (out / "checkpoints").exists()
    model = SmilesModel.from_pretrained(out / "model")
    preds = model.predict(esol50["smiles"].tolist())
    assert np.isfinite(preds["logS_pred"]).all() and (preds["error"] == "").all()


@pytest.mark.skipif(not MOSES.is_file(), reason="../shared/data/moses_train.csv.gz not present")
def test_pretrain_ddp(tmp_path):
    corpus = tmp_path / "corpus.smi"
    with gzip.open(MOSES, "rt") as fh:
        next(fh)  # header
        corpus.write_text("".join(next(fh).split(",")[0] + "\n" for _ in range(200)))
    out = tmp_path / "pretrain"
    torchrun("pretrain", "--corpus", str(corpus), "--out", str(out), "--preset", "tiny", "--max-steps", "6",
             "--batch-size", "16", "--logging-steps", "1", "--save-steps", "3", "--lr", "5e-4")
    summary = json.loads((out / "model" / "pretrain_summary.json").read_text())
    assert summary["throughput"]["world_size"] == 2 and summary["steps"] == 6
    losses = [h["loss"] for h in json.loads((out / "history.json").read_text()) if "loss" in h]
    # A per-process mean, not scaled by the number of processes: about ln(vocabulary) at the start.
    vocab = json.loads((out / "model" / "config.json").read_text())["vocab_size"]
    assert all(math.isfinite(x) for x in losses) and losses[0] < math.log(vocab) + 1
    assert losses[-1] < losses[0]
    assert summary["corpus"]["kept"] == 200
    emb = embed(load_encoder(out / "model", device="cpu"), ["CCO", "c1ccccc1N"])
    assert np.isfinite(emb.vectors).all()
    model = SmilesModel.from_pretrained(out / "model", task="regression", targets=["y"])
    assert np.isfinite(model.predict(["CCO"])["y_pred"]).all()
