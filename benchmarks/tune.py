"""A small hyper-parameter search (optuna, TPE sampler) for smilesformer's fine-tuning defaults.

Each trial fine-tunes a model on every listed data set (the seed-0 split files of bench_accuracy.py, or
``--seed``'s)
and scores it on the validation sets only: regression by validation RMSE divided by the training
labels' standard deviation, classification by 1 - ROC-AUC, averaged over data sets so each weighs
alike. Test sets are never read. Writes ``benchmarks/results/tune[_TAG].json`` with every trial and
the best settings.

    python benchmarks/tune.py [--datasets esol,lipophilicity,bace] [--split scaffold] [--trials 20]
        [--epochs 20] [--model smilesformer-moses]

``--grid "learning_rate=5e-5,1e-4,2e-4"`` tries every combination of the listed TrainConfig settings (all
others at their defaults) instead of the TPE search. Each trial also keeps every data set's validation
loss per epoch and what early stopping with a smaller patience would have kept, read from the same
curve (exact: a run with patience p is the run with a larger patience cut at its p-th epoch without
improvement), so one run per setting answers the patience and epoch questions too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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


def parse_grid(text: str) -> dict[str, list]:
    """``"learning_rate=5e-5,1e-4;early_stopping_patience=3,5"`` -> values typed as TrainConfig's fields."""
    defaults = TrainConfig()
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    grid = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        name = name.strip()
        if name not in fields:
            raise SystemExit(f"--grid: {name!r} is not a TrainConfig setting; choose from {', '.join(fields)}")
        kind = type(getattr(defaults, name))
        if kind is bool:  # bool("false") is True
            kind = lambda v: v.lower() in ("1", "true", "yes")  # noqa: E731
        grid[name] = [kind(v.strip()) for v in values.split(",") if v.strip()]
        if not grid[name]:
            raise SystemExit(f"--grid: no values for {name!r}; write {name}=v1,v2")
    return grid


def patience_table(history: list[dict], run_patience: int) -> dict:
    """What early stopping with each patience up to the run's own would have stopped at and kept, from the
    run's validation curve (a larger patience than the run's would have seen epochs the run never trained)."""
    losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    table = {}
    for patience in range(1, run_patience + 1):
        best, waited, stop = 0, 0, len(losses)
        for i in range(1, len(losses)):
            if losses[i] < losses[best]:
                best, waited = i, 0
            else:
                waited += 1
                if waited == patience:
                    stop = i + 1
                    break
        table[patience] = {"stopped_at_epoch": stop, "best_epoch": best + 1, "valid_loss": losses[best]}
    return {"valid_loss_per_epoch": losses, "early_stopping": table}


def objective(trial: optuna.Trial, files: dict, args: argparse.Namespace) -> float:
    params = ({name: trial.suggest_categorical(name, values) for name, values in args.grid.items()}
              if args.grid else suggest(trial))
    scores, curves, metrics = {}, {}, {}
    for dataset, (path, info) in files.items():
        data = DataConfig(str(path), smiles_col="smiles", target_cols=info["targets"], task=info["task"],
                          split="column", split_col="split")
        # no trees: their blend weight is picked on these same validation molecules, which would flatter them
        settings = {"epochs": args.epochs, "early_stopping_patience": args.patience, **params}
        train = TrainConfig(seed=args.seed, progress=False, trees="none", **settings)
        result = run_finetune(data, args.model, train, args.work / f"trial{trial.number}" / dataset)
        valid = metrics[dataset] = result.metrics["valid"]["mean"]
        curves[dataset] = patience_table(json.loads((result.out_dir / "history.json").read_text()),
                                         settings["early_stopping_patience"])
        if info["task"] == "regression":
            table = pd.read_csv(path)
            sd = table.loc[table["split"] == "train", info["targets"]].std().mean()
            scores[dataset] = valid["rmse"] / sd
        else:
            scores[dataset] = 1 - valid["roc_auc"]
    trial.set_user_attr("scores", scores)
    trial.set_user_attr("curves", curves)
    trial.set_user_attr("valid_metrics", metrics)
    return sum(scores.values()) / len(scores)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="esol,lipophilicity,bace")
    parser.add_argument("--split", default="scaffold")
    parser.add_argument("--trials", type=int, default=20, help="trials of the TPE search (a --grid runs all)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="split file and training seed (a replicate)")
    parser.add_argument("--grid", type=parse_grid, default={},
                        help='every combination of these settings, e.g. "learning_rate=5e-5,1e-4;batch_size=16,32"')
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sample", type=float, default=None, help="a fraction of each data set (smoke runs)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--work", type=Path, default=Path("runs/tune"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    files = {d: write_split_file(d, args.split, args.seed, args.sample, args.work) for d in args.datasets.split(",")}
    started = time.perf_counter()
    if args.grid:  # every combination once, in a seeded order
        sampler = optuna.samplers.GridSampler(args.grid, seed=0)
        n_trials = math.prod(len(values) for values in args.grid.values())  # --trials is the TPE search's
    else:
        sampler, n_trials = optuna.samplers.TPESampler(seed=0), args.trials
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(lambda trial: objective(trial, files, args), n_trials=n_trials)
    trials = [{"number": t.number, "params": t.params, "value": t.value, "scores": t.user_attrs.get("scores"),
               "valid_metrics": t.user_attrs.get("valid_metrics"), "curves": t.user_attrs.get("curves")}
              for t in study.trials]
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                           if k != "results"},  # where this file is: an absolute path of the machine by default
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
