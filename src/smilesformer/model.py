"""Building and loading HF encoder models, and ``SmilesModel``: a model, its tokenizer and its task, with
scikit-learn-like verbs (``fit``, ``predict``, ``evaluate``, ``save_pretrained``).

Heads are configured, not written: ``AutoModelForSequenceClassification`` with ``num_labels`` targets and
``problem_type`` regression (MSE), multi-label (one logit per binary task) or single-label (multiclass).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
)

from . import __version__
from .config import DEFAULT_MODEL, Task, TrainConfig
from .data import SmilesformerError
from .descriptors import (
    DESCRIPTOR_SETS,
    ENCODER_TYPES,
    descriptor_model_from_config,
    with_descriptor_head,
)
from .tokenization import build_regex_tokenizer, load_tokenizer

__all__ = [
    "PRESETS",
    "BUNDLED_DIR",
    "META_FILE",
    "ModelMeta",
    "SmilesModel",
    "resolve_model_source",
    "make_config",
    "bundled_model_path",
]

logger = logging.getLogger(__name__)

META_FILE = "smilesformer.json"
BUNDLED_DIR = Path(__file__).parent / "models"

# RoBERTa shapes. `small` has the layers, width and heads of ChemBERTa-2's smallest (3 layers, hidden 384,
# 12 heads; feed-forward 2x hidden to keep the shipped weights under 25 MB), the bundled model's;
# `base` is ChemBERTa's (6 layers, hidden 768); `tiny` is for tests.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "small": dict(hidden_size=384, num_hidden_layers=3, num_attention_heads=12, intermediate_size=768),
    "base": dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072),
}


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path | None:
    """Folder of a model shipped inside the package, or None if it is not there."""
    path = BUNDLED_DIR / name
    return path if (path / "config.json").is_file() else None


def resolve_model_source(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` can load: bundled name, local folder or hub name."""
    bundled = bundled_model_path(name)
    if bundled is not None:
        return str(bundled)
    if name == DEFAULT_MODEL:
        raise SmilesformerError(
            f"the bundled model {DEFAULT_MODEL!r} is not in this installation ({BUNDLED_DIR}); "
            "pass --model random:small to start from random weights, or a checkpoint path"
        )
    return name


def _offline_error(name: str, exc: Exception) -> SmilesformerError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    why = "HF_HUB_OFFLINE=1 is set" if offline else "the Hugging Face hub could not be reached"
    return SmilesformerError(
        f"cannot load model {name!r}: it is not a local folder, not a bundled model, not in the Hugging Face "
        f"cache, and {why}. Download it where there is network (`hf download {name}`) and copy the cache "
        f"(HF_HOME) here, pass a local folder, or use the bundled model {DEFAULT_MODEL!r}. ({exc})"
    )


def make_config(preset: str, vocab_size: int, max_length: int, pad_token_id: int, **overrides) -> RobertaConfig:
    """A RoBERTa config of a named size."""
    if preset not in PRESETS:
        raise SmilesformerError(f"unknown size preset {preset!r}; known: {', '.join(PRESETS)}")
    return RobertaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_length + 2,  # RoBERTa offsets positions by padding_idx + 1
        pad_token_id=pad_token_id,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
        **PRESETS[preset],
        **overrides,
    )


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
    version: str = __version__
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.task = Task(self.task)
        if not self.targets:
            raise SmilesformerError("a model needs at least one target")
        if self.n_classes > 2 and len(self.targets) != 1:
            raise SmilesformerError("multiclass classification supports one target column")

    @property
    def num_labels(self) -> int:
        return self.n_classes if self.n_classes > 2 else len(self.targets)

    @property
    def problem_type(self) -> str:
        if self.task is Task.regression:
            return "regression"
        return "single_label_classification" if self.n_classes > 2 else "multi_label_classification"

    def save(self, folder: Path) -> None:
        data = asdict(self)
        data["task"] = self.task.value
        (folder / META_FILE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, folder: Path) -> ModelMeta:
        return cls(**json.loads((folder / META_FILE).read_text()))


def _check_descriptors(kind: str) -> None:
    if kind != "auto" and kind not in DESCRIPTOR_SETS:
        raise SmilesformerError(f"unknown descriptor set {kind!r}; choose auto or one of {', '.join(DESCRIPTOR_SETS)}")


def _resolve_descriptors(kind: str, config) -> str:
    """``auto``: the RDKit descriptor head where it can go (a RoBERTa encoder), else none."""
    if kind != "auto":
        return kind
    return "rdkit" if config.model_type in ENCODER_TYPES else "none"


class SmilesModel:
    """A transformer encoder with a prediction head, its tokenizer, and what it predicts.

    Build one with ``from_pretrained`` (a checkpoint: bundled, local or hub) or ``from_scratch``
    (random weights), train it with ``fit``, and use ``predict`` / ``evaluate`` / ``save_pretrained``.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, meta: ModelMeta):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.history: list[dict] = []
        self.trees = None
        """``trees.Trees`` blended with the transformer (see ``meta.tree_weights``), or None."""

    # construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_MODEL,
        task: Task | str | None = None,
        targets: Sequence[str] | None = None,
        n_classes: int = 2,
        max_length: int | None = None,
        descriptors: str = "none",
    ) -> SmilesModel:
        """Load a checkpoint.

        A smilesformer model folder (with smilesformer.json) loads ready to predict when no task is
        given. Otherwise the encoder is loaded and a fresh head is put on it for ``task`` / ``targets``.

        Args:
            name_or_path: bundled model name, local folder, or Hugging Face hub name.
            task: regression or classification; None to reuse a fine-tuned model's head.
            targets: names of the predicted columns.
            n_classes: 2 for binary tasks, k > 2 for one multiclass target.
            max_length: longest tokenized SMILES; defaults to the checkpoint's limit (at most 512).
            descriptors: "rdkit" to put the head that also reads RDKit descriptors (see ``descriptors``) on
                the encoder, "auto" for that head on a RoBERTa encoder and the plain one otherwise; only with
                a new head (``task`` given).

        Raises:
            SmilesformerError: the model cannot be found (offline and not cached, say).
        """
        _check_descriptors(descriptors)
        source = resolve_model_source(str(name_or_path))
        folder = Path(source)
        if (folder / "ensemble.json").is_file():
            raise SmilesformerError(f"{name_or_path} holds an ensemble of models: load it with "
                                    "smilesformer.load_predictor, which reads one model or an ensemble")
        try:
            tokenizer = load_tokenizer(source)
            if task is None:
                if not (folder / META_FILE).is_file():
                    raise SmilesformerError(
                        f"{name_or_path} is not a fine-tuned smilesformer model (no {META_FILE}); "
                        "give task and targets to put a new head on it"
                    )
                meta = ModelMeta.load(folder)
                model = AutoModelForSequenceClassification.from_pretrained(source)
            else:
                if not targets:
                    raise SmilesformerError("give the target column name(s) for the new head")
                config = AutoConfig.from_pretrained(source)
                limit = getattr(config, "max_position_embeddings", 514) - 2
                meta = ModelMeta(Task(task), list(targets), n_classes,
                                 max_length=min(max_length or 128, limit, 512), base_model=str(name_or_path))
                # ignore_mismatched_sizes: an MTR-pretrained head (one output per descriptor) is replaced
                descriptors = _resolve_descriptors(descriptors, config)
                if descriptors != "none":
                    model = with_descriptor_head(source, descriptors, num_labels=meta.num_labels,
                                                 problem_type=meta.problem_type)
                else:
                    model = AutoModelForSequenceClassification.from_pretrained(
                        source, num_labels=meta.num_labels, problem_type=meta.problem_type,
                        ignore_mismatched_sizes=True,
                    )
        except OSError as exc:
            raise _offline_error(str(name_or_path), exc) from exc
        out = cls(model, tokenizer, meta)
        if task is None and meta.tree_weights is not None:
            from .trees import load_trees

            out.trees = load_trees(folder)
        return out

    @classmethod
    def from_scratch(
        cls,
        preset: str,
        task: Task | str,
        targets: Sequence[str],
        n_classes: int = 2,
        max_length: int = 128,
        tokenizer: PreTrainedTokenizerBase | None = None,
        vocab_smiles: Sequence[str] | None = None,
        seed: int = 0,
        descriptors: str = "none",
    ) -> SmilesModel:
        """A model with random weights.

        Args:
            preset: a size in ``PRESETS``, or any checkpoint name/path whose architecture and tokenizer
                are copied (weights not), e.g. the bundled model for a fair random-init baseline.
            tokenizer: tokenizer to use; default: the checkpoint's, else the bundled model's, else a regex
                tokenizer built from ``vocab_smiles``.
            seed: seed of the weight initialization.
            descriptors: "rdkit" for the head that also reads RDKit descriptors; "auto" as in ``from_pretrained``.
        """
        _check_descriptors(descriptors)
        meta = ModelMeta(Task(task), list(targets), n_classes, max_length=max_length, base_model=f"random:{preset}")
        torch.manual_seed(seed)
        if preset in PRESETS:
            if tokenizer is None:
                bundled = bundled_model_path()
                if bundled is not None:
                    tokenizer = load_tokenizer(bundled)
                elif vocab_smiles is not None:
                    tokenizer = build_regex_tokenizer(vocab_smiles, model_max_length=max_length)
                else:
                    raise SmilesformerError("a random model needs a tokenizer or SMILES to build its vocabulary")
            config = make_config(preset, len(tokenizer), max_length, tokenizer.pad_token_id,
                                 num_labels=meta.num_labels, problem_type=meta.problem_type)
        else:
            source = resolve_model_source(preset)
            try:
                tokenizer = tokenizer or load_tokenizer(source)
                config = AutoConfig.from_pretrained(source, num_labels=meta.num_labels, problem_type=meta.problem_type)
            except OSError as exc:
                raise _offline_error(preset, exc) from exc
            meta.max_length = min(max_length, config.max_position_embeddings - 2)
        descriptors = _resolve_descriptors(descriptors, config)
        if descriptors != "none":
            model = descriptor_model_from_config(config, descriptors)
        else:
            model = AutoModelForSequenceClassification.from_config(config)
        return cls(model, tokenizer, meta)

    @classmethod
    def create(cls, name: str, task: Task | str, targets: Sequence[str], n_classes: int = 2,
               max_length: int = 128, vocab_smiles: Sequence[str] | None = None, seed: int = 0,
               descriptors: str = "none") -> SmilesModel:
        """``from_scratch`` for names written ``random:<preset or checkpoint>``, else ``from_pretrained``.

        ``seed`` fixes the random weights: the whole model for ``random:``, the new head otherwise.
        """
        if name.startswith("random:"):
            return cls.from_scratch(name.removeprefix("random:"), task, targets, n_classes, max_length,
                                    vocab_smiles=vocab_smiles, seed=seed, descriptors=descriptors)
        torch.manual_seed(seed)  # the new head is initialized from torch's global generator
        return cls.from_pretrained(name, task, targets, n_classes, max_length, descriptors=descriptors)

    # training and inference ----------------------------------------------------------------------------
    def fit(
        self,
        smiles: Sequence[str],
        labels: np.ndarray | pd.DataFrame | Sequence[float],
        valid_smiles: Sequence[str] | None = None,
        valid_labels: np.ndarray | pd.DataFrame | Sequence[float] | None = None,
        config: TrainConfig | None = None,
        output_dir: str | Path | None = None,
    ) -> SmilesModel:
        """Fine-tune with the Hugging Face Trainer (see ``train.finetune``).

        Args:
            smiles: training SMILES (already valid; see ``data.load_dataset``).
            labels: (n,) or (n, targets) floats; NaN marks a missing label (masked out).
            valid_smiles, valid_labels: optional validation set for early stopping and best-model choice.
            config: hyper-parameters; defaults to ``TrainConfig()``.
            output_dir: where checkpoints go (kept for resuming); a temporary folder if None.
        """
        from .train import finetune

        self.history = finetune(self, smiles, labels, valid_smiles, valid_labels, config or TrainConfig(), output_dir)
        return self

    def predict(self, smiles: Sequence[str], batch_size: int = 128, progress: bool = False) -> pd.DataFrame:
        """Predict every SMILES; one output row per input, in order, with an ``error`` column.

        Returns:
            Regression: ``<target>_pred`` per target. Binary classification: ``<target>_prob`` (of class 1)
            and ``<target>_pred``. Multiclass: ``<target>_prob_<k>`` per class and ``<target>_pred``.
            An invalid SMILES gets NaN predictions and its reason in ``error``.
        """
        from .evaluate import predict_table

        return predict_table(self, smiles, batch_size=batch_size, progress=progress)

    def evaluate(self, smiles: Sequence[str], labels: np.ndarray | pd.DataFrame, batch_size: int = 128) -> dict:
        """Metrics per target and averaged (see ``evaluate.compute_metrics``)."""
        from .evaluate import compute_metrics, prediction_matrix

        preds = self.predict(smiles, batch_size=batch_size)
        return compute_metrics(self.meta, np.asarray(labels, dtype=float).reshape(len(preds), -1),
                               prediction_matrix(self.meta, preds))

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write a standard HF folder (safetensors weights, config, tokenizer) plus smilesformer.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.meta.save(folder)
        if self.trees is not None:
            from .trees import save_trees

            save_trees(self.trees, folder)
        return folder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
