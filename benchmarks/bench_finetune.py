"""Speed of the demo's fine-tuning and of prediction: molecules/s trained and predicted, peak RSS.

Runs the demo's fine-tuning (10% of AqSolDB, 80/20 split, 5 epochs) with smilesformer's defaults
(dynamic padding, length-grouped batches) and, for comparison, with every batch padded to the model's
max length in input order (what simpletransformers does); then predicts all of AqSolDB.

    python benchmarks/bench_finetune.py [--model NAME] [--out benchmarks/results/finetune.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from smilesformer import DataConfig, SmilesModel
from smilesformer.config import demo_train_config
from smilesformer.data import load_dataset
from smilesformer.networks import bundled_model_path
from smilesformer.workflow import run_finetune


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smilesformer-moses" if bundled_model_path() else "random:small")
    parser.add_argument("--out", default="benchmarks/results/finetune.json")
    parser.add_argument("--skip-padded", action="store_true", help="skip the pad-to-max comparison run")
    args = parser.parse_args()

    data = DataConfig("aqsoldb", fractions=(0.8, 0.0, 0.2), sample=0.1, seed=0)
    results: dict = {"model": args.model, "torch_threads": torch.get_num_threads(), "cpu": platform.processor(),
                     "python": platform.python_version()}
    variants = [("dynamic_padding_length_grouped", {})]
    if not args.skip_padded:
        variants.append(("padded_to_max_length", {"pad_to_max_length": True, "group_by_length": False}))
    for name, overrides in variants:
        config = demo_train_config()
        for key, value in overrides.items():
            setattr(config, key, value)
        config.progress = False
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            run = run_finetune(data, args.model, config, tmp)
            wall = time.perf_counter() - started
            test = run.metrics["test"]["per_target"]["Solubility"]
            results[name] = {"train_molecules_per_second": run.metrics["train_molecules_per_second"],
                             "train_seconds": run.metrics["train_seconds"], "wall_seconds": round(wall, 1),
                             "test_mse": round(test["mse"], 4), "test_pearson_r": round(test["pearson_r"], 4)}
            if name == variants[0][0]:
                model = SmilesModel.from_pretrained(run.model_dir)
                smiles = load_dataset(DataConfig("aqsoldb", bad_input="skip")).table["smiles"].tolist()
                started = time.perf_counter()
                model.predict(smiles)
                seconds = time.perf_counter() - started
                results["predict"] = {"molecules": len(smiles), "seconds": round(seconds, 2),
                                      "molecules_per_second": round(len(smiles) / seconds, 1)}
    if "padded_to_max_length" in results:
        results["training_speedup_vs_padded"] = round(
            results["dynamic_padding_length_grouped"]["train_molecules_per_second"]
            / results["padded_to_max_length"]["train_molecules_per_second"], 2)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
