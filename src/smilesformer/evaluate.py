"""Metrics as pure functions of (labels, predictions), and prediction over any list of SMILES."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn import metrics as skm

from . import tokenization
from .config import Task
from .data import parse_smiles
from .descriptors import descriptor_inputs

if TYPE_CHECKING:
    from .model import ModelMeta, SmilesModel

__all__ = [
    "regression_metrics",
    "classification_metrics",
    "compute_metrics",
    "length_batches",
    "predict_outputs",
    "predict_table",
    "prediction_matrix",
]

logger = logging.getLogger(__name__)


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, MSE, R2, Pearson r and Spearman rho of one target (NaN labels ignored)."""
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    out = {"n": int(len(y))}
    if len(y) == 0:
        return out
    mse = skm.mean_squared_error(y, p)
    out.update(mse=float(mse), rmse=float(np.sqrt(mse)), mae=float(skm.mean_absolute_error(y, p)))
    if len(y) > 1 and np.std(y) > 0:
        out["r2"] = float(skm.r2_score(y, p))
        if np.std(p) > 0:
            out["pearson_r"] = float(stats.pearsonr(y, p)[0])
            out["spearman_rho"] = float(stats.spearmanr(y, p)[0])
    return out


def classification_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC, accuracy, F1 and MCC of one binary target (NaN labels ignored).

    Args:
        y: (n,) labels 0/1.
        prob: (n,) probability of class 1; threshold 0.5 for the hard metrics.
    """
    keep = np.isfinite(y) & np.isfinite(prob)
    y, prob = y[keep].astype(int), prob[keep]
    pred = (prob >= 0.5).astype(int)
    out = {"n": int(len(y))}
    if len(y) == 0:
        return out
    out.update(accuracy=float(skm.accuracy_score(y, pred)), f1=float(skm.f1_score(y, pred, zero_division=0)),
               mcc=float(skm.matthews_corrcoef(y, pred)))
    if len(np.unique(y)) == 2:
        out.update(roc_auc=float(skm.roc_auc_score(y, prob)), pr_auc=float(skm.average_precision_score(y, prob)))
    return out


def multiclass_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1, MCC and one-vs-rest ROC-AUC for (n,) labels and (n, k) probabilities."""
    keep = np.isfinite(y)
    y, prob = y[keep].astype(int), prob[keep]
    pred = prob.argmax(axis=1)
    out = {"n": int(len(y)), "accuracy": float(skm.accuracy_score(y, pred)),
           "f1": float(skm.f1_score(y, pred, average="macro", zero_division=0)),
           "mcc": float(skm.matthews_corrcoef(y, pred))}
    if len(np.unique(y)) == prob.shape[1]:
        out["roc_auc"] = float(skm.roc_auc_score(y, prob, multi_class="ovr"))
    return out


def compute_metrics(meta: ModelMeta, y: np.ndarray, p: np.ndarray) -> dict:
    """Metrics per target and their mean over targets.

    Args:
        y: (n, targets) labels, NaN where missing.
        p: (n, targets) predictions (regression) or probabilities of class 1 (binary);
            (n, k) class probabilities for a multiclass target.

    Returns:
        ``{"per_target": {name: {...}}, "mean": {...}}``.
    """
    per_target = {}
    if meta.task is Task.regression:
        for j, name in enumerate(meta.targets):
            per_target[name] = regression_metrics(y[:, j], p[:, j])
    elif meta.n_classes > 2:
        per_target[meta.targets[0]] = multiclass_metrics(y[:, 0], p)
    else:
        for j, name in enumerate(meta.targets):
            per_target[name] = classification_metrics(y[:, j], p[:, j])
    keys = sorted({k for m in per_target.values() for k in m if k != "n"})
    mean = {k: float(np.mean([m[k] for m in per_target.values() if k in m])) for k in keys}
    return {"per_target": per_target, "mean": mean}


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Positions grouped into batches of similar length (longest first), to cut padding at inference."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


@torch.inference_mode()
def predict_outputs(
    model: SmilesModel, smiles: Sequence[str], batch_size: int = 128, progress: bool = False,
    descriptors_of: Sequence[str] | None = None,
) -> np.ndarray:
    """Head outputs in the label scale for valid SMILES: regression values, class-1 or class probabilities.

    The Trainer's predict pads batches in input order; sorting by length first cuts the padded
    tokens (and time) several-fold on SMILES, whose lengths vary widely, hence this small loop.

    Args:
        descriptors_of: for a head that reads RDKit descriptors, SMILES of the same molecules to compute
            them from (the input SMILES as given, when ``smiles`` are randomized spellings); default ``smiles``.

    Returns:
        (n, num_labels) float array.
    """
    meta, tok, net = model.meta, model.tokenizer, model.model
    net.eval()
    enc = tok(list(smiles), truncation=True, max_length=meta.max_length, add_special_tokens=True)
    ids = enc["input_ids"]
    out = np.zeros((len(ids), meta.num_labels), dtype=np.float32)
    batches = list(length_batches([len(x) for x in ids], batch_size))
    if progress:
        from rich.progress import track

        batches = track(batches, description="predicting")
    # (n, d) for a head that reads descriptors
    features = descriptor_inputs(net, smiles if descriptors_of is None else descriptors_of).get("descriptors")
    for batch in batches:
        padded = tok.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
        if features is not None:
            padded["descriptors"] = features[torch.as_tensor(batch, device=features.device)]
        logits = net(**{k: v.to(model.device) for k, v in padded.items()}).logits.float()
        out[batch] = logits.cpu().numpy()
    if meta.task is Task.regression:
        if meta.label_mean is not None:
            out = out * np.asarray(meta.label_std, dtype=np.float32) + np.asarray(meta.label_mean, dtype=np.float32)
    elif meta.n_classes > 2:
        out = torch.softmax(torch.from_numpy(out), dim=-1).numpy()
    else:
        out = torch.sigmoid(torch.from_numpy(out)).numpy()
    return out


def count_truncated(model: SmilesModel, smiles: Sequence[str]) -> int:
    """How many SMILES have more tokens than the model's max length (they are truncated, and we say so)."""
    # verbose=False: this count replaces transformers' own one-line "longer than" warning
    lengths = model.tokenizer(list(smiles), add_special_tokens=True, return_length=True, verbose=False)["length"]
    n = int(sum(length > model.meta.max_length for length in lengths))
    if n:
        logger.warning("%d SMILES are longer than max_length=%d tokens and were truncated", n, model.meta.max_length)
    return n


def count_unknown(model: SmilesModel, smiles: Sequence[str]) -> int:
    """How many SMILES hold a token the model's vocabulary lacks (read as ``<unk>``: its atom or bond is invisible
    to the model), with a warning naming the first few. Old checkpoints and hub models miss stereo atoms,
    salts, P, I or B; the bundled tokenizer spells every SMILES."""
    rows = tokenization.count_unknown(model.tokenizer, smiles)
    if rows:
        examples = ", ".join(repr(smiles[i]) for i in rows[:3])
        logger.warning("%d of %d SMILES hold tokens this model's vocabulary does not know (read as <unk>), e.g. %s;"
                       " use a model whose tokenizer covers them, such as the bundled one", len(rows), len(smiles),
                       examples)
    return len(rows)


def prediction_columns(meta: ModelMeta) -> list[str]:
    """Names of the columns ``predict_table`` adds, in order (the spread columns last, when there are any)."""
    from .ensemble import spread_columns

    if meta.task is Task.regression:
        cols = [f"{t}_pred" for t in meta.targets]
    elif meta.n_classes > 2:
        t = meta.targets[0]
        cols = [f"{t}_prob_{k}" for k in range(meta.n_classes)] + [f"{t}_pred"]
    else:
        cols = [c for t in meta.targets for c in (f"{t}_prob", f"{t}_pred")]
    return cols + spread_columns(meta)


def predict_with_spread(model, smiles: Sequence[str], batch_size: int = 128,
                        progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean and standard deviation of the head outputs over every member model and SMILES variant.

    ``model`` is a ``SmilesModel`` or a ``SmilesEnsemble``; variants are the SMILES as given plus
    ``model.meta.tta`` randomized SMILES of each. With one model and no augmentation the spread is None.
    A model with trees (``meta.tree_weights``) blends the mean with the trees' output; the spread stays the
    transformer's (the interval scale, fitted on the blended predictions' errors, sets its size).
    """
    from .ensemble import randomized_smiles

    members = getattr(model, "members", [model])
    variants = [list(smiles)]
    if model.meta.tta:
        randomized = randomized_smiles(smiles, model.meta.tta)
        variants += [[r[k] for r in randomized] for k in range(model.meta.tta)]
    # descriptors depend on the molecule, not its spelling: computed once, from the SMILES as given
    outputs = np.stack([predict_outputs(m, v, batch_size, progress, descriptors_of=variants[0])
                        for m in members for v in variants])
    mean, sd = outputs.mean(axis=0), (outputs.std(axis=0) if len(outputs) > 1 else None)
    if model.meta.tree_weights is not None:
        from .trees import blend, blend_columns, tree_outputs

        meta = model.meta
        mean = blend(mean, tree_outputs(model.trees, meta.task, meta.n_classes, variants[0]),
                     blend_columns(meta.tree_weights, meta.n_classes, meta.task))
    return mean, sd


def predict_table(model, smiles: Sequence[str], batch_size: int = 128,
                  progress: bool = False) -> pd.DataFrame:
    """Predictions for every input row, in input order, with the reason in ``error`` where a row fails.

    ``model`` is a ``SmilesModel`` or a ``SmilesEnsemble``; with several members or test-time augmentation
    the spread columns (``<target>_sd`` and the 90% interval, or ``<target>_prob_sd``) are filled too.
    """
    from .ensemble import GAUSSIAN_Z90

    meta = model.meta
    smiles = list(smiles)
    clean, errors = [], []
    for s in smiles:
        mol, reason = parse_smiles(s)
        clean.append(s.strip() if mol is not None else None)
        errors.append("" if mol is not None else f"invalid SMILES: {reason}")
    valid = [i for i, s in enumerate(clean) if s is not None]
    table = pd.DataFrame(np.nan, index=range(len(smiles)), columns=prediction_columns(meta))
    if valid:
        members = getattr(model, "members", [model])
        count_truncated(members[0], [clean[i] for i in valid])
        count_unknown(members[0], [clean[i] for i in valid])
        out, sd = predict_with_spread(model, [clean[i] for i in valid], batch_size, progress)
        if meta.task is Task.regression:
            table.loc[valid, [f"{t}_pred" for t in meta.targets]] = out
        elif meta.n_classes > 2:
            t = meta.targets[0]
            table.loc[valid, [f"{t}_prob_{k}" for k in range(meta.n_classes)]] = out
            table.loc[valid, f"{t}_pred"] = out.argmax(axis=1)
        else:
            for j, t in enumerate(meta.targets):
                table.loc[valid, f"{t}_prob"] = out[:, j]
                table.loc[valid, f"{t}_pred"] = (out[:, j] >= 0.5).astype(float)
        if sd is not None and meta.n_classes <= 2:
            scales = meta.interval_scale or [GAUSSIAN_Z90] * len(meta.targets)
            for j, t in enumerate(meta.targets):
                if meta.task is Task.regression:
                    table.loc[valid, f"{t}_sd"] = sd[:, j]
                    table.loc[valid, f"{t}_pi90_low"] = out[:, j] - scales[j] * sd[:, j]
                    table.loc[valid, f"{t}_pi90_high"] = out[:, j] + scales[j] * sd[:, j]
                else:
                    table.loc[valid, f"{t}_prob_sd"] = sd[:, j]
    table["error"] = errors
    return table


def prediction_matrix(meta: ModelMeta, table: pd.DataFrame) -> np.ndarray:
    """The (n, targets) or (n, k) array that ``compute_metrics`` takes, read from a ``predict_table`` result."""
    if meta.task is Task.regression:
        return table[[f"{t}_pred" for t in meta.targets]].to_numpy(float)
    if meta.n_classes > 2:
        return table[[f"{meta.targets[0]}_prob_{k}" for k in range(meta.n_classes)]].to_numpy(float)
    return table[[f"{t}_prob" for t in meta.targets]].to_numpy(float)
