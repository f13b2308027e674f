"""A small hyper-parameter search (optuna, TPE sampler) for smilesformer's fine-tuning defaults.

Each trial fine-tunes a model on every listed data set (the seed-0 split files of bench_accuracy.py)
and scores it on the validation sets only: regression by validation RMSE divided by the training
labels' standard deviation, classification by 1 - ROC-AUC, averaged over data sets so each weighs
alike. Test sets are never read. Writes ``benchmarks/results/tune[_TAG].json`` with every trial and
the best settings.

    python benchmarks/tune.py [--datasets esol,lipophilicity,bace] [--split scaffold] [--trials 20]
        [--epochs 20] [--model smilesformer-moses]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import optuna
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import hardware, write_split_file  # noqa: E402

from smilesformer import DataConfig, TrainConfig, run_finetune  # noqa: E402
from smilesformer.config import DEFAULT_MODEL  # noqa: E402


def suggest(trial: optuna.Trial) -> dict:
    """The search space: what the ablation suggests matters for fine-tuning a small pretrained encoder."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 3e-5, 1e-3, log=True),
        "layer_lr_decay": trial.suggest_float("layer_lr_decay", 0.6, 1.0),
        "augment": trial.suggest_categorical("augment", [0, 5, 10]),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32]),
        "descriptors": trial.suggest_categorical("descriptors", ["none", "rdkit"]),
    }


def objective(trial: optuna.Trial, files: dict, args: argparse.Namespace) -> float:
    params = suggest(trial)
    scores = {}
    for dataset, (path, info) in files.items():
        data = DataConfig(str(path), smiles_col="smiles", target_cols=info["targets"], task=info["task"],
                          split="column", split_col="split")
        # no trees: their blend weight is picked on these same validation molecules, which would flatter them
        train = TrainConfig(epochs=args.epochs, early_stopping_patience=args.patience, seed=0, progress=False,
                            trees="none", **params)
        result = run_finetune(data, args.model, train, args.work / f"trial{trial.number}" / dataset)
        valid = result.metrics["valid"]["mean"]
        if info["task"] == "regression":
            table = pd.read_csv(path)
            sd = table.loc[table["split"] == "train", info["targets"]].std().mean()
            scores[dataset] = valid["rmse"] / sd
        else:
            scores[dataset] = 1 - valid["roc_auc"]
    trial.set_user_attr("scores", scores)
    return sum(scores.values()) / len(scores)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="esol,lipophilicity,bace")
    parser.add_argument("--split", default="scaffold")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sample", type=float, default=None, help="a fraction of each data set (smoke runs)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--work", type=Path, default=Path("runs/tune"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    files = {d: write_split_file(d, args.split, 0, args.sample, args.work) for d in args.datasets.split(",")}
    started = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(lambda trial: objective(trial, files, args), n_trials=args.trials)
    trials = [{"number": t.number, "params": t.params, "value": t.value, "scores": t.user_attrs.get("scores")}
              for t in study.trials]
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "objective": "mean over data sets of valid RMSE / train label sd (regression), 1 - valid ROC-AUC",
              "best": {"params": study.best_params, "value": study.best_value}, "trials": trials,
              "hardware": hardware(), "wall_seconds": round(time.perf_counter() - started, 1)}
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / (f"tune_{args.tag}.json" if args.tag else "tune.json")
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["best"]), f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
