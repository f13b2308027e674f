"""Accuracy suite: smilesformer beside a random forest and chemprop, on the same split files.

For every data set, split kind and seed it writes one split file (cleaned SMILES, labels, and a
``split`` column of train / val / test) and trains each model on it:

- ``bundled``: smilesformer fine-tuned from the bundled pretrained model, reading SMILES only;
- ``random``: the same architecture and tokenizer from random weights;
- ``rf``: scikit-learn random forest on Morgan count fingerprints (radius 2, 2048 bits), trained on train;
- ``rf-rdkit``: the same forest on RDKit's 2D descriptors (the features ``--descriptors rdkit`` adds);
- ``gbm-rdkit``: the gradient-boosted trees smilesformer blends in (``--trees gbm``), alone, on the same
  descriptors and with the same settings (``smilesformer.trees``);
- ``chemprop``: chemprop 2.x (``chemprop train`` with ``--splits-column``), from its own environment
  (``make bench-env`` builds ``.venv-chemprop``; its RDKit pin differs from ours);
- ``model:<folder or name>``: smilesformer fine-tuned from any other encoder (a pretraining checkpoint, an
  older bundled model), SMILES only, as ``bundled``;
- variants for ablations: ``bundled+aug=10``, ``+tta=10``, ``+ens=3``, ``+llrd=0.8``, ``+lr=3e-4``, ``+desc=rdkit``,
  ``+trees=gbm``, ``+adapt=mtr``, combinable (``bundled+aug=10+tta=10``).

All models are scored by the same code on the same test rows; smilesformer runs also keep their validation
metrics (the summary's ``valid_*_mean``), the figures a choice between settings is made on. Output:
``benchmarks/results/accuracy[_TAG].json`` (every run, mean and sd, hardware, wall time), ``.csv`` (the summary)
and ``_<split>.png`` bar charts; ``benchmarks/report.py`` renders the tables into BENCHMARKS.md. Finished runs are
kept in ``--work`` and skipped on a rerun, so an interrupted suite continues; ``--only-finished`` trains nothing
and summarizes the runs finished so far (by any number of suites sharing ``--work``), listing the missing ones.

    python benchmarks/bench_accuracy.py [--datasets aqsoldb,esol,lipophilicity,bbbp,bace,clintox]
        [--splits random,scaffold] [--seeds 3] [--aqsoldb-seeds 5]
        [--models bundled,random,rf,chemprop,bundled+desc=rdkit+trees=gbm]
        [--epochs 30] [--chemprop-epochs 50] [--sample 1.0] [--tag NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from smilesformer import DataConfig, TrainConfig, load_dataset
from smilesformer.config import DEFAULT_MODEL, Task
from smilesformer.splits import random_split, scaffold_split
from smilesformer.tasks import ModelMeta, compute_metrics
from smilesformer.workflow import environment_info, run_finetune

DATASETS = ["aqsoldb", "esol", "lipophilicity", "bbbp", "bace", "clintox"]
REGRESSION_METRICS = ("rmse", "mae", "r2")
CLASSIFICATION_METRICS = ("roc_auc", "pr_auc")
FRACTIONS = (0.8, 0.1, 0.1)
VARIANT_KEYS = {"aug": ("augment", int), "tta": ("tta", int), "ens": ("ensemble", int),
                "llrd": ("layer_lr_decay", float), "lr": ("learning_rate", float), "ep": ("epochs", int),
                "desc": ("descriptors", str), "trees": ("trees", str), "adapt": ("adapt", str)}
BASE_MODELS = ("bundled", "random", "rf", "rf-rdkit", "gbm-rdkit", "chemprop")


# split files ------------------------------------------------------------------------------------------------
def write_split_file(dataset: str, split: str, seed: int, sample: float | None, folder: Path) -> tuple[Path, dict]:
    """The cleaned data set with a train / val / test column: the one file every model reads."""
    loaded = load_dataset(DataConfig(dataset, bad_input="skip", sample=sample, seed=seed))
    table = loaded.table.reset_index(drop=True)
    smiles = table["smiles"].tolist()
    if split == "scaffold":
        parts = scaffold_split(smiles, FRACTIONS, seed)
    else:
        parts = random_split(len(table), FRACTIONS, seed)
    names = np.empty(len(table), dtype=object)
    for name, idx in zip(("train", "val", "test"), parts):
        names[idx] = name
    out = table[["smiles", *loaded.target_cols]].assign(split=names)
    path = folder / "splits" / f"{dataset}_{split}_seed{seed}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = out.to_csv(index=False).encode()
    if not path.is_file() or path.read_bytes() != text:  # unchanged: left alone, for suites running side by side
        path.write_bytes(text)
    info = {"task": loaded.task.value, "targets": loaded.target_cols, "skipped_rows": len(loaded.bad),
            "n": {k: int((names == k).sum()) for k in ("train", "val", "test")},
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return path, info


# models -----------------------------------------------------------------------------------------------------
def parse_model(spec: str) -> tuple[str, dict]:
    """``bundled+aug=10+tta=10`` -> (base, TrainConfig overrides)."""
    base, *mods = spec.split("+")
    overrides = {}
    for mod in mods:
        key, _, value = mod.partition("=")
        if key not in VARIANT_KEYS:
            raise SystemExit(f"unknown variant {mod!r} in {spec!r}; use {', '.join(VARIANT_KEYS)}")
        name, cast = VARIANT_KEYS[key]
        overrides[name] = cast(value)
    if base not in BASE_MODELS and not base.startswith("model:"):
        raise SystemExit(f"unknown model {base!r}; use {', '.join(BASE_MODELS)} or model:<folder or name>")
    if overrides and base not in ("bundled", "random") and not base.startswith("model:"):
        raise SystemExit(f"variants apply to smilesformer models only, not {base!r}")
    return base, overrides


def run_smilesformer(base: str, overrides: dict, path: Path, info: dict, seed: int, work: Path,
                     args: argparse.Namespace) -> tuple[pd.DataFrame, dict]:
    if base.startswith("model:"):  # any encoder: a pretraining checkpoint, an older model, a hub name
        model = base.removeprefix("model:")
    else:
        model = DEFAULT_MODEL if base == "bundled" else f"random:{DEFAULT_MODEL}"
    data = DataConfig(str(path), smiles_col="smiles", target_cols=info["targets"], task=info["task"],
                      split="column", split_col="split")
    train = dataclasses.replace(
        TrainConfig(epochs=args.epochs, early_stopping_patience=args.patience, batch_size=args.batch_size,
                    seed=seed, progress=False, descriptors="none", trees="none"),
        **overrides)  # SMILES only, no trees, unless +desc= / +trees=
    result = run_finetune(data, model, train, work)
    preds = pd.read_csv(work / "test_predictions.csv")
    extra = {"epochs_run": json.loads((work / "history.json").read_text())[-1].get("epoch")}
    if "uncertainty" in result.metrics["test"]:
        extra["uncertainty"] = result.metrics["test"]["uncertainty"]
    if result.metrics.get("tree_weights") is not None:  # the transformer's weight in the blend, per target
        extra["tree_weights"] = result.metrics["tree_weights"]
    shutil.rmtree(work / "model", ignore_errors=True)  # keep the run folder's record, not the weights
    return preds, extra


def _morgan_counts(smiles: list[str]) -> np.ndarray:
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    return np.stack([generator.GetCountFingerprintAsNumPy(Chem.MolFromSmiles(s)) for s in smiles]).astype(np.float32)


def _rdkit_descriptors(smiles: list[str]) -> np.ndarray:
    from smilesformer.descriptors import compute_descriptors, descriptor_names

    return compute_descriptors(smiles, descriptor_names("rdkit")).astype(np.float32)


def run_rf(path: Path, info: dict, seed: int, args: argparse.Namespace,
           features=_morgan_counts) -> tuple[pd.DataFrame, dict]:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    table = pd.read_csv(path)
    train, test = table[table["split"] == "train"], table[table["split"] == "test"].reset_index(drop=True)
    x_train, x_test = features(train["smiles"].tolist()), features(test["smiles"].tolist())
    fill = np.nan_to_num(np.nanmedian(x_train, axis=0))  # a descriptor RDKit could not compute: the train median
    x_train, x_test = (np.where(np.isnan(x), fill, x) for x in (x_train, x_test))
    preds = test[["smiles", *info["targets"]]].copy()
    for t in info["targets"]:
        keep = train[t].notna().to_numpy()
        if info["task"] == "regression":
            rf = RandomForestRegressor(n_estimators=args.rf_trees, max_features=0.33, n_jobs=-1, random_state=seed)
            preds[f"{t}_pred"] = rf.fit(x_train[keep], train[t][keep]).predict(x_test)
        else:
            rf = RandomForestClassifier(n_estimators=args.rf_trees, n_jobs=-1, random_state=seed)
            rf.fit(x_train[keep], train[t][keep].astype(int))
            preds[f"{t}_prob"] = rf.predict_proba(x_test)[:, list(rf.classes_).index(1)]
    return preds, {}


def run_gbm(path: Path, info: dict, seed: int) -> tuple[pd.DataFrame, dict]:
    from smilesformer.trees import fit_trees, tree_outputs

    table = pd.read_csv(path)
    train, test = table[table["split"] == "train"], table[table["split"] == "test"].reset_index(drop=True)
    task = Task(info["task"])
    meta = ModelMeta(task, list(info["targets"]))
    trees = fit_trees(meta, train["smiles"].tolist(), train[info["targets"]].to_numpy(float), seed)
    out = tree_outputs(trees, meta, test["smiles"].tolist())
    preds = test[["smiles", *info["targets"]]].copy()
    suffix = "_pred" if task is Task.regression else "_prob"
    for j, t in enumerate(info["targets"]):
        preds[f"{t}{suffix}"] = out[:, j]
    return preds, {}


def chemprop_bin(args: argparse.Namespace) -> str:
    found = args.chemprop_bin or shutil.which("chemprop") or str(Path(".venv-chemprop/bin/chemprop"))
    if not Path(found).is_file():
        raise SystemExit("chemprop not found: run `make bench-env` (builds .venv-chemprop) or pass --chemprop-bin")
    return found


def run_chemprop(path: Path, info: dict, seed: int, work: Path, args: argparse.Namespace) -> tuple[pd.DataFrame, dict]:
    exe = chemprop_bin(args)
    task = "regression" if info["task"] == "regression" else "classification"
    common = ["--num-workers", "0", "--accelerator", args.chemprop_accelerator, "--devices", "1"]
    train_cmd = [exe, "train", "--data-path", str(path), "-s", "smiles", "--target-columns", *info["targets"],
                 "--splits-column", "split", "-t", task, "--epochs", str(args.chemprop_epochs),
                 "--pytorch-seed", str(seed), "--data-seed", str(seed), "--save-dir", str(work / "model"), *common]
    _run(train_cmd, work / "train.log")
    best = sorted((work / "model").rglob("best*.pt"))
    if not best:
        raise RuntimeError(f"chemprop wrote no best*.pt under {work / 'model'}; see {work / 'train.log'}")
    table = pd.read_csv(path)
    test = table[table["split"] == "test"].reset_index(drop=True)
    test[["smiles"]].to_csv(work / "test_input.csv", index=False)
    _run([exe, "predict", "--test-path", str(work / "test_input.csv"), "-s", "smiles", "--model-paths", str(best[0]),
          "--preds-path", str(work / "test_preds.csv"), *common], work / "predict.log")
    out = pd.read_csv(work / "test_preds.csv")
    preds = test[["smiles", *info["targets"]]].copy()
    suffix = "_pred" if task == "regression" else "_prob"
    for t in info["targets"]:
        preds[f"{t}{suffix}"] = out[t].to_numpy(float)
    shutil.rmtree(work / "model", ignore_errors=True)
    return preds, {}


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {done.returncode}); last lines of {log}:\n"
                           + "\n".join(log.read_text().splitlines()[-15:]))


def score(preds: pd.DataFrame, info: dict) -> dict:
    """Test metrics of one run, averaged over targets, by the same code for every model."""
    task = Task(info["task"])
    meta = ModelMeta(task, info["targets"])
    y = preds[info["targets"]].to_numpy(float)
    suffix = "_pred" if task is Task.regression else "_prob"
    p = preds[[f"{t}{suffix}" for t in info["targets"]]].to_numpy(float)
    names = REGRESSION_METRICS if task is Task.regression else CLASSIFICATION_METRICS
    mean = compute_metrics(meta, y, p)["mean"]
    return {k: mean[k] for k in names if k in mean}


def valid_metrics(work: Path, info: dict) -> dict:
    """The validation set's metrics of a smilesformer run, read from the run's own metrics.json: the figures that
    may pick a setting (test figures never do); {} for a run without one (the baselines, no validation set)."""
    record = work / "metrics.json"
    mean = (json.loads(record.read_text()).get("valid") or {}).get("mean") if record.is_file() else None
    if not mean:
        return {}
    names = REGRESSION_METRICS if info["task"] == Task.regression.value else CLASSIFICATION_METRICS
    return {"valid_metrics": {k: mean[k] for k in names if k in mean}}


# the suite --------------------------------------------------------------------------------------------------
def run_one(spec: str, path: Path, info: dict, seed: int, work: Path, args: argparse.Namespace) -> dict:
    done_file = work / "result.json"
    if done_file.is_file():
        return {**json.loads(done_file.read_text()), **valid_metrics(work, info)}
    work.mkdir(parents=True, exist_ok=True)
    base, overrides = parse_model(spec)
    started = time.perf_counter()
    if base in ("bundled", "random") or base.startswith("model:"):
        preds, extra = run_smilesformer(base, overrides, path, info, seed, work, args)
    elif base == "rf":
        preds, extra = run_rf(path, info, seed, args)
    elif base == "rf-rdkit":
        preds, extra = run_rf(path, info, seed, args, features=_rdkit_descriptors)
    elif base == "gbm-rdkit":
        preds, extra = run_gbm(path, info, seed)
    else:
        preds, extra = run_chemprop(path, info, seed, work, args)
    result = {"metrics": score(preds, info), "seconds": round(time.perf_counter() - started, 1), **extra}
    done_file.write_text(json.dumps(result, indent=2))
    return {**result, **valid_metrics(work, info)}


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    models = list(dict.fromkeys(r["model"] for r in runs))  # in the order asked for
    keys = sorted({(r["dataset"], r["split"], r["model"]) for r in runs}, key=lambda k: (
        DATASETS.index(k[0]) if k[0] in DATASETS else len(DATASETS), k[1], models.index(k[2])))
    for dataset, split, model in keys:
        group = [r for r in runs if (r["dataset"], r["split"], r["model"]) == (dataset, split, model)]
        row = {"dataset": dataset, "split": split, "model": model, "task": group[0]["task"], "seeds": len(group),
               "seconds_mean": round(statistics.mean(r["seconds"] for r in group), 1)}
        for metric in group[0]["metrics"]:
            values = [r["metrics"][metric] for r in group if metric in r["metrics"]]
            row[f"{metric}_mean"] = statistics.mean(values)
            row[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        if all("valid_metrics" in r for r in group):
            for metric in group[0]["valid_metrics"]:
                values = [r["valid_metrics"][metric] for r in group if metric in r["valid_metrics"]]
                row[f"valid_{metric}_mean"] = statistics.mean(values)
        unc = [r["uncertainty"] for r in group if "uncertainty" in r]
        if unc:
            for key in ("spearman_sd_abs_error", "coverage_90"):
                values = [v[key] for u in unc for v in u.values() if key in v]
                if values:
                    row[f"{key}_mean"] = statistics.mean(values)
        rows.append(row)
    return rows


def plot(summary: list[dict], models: list[str], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for split in sorted({r["split"] for r in summary}):
        rows = [r for r in summary if r["split"] == split]
        datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)] + sorted(
            {r["dataset"] for r in rows} - set(DATASETS))
        fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.4), squeeze=False)
        for ax, dataset in zip(axes[0], datasets):
            by_model = {r["model"]: r for r in rows if r["dataset"] == dataset}
            metric = "mae" if by_model and next(iter(by_model.values()))["task"] == "regression" else "roc_auc"
            names = [m for m in models if m in by_model]
            means = [by_model[m][f"{metric}_mean"] for m in names]
            sds = [by_model[m][f"{metric}_sd"] for m in names]
            ax.bar(range(len(names)), means, yerr=sds, capsize=3, color=[f"C{models.index(m)}" for m in names])
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{dataset} ({metric.upper().replace('_', '-')}, "
                         f"{'lower' if metric == 'mae' else 'higher'} is better)", fontsize=9)
        fig.suptitle(f"{split} split, mean ± sd over seeds")
        fig.tight_layout()
        path = out.with_name(f"{out.stem}_{split}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def hardware() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "gpu": gpu,
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--splits", default="random,scaffold")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--aqsoldb-seeds", type=int, default=5, help="seeds for aqsoldb (the headline task)")
    parser.add_argument("--seeds-from", type=int, default=0,
                        help="skip seeds below this one (to share the seeds out between processes)")
    parser.add_argument("--models", default="bundled,random,rf,chemprop,bundled+desc=rdkit+trees=gbm",
                        help="comma-separated; the last default is smilesformer's default settings for regression")
    parser.add_argument("--epochs", type=int, default=30, help="smilesformer's maximum epochs (early stopping)")
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rf-trees", type=int, default=500)
    parser.add_argument("--chemprop-epochs", type=int, default=50, help="chemprop's own default is 50")
    parser.add_argument("--chemprop-bin", default=None)
    parser.add_argument("--chemprop-accelerator", default="auto")
    parser.add_argument("--sample", type=float, default=None, help="use this fraction of each data set (smoke runs)")
    parser.add_argument("--tag", default="", help="names the outputs accuracy_<tag>.*")
    parser.add_argument("--work", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--only-finished", action="store_true",
                        help="train nothing: summarize the runs already finished in --work, list the missing")
    args = parser.parse_args(argv)

    models = args.models.split(",")
    for spec in models:
        parse_model(spec)  # fail on a typo before any training
    if "chemprop" in models and not args.only_finished:
        chemprop_bin(args)
    started = time.perf_counter()
    runs, missing = [], []
    for dataset in args.datasets.split(","):
        seeds = args.aqsoldb_seeds if dataset == "aqsoldb" else args.seeds
        for split in args.splits.split(","):
            for seed in range(args.seeds_from, seeds):
                path, info = write_split_file(dataset, split, seed, args.sample, args.work)
                for spec in models:
                    folder = spec.replace("=", "").replace("+", "_").replace("/", "_").replace(":", "_")
                    work = args.work / f"{dataset}_{split}_seed{seed}" / folder
                    if args.only_finished and not (work / "result.json").is_file():
                        missing.append(f"{dataset}/{split}/seed{seed}/{spec}")
                        continue
                    result = run_one(spec, path, info, seed, work, args)
                    runs.append({"dataset": dataset, "split": split, "seed": seed, "model": spec,
                                 "task": info["task"], "n": info["n"], "split_sha256": info["sha256"], **result})
                    print(json.dumps({k: runs[-1][k] for k in ("dataset", "split", "seed", "model", "metrics",
                                                               "seconds")}), flush=True)
    summary = summarize(runs)
    name = f"accuracy_{args.tag}" if args.tag else "accuracy"
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{name}.json"
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                           if k not in ("work", "results", "chemprop_bin")},
              "command": "python benchmarks/bench_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "fractions": FRACTIONS, "hardware": hardware(), "wall_seconds": round(time.perf_counter() - started, 1),
              "run_seconds_total": round(sum(r["seconds"] for r in runs), 1),
              "environment": environment_info(), "summary": summary, "runs": runs, "missing": missing}
    out.write_text(json.dumps(report, indent=2))
    pd.DataFrame(summary).to_csv(out.with_suffix(".csv"), index=False)
    charts = plot(summary, models, out)
    if missing:
        print(f"not finished, left out: {', '.join(missing)}")
    print(f"wrote {out}, {out.with_suffix('.csv')} and {', '.join(p.name for p in charts)}")
    return report


if __name__ == "__main__":
    main()
