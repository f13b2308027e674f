"""The end-to-end runs behind the CLI verbs: fine-tune into a run folder, evaluate, predict, demo.

A run folder explains itself: config.json (resolved settings), environment.json (package versions,
data checksum), split.csv, metrics.json, plots, test_predictions.csv and model/ (a standard HF folder
with tokenizer and smilesformer.json that reloads on its own for predict).
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from .config import (
    DEFAULT_MODEL,
    DataConfig,
    DuplicatePolicy,
    SplitKind,
    Task,
    TrainConfig,
    demo_data_config,
    demo_train_config,
    save_config,
)
from .data import (
    CONFLICT_SD,
    LoadedData,
    SmilesformerError,
    _guess_smiles_col,
    bad_rows_report,
    check_output,
    file_sha256,
    load_dataset,
    read_table,
    require_columns,
    writable_kind,
    write_table,
)
from .descriptors import uses_descriptors
from .evaluate import GAUSSIAN_Z90, confidence_metrics, domain_metrics, uncertainty_metrics
from .model import SmilesModel
from .networks import bundled_model_path
from .plots import plot_parity, plot_reliability, plot_roc, plot_training_curve, plot_uncertainty
from .predictors import load_predictor
from .splits import column_split, random_split, scaffold_split
from .streaming import predict_frame
from .tasks import compute_metrics, molecule_errors, prediction_matrix
from .tokenization import warn_truncated, warn_unknown
from .train import distributed_state

__all__ = ["RunResult", "run_finetune", "run_evaluate", "run_predict", "run_demo", "environment_info"]

logger = logging.getLogger(__name__)

_PACKAGES = ["smilesformer", "torch", "transformers", "tokenizers", "accelerate", "rdkit", "pandas", "numpy",
             "scikit-learn"]


def environment_info() -> dict:
    """Versions of Python and the packages a run depends on."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions}


@dataclass
class RunResult:
    """What a run produced."""

    out_dir: Path
    metrics: dict
    model_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def _n_classes(task: Task, y: np.ndarray) -> int:
    if task is Task.regression:
        return 2
    top = int(np.nanmax(y)) + 1
    if top > 2 and y.shape[1] > 1:
        raise SmilesformerError("multiclass labels (values > 1) are supported for a single target column only")
    return max(top, 2)


def _write_plots(meta, y: np.ndarray, p: np.ndarray, out_dir: Path, title: str,
                 preds: pd.DataFrame | None = None) -> list[Path]:
    """The parity plot (regression) or ROC curve (binary), and where the predictions carry an uncertainty, the
    error-versus-uncertainty plot with the retention curve (regression) or the reliability curve (binary)."""
    paths = []
    if meta.task is Task.regression:
        for j, name in enumerate(meta.targets):
            suffix = "" if len(meta.targets) == 1 else f"_{j}_{name}".replace("/", "_")
            paths.append(plot_parity(y[:, j], p[:, j], out_dir / f"parity{suffix}.png",
                                     title=f"{title} {name}".strip()))
            if preds is not None and f"{name}_sd" in preds:
                paths.append(plot_uncertainty(preds[f"{name}_sd"].to_numpy(float), y[:, j] - p[:, j],
                                              out_dir / f"uncertainty{suffix}.png", title=f"{title} {name}".strip()))
    elif meta.n_classes == 2:
        paths.append(plot_roc(y, p, out_dir / "roc.png", meta.targets))
        if meta.has_uncertainty:
            paths.append(plot_reliability(y, p, out_dir / "reliability.png", meta.targets))
    return paths


def constant_notes(meta, y: np.ndarray, name: str) -> list[str]:
    """A note per target whose labels do not vary in a set: the metrics that need variance are left out."""
    notes = []
    for j, target in enumerate(meta.targets):
        values = y[:, j][np.isfinite(y[:, j])]
        if len(values) > 1 and np.ptp(values) == 0:
            left = "R2, Pearson r and Spearman rho" if meta.task is Task.regression else "ROC-AUC and PR-AUC"
            notes.append(f"{target} is constant ({values[0]:g}) in the {name} set: {left} are left out")
    return notes


def duplicate_notes(loaded: LoadedData, data: DataConfig, out_dir: Path) -> list[str]:
    """What a run says of repeated molecules: how many, what was done, and which disagree."""
    classification = loaded.task is Task.classification
    verb = {"keep": "kept (use --duplicates average to merge)",
            "average": "merged, the most frequent class kept" if classification else "merged, labels averaged",
            "drop-conflicts": "kept where their labels agree"}[data.duplicates.value]
    notes = [f"{loaded.n_duplicates} row(s) repeat an earlier molecule: {verb}; listed in "
             f"{out_dir / 'duplicates.csv'}"]
    if loaded.conflicts:
        what = "different classes" if classification else f"labels more than {CONFLICT_SD} sd apart"
        done = "dropped" if data.duplicates is DuplicatePolicy.drop_conflicts else \
            "trained on as they are (--duplicates drop-conflicts drops them)"
        notes.append(f"{loaded.conflicts} repeated molecule(s) have {what}: {done}")
    return notes


def run_finetune(data: DataConfig, model_name: str = DEFAULT_MODEL, train: TrainConfig | None = None,
                 out_dir: str | Path = "runs/finetune", loaded: LoadedData | None = None) -> RunResult:
    """Load and clean ``data``, split it, fine-tune ``model_name`` and write a complete run folder.

    Args:
        data: what to train on and how to split it.
        model_name: bundled name, local folder, hub name, or ``random:<preset or checkpoint>``.
        train: hyper-parameters (``TrainConfig()`` if None).
        out_dir: the run folder; checkpoints inside it let an interrupted run resume.
        loaded: ``load_dataset(data)``, when the caller has read it already (the CLI reads the table before it
            imports PyTorch, to start the molecules' descriptors on a free core).
    """
    train = train or TrainConfig()
    out_dir = check_output(out_dir, folder=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = distributed_state()  # one process, unless launched with torchrun / accelerate launch (DDP)
    main = state.is_main_process  # only the main process writes the run folder
    notes: list[str] = []
    loaded = loaded or load_dataset(data)
    table, targets = loaded.table, loaded.target_cols
    if len(loaded.bad):
        if main:
            bad_rows_report(loaded.bad).to_csv(out_dir / "bad_rows.csv", index=False)
        notes.append(f"skipped {len(loaded.bad)} bad row(s); listed in {out_dir / 'bad_rows.csv'}")
    if loaded.n_duplicates:
        notes += duplicate_notes(loaded, data, out_dir)
        if main:
            loaded.duplicates.assign(row=loaded.duplicates["row"] + 1).rename(columns={"row": "data_row"}).to_csv(
                out_dir / "duplicates.csv", index=False)

    smiles = table["smiles"].tolist()
    if data.split is SplitKind.random:
        parts = random_split(len(table), data.fractions, data.seed)
    elif data.split is SplitKind.scaffold:
        parts = scaffold_split(smiles, data.fractions, data.seed)
    else:
        parts = column_split(loaded.raw.loc[table.index, data.split_col].tolist(), table.index.tolist())
    split_names = np.empty(len(table), dtype=object)
    for name, idx in zip(("train", "valid", "test"), parts):
        split_names[idx] = name
    table = table.assign(split=split_names)
    if main:
        table[["row", "smiles", "split"]].to_csv(out_dir / "split.csv", index=False)

    y = table[targets].to_numpy(float)
    n_classes = _n_classes(loaded.task, y)
    train_idx, valid_idx, test_idx = parts
    if model_name.startswith("random:"):
        notes.append(f"started from random weights ({model_name}), not from a pretrained model")
    if main:
        save_config(out_dir / "config.json", data=data, model=model_name, train=train,
                    resolved={"task": loaded.task.value, "targets": targets, "n_classes": n_classes,
                              "smiles_col": data.smiles_col, "source": str(loaded.source_path)})
        env = environment_info()
        env["data"] = {"path": str(loaded.source_path), "sha256": file_sha256(loaded.source_path),
                       "rows_in_file": loaded.source_rows, "rows_used": len(table)}
        (out_dir / "environment.json").write_text(json.dumps(env, indent=2))

    started = time.perf_counter()
    # the same model and recipe as the Python API: SmilesModel.create(...).fit(..., config)
    model = SmilesModel.create(model_name, loaded.task, targets, n_classes, train.max_length,
                               vocab_smiles=[smiles[i] for i in train_idx], seed=train.seed,
                               descriptors=train.descriptors)
    model.fit([smiles[i] for i in train_idx], y[train_idx],
              [smiles[i] for i in valid_idx] if len(valid_idx) else None,
              y[valid_idx] if len(valid_idx) else None, train, out_dir / "checkpoints")
    train_seconds = time.perf_counter() - started
    state.wait_for_everyone()  # every process has loaded the best checkpoint before checkpoints/ is deleted
    if not main:
        return RunResult(out_dir, {}, None, notes + [f"process {state.process_index} of {state.num_processes}: "
                                                     "the run folder is written by process 0"])
    predictor, members = model.predictor, model.members
    spread = _has_uncertainty(predictor.meta)
    if predictor.meta.tree_weights is not None:
        notes.append(f"blended with gradient-boosted trees on RDKit descriptors; transformer weight per target: "
                     f"{predictor.meta.tree_weights}")
    model_dir = predictor.save_pretrained(out_dir / "model")
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the best model is in model/

    history = model.history
    metrics: dict = {"n_train": len(train_idx), "n_valid": len(valid_idx), "n_test": len(test_idx),
                     "train_seconds": round(train_seconds, 2),
                     "train_molecules_per_second":
                         round(len(train_idx) * sum(_epochs_run(h) for h in model.histories) / train_seconds, 2),
                     "truncated": warn_truncated(model.tokenizer, smiles, model.meta.max_length),
                     "unknown_tokens": warn_unknown(model.tokenizer, smiles),
                     "duplicates": loaded.n_duplicates,
                     "skipped_rows": len(loaded.bad), "ensemble": train.ensemble, "tta": train.tta,
                     "augment": train.augment,
                     "descriptors": members[0].model.config.descriptor_set if uses_descriptors(members[0].model)
                     else "none",
                     "tree_weights": predictor.meta.tree_weights}
    for name, idx in (("valid", valid_idx), ("test", test_idx)):
        if len(idx) == 0:
            continue
        preds = predictor.predict([smiles[i] for i in idx], batch_size=train.eval_batch_size)
        p = prediction_matrix(predictor.meta, preds)
        metrics[name] = compute_metrics(predictor.meta, y[idx], p)
        notes += constant_notes(predictor.meta, y[idx], name)
        if spread:
            metrics[name]["uncertainty"] = _uncertainty(predictor.meta, y[idx], p, preds)
        if name == "test":
            out = table.iloc[idx][["row", "smiles", *targets]].reset_index(drop=True)
            pd.concat([out, preds.drop(columns="error")], axis=1).to_csv(out_dir / "test_predictions.csv", index=False)
            _write_plots(predictor.meta, y[idx], p, out_dir, "test", preds)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "history.json").write_text(json.dumps(history, indent=2))
    plot_training_curve(history, out_dir / "training_curve.png")
    return RunResult(out_dir, metrics, model_dir, notes)


def _epochs_run(history: list[dict]) -> float:
    return max((h.get("epoch", 0) for h in history), default=0) or 1


def _read_input(data: str | Path, smiles_col: str | None, sep: str | None = None) -> tuple[pd.DataFrame, str]:
    table = read_table(data, sep)
    col = smiles_col or _guess_smiles_col(table)
    require_columns(table, [col], data)
    return table, col


def _has_uncertainty(meta) -> bool:
    return meta.has_uncertainty or (meta.has_spread and meta.layout.has_interval)


def _uncertainty(meta, y: np.ndarray, p: np.ndarray, preds: pd.DataFrame) -> dict:
    """Per target, how well the uncertainty ranks and bounds the errors (regression: the sd and the 90% interval;
    classification: calibration and confidence), and the errors of molecules flagged out of the domain."""
    out: dict = {}
    if meta.layout.has_interval:
        scales = meta.interval_scale or [GAUSSIAN_Z90] * len(meta.targets)
        out = {t: uncertainty_metrics(y[:, j], p[:, j], preds[f"{t}_sd"].to_numpy(float), scales[j])
               for j, t in enumerate(meta.targets)}
    elif meta.n_classes == 2:
        out = {t: confidence_metrics(y[:, j], p[:, j]) for j, t in enumerate(meta.targets)}
    if "in_domain" in preds:
        # the errors the threshold was chosen on (regression: in training-label sds)
        out["domain"] = domain_metrics(preds["in_domain"].to_numpy(bool), molecule_errors(meta, y, p))
    return out


def run_evaluate(model_dir: str | Path, data: str | Path, smiles_col: str | None = None,
                 out_dir: str | Path | None = None, batch_size: int = 128, sep: str | None = None) -> RunResult:
    """Score a saved model on a labelled table (its target columns must be present).

    Invalid rows and rows without labels are left out of the metrics and counted. An ensemble or a model
    with test-time augmentation also gets the quality of its spread (``uncertainty``), as in fine-tuning.
    """
    if out_dir is not None:
        check_output(out_dir, folder=True)
    model = load_predictor(model_dir)
    table, col = _read_input(data, smiles_col, sep)
    require_columns(table, model.meta.targets, data)
    preds = model.predict(table[col].tolist(), batch_size=batch_size)
    y = table[model.meta.targets].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    ok = (preds["error"] == "").to_numpy()
    p = prediction_matrix(model.meta, preds)
    metrics = compute_metrics(model.meta, y[ok], p[ok])
    if _has_uncertainty(model.meta):
        metrics["uncertainty"] = _uncertainty(model.meta, y[ok], p[ok], preds[ok].reset_index(drop=True))
    metrics["invalid_rows"] = int((~ok).sum())
    out_path = None
    if out_dir is not None:
        out_path = Path(out_dir)
        out_path.mkdir(parents=True, exist_ok=True)
        (out_path / "metrics.json").write_text(json.dumps(metrics, indent=2))
        pd.concat([table, preds], axis=1).to_csv(out_path / "predictions.csv", index=False)
        _write_plots(model.meta, y[ok], p[ok], out_path, "evaluation", preds[ok].reset_index(drop=True))
    return RunResult(out_path or Path("."), metrics, Path(model_dir))


def run_predict(model_dir: str | Path, data: str | Path, out: str | Path, smiles_col: str | None = None,
                batch_size: int = 128, progress: bool = False, sep: str | None = None) -> pd.DataFrame:
    """Append prediction columns (and ``error``) to a table; same rows, same order; write it to ``out``."""
    writable_kind(out)
    check_output(out)
    model = load_predictor(model_dir)
    table, col = _read_input(data, smiles_col, sep)
    result = predict_frame(model, table, col, batch_size=batch_size, progress=progress)
    write_table(result, out)
    return result


def run_demo(out_dir: str | Path = "runs/demo", model_name: str | None = None, sample: float = 0.1,
             epochs: int = 5, seed: int = 0, loaded: LoadedData | None = None) -> RunResult:
    """The notebook as a run: 10% of AqSolDB, 80/20 random split, 5 epochs of regression fine-tuning.

    Starts from the bundled pretrained model when it is installed, else from random weights (and says so).
    ``loaded``: ``load_dataset(demo_data_config(sample, seed))``, when the caller has read it already.
    """
    if model_name is None:
        model_name = DEFAULT_MODEL if bundled_model_path() is not None else "random:small"
    result = run_finetune(demo_data_config(sample, seed), model_name, demo_train_config(epochs), out_dir, loaded)
    if model_name.startswith("random:"):
        result.notes.append("no bundled pretrained model is installed: the demo trained from random weights")
    return result
