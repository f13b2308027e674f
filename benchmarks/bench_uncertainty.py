"""Uncertainty and domain check of the default model, per candidate method, beside chemprop's own uncertainty.

On the accuracy suite's scaffold split files (``bench_accuracy.write_split_file``: the same train / val / test
molecules as every accuracy figure), it fine-tunes the default recipe (bundled model, descriptor head, trees for
regression) once per data set and seed, then scores every candidate uncertainty on the same predictions:

- ``disagreement``: |transformer - trees| of the blend;
- ``similarity``: 1 - mean Tanimoto similarity to the 5 nearest training molecules (Morgan, radius 2, 2,048 bits);
- ``neighbour_spread``: the similarity-weighted sd of those 5 molecules' labels;
- ``neighbour_disagreement``: |prediction - their similarity-weighted mean label|;
- ``tree_quantiles``: the width of a 5-95% interval from two quantile gradient-boosted tree models on the same
  RDKit descriptors as the blended trees (``--quantiles`` adds it to the saved arrays: two more tree fits);
- ``size``: heavy atoms (``--rescore`` adds it to runs saved before it existed);
- ``embedding``: mean cosine distance of the head's input (the pooled embedding) to its 5 nearest training ones;
- combinations: ``disagreement+similarity``, ``default`` (the signals ``smilesformer`` fits by default,
  ``uncertainty.DEFAULT_SIGNALS``) and ``default-embedding`` (the default without the embedding distance).

The arrays every method is scored from are saved per run (``--work``/<split file>.npz); ``--rescore`` scores the
methods again from them without fine-tuning again.

Each one's weights and 90% interval scale are fitted on the validation set only (``uncertainty.fit_regression``);
its validation Spearman is cross-fitted (weights from the other folds), the figure a method is chosen on. Test
figures: Spearman of the sd with the absolute error beside the value expected were the errors drawn from the
method's own sd (``evaluate.expected_spearman``), coverage and mean width of the 90% interval, the MAE of the most
confident half over the overall, and the errors of molecules flagged out of the domain beside the rest. For
classification: the calibration error, Brier score and accuracy before and after the calibration fitted on
validation, and the accuracy of the most confident half. chemprop (``-t regression-mve`` / classification, its
``--uncertainty-method mve`` / ``classification``, calibrated on the same validation set with ``zscaling`` /
``platt``) is scored by the same code.

    python benchmarks/bench_uncertainty.py [--datasets esol,aqsoldb,lipophilicity,bbbp] [--seeds 3]
        [--aqsoldb-seeds 5] [--epochs 10] [--patience 3] [--chemprop] [--work runs/uncertainty]

Writes ``benchmarks/results/uncertainty.json`` (every run and the means); finished runs are kept in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import chemprop_bin, write_split_file  # noqa: E402

from smilesformer import SmilesModel, TrainConfig  # noqa: E402
from smilesformer.config import DEFAULT_MODEL, Task  # noqa: E402
from smilesformer.descriptors import clear_descriptor_cache  # noqa: E402
from smilesformer.evaluate import confidence_metrics, domain_metrics, uncertainty_metrics  # noqa: E402
from smilesformer.uncertainty import (  # noqa: E402
    DEFAULT_SIGNALS,
    FOLDS,
    POOLED,
    Reference,
    _nnls_fit,
    calibrate,
    fit_regression,
    predicted_sd,
    signal_matrix,
)

METHODS = {"disagreement": ["disagreement"], "similarity": ["dissimilarity"],
           "neighbour_spread": ["neighbour_spread"], "neighbour_disagreement": ["neighbour_disagreement"],
           "embedding": ["embedding"], "disagreement+similarity": ["disagreement", "dissimilarity"],
           "tree_quantiles": ["tree_quantiles"], "size": ["size"],
           "default": list(DEFAULT_SIGNALS), "default-embedding": [n for n in DEFAULT_SIGNALS if n != "embedding"],
           "default+tree_quantiles": [*DEFAULT_SIGNALS, "tree_quantiles"]}


def _oof_spearman(y: np.ndarray, mean: np.ndarray, x: np.ndarray, seed: int) -> float:
    from scipy import stats

    err = np.abs(y - mean)
    fold = np.random.default_rng(seed).permutation(len(err)) % FOLDS
    sd = np.empty(len(err))
    for f in range(FOLDS):
        sd[fold == f] = predicted_sd(_nnls_fit(x[fold != f], err[fold != f]), x[fold == f])
    return float(stats.spearmanr(sd, err)[0]) if np.std(sd) > 0 else float("nan")


def run_smilesformer(path: Path, info: dict, seed: int, args) -> dict:
    table = pd.read_csv(path)
    parts = {name: table[table["split"] == name] for name in ("train", "val", "test")}
    targets = info["targets"]
    task = Task(info["task"])
    smiles = {k: v["smiles"].tolist() for k, v in parts.items()}
    y = {k: v[targets].to_numpy(float) for k, v in parts.items()}
    started = time.perf_counter()
    model = SmilesModel.create(args.model, task, targets, seed=seed)
    model.fit(smiles["train"], y["train"], smiles["val"], y["val"],
              TrainConfig(epochs=args.epochs, early_stopping_patience=args.patience, seed=seed, progress=False))
    fit_seconds = time.perf_counter() - started
    predictor = model.predictor  # Uncertain(TreeBlend(...)) for regression, Uncertain(transformer) otherwise
    inner, fitted = predictor.inner, predictor.fit
    out: dict = {"fit_seconds": round(fit_seconds, 1), "fitted": fitted.to_dict()}
    arrays = {}
    for name in ("val", "test"):
        mean, signals = inner.signals(smiles[name])
        pooled = signals.pop(POOLED, None)  # regression: the reference turns it into the embedding signal
        similarity, near = predictor.reference.signals(smiles[name], mean if task is Task.regression else None,
                                                       pooled)
        signals.update(near)
        arrays.update({f"{name}_y": y[name], f"{name}_mean": mean, f"{name}_similarity": similarity,
                       **{f"{name}_signal_{k}": v for k, v in signals.items()}})
    np.savez_compressed(args.work / f"{path.stem}.npz", **arrays)
    # the predict time of the whole default model beside the same model without the uncertainty (timed here on a
    # machine that may be busy: the closing figure comes from a run on an idle one)
    out["predict_seconds"] = _time_predict(predictor, smiles["test"])
    out.update(score(arrays, task, fitted.to_dict(), seed))
    return out


def add_signals(path: Path, arrays_path: Path, seed: int, quantiles: bool) -> None:
    """Add the ``size`` signal to a run's saved arrays, and with ``quantiles`` the ``tree_quantiles`` one (quantile
    trees fitted on its training rows: minutes for AqSolDB on two cores)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from smilesformer.descriptors import compute_descriptors, descriptor_names
    from smilesformer.trees import _params
    from smilesformer.uncertainty import featurize

    arrays = _load_arrays(arrays_path)
    table = pd.read_csv(path)
    if "val_signal_size" not in arrays:
        for name in ("val", "test"):
            arrays[f"{name}_signal_size"] = featurize(table[table["split"] == name]["smiles"].tolist())[1]
        np.savez_compressed(arrays_path, **arrays)
    if not quantiles or "val_signal_tree_quantiles" in arrays:
        return
    target = [c for c in table.columns if c not in ("smiles", "split")][0]
    names = descriptor_names("rdkit")
    x = {k: compute_descriptors(table[table["split"] == k]["smiles"].tolist(), names) for k in ("train", "val", "test")}
    y = table[table["split"] == "train"][target].to_numpy(float)
    models = [HistGradientBoostingRegressor(loss="quantile", quantile=q, **_params(seed)).fit(x["train"], y)
              for q in (0.05, 0.95)]
    for name in ("val", "test"):
        arrays[f"{name}_signal_tree_quantiles"] = models[1].predict(x[name]) - models[0].predict(x[name])
    np.savez_compressed(arrays_path, **arrays)


def _load_arrays(path: Path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _signals(arrays: dict, name: str) -> dict[str, np.ndarray]:
    prefix = f"{name}_signal_"
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}


def score(arrays: dict, task: Task, fitted: dict, seed: int) -> dict:
    """Every candidate method fitted on the validation arrays and scored on the test ones."""
    vy, vmean, vsig = arrays["val_y"], arrays["val_mean"], _signals(arrays, "val")
    ty, tmean, tsig = arrays["test_y"], arrays["test_mean"], _signals(arrays, "test")
    out: dict = {}
    if task is Task.regression:
        out["methods"] = {}
        for method, names in METHODS.items():
            names = [n for n in names if n != "spread" or "spread" in vsig]  # a spread needs several passes
            if not all(n in vsig for n in names):
                continue
            weights, scales = fit_regression(vy, vmean, vsig, names, seed)
            record = {"valid_spearman_crossfit": _oof_spearman(vy[:, 0], vmean[:, 0],
                                                               signal_matrix(vsig, names, 0), seed)}
            sd = predicted_sd(weights[0], signal_matrix(tsig, names, 0))
            record.update(uncertainty_metrics(ty[:, 0], tmean[:, 0], sd, scales[0]))
            record["weights"] = weights[0]
            out["methods"][method] = record
        error = np.abs(ty[:, 0] - tmean[:, 0])
    else:
        calibrated = calibrate(tmean, fitted["calibration"], False)
        out["raw"] = confidence_metrics(ty[:, 0], tmean[:, 0])
        out["calibrated"] = confidence_metrics(ty[:, 0], calibrated[:, 0])
        error = np.abs(ty[:, 0] - calibrated[:, 0])
    out["domain"] = domain_metrics(arrays["test_similarity"] >= fitted["domain_threshold"], error)
    out["domain"]["threshold"] = fitted["domain_threshold"]
    return out


def idle_timing(args) -> dict:
    """Predict time of a default model with and without its uncertainty, on every molecule of the first data set
    (best of 3): fine-tuned for ``--epochs`` on seed 0's split file. Run it on an idle machine."""
    dataset = args.datasets.split(",")[0]
    path, info = write_split_file(dataset, "scaffold", 0, None, args.work)
    table = pd.read_csv(path)
    parts = {k: table[table["split"] == k] for k in ("train", "val")}
    targets = info["targets"]
    model = SmilesModel.create(args.model, Task(info["task"]), targets, seed=0)
    model.fit(parts["train"]["smiles"].tolist(), parts["train"][targets].to_numpy(float),
              parts["val"]["smiles"].tolist(), parts["val"][targets].to_numpy(float),
              TrainConfig(epochs=args.epochs, early_stopping_patience=args.patience, seed=0, progress=False))
    # what fitting the reference costs at the end of a fine-tune, with and without the training molecules' pooled
    # vectors (one forward pass over them)
    train = parts["train"]["smiles"].tolist()
    labels = parts["train"][targets].to_numpy(float)
    first = model.predictor.members[0]
    fit = {"fingerprints_only": min(_seconds(lambda: Reference.from_smiles(train, labels)) for _ in range(3)),
           "train_molecules": len(train)}
    if info["task"] == "regression":  # classification keeps no pooled vectors
        fit["with_embeddings"] = min(_seconds(lambda: Reference.from_smiles(train, labels, 0,
                                                                             lambda b: first.forward(b)[1]))
                                     for _ in range(3))
    return {"command": " ".join(sys.argv), "dataset": dataset, "reference_fit_seconds": fit,
            **_time_predict(model.predictor, table["smiles"].tolist(), repeats=3)}


def _outputs_without_pooling(predictor, smiles: list[str]):
    """The inner predictor's outputs as a model without the uncertainty computes them: no hook on the head."""
    import smilesformer.predictors as predictors

    real = predictors.head_input_layer
    predictors.head_input_layer = lambda _net: None
    try:
        return predictor.inner.outputs(smiles)
    finally:
        predictors.head_input_layer = real


def _time_predict(predictor, smiles: list[str], repeats: int = 2) -> dict:
    """Best-of-``repeats`` seconds to predict ``smiles`` with and without the uncertainty, each run on molecules
    seen for the first time (the descriptor cache emptied before it), as a user's new molecules are."""
    times = {}
    for name, run in (("default", lambda: predictor.report(smiles)),
                      ("without_uncertainty", lambda: _outputs_without_pooling(predictor, smiles))):
        run()  # warm-up
        best = min(_seconds(run, fresh=True) for _ in range(repeats))
        times[name] = round(best, 3)
    times["ratio"] = round(times["default"] / times["without_uncertainty"], 3)
    times["molecules"] = len(smiles)
    return times


def _seconds(run, fresh: bool = False) -> float:
    if fresh:
        clear_descriptor_cache()
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def run_chemprop(path: Path, info: dict, seed: int, work: Path, args) -> dict:
    """chemprop's own uncertainty on the same split: MVE (regression) or its classification probability, calibrated
    on the validation rows (z-scaling / Platt)."""
    exe = chemprop_bin(args)
    regression = info["task"] == "regression"
    work.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(path)
    for name in ("val", "test"):
        table[table["split"] == name][["smiles", *info["targets"]]].to_csv(work / f"{name}.csv", index=False)
    common = ["--num-workers", "0", "--accelerator", "cpu", "--devices", "1"]
    _run([exe, "train", "--data-path", str(path), "-s", "smiles", "--target-columns", *info["targets"],
          "--splits-column", "split", "-t", "regression-mve" if regression else "classification",
          "--epochs", str(args.chemprop_epochs), "--pytorch-seed", str(seed), "--data-seed", str(seed),
          "--save-dir", str(work / "model"), *common], work / "train.log")
    best = sorted((work / "model").rglob("best*.pt"))[0]
    _run([exe, "predict", "--test-path", str(work / "test.csv"), "-s", "smiles", "--model-paths", str(best),
          "--preds-path", str(work / "test_preds.csv"), "--cal-path", str(work / "val.csv"),
          "--uncertainty-method", "mve" if regression else "classification",
          "--calibration-method", "zscaling" if regression else "platt", *common], work / "predict.log")
    preds = pd.read_csv(work / "test_preds.csv")
    target = info["targets"][0]
    y = pd.read_csv(work / "test.csv")[target].to_numpy(float)
    out = {"columns": preds.columns.tolist()}
    if regression:
        p = preds[target].to_numpy(float)
        unc_col = next(c for c in preds.columns if c != target and c != "smiles" and "unc" in c.lower())
        var = preds[unc_col].to_numpy(float)
        out["uncertainty_column"] = unc_col
        # MVE gives a variance; its square root is the sd whose interval is read at the Gaussian 1.645
        out.update(uncertainty_metrics(y, p, np.sqrt(np.maximum(var, 0))))
    else:
        p = preds[target].to_numpy(float)
        out.update(confidence_metrics(y, p))
    return out


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed; see {log}:\n" + "\n".join(log.read_text().splitlines()[-15:]))


def summarize(runs: list[dict]) -> dict:
    summary: dict = {}
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        rs = [r for r in runs if r["dataset"] == dataset and "smilesformer" in r]
        block: dict = {"seeds": [r["seed"] for r in rs]}

        def mean(values):
            values = [v for v in values if v is not None and np.isfinite(v)]
            return round(float(np.mean(values)), 4) if values else None

        if rs and "methods" in rs[0]["smilesformer"]:
            for method in rs[0]["smilesformer"]["methods"]:
                ms = [r["smilesformer"]["methods"][method] for r in rs if method in r["smilesformer"]["methods"]]
                block[method] = {k: mean([m.get(k) for m in ms]) for k in
                                 ("valid_spearman_crossfit", "spearman_sd_abs_error", "spearman_expected",
                                  "coverage_90", "mean_interval_width", "mae_confident_half_ratio")}
        elif rs:
            for kind in ("raw", "calibrated"):
                block[kind] = {k: mean([r["smilesformer"][kind].get(k) for r in rs]) for k in
                               ("ece", "brier", "accuracy", "accuracy_confident_half")}
        if rs:
            block["domain"] = {k: mean([r["smilesformer"]["domain"].get(k) for r in rs]) for k in
                               ("flagged", "n", "error_flagged", "error_in_domain", "ratio")}
            block["predict_time_ratio"] = mean([r["smilesformer"]["predict_seconds"]["ratio"] for r in rs])
        cp = [r["chemprop"] for r in runs if r["dataset"] == dataset and "chemprop" in r]
        if cp:
            keys = (("spearman_sd_abs_error", "spearman_expected", "coverage_90", "mean_interval_width",
                     "mae_confident_half_ratio") if "coverage_90" in cp[0] else
                    ("ece", "brier", "accuracy", "accuracy_confident_half"))
            block["chemprop"] = {k: mean([c.get(k) for c in cp]) for k in keys} | {"seeds": len(cp)}
        summary[dataset] = block
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="esol,aqsoldb,lipophilicity,bbbp")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--aqsoldb-seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--chemprop", action="store_true", help="also chemprop's own uncertainty")
    parser.add_argument("--chemprop-only", action="store_true", help="chemprop runs only (smilesformer's kept)")
    parser.add_argument("--chemprop-epochs", type=int, default=50)
    parser.add_argument("--rescore", action="store_true", help="score the methods again from the saved arrays")
    parser.add_argument("--quantiles", action="store_true", help="add the tree_quantiles signal to saved arrays")
    parser.add_argument("--only-finished", action="store_true", help="summarize the finished runs, train nothing")
    parser.add_argument("--chemprop-bin", default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/uncertainty"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/uncertainty.json"))
    parser.add_argument("--time-only", action="store_true",
                        help="only the predict time with and without the uncertainty, added to --out")
    args = parser.parse_args()
    if args.time_only:
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        timing = idle_timing(args)
        result.setdefault("idle_timing", {})[timing["dataset"]] = timing
        args.out.write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps(timing, indent=2))
        return
    started = time.perf_counter()
    runs = []
    for dataset in args.datasets.split(","):
        for seed in range(args.aqsoldb_seeds if dataset == "aqsoldb" else args.seeds):
            path, info = write_split_file(dataset, "scaffold", seed, None, args.work)
            record_path = args.work / f"{dataset}_seed{seed}.json"
            record = json.loads(record_path.read_text()) if record_path.is_file() else {}
            if record.get("sha256") != info["sha256"]:
                record = {"dataset": dataset, "seed": seed, "sha256": info["sha256"], "n": info["n"]}
            arrays = args.work / f"{path.stem}.npz"
            if args.rescore and info["task"] == "regression" and arrays.is_file():
                add_signals(path, arrays, seed, args.quantiles)
            if args.rescore and "smilesformer" in record and arrays.is_file():  # new methods, same fine-tune
                record["smilesformer"].update(score(_load_arrays(arrays), Task(info["task"]),
                                                    record["smilesformer"]["fitted"], seed))
                record_path.write_text(json.dumps(record, indent=2))
            if args.only_finished and "smilesformer" not in record:  # summarize what has run, train nothing
                continue
            if "smilesformer" not in record and not args.chemprop_only:
                print(f"{dataset} seed {seed}: smilesformer", flush=True)
                record["smilesformer"] = run_smilesformer(path, info, seed, args)
                record_path.write_text(json.dumps(record, indent=2))
            if (args.chemprop or args.chemprop_only) and "chemprop" not in record:
                print(f"{dataset} seed {seed}: chemprop", flush=True)
                record["chemprop"] = run_chemprop(path, info, seed, args.work / f"chemprop_{dataset}_{seed}", args)
                record_path.write_text(json.dumps(record, indent=2))
            runs.append(record)
    result = {"command": " ".join(sys.argv), "settings": vars(args) | {"work": str(args.work), "out": str(args.out)},
              "hardware": {"machine": platform.machine(), "processor": platform.processor()},
              "wall_seconds": round(time.perf_counter() - started, 1), "summary": summarize(runs), "runs": runs}
    if args.out.is_file() and "idle_timing" in (old := json.loads(args.out.read_text())):
        result["idle_timing"] = old["idle_timing"]  # measured apart, on an idle machine (--time-only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
