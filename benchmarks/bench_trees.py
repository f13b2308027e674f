"""The blended trees' settings on validation sets: accuracy against fit, save and load seconds.

The trees (``smilesformer.trees``: one HistGradientBoosting model per target on RDKit's 2D descriptors) cost a
fine-tune seconds three times: fitting (scikit-learn's per-iteration overhead dominates on a few thousand
molecules, so the time grows with the iterations, not the cores), writing them with skops and loading them at
predict time. This fits the trees alone, with each candidate setting, on the training molecules of the accuracy
suite's split files and scores them on the validation molecules: RMSE divided by the training labels' standard
deviation (regression), 1 - ROC-AUC (classification), so the data sets weigh alike. Test molecules are not read.

    python benchmarks/bench_trees.py [--datasets aqsoldb,esol,lipophilicity,bace] [--seeds 3]
        [--settings "1000@0.05,500@0.1,300@0.15"]

``N@LR``: max_iter N at learning rate LR, the other parameters as ``trees._params``. Writes
benchmarks/results/trees.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import write_split_file  # noqa: E402

from smilesformer import trees as tree_module  # noqa: E402
from smilesformer.rdkit_descriptors import compute_descriptors, descriptor_names  # noqa: E402


def score(task: str, y: np.ndarray, p: np.ndarray, train_sd: float) -> float:
    if task == "regression":
        return float(np.sqrt(np.mean((y - p) ** 2)) / train_sd)
    from sklearn.metrics import roc_auc_score

    return float(1 - roc_auc_score(y, p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="aqsoldb,esol,lipophilicity,bace")
    parser.add_argument("--split", default="scaffold")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--settings", default="1000@0.05,500@0.1,300@0.15")
    parser.add_argument("--work", type=Path, default=Path("runs/trees"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "trees.json")
    args = parser.parse_args()
    import skops.io as sio
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    settings = [(int(n), float(lr)) for n, lr in (s.split("@") for s in args.settings.split(","))]
    names = descriptor_names("rdkit")
    rows = []
    for dataset in args.datasets.split(","):
        for seed in range(args.seeds):
            path, info = write_split_file(dataset, args.split, seed, None, args.work)
            table = pd.read_csv(path)
            target = info["targets"][0]
            train, valid = table[table["split"] == "train"], table[table["split"] == "val"]
            x_train = compute_descriptors(train["smiles"].tolist(), names)
            x_valid = compute_descriptors(valid["smiles"].tolist(), names)
            y_train, y_valid = train[target].to_numpy(float), valid[target].to_numpy(float)
            regression = info["task"] == "regression"
            for n, lr in settings:
                params = {**tree_module._params(seed), "max_iter": n, "learning_rate": lr}
                started = time.perf_counter()
                if regression:
                    model = HistGradientBoostingRegressor(**params).fit(x_train, y_train)
                    p = model.predict(x_valid)
                else:
                    model = HistGradientBoostingClassifier(**params).fit(x_train, y_train.astype(int))
                    p = model.predict_proba(x_valid)[:, 1]
                fit_seconds = time.perf_counter() - started
                with tempfile.TemporaryDirectory() as tmp:
                    started = time.perf_counter()
                    sio.dump({"models": [model]}, Path(tmp) / "t.skops")
                    save_seconds = time.perf_counter() - started
                    started = time.perf_counter()
                    sio.load(Path(tmp) / "t.skops", trusted=tree_module._TRUSTED)
                    load_seconds = time.perf_counter() - started
                row = {"dataset": dataset, "seed": seed, "setting": f"{n}@{lr:g}", "n_train": len(train),
                       "valid_score": round(score(info["task"], y_valid, p, float(np.std(y_train))), 4),
                       "fit_seconds": round(fit_seconds, 2), "save_seconds": round(save_seconds, 2),
                       "load_seconds": round(load_seconds, 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    frame = pd.DataFrame(rows)
    per_set = frame.groupby(["setting", "dataset"])["valid_score"].mean().unstack()
    summary = frame.groupby("setting")[["valid_score", "fit_seconds", "save_seconds", "load_seconds"]].mean()
    summary["valid_score_by_dataset"] = [per_set.loc[s].round(4).to_dict() for s in summary.index]
    print(summary.round(4).to_string())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/bench_trees.py " + " ".join(sys.argv[1:]),
                                    "objective": "validation RMSE / train label sd (regression), 1 - ROC-AUC; "
                                                 "mean over data sets and seeds",
                                    "summary": summary.round(4).reset_index().to_dict("records"),
                                    "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
