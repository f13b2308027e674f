"""Metrics as pure functions of (labels, predictions): of values, of probabilities, and of a prediction spread."""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn import metrics as skm

__all__ = [
    "GAUSSIAN_Z90",
    "regression_metrics",
    "classification_metrics",
    "multiclass_metrics",
    "mean_over_targets",
    "calibrate_interval",
    "uncertainty_metrics",
]

GAUSSIAN_Z90 = 1.6448536269514722
"""Half-width of a central 90% Gaussian interval in standard deviations: the interval scale before calibration."""


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


def mean_over_targets(per_target: dict[str, dict]) -> dict[str, float]:
    """The mean of each metric over the targets that have it."""
    keys = sorted({k for m in per_target.values() for k in m if k != "n"})
    return {k: float(np.mean([m[k] for m in per_target.values() if k in m])) for k in keys}


def calibrate_interval(y: np.ndarray, pred: np.ndarray, sd: np.ndarray, coverage: float = 0.9) -> list[float]:
    """Per target, the multiple of the spread that covers ``coverage`` of the absolute errors on held-out data.

    Ensemble and augmentation spreads are usually too narrow to be read as Gaussian standard deviations
    as they are; scaling them on a validation set (split conformal prediction with the spread as the
    normalizer) gives intervals whose coverage holds on new molecules from the same distribution.
    """
    scales = []
    for j in range(y.shape[1]):
        keep = np.isfinite(y[:, j]) & np.isfinite(pred[:, j]) & (sd[:, j] > 0)
        if keep.sum() < 10:
            scales.append(GAUSSIAN_Z90)
            continue
        ratio = np.abs(y[keep, j] - pred[keep, j]) / sd[keep, j]
        n = int(keep.sum())
        level = min(np.ceil((n + 1) * coverage) / n, 1.0)  # finite-sample conformal quantile
        scales.append(float(np.quantile(ratio, level, method="higher")))
    return scales


def uncertainty_metrics(y: np.ndarray, pred: np.ndarray, sd: np.ndarray, scale: float = GAUSSIAN_Z90) -> dict:
    """How well a spread ranks and bounds the errors of one target.

    Returns:
        ``spearman_sd_abs_error`` (does a bigger spread mean a bigger error?), ``coverage_90`` (share of
        labels inside prediction ± scale x spread, nominally 0.9), ``mean_interval_width`` and ``n``.
    """
    keep = np.isfinite(y) & np.isfinite(pred) & np.isfinite(sd)
    y, pred, sd = y[keep], pred[keep], sd[keep]
    out: dict = {"n": int(len(y)), "interval_scale": float(scale)}
    if len(y) < 3:
        return out
    err = np.abs(y - pred)
    if np.std(sd) > 0:
        out["spearman_sd_abs_error"] = float(stats.spearmanr(sd, err)[0])
    out["coverage_90"] = float(np.mean(err <= scale * sd))
    out["mean_interval_width"] = float(np.mean(2 * scale * sd))
    return out
