"""Figures drawn from labels, predictions and training logs; never loads a model."""

from __future__ import annotations

from pathlib import Path

# Figures are matplotlib.figure.Figure objects written straight to files: no pyplot, so importing this
# module leaves a notebook's or GUI's matplotlib backend as it was, and no window ever opens.
import numpy as np
from matplotlib.figure import Figure
from scipy import stats
from sklearn import metrics as skm

__all__ = ["plot_parity", "plot_roc", "plot_training_curve", "plot_uncertainty", "plot_reliability"]


def plot_parity(y: np.ndarray, p: np.ndarray, path: str | Path, title: str = "", unit: str = "") -> Path:
    """The notebook's predicted-vs-actual plot: points, the y = x line, and Pearson r in the figure."""
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(y, p, s=12, alpha=0.6, edgecolors="none")
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    pad = 0.05 * (hi - lo or 1)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1, label="y = x")
    varies = len(y) > 1 and np.std(y) > 0 and np.std(p) > 0  # Pearson r of a constant is undefined (and warns)
    r = f"{stats.pearsonr(y, p)[0]:.3f}" if varies else "n/a (constant values)"
    rmse = float(np.sqrt(np.mean((y - p) ** 2)))
    ax.text(0.04, 0.96, f"Pearson r = {r}\nRMSE = {rmse:.3f}\nn = {len(y)}", transform=ax.transAxes,
            va="top", bbox=dict(boxstyle="round", fc="white", alpha=0.8))
    suffix = f" ({unit})" if unit else ""
    ax.set(xlabel=f"actual{suffix}", ylabel=f"predicted{suffix}", title=title,
           xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), aspect="equal")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_roc(y: np.ndarray, prob: np.ndarray, path: str | Path, names: list[str]) -> Path:
    """ROC curve per binary target, AUC in the legend. ``y`` and ``prob`` are (n, targets)."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    drawn = []
    for j, name in enumerate(names):
        keep = np.isfinite(y[:, j])
        if len(np.unique(y[keep, j])) < 2:
            continue
        fpr, tpr, _ = skm.roc_curve(y[keep, j], prob[keep, j])
        ax.plot(fpr, tpr, label=f"{name} (AUC = {skm.auc(fpr, tpr):.3f})")
        drawn.append(name)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", aspect="equal", title="ROC")
    if drawn:
        ax.legend(loc="lower right")
    else:  # every target holds one class here: no curve to draw (and no legend to warn about)
        ax.text(0.5, 0.5, "one class only: no ROC curve", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_training_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training loss per logging step and validation loss per epoch, from the Trainer's log history."""
    train = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
    valid = [(h["epoch"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train), label="train loss")
    if valid:
        ax.plot(*zip(*valid), "o-", label="valid loss")
    ax.set(xlabel="epoch", ylabel="loss", title=title or "training curve", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_uncertainty(sd: np.ndarray, error: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Two panels: the error-based calibration (RMSE and MAE of the errors binned by predicted sd, against the
    bin's root mean sd; a calibrated sd lies on y = x), and the retention curve (MAE of the most-confident
    fraction). ``error`` is label - prediction."""
    from .evaluate import retention_curve

    keep = np.isfinite(sd) & np.isfinite(error)
    sd, error = sd[keep], error[keep]
    fig = Figure(figsize=(10, 4.5))
    left, right = fig.subplots(1, 2)
    bins = np.array_split(np.argsort(sd, kind="stable"), min(8, max(1, len(sd) // 10)))
    rmv = [float(np.sqrt(np.mean(sd[b] ** 2))) for b in bins if len(b)]
    left.plot(rmv, [float(np.sqrt(np.mean(error[b] ** 2))) for b in bins if len(b)], "o-", label="RMSE per bin")
    left.plot(rmv, [float(np.mean(np.abs(error[b]))) for b in bins if len(b)], "s--", label="MAE per bin")
    top = max(rmv + [float(np.sqrt(np.mean(error ** 2)))]) * 1.1 if len(sd) else 1.0
    left.plot([0, top], [0, top], "k:", lw=1, label="y = x")
    left.set(xlabel="predicted sd (root mean per bin)", ylabel="observed error", title="error vs uncertainty")
    left.legend(loc="upper left")
    fractions, means = retention_curve(sd, np.abs(error))
    right.plot(fractions, means, "o-", label="most confident first")
    right.axhline(float(np.mean(np.abs(error))) if len(error) else 0, color="k", ls=":", lw=1, label="all molecules")
    right.set(xlabel="fraction of molecules kept (lowest sd first)", ylabel="MAE", title="retention curve",
              xlim=(0, 1.02))
    right.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_reliability(y: np.ndarray, prob: np.ndarray, path: str | Path, names: list[str]) -> Path:
    """Reliability curve per binary target: the share of positives against the mean predicted probability in
    equal-width bins (scikit-learn's ``calibration_curve``); a calibrated model lies on y = x."""
    from sklearn.calibration import calibration_curve

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for j, name in enumerate(names):
        keep = np.isfinite(y[:, j]) & np.isfinite(prob[:, j])
        if len(np.unique(y[keep, j])) < 2:
            continue
        observed, predicted = calibration_curve(y[keep, j], prob[keep, j], n_bins=10)
        ax.plot(predicted, observed, "o-", label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="share of positives", aspect="equal", title="reliability",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)
