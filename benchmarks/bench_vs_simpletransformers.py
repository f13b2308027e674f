"""Fine-tuning speed against the seed notebook's tool: ``smilesformer finetune`` vs simpletransformers.

The notebook's task (10% of AqSolDB, 80/20 random split, 5 epochs, regression) on the same random-init model
with the same byte-level BPE tokenizer (vocab.json + merges.txt, as ChemBERTa's checkpoints), on the same rows,
one after the other on the same machine. Two shapes (``--shape``):

- ``small``: smilesformer's `small` preset (ChemBERTa-2's smallest: 3 layers, hidden 384, 12 heads, feed-forward
  768), a BPE of 1,000 tokens learnt on the training SMILES, model_max_length 128 (the bench's model);
- ``chemberta``: shaped like the ChemBERTa checkpoints users bring: 3 layers, hidden 384, 12 heads, feed-forward
  464, a BPE of about 600 tokens learnt on all of AqSolDB, model_max_length 512 (about 24 tokens per molecule).

simpletransformers runs in its own environment (it needs transformers 4; make bench-st-env), and only its
``train_model`` call is timed; smilesformer is timed as the whole command (``python -m smilesformer finetune``),
start-up and writing included, with its defaults on (descriptor head and tree blend for regression). A second
run under ``benchmarks/phases.py`` (``--no-phases`` skips it) says where the command's seconds went and what the
training steps achieve against this machine's fp32 matmul peak; it imports PyTorch before the command starts, so
its start-up and descriptors do not overlap as the plain command's do.

    python benchmarks/bench_vs_simpletransformers.py [--shape small|chemberta] [--st-python .venv-st/bin/python]

Writes benchmarks/results/vs_simpletransformers[_<shape>].json and prints the ratio.
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


SHAPES = {
    "small": {"layers": dict(PRESETS["small"]), "vocab": 1000, "max_length": 128, "bpe_on": "train"},
    "chemberta": {"layers": dict(hidden_size=384, num_hidden_layers=3, num_attention_heads=12, intermediate_size=464),
                  "vocab": 600, "max_length": 512, "bpe_on": "aqsoldb"},
}


def build_model(bpe_smiles: list[str], folder: Path, shape: dict) -> dict:
    """A random-init RoBERTa of ``shape`` with a byte-level BPE tokenizer trained on ``bpe_smiles``."""
    import torch
    from tokenizers.implementations import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizerFast

    folder.mkdir(parents=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(bpe_smiles, vocab_size=shape["vocab"], min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    # vocab= and merges=: transformers 5 takes the files so; it ignores vocab_file= and merges_file= (the names of
    # 4.x) and builds a tokenizer of the 5 special tokens alone, which read every molecule as <unk>.
    tokenizer = RobertaTokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                                     model_max_length=shape["max_length"])
    if len(tokenizer) != bpe.get_vocab_size():
        raise SystemExit(f"the tokenizer holds {len(tokenizer)} tokens, not the BPE's {bpe.get_vocab_size()}")
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=shape["max_length"] + 2,
                           pad_token_id=1, type_vocab_size=1, num_labels=1, problem_type="regression",
                           **shape["layers"])
    torch.manual_seed(0)  # the same initial weights in every run: the two tools' and two versions' MSEs compare
    RobertaForSequenceClassification(config).save_pretrained(folder)
    lengths = [len(ids) for ids in tokenizer(bpe_smiles[:2000])["input_ids"]]
    return {"vocab": len(tokenizer), "tokens_per_molecule": round(sum(lengths) / len(lengths), 1),
            "max_length": shape["max_length"], **shape["layers"]}


def _commit() -> str | None:
    """The commit of the smilesformer this runs (PYTHONPATH may point at another checkout), if it is a git one."""
    import smilesformer

    found = subprocess.run(["git", "-C", str(Path(smilesformer.__file__).parent), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True)
    return found.stdout.strip() or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--st-python", default=str(ROOT / ".venv-st" / "bin" / "python"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--sample", type=float, default=0.1)
    parser.add_argument("--threads", default="auto", help="smilesformer's --threads")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/vs_simpletransformers[_SHAPE].json")
    parser.add_argument("--st", action=argparse.BooleanOptionalAction, default=True,
                        help="time simpletransformers too (--no-st: smilesformer alone, e.g. another version of it)")
    parser.add_argument("--phases", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the command under phases.py for the per-phase seconds (a second run)")
    args = parser.parse_args()
    suffix = "" if args.shape == "small" else f"_{args.shape}"
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"vs_simpletransformers{suffix}.json")
    if args.st and not Path(args.st_python).is_file():
        sys.exit(f"no simpletransformers environment at {args.st_python}: make bench-st-env")

    loaded = load_dataset(DataConfig("aqsoldb", split=SplitKind.random, sample=args.sample, seed=0))
    table = loaded.table.rename(columns={loaded.target_cols[0]: "y"})[["smiles", "y"]].reset_index(drop=True)
    train_idx, _, test_idx = random_split(len(table), (0.8, 0.0, 0.2), seed=0)
    table["split"] = "train"
    table.loc[test_idx, "split"] = "test"
    results: dict = {"shape": args.shape, "rows": len(table), "train_rows": len(train_idx), "epochs": args.epochs,
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores", "smilesformer_commit": _commit()}
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shape = SHAPES[args.shape]
        bpe_smiles = table["smiles"][train_idx].tolist() if shape["bpe_on"] == "train" else \
            load_dataset(DataConfig("aqsoldb", bad_input="skip")).table["smiles"].tolist()
        results["model"] = build_model(bpe_smiles, tmp / "model", shape)
        table.to_csv(tmp / "data.csv", index=False)
        table.iloc[train_idx].to_csv(tmp / "train.csv", index=False)

        command = ["--threads", args.threads, "finetune", "--data", str(tmp / "data.csv"), "--target", "y",
                   "--split", "column", "--split-col", "split", "--model", str(tmp / "model"),
                   "--epochs", str(args.epochs)]
        # The whole command as a user runs it. The phase breakdown comes from a second run under phases.py, which
        # imports PyTorch before the command starts: there the descriptors cannot overlap the import.
        started = time.perf_counter()
        ours = subprocess.run([sys.executable, "-m", "smilesformer", *command, "--out", str(tmp / "ours")],
                              capture_output=True, text=True, env=env)
        results["smilesformer_command_seconds"] = round(time.perf_counter() - started, 1)
        if ours.returncode:
            sys.exit(f"smilesformer finetune failed:\n{ours.stderr[-3000:]}")
        metrics = json.loads((tmp / "ours" / "metrics.json").read_text())
        results["smilesformer_test_mse"] = round(metrics["test"]["mean"]["mse"], 4)
        if args.phases:
            phases = [sys.executable, str(ROOT / "benchmarks" / "phases.py"), "--json", str(tmp / "phases.json"), "--"]
            timed = subprocess.run([*phases, *command, "--out", str(tmp / "phased")], capture_output=True, text=True,
                                   env=env)
            if timed.returncode:
                sys.exit(f"smilesformer finetune under phases.py failed:\n{timed.stderr[-3000:]}")
            results["smilesformer_phases"] = json.loads((tmp / "phases.json").read_text())

        if args.st:
            started = time.perf_counter()
            st = subprocess.run([args.st_python, "-c", ST_SCRIPT, str(tmp / "model"), str(tmp / "train.csv"),
                                 str(tmp / "st"), str(args.epochs)], capture_output=True, text=True, env=env)
            results["simpletransformers_script_seconds"] = round(time.perf_counter() - started, 1)
            if st.returncode:
                sys.exit(f"simpletransformers failed:\n{st.stderr[-3000:]}")
            line = [x for x in st.stdout.splitlines() if x.startswith("{")][-1]
            results["simpletransformers_train_model_seconds"] = round(json.loads(line)["train_model_seconds"], 1)
    if args.st:
        results["speedup"] = round(results["simpletransformers_train_model_seconds"]
                                   / results["smilesformer_command_seconds"], 2)
    results["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
