"""Does pretraining transfer? Fine-tune the bundled model and the same architecture from random weights.

AqSolDB, scaffold split 80/10/10, identical settings, seeds 0..N-1 (the seed drives the split, the
initialization and the data order). Writes per-run and mean/sd test RMSE, MAE and R2 to JSON and prints
a markdown table.

    python benchmarks/bench_transfer.py [--seeds 3] [--epochs 4] [--out benchmarks/results/transfer.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from smilesformer import DataConfig, TrainConfig
from smilesformer.workflow import environment_info, run_finetune

MODELS = {"pretrained (bundled)": "smilesformer-moses", "random init (same architecture)": "random:smilesformer-moses"}
METRICS = ("rmse", "mae", "r2", "pearson_r")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runs", default="runs/transfer", help="folder for the run folders")
    parser.add_argument("--out", default="benchmarks/results/transfer.json")
    args = parser.parse_args()

    runs: list[dict] = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        # AqSolDB has 2 SMILES RDKit rejects (pentavalent N); they are skipped and listed in bad_rows.csv
        data = DataConfig("aqsoldb", split="scaffold", fractions=(0.8, 0.1, 0.1), seed=seed, bad_input="skip")
        for label, model in MODELS.items():
            train = TrainConfig(epochs=args.epochs, early_stopping_patience=args.patience, learning_rate=args.lr,
                                batch_size=args.batch_size, seed=seed, progress=False,
                                descriptors="none")  # what the encoder learned, with nothing beside it
            out = Path(args.runs) / f"{model.replace(':', '_')}_seed{seed}"
            result = run_finetune(data, model, train, out)
            test = result.metrics["test"]["per_target"]["Solubility"]
            epochs_run = json.loads((out / "history.json").read_text())[-1]["epoch"]
            runs.append({"model": label, "seed": seed, "epochs_run": epochs_run,
                         "train_seconds": result.metrics["train_seconds"], **{k: test[k] for k in METRICS}})
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for label in MODELS:
        rows = [r for r in runs if r["model"] == label]
        summary[label] = {k: {"mean": statistics.mean(r[k] for r in rows),
                              "sd": statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0} for k in METRICS}
    report = {"settings": vars(args), "runs": runs, "summary": summary,
              "wall_seconds": round(time.perf_counter() - started, 1), "environment": environment_info()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("\n| model | RMSE | MAE | R2 | Pearson r |\n|---|---|---|---|---|")
    for label, s in summary.items():
        cells = " | ".join(f"{s[k]['mean']:.3f} ± {s[k]['sd']:.3f}" for k in METRICS)
        print(f"| {label} | {cells} |")


if __name__ == "__main__":
    main()
