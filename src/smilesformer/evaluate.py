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
    "domain_metrics",
    "confidence_metrics",
    "retention_curve",
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
    if np.ptp(sd) > 1e-9 * np.abs(sd).max() and np.ptp(err) > 0:  # a constant has no rank correlation
        out["spearman_sd_abs_error"] = float(stats.spearmanr(sd, err)[0])
        out["spearman_expected"] = expected_spearman(sd)
    out["coverage_90"] = float(np.mean(err <= scale * sd))
    out["mean_interval_width"] = float(np.mean(2 * scale * sd))
    if err.mean() > 0:
        half = np.argsort(sd, kind="stable")[: max(1, len(sd) // 2)]
        out["mae_confident_half_ratio"] = float(err[half].mean() / err.mean())
    return out


def expected_spearman(sd: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The Spearman correlation of ``sd`` with absolute errors drawn from N(0, sd^2): what a perfectly calibrated
    uncertainty would reach on these molecules (Rasmussen et al. 2023: the observed value is capped by it, and it
    depends on how much the uncertainties vary over the test set)."""
    rng = np.random.default_rng(seed)
    draws_ = np.abs(rng.standard_normal((draws, len(sd)))) * sd
    return float(np.mean([stats.spearmanr(sd, d)[0] for d in draws_]))


def retention_curve(uncertainty: np.ndarray, error: np.ndarray, steps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The mean error of the most-confident fraction of molecules, for fractions 1/steps .. 1 (the least uncertain
    first): a useful uncertainty gives a curve that rises towards the overall error."""
    order = np.argsort(uncertainty, kind="stable")
    fractions = np.linspace(1 / steps, 1.0, steps)
    means = np.array([error[order[: max(1, int(round(f * len(order))))]].mean() for f in fractions])
    return fractions, means


def domain_metrics(in_domain: np.ndarray, error: np.ndarray) -> dict:
    """Errors of molecules flagged as out of the domain beside those in it (``error``: one per molecule, as
    ``tasks.molecule_errors`` gives: absolute error in training-label sds, or |label - probability|)."""
    keep = np.isfinite(error)
    inside, error = in_domain[keep].astype(bool), error[keep]
    out: dict = {"n": int(len(error)), "flagged": int((~inside).sum())}
    if inside.any():
        out["error_in_domain"] = float(error[inside].mean())
    if (~inside).any():
        out["error_flagged"] = float(error[~inside].mean())
    if inside.any() and (~inside).any() and out["error_in_domain"] > 0:
        out["ratio"] = out["error_flagged"] / out["error_in_domain"]
    return out


def confidence_metrics(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> dict:
    """Of one binary target's probabilities: expected calibration error (equal-width bins), Brier score, and the
    accuracy of the half of molecules predicted with most confidence beside all."""
    keep = np.isfinite(y) & np.isfinite(prob)
    y, prob = y[keep].astype(int), prob[keep]
    out: dict = {"n": int(len(y))}
    if len(y) < 2:
        return out
    which = np.minimum((prob * bins).astype(int), bins - 1)
    ece = sum(abs(prob[which == b].mean() - y[which == b].mean()) * (which == b).mean()
              for b in range(bins) if (which == b).any())
    confidence = np.maximum(prob, 1 - prob)
    correct = (prob >= 0.5).astype(int) == y
    half = np.argsort(-confidence, kind="stable")[: max(1, len(y) // 2)]
    out.update(ece=float(ece), brier=float(np.mean((prob - y) ** 2)), accuracy=float(correct.mean()),
               accuracy_confident_half=float(correct[half].mean()))
    return out
