"""What a model predicts: its task layout (regression, binary, multiclass) and ``ModelMeta``, saved with it.

One small object per task kind owns everything that differs between kinds, so no other module switches on the
task again (chemprop v2 does the same with its per-task objects): the head's size and ``problem_type``, the
label scaling, the training loss, the transform from logits to outputs in the label scale, the output columns,
the metrics, and how a tree model's outputs line up with the head's.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import Task
from .data import SmilesformerError
from .evaluate import (
    GAUSSIAN_Z90,
    classification_metrics,
    mean_over_targets,
    multiclass_metrics,
    regression_metrics,
)
from .version import __version__

__all__ = ["META_FILE", "ENSEMBLE_FILE", "DOMAIN_COLUMNS", "ModelMeta", "Layout", "Regression", "Binary", "Multiclass",
           "layout_for", "compute_metrics", "prediction_columns", "prediction_matrix"]

META_FILE = "smilesformer.json"
ENSEMBLE_FILE = "ensemble.json"  # an ensemble folder lists its member folders here
DOMAIN_COLUMNS = ("domain_similarity", "in_domain")
"""The domain check's columns, one pair per model (see ``uncertainty``)."""


@dataclass
class ModelMeta:
    """What a fine-tuned model predicts and how to read its outputs; saved as smilesformer.json."""

    task: Task
    targets: list[str]
    n_classes: int = 2
    """2 for binary tasks (one logit each); k > 2 for a single multiclass target."""
    label_mean: list[float] | None = None
    """Regression: training-label mean per target, added back at predict time."""
    label_std: list[float] | None = None
    """Regression: training-label standard deviation per target."""
    max_length: int = 128
    base_model: str = ""
    smiles_col: str = "smiles"
    tta: int = 0
    """Randomized SMILES averaged with the input SMILES at predict time (test-time augmentation)."""
    ensemble_size: int = 1
    """Member models whose predictions are averaged (an ensemble folder; 1 for a single model)."""
    interval_scale: list[float] | None = None
    """Per target, the multiple of the prediction spread that gives a 90% interval (fitted on the valid set)."""
    tree_weights: list[float] | None = None
    """Per target, the transformer's weight in its blend with gradient-boosted trees on RDKit descriptors
    (saved as trees.skops; the trees get 1 - w, see ``trees``); None: the transformer alone."""
    uncertainty: dict | None = None
    """What the uncertainty and domain check learnt on the validation set (``uncertainty.UncertaintyFit``); None: a
    model without them (no validation set, or an older model folder)."""
    version: str = __version__
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.task = Task(self.task)
        if not self.targets:
            raise SmilesformerError("a model needs at least one target")
        if self.n_classes > 2 and len(self.targets) != 1:
            raise SmilesformerError("multiclass classification supports one target column")

    @property
    def layout(self) -> Layout:
        return layout_for(self.task, self.n_classes)

    @property
    def num_labels(self) -> int:
        return self.layout.num_labels(self)

    @property
    def problem_type(self) -> str:
        return self.layout.problem_type

    @property
    def has_spread(self) -> bool:
        """Whether predictions come from several forward passes per molecule (members or randomized SMILES)."""
        return self.tta > 0 or self.ensemble_size > 1

    @property
    def has_uncertainty(self) -> bool:
        """Whether predictions carry a fitted uncertainty and domain check (``predictors.Uncertain``)."""
        return self.uncertainty is not None

    def save(self, folder: Path) -> None:
        data = asdict(self)
        data["task"] = self.task.value
        (Path(folder) / META_FILE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, folder: Path) -> ModelMeta:
        return cls(**json.loads((Path(folder) / META_FILE).read_text()))


class Layout:
    """How one task kind reads labels and writes predictions. Outputs are (n, num_labels) arrays in the label
    scale: values (regression), probabilities of class 1 (binary) or of each class (multiclass)."""

    problem_type: str
    label_dtype = torch.float32
    has_interval = False
    """Whether a spread becomes a calibrated 90% interval (``<target>_pi90_low/high``)."""
    trees_by_default = False
    """Whether ``TrainConfig(trees="auto")`` blends trees in: where they were measured to help."""

    def num_labels(self, meta: ModelMeta) -> int:
        return len(meta.targets)

    def fit_scaling(self, meta: ModelMeta, y: np.ndarray) -> None:
        """Learn the label scaling from the training labels (none but for regression)."""
        meta.label_mean = meta.label_std = None

    def training_labels(self, meta: ModelMeta, y: np.ndarray) -> np.ndarray:
        """(n, targets) labels as the head trains on them (NaN = missing)."""
        return y.astype(np.float32)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean loss over the labels present; a NaN label (a gap in multi-task data) is left out."""
        mask = ~torch.isnan(labels)
        per_item = self._per_item(logits, torch.nan_to_num(labels.float()))
        return (per_item * mask).sum() / mask.sum().clamp(min=1)

    def per_example_loss(self, meta: ModelMeta, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(batch,) training loss per molecule for labels in the label scale; NaN labels are left out."""
        target = self._scaled(meta, labels)
        mask = torch.isfinite(target)
        per_item = self._per_item(logits, torch.nan_to_num(target))
        return (per_item * mask).sum(-1) / mask.sum(-1).clamp(min=1)

    def _scaled(self, meta: ModelMeta, labels: torch.Tensor) -> torch.Tensor:
        return labels

    def _per_item(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def outputs(self, meta: ModelMeta, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def columns(self, meta: ModelMeta) -> list[str]:
        raise NotImplementedError

    def spread_columns(self, meta: ModelMeta) -> list[str]:
        """The uncertainty columns, after the predictions."""
        return []

    def write(self, table: pd.DataFrame, rows: list[int], meta: ModelMeta, mean: np.ndarray,
              sd: np.ndarray | None) -> None:
        raise NotImplementedError

    def matrix(self, meta: ModelMeta, table: pd.DataFrame) -> np.ndarray:
        """The (n, targets) or (n, k) array that ``metrics`` takes, read back from a prediction table."""
        raise NotImplementedError

    def metrics(self, meta: ModelMeta, y: np.ndarray, p: np.ndarray) -> dict[str, dict]:
        raise NotImplementedError

    def output_name(self, meta: ModelMeta, j: int) -> str:
        """What the head's output ``j`` is, in words (explanations name what they explain)."""
        return f"{meta.targets[j]} logit of class 1"

    def output_scale(self, meta: ModelMeta, j: int) -> tuple[float, float]:
        """(scale, shift) that take the head's output ``j`` to the unit ``output_name`` speaks of."""
        return 1.0, 0.0

    def output_columns(self, meta: ModelMeta, weights) -> np.ndarray:
        """A per-target value (a blend weight) spread over the output columns."""
        return np.asarray(weights, dtype=float)

    def target_columns(self, j: int) -> slice:
        """The output columns of target ``j``."""
        return slice(j, j + 1)

    def blend_loss(self, y: np.ndarray, p: np.ndarray) -> float:
        """Loss of one target's outputs ``p`` against labels ``y``, to choose a blend weight on."""
        raise NotImplementedError

    def tree_model(self, params: dict):
        """An unfitted scikit-learn tree model for one target."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(**params)

    def tree_outputs(self, meta: ModelMeta, models: list, x: np.ndarray) -> np.ndarray:
        """(n, num_labels) outputs of one fitted tree model per target (NaN for a target without one)."""
        out = np.full((len(x), len(models)), np.nan)
        for j, model in enumerate(models):
            if model is not None:
                out[:, j] = self._tree_column(model, x)
        return out

    def _tree_column(self, model, x: np.ndarray) -> np.ndarray:
        return model.predict_proba(x)[:, list(model.classes_).index(1)]


class Regression(Layout):
    problem_type = "regression"
    has_interval = True
    trees_by_default = True

    def output_name(self, meta, j) -> str:
        return meta.targets[j]

    def output_scale(self, meta, j) -> tuple[float, float]:
        if meta.label_mean is None:
            return 1.0, 0.0
        return float(meta.label_std[j]), float(meta.label_mean[j])  # training standardized the labels

    def fit_scaling(self, meta: ModelMeta, y: np.ndarray) -> None:
        # labels are standardized for training and the scaling undone at predict time
        std = np.nanstd(y, axis=0)
        meta.label_mean = np.nanmean(y, axis=0).tolist()
        meta.label_std = np.where(std > 0, std, 1.0).tolist()

    def training_labels(self, meta: ModelMeta, y: np.ndarray) -> np.ndarray:
        return ((y - np.asarray(meta.label_mean)) / np.asarray(meta.label_std)).astype(np.float32)

    def _scaled(self, meta: ModelMeta, labels: torch.Tensor) -> torch.Tensor:
        if meta.label_mean is None:
            return labels
        mean = torch.tensor(meta.label_mean, device=labels.device, dtype=labels.dtype)
        std = torch.tensor(meta.label_std, device=labels.device, dtype=labels.dtype)
        return (labels - mean) / std  # the head was trained on standardized labels

    def _per_item(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (logits - target) ** 2

    def outputs(self, meta: ModelMeta, logits: np.ndarray) -> np.ndarray:
        if meta.label_mean is None:
            return logits
        return logits * np.asarray(meta.label_std, dtype=np.float32) + np.asarray(meta.label_mean, dtype=np.float32)

    def columns(self, meta: ModelMeta) -> list[str]:
        return [f"{t}_pred" for t in meta.targets]

    def spread_columns(self, meta: ModelMeta) -> list[str]:
        if not (meta.has_spread or meta.has_uncertainty):
            return []
        return [c for t in meta.targets for c in (f"{t}_sd", f"{t}_pi90_low", f"{t}_pi90_high")]

    def write(self, table, rows, meta, mean, sd) -> None:
        table.loc[rows, self.columns(meta)] = mean
        if sd is None:
            return
        scales = meta.interval_scale or [GAUSSIAN_Z90] * len(meta.targets)
        for j, t in enumerate(meta.targets):
            table.loc[rows, f"{t}_sd"] = sd[:, j]
            table.loc[rows, f"{t}_pi90_low"] = mean[:, j] - scales[j] * sd[:, j]
            table.loc[rows, f"{t}_pi90_high"] = mean[:, j] + scales[j] * sd[:, j]

    def matrix(self, meta, table) -> np.ndarray:
        return table[self.columns(meta)].to_numpy(float)

    def metrics(self, meta, y, p) -> dict[str, dict]:
        return {name: regression_metrics(y[:, j], p[:, j]) for j, name in enumerate(meta.targets)}

    def blend_loss(self, y, p) -> float:
        return float(np.mean((p[:, 0] - y) ** 2))

    def tree_model(self, params: dict):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(**params)

    def _tree_column(self, model, x: np.ndarray) -> np.ndarray:
        return model.predict(x)


def _check_classes(meta: ModelMeta, present: list[np.ndarray], expected: int) -> None:
    """Refuse a target whose training labels hold one class (a classifier learns nothing from it, and accuracy and
    F1 of 1.0 would say nothing); warn when some classes are missing."""
    for target, classes in zip(meta.targets, present, strict=True):
        shown = ", ".join(f"{c:g}" for c in classes)
        if len(classes) < 2:
            raise SmilesformerError(
                f"target {target!r} has a single class ({shown or 'no labels'}) in the training rows: a classifier "
                "cannot learn from it. Check the label column and the split, or train on data with both classes")
        if len(classes) < expected:
            warnings.warn(f"target {target!r}: only classes {shown} of {expected} are in the training rows; the "
                          "model cannot predict the others", stacklevel=3)


class Binary(Layout):
    """One or more binary targets: one logit each, trained with binary cross-entropy."""

    problem_type = "multi_label_classification"

    def _per_item(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")

    def fit_scaling(self, meta, y) -> None:
        super().fit_scaling(meta, y)
        _check_classes(meta, [np.unique(y[~np.isnan(y[:, j]), j]) for j in range(y.shape[1])], 2)

    def outputs(self, meta, logits) -> np.ndarray:
        return torch.sigmoid(torch.from_numpy(logits)).numpy()

    def columns(self, meta) -> list[str]:
        return [c for t in meta.targets for c in (f"{t}_prob", f"{t}_pred")]

    def spread_columns(self, meta) -> list[str]:
        return ([f"{t}_confidence" for t in meta.targets] if meta.has_uncertainty else []) + \
            ([f"{t}_prob_sd" for t in meta.targets] if meta.has_spread else [])

    def write(self, table, rows, meta, mean, sd) -> None:
        for j, t in enumerate(meta.targets):
            table.loc[rows, f"{t}_prob"] = mean[:, j]
            table.loc[rows, f"{t}_pred"] = (mean[:, j] >= 0.5).astype(float)
            if meta.has_uncertainty:  # the (calibrated) probability of the predicted class
                table.loc[rows, f"{t}_confidence"] = np.maximum(mean[:, j], 1.0 - mean[:, j])
            if sd is not None:
                table.loc[rows, f"{t}_prob_sd"] = sd[:, j]

    def matrix(self, meta, table) -> np.ndarray:
        return table[[f"{t}_prob" for t in meta.targets]].to_numpy(float)

    def metrics(self, meta, y, p) -> dict[str, dict]:
        return {name: classification_metrics(y[:, j], p[:, j]) for j, name in enumerate(meta.targets)}

    def blend_loss(self, y, p) -> float:
        p = np.clip(p[:, 0], 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


class Multiclass(Layout):
    """One target with k > 2 classes: k logits, trained with cross-entropy; labels are class ids."""

    problem_type = "single_label_classification"
    label_dtype = torch.long

    def output_name(self, meta, j) -> str:
        return f"{meta.targets[0]} logit of class {j}"

    def num_labels(self, meta) -> int:
        return meta.n_classes

    def fit_scaling(self, meta, y) -> None:
        super().fit_scaling(meta, y)
        _check_classes(meta, [np.unique(y[~np.isnan(y[:, 0]), 0])], meta.n_classes)

    def training_labels(self, meta, y) -> np.ndarray:
        return y[:, 0].astype(np.float32)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, labels.long().view(-1))

    def per_example_loss(self, meta, logits, labels) -> torch.Tensor:
        classes = torch.where(torch.isfinite(labels[:, 0]), labels[:, 0], -100).long()  # -100: no label
        return torch.nn.functional.cross_entropy(logits, classes, ignore_index=-100, reduction="none")

    def outputs(self, meta, logits) -> np.ndarray:
        return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()

    def columns(self, meta) -> list[str]:
        t = meta.targets[0]
        return [f"{t}_prob_{k}" for k in range(meta.n_classes)] + [f"{t}_pred"]

    def spread_columns(self, meta) -> list[str]:
        return [f"{meta.targets[0]}_confidence"] if meta.has_uncertainty else []

    def write(self, table, rows, meta, mean, sd) -> None:
        t = meta.targets[0]
        table.loc[rows, [f"{t}_prob_{k}" for k in range(meta.n_classes)]] = mean
        table.loc[rows, f"{t}_pred"] = mean.argmax(axis=1)
        if meta.has_uncertainty:
            table.loc[rows, f"{t}_confidence"] = mean.max(axis=1)

    def matrix(self, meta, table) -> np.ndarray:
        return table[self.columns(meta)[:-1]].to_numpy(float)

    def metrics(self, meta, y, p) -> dict[str, dict]:
        return {meta.targets[0]: multiclass_metrics(y[:, 0], p)}

    def output_columns(self, meta, weights) -> np.ndarray:
        return np.full(meta.n_classes, weights[0], dtype=float)

    def target_columns(self, j: int) -> slice:
        return slice(None)

    def blend_loss(self, y, p) -> float:
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(-np.mean(np.log(p[np.arange(len(y)), y.astype(int)])))

    def tree_outputs(self, meta, models, x) -> np.ndarray:
        if models[0] is None:
            return np.full((len(x), meta.n_classes), np.nan)
        out = np.zeros((len(x), meta.n_classes))
        out[:, models[0].classes_.astype(int)] = models[0].predict_proba(x)  # a class unseen in training: 0
        return out


_LAYOUTS = {"regression": Regression(), "binary": Binary(), "multiclass": Multiclass()}


def layout_for(task: Task | str, n_classes: int = 2) -> Layout:
    """The layout of a task: regression, binary (one or more 0/1 targets) or multiclass (one target, k > 2)."""
    if Task(task) is Task.regression:
        return _LAYOUTS["regression"]
    return _LAYOUTS["multiclass" if n_classes > 2 else "binary"]


def layout_of_problem(problem_type: str) -> Layout:
    """The layout whose head has this HF ``problem_type`` (what the Trainer's model carries in its config)."""
    for layout in _LAYOUTS.values():
        if layout.problem_type == problem_type:
            return layout
    raise SmilesformerError(f"unknown problem_type {problem_type!r}")


def compute_metrics(meta: ModelMeta, y: np.ndarray, p: np.ndarray) -> dict:
    """Metrics per target and their mean over targets.

    Args:
        y: (n, targets) labels, NaN where missing.
        p: (n, targets) predictions (regression) or probabilities of class 1 (binary);
            (n, k) class probabilities for a multiclass target.

    Returns:
        ``{"per_target": {name: {...}}, "mean": {...}}``.
    """
    per_target = meta.layout.metrics(meta, y, p)
    return {"per_target": per_target, "mean": mean_over_targets(per_target)}


def molecule_errors(meta: ModelMeta, y: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(n,) one error per molecule, the one the domain threshold is chosen on and the domain check is reported in:
    the mean over targets of the absolute error in training-label sds (regression: targets in different units
    count alike), of |label - probability| (binary), or 1 - the true class's probability (multiclass); NaN for a
    molecule without labels."""
    with np.errstate(invalid="ignore"):
        if meta.n_classes > 2 and not meta.layout.has_interval:
            out = np.full(len(y), np.nan)
            keep = np.isfinite(y[:, 0])
            out[keep] = 1.0 - mean[keep, y[keep, 0].astype(int)]
            return out
        err = np.abs(y - mean)
        if meta.layout.has_interval and meta.label_std is not None:
            err = err / np.asarray(meta.label_std)
        counts = np.isfinite(err).sum(axis=1)
        return np.where(counts > 0, np.nansum(err, axis=1) / np.maximum(counts, 1), np.nan)


def prediction_columns(meta: ModelMeta) -> list[str]:
    """Names of the columns a prediction table has, in order: the predictions, their uncertainty and the domain
    check when the model has them (see ``uncertainty``)."""
    layout = meta.layout
    domain = list(DOMAIN_COLUMNS) if meta.has_uncertainty else []
    return layout.columns(meta) + layout.spread_columns(meta) + domain


def prediction_matrix(meta: ModelMeta, table: pd.DataFrame) -> np.ndarray:
    """The (n, targets) or (n, k) array that ``compute_metrics`` takes, read from a prediction table."""
    return meta.layout.matrix(meta, table)
