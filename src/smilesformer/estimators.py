"""scikit-learn estimators over SMILES: ``SmilesRegressor``, ``SmilesClassifier`` and ``SmilesEmbedder``.

They wrap the library, so they fit the model ``smilesformer finetune`` fits: ``SmilesModel.create(...).fit(...)``
with a ``TrainConfig`` built from the estimator's parameters, whose defaults are ``TrainConfig``'s own.
``SmilesEmbedder`` calls ``embeddings.embed``. Each takes X as one column of SMILES (a list, a 1-D array, a
pandas Series, or a 2-D array / DataFrame with one column), so they work in ``Pipeline``, ``cross_val_score``
and ``GridSearchCV``.

Invalid SMILES are refused, in ``fit`` as in ``predict`` / ``transform``: the error names each row (0-based
position in X), the value as written, RDKit's reason and the fix. scikit-learn's metrics and downstream
estimators reject NaN, so a NaN row would only fail later and further from its cause. To keep every row,
with NaN and the reason where one fails, call ``estimator.model_.predict`` (a ``SmilesModel``) or
``embeddings.embed``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .config import DEFAULT_MODEL, DataConfig, Task, TrainConfig
from .data import BadInputError, SmilesformerError, _describe, clean_labels, clean_smiles
from .embeddings import EmbedConfig, check_config, embed, load_encoder
from .model import SmilesModel
from .splits import random_split
from .tasks import prediction_matrix

__all__ = ["SmilesRegressor", "SmilesClassifier", "SmilesEmbedder", "TRAIN_PARAMS", "TRAIN_FIELDS_LEFT_OUT"]

TRAIN_PARAMS = ("epochs", "batch_size", "learning_rate", "weight_decay", "warmup_fraction",
                "early_stopping_patience", "max_length", "precision", "eval_batch_size", "augment", "tta",
                "ensemble", "layer_lr_decay", "descriptors", "trees", "adapt", "adapt_epochs", "uncertainty",
                "progress")
"""``TrainConfig`` fields that are estimator parameters of the same name and default."""

TRAIN_FIELDS_LEFT_OUT = {
    "seed": "is random_state",
    "group_by_length": "a speed setting; TrainConfig's default is used",
    "pad_to_max_length": "only for speed comparisons",
    "resume": "checkpoints go to a temporary folder, so there is nothing to resume",
    "logging_steps": "the training log is kept in model_.history whatever its step",
}
"""The other ``TrainConfig`` fields, and why they are not parameters (a test checks the two cover every field)."""

_FRACTIONS = DataConfig.__dataclass_fields__["fractions"].default  # train, valid, test
VALIDATION_FRACTION = _FRACTIONS[1] / (_FRACTIONS[0] + _FRACTIONS[1])
"""The CLI's default share of validation molecules among those it trains with (0.1 / (0.8 + 0.1))."""


def _smiles_input(tags):
    """scikit-learn tags for estimators whose X is one column of SMILES, not a numeric feature matrix."""
    tags.input_tags.two_d_array = False
    tags.input_tags.string = True
    return tags


def _position(i: int) -> str:
    return f"position {i}"


def _column(X, what: str) -> tuple[list, str]:
    """X as a list of values, and the name its errors use (a Series' or a one-column frame's, else "X")."""
    name = "X"
    if isinstance(X, pd.DataFrame) and X.shape[1] == 1:
        name = str(X.columns[0])
    elif isinstance(X, pd.Series) and X.name is not None:
        name = str(X.name)
    values = X.to_numpy() if isinstance(X, (pd.Series, pd.DataFrame)) else np.asarray(X, dtype=object)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise SmilesformerError(f"{what} takes one column of SMILES (a list, a 1-D array, a Series or a one-column "
                                f"frame); got an array of shape {values.shape}. Pass the SMILES column alone, "
                                "e.g. table['smiles'], or a list such as ['CCO']")
    if len(values) == 0:
        raise SmilesformerError(f"{what} got no SMILES (X is empty); pass at least one")
    return list(values), name


def _valid_smiles(X, what: str, fix: str) -> list[str]:
    """X's SMILES, stripped, after RDKit validation; raises naming every invalid row."""
    values, name = _column(X, what)
    clean, bad = clean_smiles(pd.Series(values, dtype=object), column=name)
    if len(bad):
        raise BadInputError(_describe(bad, f"invalid SMILES in {what}", fix, _position), bad)
    return clean.tolist()


_FIT_FIX = ("Fix or remove these rows before fit; load_dataset(DataConfig(..., bad_input='skip')) drops them "
            "into a report.")
_PREDICT_FIX = ("Fix or remove these rows; estimator.model_.predict(smiles) keeps every row, with NaN and the "
                "reason where one fails.")


class _SmilesEstimator(BaseEstimator):
    """What the regressor and the classifier share: parameters, the validation cut and the fit."""

    _task: Task

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        validation_fraction: float = VALIDATION_FRACTION,
        random_state: int | np.random.RandomState | None = TrainConfig.seed,
        epochs: int = TrainConfig.epochs,
        batch_size: int = TrainConfig.batch_size,
        learning_rate: float = TrainConfig.learning_rate,
        weight_decay: float = TrainConfig.weight_decay,
        warmup_fraction: float = TrainConfig.warmup_fraction,
        early_stopping_patience: int = TrainConfig.early_stopping_patience,
        max_length: int = TrainConfig.max_length,
        precision: str = TrainConfig.precision.value,
        eval_batch_size: int = TrainConfig.eval_batch_size,
        augment: int = TrainConfig.augment,
        tta: int = TrainConfig.tta,
        ensemble: int = TrainConfig.ensemble,
        layer_lr_decay: float = TrainConfig.layer_lr_decay,
        descriptors: str = TrainConfig.descriptors,
        trees: str = TrainConfig.trees,
        adapt: str = TrainConfig.adapt,
        adapt_epochs: int = TrainConfig.adapt_epochs,
        uncertainty: bool = TrainConfig.uncertainty,
        progress: bool = TrainConfig.progress,
    ):
        self.model = model
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.early_stopping_patience = early_stopping_patience
        self.max_length = max_length
        self.precision = precision
        self.eval_batch_size = eval_batch_size
        self.augment = augment
        self.tta = tta
        self.ensemble = ensemble
        self.layer_lr_decay = layer_lr_decay
        self.descriptors = descriptors
        self.trees = trees
        self.adapt = adapt
        self.adapt_epochs = adapt_epochs
        self.uncertainty = uncertainty
        self.progress = progress

    def __sklearn_tags__(self):
        return _smiles_input(super().__sklearn_tags__())

    def train_config(self) -> TrainConfig:
        """The ``TrainConfig`` that ``fit`` trains with (its checks raise here on a bad value)."""
        return TrainConfig(**{name: getattr(self, name) for name in TRAIN_PARAMS}, seed=self._seed())

    def _seed(self) -> int:
        # An int is the seed itself, so random_state=0 trains the model the CLI trains with --seed 0.
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _validation_cut(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the molecules trained on and of those held out for early stopping and the tree blend."""
        if not 0 <= self.validation_fraction < 1:
            raise SmilesformerError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if round((1 - self.validation_fraction) * n) >= n:  # none to hold out: train on all, no early stopping
            return np.arange(n), np.arange(0)
        # random_split cuts train / valid / test; the held-out molecules are its third part (never empty)
        train, _, held_out = random_split(n, (1 - self.validation_fraction, 0.0, self.validation_fraction), seed)
        return train, held_out

    def _fit(self, smiles: list[str], labels: np.ndarray, targets: list[str], n_classes: int = 2) -> SmilesModel:
        """The fitted model: ``SmilesModel.create(...).fit(...)`` as ``run_finetune`` (the CLI) calls them."""
        config = self.train_config()
        train, valid = self._validation_cut(len(smiles), config.seed)
        train_smiles, valid_smiles = [smiles[i] for i in train], [smiles[i] for i in valid]
        model = SmilesModel.create(self.model, self._task, targets, n_classes, config.max_length,
                                   vocab_smiles=train_smiles, seed=config.seed, descriptors=config.descriptors)
        model.fit(train_smiles, labels[train], valid_smiles or None, labels[valid] if len(valid) else None,
                  config=config)
        # Keep the fitted predictor without the closure that builds new members: the estimator then pickles
        # (joblib.dump, GridSearchCV with n_jobs > 1).
        fitted = SmilesModel.wrap(model.predictor)
        fitted.history, fitted.histories = model.history, model.histories
        return fitted

    def _outputs(self, X) -> np.ndarray:
        """(n, targets) predictions, (n, 1) probabilities of class 1, or (n, k) class probabilities."""
        table = self._table(X)  # first: it raises NotFittedError before model_ is read
        return prediction_matrix(self.model_.meta, table)

    def _table(self, X) -> pd.DataFrame:
        check_is_fitted(self)
        smiles = _valid_smiles(X, "predict", _PREDICT_FIX)
        return self.model_.predict(smiles, batch_size=self.eval_batch_size)


def _label_table(y, n: int) -> pd.DataFrame:
    """y (list, array, Series or DataFrame; one or several columns) as a frame with string column names."""
    if isinstance(y, pd.DataFrame):
        table = y.reset_index(drop=True)
    elif isinstance(y, pd.Series):
        table = y.reset_index(drop=True).to_frame("y" if y.name is None else y.name)
    else:
        values = np.asarray(y)
        if values.ndim == 1:
            table = pd.DataFrame({"y": values})
        elif values.ndim == 2:
            table = pd.DataFrame(values, columns=[f"y{j}" for j in range(values.shape[1])])
        else:
            raise SmilesformerError(f"y must be one or two dimensional, got shape {values.shape}")
    if len(table) != n:
        raise SmilesformerError(f"X has {n} SMILES but y has {len(table)} rows: give one label (row) per SMILES")
    table.columns = [str(c) for c in table.columns]
    return table


class SmilesRegressor(RegressorMixin, _SmilesEstimator):
    """A transformer fine-tuned on SMILES to predict one or several numbers, as a scikit-learn regressor.

    ``fit(X, y)`` holds out ``validation_fraction`` of the molecules (drawn with ``random_state``) for early
    stopping, the best epoch and the tree blend's weights, then runs ``SmilesModel.fit``. Every training
    parameter is the ``TrainConfig`` field of the same name with the same default (see ``TRAIN_PARAMS``), so
    ``SmilesRegressor()`` trains what ``smilesformer finetune`` trains, on the bundled model, with the RDKit
    descriptor head and the tree blend. ``descriptors="none", trees="none"`` gives the transformer alone.

    Args:
        model: bundled name, local folder, Hugging Face hub name, or ``random:<preset or checkpoint>``.
        validation_fraction: share of the molecules held out of training; 0 for none (no early stopping).
            Default: the CLI's share, 0.1 / (0.8 + 0.1).
        random_state: the ``TrainConfig.seed`` (initialization, shuffling, the validation cut) when an int;
            None or a ``RandomState`` draws one.

    Attributes:
        model_: the fitted ``SmilesModel`` (``save_pretrained``, ``evaluate``, per-row ``predict`` with spread
            columns, explain and embed read it); ``model_.history`` is the training log.
        targets_: the target names (DataFrame columns, the Series name, else "y" or "y0", "y1", ...).

    y may have missing labels (NaN) when it has several columns: they are left out of the loss. ``predict``
    returns (n,) when y was 1-D, else (n, targets).
    """

    _task = Task.regression

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y) -> SmilesRegressor:
        """Fine-tune on SMILES ``X`` and labels ``y`` ((n,) or (n, targets)).

        Raises:
            BadInputError: invalid SMILES or unusable labels, each named with its row, value and reason.
        """
        smiles = _valid_smiles(X, "fit", _FIT_FIX)
        table = _label_table(y, len(smiles))
        targets = list(table.columns)
        labels, bad = clean_labels(table, targets, Task.regression)
        if len(bad):
            raise BadInputError(_describe(bad, "labels that cannot be used in y", "Fix or remove these rows; with "
                                          "several targets a missing label (NaN) is allowed and left out of the "
                                          "loss.", _position), bad)
        self.model_ = self._fit(smiles, labels.to_numpy(float), targets)
        self.targets_ = targets
        self._y_is_1d = np.ndim(y) == 1
        return self

    def predict(self, X, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """(n,) predictions, or (n, targets) when fitted on a 2-D y.

        Args:
            return_std: also return the standard deviation of each prediction's error, as scikit-learn's
                ``GaussianProcessRegressor.predict`` does: the uncertainty fitted on the validation molecules
                (the ``<target>_sd`` column of ``model_.predict``; see ``smilesformer.uncertainty``).

        Raises:
            SmilesformerError: ``return_std`` on a model without an uncertainty (fitted with
                ``validation_fraction=0`` or ``uncertainty=False``).
        """
        table = self._table(X)
        meta = self.model_.meta
        out = prediction_matrix(meta, table).astype(float)
        if not return_std:
            return out[:, 0] if self._y_is_1d else out
        columns = [f"{t}_sd" for t in meta.targets]
        if not set(columns) <= set(table.columns):
            raise SmilesformerError("this model has no uncertainty to return: it was fitted without a validation set "
                                    "or with uncertainty=False; fit with validation_fraction > 0 (the default) and "
                                    "uncertainty=True")
        std = table[columns].to_numpy(float)
        return (out[:, 0], std[:, 0]) if self._y_is_1d else (out, std)


class SmilesClassifier(ClassifierMixin, _SmilesEstimator):
    """A transformer fine-tuned on SMILES to predict one class label, as a scikit-learn classifier.

    Labels may be of any kind (strings, ints, bools); ``classes_`` holds them sorted, and the model is trained on
    their positions 0..k-1: a binary head for two classes, a multiclass (softmax) head for more. Parameters,
    the validation cut and ``model_`` are as in ``SmilesRegressor``; ``trees="auto"`` means no tree blend for
    classification, as in the CLI. Several label columns (multi-task classification) are not an estimator
    here: use ``SmilesModel`` directly.

    Attributes:
        classes_: (k,) the class labels, sorted.
        model_: the fitted ``SmilesModel``; its target is named after y (a Series' name, else "y").
    """

    _task = Task.classification

    def fit(self, X, y) -> SmilesClassifier:
        """Fine-tune on SMILES ``X`` and class labels ``y`` (n,).

        Raises:
            BadInputError: invalid SMILES or missing labels, each named with its row and value.
            SmilesformerError: y has several columns or a single class.
        """
        smiles = _valid_smiles(X, "fit", _FIT_FIX)
        table = _label_table(y, len(smiles))
        if table.shape[1] != 1:
            raise SmilesformerError(f"SmilesClassifier takes one column of labels, got {table.shape[1]}; for several "
                                    "binary targets use SmilesModel.from_pretrained(name, 'classification', targets)")
        column = table.columns[0]
        missing = table.index[table[column].isna()]
        if len(missing):
            bad = pd.DataFrame({"row": missing, "column": column, "value": table.loc[missing, column].to_numpy(),
                                "reason": "missing label"})
            raise BadInputError(_describe(bad, "missing labels in y", "Give every molecule a class, or remove "
                                          "its row.", _position), bad)
        classes, codes = np.unique(table[column].to_numpy(), return_inverse=True)
        if len(classes) < 2:
            raise SmilesformerError(f"y has a single class ({classes[0]!r}); a classifier needs at least two")
        self.model_ = self._fit(smiles, codes.astype(float), [column], n_classes=len(classes))
        self.classes_ = classes
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(n, k) probability of each class in ``classes_``; rows sum to 1."""
        out = self._outputs(X).astype(float)
        return np.column_stack([1 - out[:, 0], out[:, 0]]) if len(self.classes_) == 2 else out

    def predict(self, X) -> np.ndarray:
        """(n,) the most probable class label of each molecule."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[proba.argmax(axis=1)]


class SmilesEmbedder(TransformerMixin, BaseEstimator):
    """Pooled encoder outputs as features: (n, hidden) floats per molecule, for any scikit-learn model.

    ``fit`` learns nothing; it loads the encoder (``embeddings.load_encoder``) and checks the settings against
    it. ``transform`` calls ``embeddings.embed``. The settings are ``EmbedConfig``'s, with its defaults.

    Args:
        model: a bundled name, a model folder (fine-tuned or pretrained), a hub name, or a ``SmilesModel``
            (e.g. a fitted ``SmilesRegressor().model_``).
        pooling: cls, mean, max, or head (a fine-tuned model's head input).
        layer: hidden state to pool (0 = embeddings, -1 = last layer).
        last_k: if > 1, the last k layers pooled and joined (width k x hidden).
        batch_size: molecules per forward pass.
        precision: auto, fp32, bf16 or fp16 for the forward pass (see ``EmbedConfig``).
        device: "auto" (a GPU when there is one), "cpu", "cuda", ...

    Attributes:
        encoder_: the loaded ``embeddings.Encoder``.
    """

    def __init__(
        self,
        model=DEFAULT_MODEL,
        *,
        pooling: str = EmbedConfig.pooling.value,
        layer: int = EmbedConfig.layer,
        last_k: int = EmbedConfig.last_k,
        batch_size: int = EmbedConfig.batch_size,
        precision: str = EmbedConfig.precision.value,
        device: str = "auto",
    ):
        self.model = model
        self.pooling = pooling
        self.layer = layer
        self.last_k = last_k
        self.batch_size = batch_size
        self.precision = precision
        self.device = device

    def __sklearn_tags__(self):
        tags = _smiles_input(super().__sklearn_tags__())
        tags.transformer_tags.preserves_dtype = []  # strings in, float32 out
        return tags

    def embed_config(self) -> EmbedConfig:
        """The ``EmbedConfig`` that ``transform`` embeds with."""
        return EmbedConfig(pooling=self.pooling, layer=self.layer, last_k=self.last_k, batch_size=self.batch_size,
                           precision=self.precision)

    def fit(self, X, y=None) -> SmilesEmbedder:
        """Load the encoder; X and y are not read.

        Raises:
            SmilesformerError: the model cannot be loaded, or it lacks the layer or head the settings ask for.
        """
        encoder = load_encoder(self.model, self.device)
        check_config(encoder, self.embed_config())
        self.encoder_ = encoder
        return self

    def transform(self, X) -> np.ndarray:
        """(n, dim) float32 pooled embeddings, one row per SMILES, in order.

        Raises:
            BadInputError: invalid SMILES, each named with its row, value and reason.
        """
        check_is_fitted(self)
        smiles = _valid_smiles(X, "transform", "Fix or remove these rows; embeddings.embed keeps every row, with "
                                              "NaN and the reason where one fails.")
        return embed(self.encoder_, smiles, self.embed_config()).vectors

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``embedding_0``, ``embedding_1``, ...: one name per output column."""
        check_is_fitted(self)
        return np.asarray([f"embedding_{k}" for k in range(self.encoder_.dim(self.embed_config()))], dtype=object)

