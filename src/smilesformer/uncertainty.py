"""An uncertainty and a domain check for every default prediction, fitted on the validation set.

A default model (a transformer with a descriptor head, blended with gradient-boosted trees) already computes two
signals of how far to trust a prediction, and one more is cheap:

- ``disagreement``: |transformer - trees|, the two members of the blend disagreeing (a two-model ensemble for free);
- ``spread``: the standard deviation over passes, when the model is an ensemble or uses test-time augmentation;
- ``dissimilarity``: 1 - the mean Tanimoto similarity (Morgan fingerprints, radius 2, 2,048 bits) of the molecule to
  its ``TOP_K`` nearest training molecules (a ``Reference`` saved in the model folder);
- ``neighbour_spread`` / ``neighbour_disagreement``: the labels of those nearest molecules (see
  ``Reference.signals``), and ``size`` (heavy atoms);
- ``embedding``: 1 - the mean cosine similarity of the pooled vector the head reads (taken in the same forward
  pass as the prediction) to those of its ``TOP_K`` nearest training molecules: distance in the model's own space.

Regression: the absolute validation errors are regressed on these signals with non-negative weights (scipy's
``nnls``: a larger signal never means a smaller error, and three weights cannot overfit a validation set of a
hundred molecules). Its output, the expected absolute error, times sqrt(pi/2) is the ``<target>_sd`` column (the
standard deviation of a normal error with that mean absolute value). The 90% interval is split conformal on the
validation set with that sd as the normalizer; the weights used for the conformal scores are fitted on the other
folds (cross-fitting), so the interval is not tuned on the errors it is then scored on.

Classification: probabilities are recalibrated on the validation set (Platt scaling of the logit per binary
target, a temperature for a multiclass one) and ``<target>_confidence`` is the calibrated probability of the
predicted class.

The domain check, for either task: ``domain_similarity`` is the Tanimoto similarity to the nearest training
molecule, and ``in_domain`` is False below a threshold chosen on the validation set as the one whose flagged
molecules have the largest errors relative to the rest (``choose_domain_threshold``). A flagged molecule is still
predicted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import SmilesformerError, mol_from_smiles
from .evaluate import GAUSSIAN_Z90

__all__ = ["REFERENCE_FILE", "POOLED", "SIGNALS", "DEFAULT_SIGNALS", "MAX_REFERENCE", "TOP_K", "Reference",
           "UncertaintyFit", "fingerprints", "featurize", "embedding_distance", "fit_regression", "fit_calibration",
           "calibrate", "choose_domain_threshold", "predicted_sd", "signal_matrix"]

logger = logging.getLogger(__name__)

REFERENCE_FILE = "domain.npz"
FP_BITS, FP_RADIUS = 2048, 2
MAX_REFERENCE = 20_000
"""Training molecules kept for the nearest-neighbour search: 256 bytes each (packed fingerprint bits), 4 per target
(labels) and, for regression, 2 per dimension of the head's pooled vector (float16: 768 for the bundled model), so a
reference is at most 20,000 x (260 + 2d) bytes (about 21 MB for the bundled model; compressed on disk); a larger
training set keeps a seeded random sample of this many."""
TOP_K = 5
"""Nearest training molecules whose mean similarity is the ``dissimilarity`` signal (the domain column uses the
nearest one, the figure a chemist reads)."""
SIGNALS = ("spread", "disagreement", "dissimilarity", "neighbour_spread", "neighbour_disagreement", "size",
           "embedding")
"""Every signal, in the order an error model lists them."""
DEFAULT_SIGNALS = SIGNALS
"""The signals a fine-tuned model's error model is fitted on: all of them. Chosen on validation Spearman by
benchmarks/bench_uncertainty.py: adding ``size`` to the others raised it on ESOL (3 seeds, 0.16 -> 0.20) and
AqSolDB (seed 0, 0.12 -> 0.21), and adding ``embedding`` raised it again (BENCHMARKS.md, 'Uncertainty')."""
POOLED = "pooled"
"""The key of the head's (n, d) pooled vectors among a predictor's signals, which ``Reference.signals`` turns into
the ``embedding`` signal."""
DOMAIN_QUANTILES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
"""Validation similarity quantiles tried as the domain threshold."""
MIN_FLAGGED = 5
"""Fewest validation molecules below a candidate threshold for its errors to be compared."""
FOLDS = 5
SQRT_PI_2 = math.sqrt(math.pi / 2)  # sd of a normal error whose mean absolute value is 1


def fingerprints(smiles: Sequence[str]) -> np.ndarray:
    """(n, FP_BITS / 8) packed Morgan fingerprint bits; all zeros for a SMILES RDKit cannot read."""
    return featurize(smiles)[0]


def featurize(smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Packed fingerprint bits (see ``fingerprints``) and (n,) heavy atom counts, from one parse per SMILES."""
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=FP_RADIUS, fpSize=FP_BITS)
    bits = np.zeros((len(smiles), FP_BITS), dtype=np.uint8)
    heavy = np.zeros(len(smiles), dtype=np.float32)
    for i, s in enumerate(smiles):
        mol = mol_from_smiles(s)
        if mol is not None:
            bits[i] = generator.GetFingerprintAsNumPy(mol)
            heavy[i] = mol.GetNumHeavyAtoms()
    return np.packbits(bits, axis=1), heavy


class Reference:
    """Packed fingerprints of (up to ``MAX_REFERENCE``) training molecules and their labels, searched by Tanimoto
    similarity."""

    def __init__(self, packed: np.ndarray, labels: np.ndarray | None = None, embeddings: np.ndarray | None = None):
        self.packed = np.ascontiguousarray(packed, dtype=np.uint8)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float32).reshape(len(self.packed), -1)
        self.embeddings = None if embeddings is None else _unit_rows(embeddings).astype(np.float16)
        """(n, d) the head's pooled vectors of the molecules, unit length (cosine = dot product); None: none."""

    def __len__(self) -> int:
        return len(self.packed)

    @classmethod
    def from_smiles(cls, smiles: Sequence[str], labels: np.ndarray | None = None, seed: int = 0,
                    embed: Callable[[list[str]], np.ndarray | None] | None = None) -> Reference:
        """The reference of a training set: each molecule once (its first row), a seeded sample beyond
        ``MAX_REFERENCE``; ``labels`` (n, targets) in the label scale, or None; ``embed``: the (n, d) pooled vectors
        of the kept SMILES (the model's head input), or None for no ``embedding`` signal."""
        seen: dict[str, int] = {}
        for i, s in enumerate(smiles):
            seen.setdefault(s, i)
        keep = np.fromiter(seen.values(), dtype=int, count=len(seen))
        if len(keep) > MAX_REFERENCE:
            keep = np.sort(np.random.default_rng(seed).choice(keep, MAX_REFERENCE, replace=False))
        labels = None if labels is None else np.asarray(labels, dtype=float).reshape(len(smiles), -1)[keep]
        kept = [smiles[i] for i in keep]
        return cls(fingerprints(kept), labels, None if embed is None else embed(kept))

    def nearest(self, smiles: Sequence[str], k: int = TOP_K, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(n, min(k, len(self))) Tanimoto similarities to the nearest reference molecules, largest first, and their
        positions in the reference.

        A dense float32 matrix product over chunks of the reference: the intersection counts of all query-reference
        pairs at once, at a few hundred microseconds per molecule against 10,000 references on two cores, and no
        more memory than one chunk unpacked (RDKit's BulkTanimotoSimilarity is one query at a time, ~2x slower).
        """
        return self._nearest(fingerprints(smiles), k, chunk)

    def _nearest(self, packed: np.ndarray, k: int = TOP_K, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        if not len(packed) or k == 0:
            return np.zeros((len(packed), k), dtype=np.float32), np.zeros((len(packed), k), dtype=int)
        query = torch.from_numpy(np.unpackbits(packed, axis=1).astype(np.float32))  # (n, bits)
        q_count = query.sum(1, keepdim=True)
        best = torch.full((len(query), k), -1.0)
        where = torch.zeros((len(query), k), dtype=torch.long)
        with torch.inference_mode():
            for start in range(0, len(self.packed), chunk):
                ref = torch.from_numpy(np.unpackbits(self.packed[start:start + chunk], axis=1).astype(np.float32))
                inter = query @ ref.T  # (n, chunk) common on-bits
                union = q_count + ref.sum(1)[None] - inter
                sim = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros(()))
                positions = torch.arange(start, start + len(ref)).expand(len(query), -1)
                top = torch.cat([best, sim], 1).topk(k, dim=1)
                best, where = top.values, torch.cat([where, positions], 1).gather(1, top.indices)
        return best.numpy(), where.numpy()

    def signals(self, smiles: Sequence[str], mean: np.ndarray | None = None,
                pooled: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The nearest training molecule's similarity (n,), and the signals the reference gives: ``dissimilarity``
        and ``size`` (heavy atoms: errors grow with molecules' size), (n,) each; with labels and the predictions
        ``mean`` (n, targets) of a regression, ``neighbour_spread``, the similarity-weighted sd of the nearest
        molecules' labels (a rough neighbourhood: activity cliffs), and ``neighbour_disagreement``, |prediction -
        their weighted mean label| (a nearest-neighbour model disagreeing); with the molecules' pooled vectors
        (n, d) and a reference that has them, ``embedding`` (see ``embedding_distance``).
        """
        packed, heavy = featurize(smiles)
        sims, where = self._nearest(packed)
        if not sims.shape[1]:
            return np.zeros(len(smiles), dtype=np.float32), {"dissimilarity": np.ones(len(smiles)), "size": heavy}
        out = {"dissimilarity": 1.0 - sims.mean(axis=1), "size": heavy}
        if pooled is not None and self.embeddings is not None:
            out["embedding"] = embedding_distance(self.embeddings, pooled)
        if self.labels is not None and mean is not None:
            labels = self.labels[where]  # (n, k, targets)
            w = np.where(np.isfinite(labels), np.maximum(sims, 1e-3)[:, :, None], 0.0)
            values = np.nan_to_num(labels)
            total = np.maximum(w.sum(axis=1), 1e-12)
            centre = (w * values).sum(axis=1) / total  # (n, targets)
            spread = np.sqrt((w * (values - centre[:, None]) ** 2).sum(axis=1) / total)
            out["neighbour_spread"] = spread
            out["neighbour_disagreement"] = np.abs(mean - centre)
        return sims[:, 0], out

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / REFERENCE_FILE
        extra = {} if self.labels is None else {"labels": self.labels}
        if self.embeddings is not None:
            extra["embeddings"] = self.embeddings
        np.savez_compressed(path, fingerprints=self.packed, bits=FP_BITS, radius=FP_RADIUS, **extra)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Reference:
        path = Path(folder) / REFERENCE_FILE
        if not path.is_file():
            raise SmilesformerError(f"{folder} says its model has a domain check, but {REFERENCE_FILE} is missing; "
                                    "copy the whole model folder")
        with np.load(path, allow_pickle=False) as data:  # arrays only: opening a model folder runs no code
            if (int(data["bits"]), int(data["radius"])) != (FP_BITS, FP_RADIUS):
                raise SmilesformerError(f"{path} holds {int(data['bits'])}-bit radius-{int(data['radius'])} "
                                        f"fingerprints; this smilesformer reads {FP_BITS}-bit radius-{FP_RADIUS}")
            return cls(data["fingerprints"], data["labels"] if "labels" in data else None,
                       data["embeddings"] if "embeddings" in data else None)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embedding_distance(reference: np.ndarray, query: np.ndarray, k: int = TOP_K, chunk: int = 8192) -> np.ndarray:
    """(n,) 1 - the mean cosine similarity of each (n, d) ``query`` vector to its ``k`` nearest ``reference`` vectors
    (m, d): a float32 matrix product over chunks of the reference, as ``Reference.nearest``."""
    k = min(k, len(reference))
    if not len(query) or k == 0:
        return np.ones(len(query), dtype=np.float32)
    q = torch.from_numpy(_unit_rows(query))
    best = torch.full((len(q), k), -2.0)
    with torch.inference_mode():
        for start in range(0, len(reference), chunk):
            ref = torch.from_numpy(_unit_rows(reference[start:start + chunk]))
            best = torch.cat([best, q @ ref.T], 1).topk(k, dim=1).values
    return (1.0 - best.mean(1)).numpy()


@dataclass
class UncertaintyFit:
    """What ``fit_uncertainty`` learnt on the validation set; saved in smilesformer.json (``ModelMeta.uncertainty``)."""

    signals: list[str]
    """The signals the model has, in the order of each target's weights."""
    weights: list[list[float]] = field(default_factory=list)
    """Regression, per target: [intercept, weight of each signal] of the expected absolute error."""
    calibration: list[list[float]] = field(default_factory=list)
    """Classification: per binary target [slope, intercept] of the logit (Platt), or [1 / temperature] for a
    multiclass target; [] when the validation set could not fit one (the probabilities are left as they are)."""
    domain_threshold: float = 0.0
    """Nearest-neighbour similarity below which ``in_domain`` is False."""
    domain_choice: dict = field(default_factory=dict)
    """How the threshold was chosen: the validation quantile, flagged count, and mean errors flagged / not."""
    reference_size: int = 0
    n_valid: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> UncertaintyFit:
        return cls(**data)


def signal_matrix(signals: dict[str, np.ndarray], names: Sequence[str], j: int) -> np.ndarray:
    """(n, len(names)) the named signals of output column ``j`` (the per-molecule ones are (n,))."""
    cols = [signals[name] if signals[name].ndim == 1 else signals[name][:, j] for name in names]
    return np.nan_to_num(np.stack(cols, axis=1).astype(float))


def predicted_sd(weights: Sequence[float], x: np.ndarray) -> np.ndarray:
    """(n,) the standard deviation of the error, from fitted [intercept, weights...] and (n, signals) ``x``."""
    w = np.asarray(weights, dtype=float)
    mae = w[0] + x @ w[1:]
    return np.maximum(mae, 1e-6) * SQRT_PI_2


def _nnls_fit(x: np.ndarray, err: np.ndarray) -> list[float]:
    """[intercept, weights] >= 0 of the absolute error on the signals, least squares."""
    from scipy.optimize import nnls

    design = np.column_stack([np.ones(len(x)), x])
    scale = np.maximum(design.std(axis=0), 1e-12)
    scale[0] = 1.0
    coef, _ = nnls(design / scale, err)  # scaled columns: nnls converges the same whatever a signal's unit
    coef = coef / scale
    if coef[0] <= 0:  # keep every molecule's sd above zero: a floor of a tenth of the mean error
        coef[0] = 0.1 * float(np.mean(err))
    return [float(c) for c in coef]


def _conformal_scale(ratio: np.ndarray, coverage: float = 0.9) -> float:
    n = len(ratio)
    level = min(math.ceil((n + 1) * coverage) / n, 1.0)  # finite-sample conformal quantile
    return float(np.quantile(ratio, level, method="higher"))


def fit_regression(y: np.ndarray, mean: np.ndarray, signals: dict[str, np.ndarray], names: Sequence[str],
                   seed: int = 0) -> tuple[list[list[float]], list[float]]:
    """Per target the error model's weights, fitted on all validation molecules, and the 90% interval scale,
    from conformal scores whose sd comes from weights fitted on the other folds.

    Args:
        y, mean: (n, targets) validation labels (NaN = missing) and predictions.
        signals: name -> (n,) or (n, targets) signal values on the same molecules.
    """
    weights, scales = [], []
    rng = np.random.default_rng(seed)
    for j in range(y.shape[1]):
        keep = np.isfinite(y[:, j]) & np.isfinite(mean[:, j])
        x, err = signal_matrix(signals, names, j)[keep], np.abs(y[keep, j] - mean[keep, j])
        if len(err) < 2 * FOLDS:
            weights.append([float(np.mean(err)) if len(err) else 1.0] + [0.0] * len(names))
            scales.append(GAUSSIAN_Z90)
            continue
        weights.append(_nnls_fit(x, err))
        fold = rng.permutation(len(err)) % FOLDS
        sd = np.empty(len(err))
        for f in range(FOLDS):
            sd[fold == f] = predicted_sd(_nnls_fit(x[fold != f], err[fold != f]), x[fold == f])
        scales.append(_conformal_scale(err / sd))
    return weights, scales


def fit_calibration(y: np.ndarray, prob: np.ndarray, multiclass: bool) -> list[list[float]]:
    """Platt scaling per binary target ([slope, intercept] of the logit), or a temperature for a multiclass one.

    A target with fewer than 20 labelled validation molecules or one class gets [] (left uncalibrated); so does a
    fit whose slope is not positive (it would reverse the model's ranking).
    """
    from scipy.optimize import minimize_scalar
    from sklearn.linear_model import LogisticRegression

    if multiclass:
        keep = np.isfinite(y[:, 0])
        labels, logp = y[keep, 0].astype(int), np.log(np.clip(prob[keep], 1e-7, 1.0))
        if len(labels) < 20 or len(np.unique(labels)) < 2:
            return [[]]

        def nll(inv_t: float) -> float:
            z = logp * inv_t
            z = z - z.max(1, keepdims=True)
            return float(-np.mean(z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(1))))

        return [[float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)]]
    out = []
    for j in range(y.shape[1]):
        keep = np.isfinite(y[:, j]) & np.isfinite(prob[:, j])
        labels = y[keep, j].astype(int)
        if len(labels) < 20 or len(np.unique(labels)) < 2:
            out.append([])
            continue
        logit = _logit(prob[keep, j])[:, None]
        fit = LogisticRegression(C=1e4).fit(logit, labels)  # nearly unregularized: two parameters
        slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
        out.append([slope, intercept] if slope > 0 else [])
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def calibrate(prob: np.ndarray, calibration: list[list[float]], multiclass: bool) -> np.ndarray:
    """Probabilities through the fitted calibration (see ``fit_calibration``)."""
    if multiclass:
        if not calibration or not calibration[0]:
            return prob
        z = np.log(np.clip(prob, 1e-7, 1.0)) * calibration[0][0]
        z = np.exp(z - z.max(1, keepdims=True))
        return (z / z.sum(1, keepdims=True)).astype(prob.dtype)
    out = prob.copy()
    for j, params in enumerate(calibration):
        if params:
            out[:, j] = 1 / (1 + np.exp(-(params[0] * _logit(prob[:, j]) + params[1])))
    return out


def choose_domain_threshold(similarity: np.ndarray, error: np.ndarray) -> tuple[float, dict]:
    """The nearest-neighbour similarity below which a molecule is flagged, chosen on validation molecules.

    Among the thresholds at ``DOMAIN_QUANTILES`` of the validation similarities, the one whose flagged molecules
    (at least ``MIN_FLAGGED``) have the largest mean error relative to the rest. Without a threshold that flags
    molecules with larger errors, the lowest quantile is kept: only the molecules least like the training set are
    flagged.

    Args:
        similarity: (n,) nearest training molecule's similarity of each validation molecule.
        error: (n,) its error (absolute error; for classification, |label - probability|), NaN = no label.
    """
    keep = np.isfinite(error)
    similarity, error = similarity[keep], error[keep]
    if len(error) < 2 * MIN_FLAGGED:
        return 0.0, {"reason": f"{len(error)} labelled validation molecules: too few to choose on"}
    best = None
    for q in DOMAIN_QUANTILES:
        t = float(np.quantile(similarity, q))
        flagged = similarity < t
        if flagged.sum() < MIN_FLAGGED or (~flagged).sum() < MIN_FLAGGED:
            continue
        ratio = float(error[flagged].mean() / max(error[~flagged].mean(), 1e-12))
        record = {"quantile": q, "threshold": t, "flagged": int(flagged.sum()), "n": int(len(error)),
                  "error_flagged": float(error[flagged].mean()), "error_rest": float(error[~flagged].mean()),
                  "ratio": ratio}
        if best is None or ratio > best["ratio"]:
            best = record
    if best is None:
        return 0.0, {"reason": "no quantile flags enough validation molecules"}
    if best["ratio"] <= 1.0:
        t = float(np.quantile(similarity, DOMAIN_QUANTILES[0]))
        return t, {"quantile": DOMAIN_QUANTILES[0], "threshold": t,
                   "reason": "no threshold flagged molecules with larger validation errors"}
    return best["threshold"], best
