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
from .rdkit_descriptors import compute_descriptors, descriptor_names
from .tasks import ModelMeta

__all__ = ["TREE_FILE", "Trees", "fit_trees", "tree_outputs", "choose_weights", "save_trees", "load_trees"]

logger = logging.getLogger(__name__)

TREE_FILE = "trees.skops"
WEIGHT_GRID = np.linspace(0.0, 1.0, 21)
"""Transformer weights tried on the validation set."""
NO_VALID_WEIGHT = 0.5
"""The blend weight when there is no validation set to choose one on."""
# the one type in a fitted HistGradientBoosting model that skops does not trust by default
_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def _params(seed: int) -> dict:
    # More rounds than scikit-learn's defaults (100 at 0.1), small L2. The rounds cost time, not accuracy, past a
    # few hundred: scikit-learn's per-round overhead dominates on a few thousand molecules (about 8 ms a round on
    # 800, whatever the cores), and each round is one more tree for skops to write and load. On the validation sets
    # of AqSolDB, ESOL, Lipophilicity and BACE (scaffold, 3 seeds; benchmarks/bench_trees.py) 500 rounds at 0.1
    # score 0.3940 against 1000 at 0.05's 0.3927 (0.3%; RMSE / label sd and 1 - ROC-AUC) in half the time.
    return dict(max_iter=500, learning_rate=0.1, min_samples_leaf=10, l2_regularization=1.0,
                early_stopping=False, random_state=seed)


class Trees:
    """Fitted tree models (one per target; None where a target could not get one) and their features."""

    def __init__(self, models: list, names: Sequence[str]):
        self.models = models
        self.descriptor_names = list(names)

    def features(self, smiles: Sequence[str]) -> np.ndarray:
        # NaN (a descriptor RDKit could not compute) is left to the trees, which route missing values
        return compute_descriptors(smiles, self.descriptor_names)


def fit_trees(meta: ModelMeta, smiles: Sequence[str], labels: np.ndarray, seed: int = 0,
              names: Sequence[str] | None = None) -> Trees:
    """One ``HistGradientBoosting`` model per target on RDKit descriptors (``names``, default RDKit's whole 2D
    set); NaN labels are left out per target.

    A target with fewer than 2 labelled training molecules, or one class only, gets no trees (None), and
    the blend then gives the transformer all the weight for it.
    """
    labels = np.asarray(labels, dtype=float).reshape(len(smiles), -1)
    trees = Trees([], names or descriptor_names("rdkit"))
    x = trees.features(smiles)
    regression = meta.task is Task.regression
    for j in range(labels.shape[1]):
        keep = ~np.isnan(labels[:, j])
        y = labels[keep, j]
        if len(y) < 2 or (not regression and len(np.unique(y)) < 2):
            logger.warning("target %d has fewer than 2 labelled molecules or classes in the training set: "
                           "no trees for it", j)
            trees.models.append(None)
        else:
            trees.models.append(meta.layout.tree_model(_params(seed)).fit(x[keep], y if regression else y.astype(int)))
    return trees


def tree_outputs(trees: Trees, meta: ModelMeta, smiles: Sequence[str]) -> np.ndarray:
    """The trees' outputs in the transformer head's layout and scale: (n, labels) values or probabilities.

    A target without trees gets NaN (its blend weight is 1, see ``choose_weights``).
    """
    return meta.layout.tree_outputs(meta, trees.models, trees.features(smiles))


def choose_weights(meta: ModelMeta, y: np.ndarray | None, outputs: np.ndarray | None,
                   trees_out: np.ndarray | None) -> list[float]:
    """Per target, the transformer weight on ``WEIGHT_GRID`` with the lowest validation loss (MSE, log loss).

    Without validation labels for a target the weight is ``NO_VALID_WEIGHT``; without trees for it, 1.
    """
    layout, weights = meta.layout, []
    for j in range(len(meta.targets)):
        cols = layout.target_columns(j)
        if trees_out is not None and np.isnan(trees_out[:, cols]).all():
            weights.append(1.0)
            continue
        if y is None or outputs is None or not (~np.isnan(y[:, j])).any():
            weights.append(NO_VALID_WEIGHT)
            continue
        keep = ~np.isnan(y[:, j])
        a, b = outputs[keep][:, cols], trees_out[keep][:, cols]
        losses = [layout.blend_loss(y[keep, j], w * a + (1 - w) * b) for w in WEIGHT_GRID]
        weights.append(round(float(WEIGHT_GRID[int(np.argmin(losses))]), 2))
    return weights


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
