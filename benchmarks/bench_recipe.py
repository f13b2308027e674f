"""Which default recipe: plain head, descriptor head, either with the tree blend, on validation sets only.

For each data set and seed (the accuracy suite's split files), two fine-tunes with the package defaults:
SMILES only (``descriptors="none"``) and the descriptor head (``descriptors="rdkit"``), both with the trees
(``trees="gbm"``, fitted on the training molecules alone). From each run's validation outputs it scores the
head alone, the trees alone and the blend. The blend's weight is cross-fitted (5 folds of the validation
molecules, each scored with the weight chosen on the other four, on ``trees.WEIGHT_GRID`` with the
package's own ``choose_weights``): choosing it on the molecules it is scored on would flatter the trees.
Score as ``tune.py``'s: validation RMSE / training labels' sd (regression), 1 - ROC-AUC (classification),
mean over data sets; lower is better. Test molecules are never read. Each finished run keeps its
validation outputs in ``--work`` and is reused on a rerun. Writes ``benchmarks/results/recipe[_TAG].json``.
Predict molecules/s per recipe is ``bench_descriptors.py``'s (it streams each recipe's head).

    python benchmarks/bench_recipe.py [--datasets esol,bace] [--seeds 2] [--model smilesformer-moses]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import hardware, write_split_file  # noqa: E402

from smilesformer import DataConfig, TrainConfig, run_finetune  # noqa: E402
from smilesformer.config import DEFAULT_MODEL  # noqa: E402
from smilesformer.tasks import ModelMeta, compute_metrics  # noqa: E402

HEADS = ("none", "rdkit")
RECIPES = ("plain head", "plain head + trees", "descriptor head", "descriptor head + trees", "trees alone")
FOLDS = 5


def valid_outputs(path: Path, info: dict, model: str, head: str, seed: int, work: Path, settings: dict) -> dict:
    """Fine-tune one head with trees; its validation labels, head outputs, tree outputs and chosen weights."""
    record = work / "valid_outputs.json"
    if record.is_file():
        return json.loads(record.read_text())
    from smilesformer.predictors import TreeBlend, load_predictor

    data = DataConfig(str(path), smiles_col="smiles", target_cols=info["targets"], task=info["task"],
                      split="column", split_col="split")
    started = time.perf_counter()
    train = TrainConfig(seed=seed, progress=False, descriptors=head, trees="gbm", **settings)
    result = run_finetune(data, model, train, work)
    seconds = time.perf_counter() - started
    blend = load_predictor(result.out_dir / "model")
    while not isinstance(blend, TreeBlend):  # the uncertainty wrapper sits around it
        blend = blend.inner
    table = pd.read_csv(path)
    valid = table[table["split"] == "val"]
    smiles = valid["smiles"].tolist()
    out = {"y": valid[info["targets"]].to_numpy(float).tolist(),
           "head": blend.inner.outputs(smiles)[0].tolist(), "trees": blend.tree_outputs(smiles).tolist(),
           "chosen_weights": blend.meta.tree_weights, "seconds": round(seconds, 1),
           "epochs_run": json.loads((result.out_dir / "history.json").read_text())[-1].get("epoch"),
           "train_label_sd": float(table.loc[table["split"] == "train", info["targets"]].std().mean())}
    shutil.rmtree(result.out_dir / "model", ignore_errors=True)  # keep the record, not the weights
    record.write_text(json.dumps(out))
    return out


def cross_fitted_blend(meta, y: np.ndarray, head: np.ndarray, trees: np.ndarray, seed: int) -> tuple[np.ndarray, list]:
    """Each validation fold blended with the weights ``choose_weights`` picks on the other folds."""
    from smilesformer.trees import choose_weights

    blended, weights = np.empty_like(head), []
    for fit, score in KFold(FOLDS, shuffle=True, random_state=seed).split(head):
        w = choose_weights(meta, y[fit], head[fit], trees[fit])
        weights.append(w)
        cols = meta.layout.output_columns(meta, w)
        blended[score] = cols * head[score] + (1 - cols) * trees[score]
    return blended, weights


def score(task: str, y: np.ndarray, p: np.ndarray, sd: float) -> float:
    """tune.py's objective for one data set: valid RMSE / train label sd, or 1 - ROC-AUC (means over targets),
    from the package's own metrics (the figures a run's metrics.json holds)."""
    mean = compute_metrics(ModelMeta(task=task, targets=[f"y{j}" for j in range(y.shape[1])]), y, p)["mean"]
    return float(mean["rmse"]) / sd if task == "regression" else 1.0 - float(mean["roc_auc"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="esol,bace")
    parser.add_argument("--split", default="scaffold")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--epochs", type=int, default=None, help="TrainConfig's default unless given")
    parser.add_argument("--patience", type=int, default=None, help="TrainConfig's default unless given")
    parser.add_argument("--sample", type=float, default=None, help="a fraction of each data set (smoke runs)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--work", type=Path, default=Path("runs/recipe"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    from smilesformer.tasks import ModelMeta

    settings = {k: v for k, v in (("epochs", args.epochs), ("early_stopping_patience", args.patience))
                if v is not None}
    started, rows = time.perf_counter(), []
    for dataset in args.datasets.split(","):
        for seed in range(args.seeds):
            path, info = write_split_file(dataset, args.split, seed, args.sample, args.work)
            runs = {head: valid_outputs(path, info, args.model, head, seed,
                                        args.work / f"{dataset}_{args.split}_seed{seed}" / head, settings)
                    for head in HEADS}
            meta = ModelMeta(task=info["task"], targets=info["targets"])  # binary or regression: the suite's sets
            sd = runs["none"]["train_label_sd"]
            outputs, weights = {}, {}
            for head, name in (("none", "plain head"), ("rdkit", "descriptor head")):
                y, a, b = (np.asarray(runs[head][k], dtype=float) for k in ("y", "head", "trees"))
                outputs[name] = a
                outputs[f"{name} + trees"], weights[f"{name} + trees"] = cross_fitted_blend(meta, y, a, b, seed)
            outputs["trees alone"] = np.asarray(runs["none"]["trees"], dtype=float)
            for recipe in RECIPES:
                rows.append({"dataset": dataset, "seed": seed, "recipe": recipe,
                             "score": round(score(info["task"], y, outputs[recipe], sd), 4),
                             "fold_weights": weights.get(recipe)})
            for head in HEADS:
                rows.append({"dataset": dataset, "seed": seed, "recipe": f"run {head}",
                             "chosen_weights": runs[head]["chosen_weights"], "seconds": runs[head]["seconds"],
                             "epochs_run": runs[head]["epochs_run"]})
    scores = pd.DataFrame([r for r in rows if "score" in r])
    by_seed = scores.groupby(["recipe", "seed"], sort=False)["score"].mean().unstack()
    summary = [{"recipe": recipe, "score": round(float(by_seed.loc[recipe].mean()), 4),
                "score_by_seed": [round(float(v), 4) for v in by_seed.loc[recipe]],
                "score_by_dataset": {d: round(float(v), 4) for d, v in
                                     scores[scores["recipe"] == recipe].groupby("dataset")["score"].mean().items()}}
               for recipe in RECIPES]
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "results"},
              "command": "python benchmarks/bench_recipe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "objective": "mean over data sets of valid RMSE / train label sd (regression), 1 - valid ROC-AUC; "
                           f"blend weights cross-fitted over {FOLDS} validation folds",
              "summary": summary, "runs": rows, "hardware": hardware(),
              "wall_seconds": round(time.perf_counter() - started, 1)}
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / (f"recipe_{args.tag}.json" if args.tag else "recipe.json")
    out.write_text(json.dumps(report, indent=2))
    print(pd.DataFrame(summary).to_string(index=False), f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
