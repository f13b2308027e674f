"""Fine-tuning speed against the seed notebook's tool: ``smilesformer finetune`` vs simpletransformers.

The notebook's task (10% of AqSolDB, 80/20 random split, 5 epochs, regression) on the same random-init model
of ChemBERTa-2's smallest shape (RoBERTa, 3 layers, hidden 384, 12 heads) with the same byte-level BPE
tokenizer (vocab.json + merges.txt, as ChemBERTa's checkpoints), on the same rows, one after the other on the
same machine. simpletransformers runs in its own environment (it needs transformers 4; make bench-st-env), and
only its ``train_model`` call is timed; smilesformer is timed as the whole command, start-up and writing
included, with its defaults on (descriptor head and tree blend for regression).

    python benchmarks/bench_vs_simpletransformers.py [--st-python .venv-st/bin/python] [--epochs 5]

Writes benchmarks/results/vs_simpletransformers.json and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smilesformer import DataConfig
from smilesformer.config import SplitKind
from smilesformer.data import load_dataset
from smilesformer.networks import PRESETS
from smilesformer.splits import random_split

ROOT = Path(__file__).resolve().parent.parent

ST_SCRIPT = """
import json, sys, time
import pandas as pd
from simpletransformers.classification import ClassificationModel

model_dir, train_csv, out_dir, epochs = sys.argv[1:5]
train = pd.read_csv(train_csv)
train = pd.DataFrame({"text": train["smiles"], "labels": train["y"]})
model = ClassificationModel("roberta", model_dir, num_labels=1, use_cuda=False, args={
    "regression": True, "num_train_epochs": int(epochs), "output_dir": out_dir, "overwrite_output_dir": True,
    "cache_dir": out_dir + "/cache", "use_multiprocessing": False, "use_multiprocessing_for_evaluation": False,
    "silent": True})
started = time.perf_counter()
model.train_model(train)
print(json.dumps({"train_model_seconds": time.perf_counter() - started}))
"""


def build_model(train_smiles: list[str], folder: Path) -> None:
    """A random-init RoBERTa of the `small` shape with a byte-level BPE tokenizer trained on the training SMILES."""
    from tokenizers.implementations import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizerFast

    folder.mkdir(parents=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(train_smiles, vocab_size=1000, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                                     model_max_length=128)
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=130, pad_token_id=1, type_vocab_size=1,
                           num_labels=1, problem_type="regression", **PRESETS["small"])
    RobertaForSequenceClassification(config).save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--st-python", default=str(ROOT / ".venv-st" / "bin" / "python"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--sample", type=float, default=0.1)
    parser.add_argument("--threads", default="auto", help="smilesformer's --threads")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vs_simpletransformers.json"))
    args = parser.parse_args()
    if not Path(args.st_python).is_file():
        sys.exit(f"no simpletransformers environment at {args.st_python}: make bench-st-env")

    loaded = load_dataset(DataConfig("aqsoldb", split=SplitKind.random, sample=args.sample, seed=0))
    table = loaded.table.rename(columns={loaded.target_cols[0]: "y"})[["smiles", "y"]].reset_index(drop=True)
    train_idx, _, test_idx = random_split(len(table), (0.8, 0.0, 0.2), seed=0)
    table["split"] = "train"
    table.loc[test_idx, "split"] = "test"
    results: dict = {"rows": len(table), "train_rows": len(train_idx), "epochs": args.epochs,
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_model(table["smiles"][train_idx].tolist(), tmp / "model")
        table.to_csv(tmp / "data.csv", index=False)
        table.iloc[train_idx].to_csv(tmp / "train.csv", index=False)

        started = time.perf_counter()
        ours = subprocess.run([sys.executable, "-m", "smilesformer", "--threads", args.threads, "finetune",
                               "--data", str(tmp / "data.csv"), "--target", "y", "--split", "column",
                               "--split-col", "split", "--model", str(tmp / "model"), "--epochs", str(args.epochs),
                               "--out", str(tmp / "ours")], capture_output=True, text=True, env=env)
        results["smilesformer_command_seconds"] = round(time.perf_counter() - started, 1)
        if ours.returncode:
            sys.exit(f"smilesformer finetune failed:\n{ours.stderr[-3000:]}")
        metrics = json.loads((tmp / "ours" / "metrics.json").read_text())
        results["smilesformer_test_mse"] = round(metrics["test"]["mean"]["mse"], 4)

        started = time.perf_counter()
        st = subprocess.run([args.st_python, "-c", ST_SCRIPT, str(tmp / "model"), str(tmp / "train.csv"),
                             str(tmp / "st"), str(args.epochs)], capture_output=True, text=True, env=env)
        results["simpletransformers_script_seconds"] = round(time.perf_counter() - started, 1)
        if st.returncode:
            sys.exit(f"simpletransformers failed:\n{st.stderr[-3000:]}")
        line = [x for x in st.stdout.splitlines() if x.startswith("{")][-1]
        results["simpletransformers_train_model_seconds"] = round(json.loads(line)["train_model_seconds"], 1)
    results["speedup"] = round(results["simpletransformers_train_model_seconds"]
                               / results["smilesformer_command_seconds"], 2)
    results["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
