"""Predictions with a spread: seed ensembles and test-time augmentation with randomized SMILES.

A molecule is predicted by every member model, on its SMILES as written and, with ``tta = k``, on k
randomized SMILES of it (RDKit writes the same molecule from other starting atoms and branch orders).
The mean of those predictions is the prediction; their standard deviation is a per-molecule
uncertainty, turned into a 90% interval with a scale fitted on the validation set (see
``calibrate_interval``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rdkit import Chem
from scipy import stats

from .config import Task
from .data import SmilesformerError
from .model import ModelMeta, SmilesModel

__all__ = [
    "ENSEMBLE_FILE",
    "SmilesEnsemble",
    "load_predictor",
    "randomized_smiles",
    "calibrate_interval",
    "uncertainty_metrics",
    "GAUSSIAN_Z90",
]

ENSEMBLE_FILE = "ensemble.json"
GAUSSIAN_Z90 = 1.6448536269514722
"""Half-width of a central 90% Gaussian interval in standard deviations: the interval scale before calibration."""


def randomized_smiles(smiles: Sequence[str], n: int, seed: int = 0) -> list[list[str]]:
    """``n`` randomized SMILES of each molecule (RDKit ``MolToRandomSmilesVect``; stereo kept).

    Deterministic for a given seed, so predictions with test-time augmentation are reproducible.
    """
    out = []
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            raise SmilesformerError(f"row {i}: cannot randomize invalid SMILES {s!r}; validate inputs first")
        out.append(list(Chem.MolToRandomSmilesVect(mol, n, randomSeed=seed + i)))
    return out


class SmilesEnsemble:
    """Several fine-tuned models of one task (the members), predicting together.

    ``predict`` returns what ``SmilesModel.predict`` does, plus the members' spread (``<target>_sd`` and
    a 90% interval for regression, ``<target>_prob_sd`` for binary classification).
    """

    def __init__(self, members: Sequence[SmilesModel]):
        if not members:
            raise SmilesformerError("an ensemble needs at least one member model")
        first = members[0].meta
        for k, m in enumerate(members[1:], 1):
            if (m.meta.task, m.meta.targets, m.meta.n_classes) != (first.task, first.targets, first.n_classes):
                raise SmilesformerError(f"member {k} predicts {m.meta.targets} ({m.meta.task.value}), "
                                        f"member 0 predicts {first.targets} ({first.task.value})")
        self.members = list(members)
        self.meta = copy.deepcopy(first)
        self.meta.ensemble_size = len(self.members)
        self.meta.tree_weights = None
        self.trees = None
        """``trees.Trees`` blended with the members' mean (see ``meta.tree_weights``), or None."""

    def predict(self, smiles: Sequence[str], batch_size: int = 128, progress: bool = False) -> pd.DataFrame:
        from .evaluate import predict_table

        return predict_table(self, smiles, batch_size=batch_size, progress=progress)

    def save_pretrained(self, folder: str | Path) -> Path:
        """``member_<k>/`` model folders, ``ensemble.json`` listing them, and the shared ``smilesformer.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for k, member in enumerate(self.members):
            member.meta.tta, member.meta.interval_scale = self.meta.tta, self.meta.interval_scale
            member.save_pretrained(folder / f"member_{k}")
            names.append(f"member_{k}")
        (folder / ENSEMBLE_FILE).write_text(json.dumps({"members": names}, indent=2))
        self.meta.save(folder)
        if self.trees is not None:
            from .trees import save_trees

            save_trees(self.trees, folder)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> SmilesEnsemble:
        folder = Path(folder)
        names = json.loads((folder / ENSEMBLE_FILE).read_text())["members"]
        ensemble = cls([SmilesModel.from_pretrained(folder / name) for name in names])
        ensemble.meta = ModelMeta.load(folder)
        if ensemble.meta.tree_weights is not None:
            from .trees import load_trees

            ensemble.trees = load_trees(folder)
        return ensemble

    def to(self, device: str | torch.device) -> SmilesEnsemble:
        for member in self.members:
            member.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.members[0].device


def load_predictor(path: str | Path) -> SmilesModel | SmilesEnsemble:
    """A fine-tuned model folder: one model, or an ensemble (a folder with ``ensemble.json``)."""
    if (Path(path) / ENSEMBLE_FILE).is_file():
        return SmilesEnsemble.from_pretrained(path)
    return SmilesModel.from_pretrained(path)


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


def has_spread(meta: ModelMeta) -> bool:
    """Whether predictions come from several forward passes per molecule (members or randomized SMILES)."""
    return meta.tta > 0 or meta.ensemble_size > 1


def spread_columns(meta: ModelMeta) -> list[str]:
    if not has_spread(meta) or meta.n_classes > 2:
        return []
    if meta.task is Task.regression:
        return [c for t in meta.targets for c in (f"{t}_sd", f"{t}_pi90_low", f"{t}_pi90_high")]
    return [f"{t}_prob_sd" for t in meta.targets]

