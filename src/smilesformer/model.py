"""``SmilesModel``: the model a user builds, fine-tunes, predicts with and saves, from Python as from the CLI.

It holds a predictor (``predictors``: one transformer, or an ensemble, with test-time augmentation and a tree
blend around it, as ``TrainConfig`` asks) and offers scikit-learn-like verbs (``fit``, ``predict``,
``evaluate``, ``save_pretrained``). ``fit`` runs the same recipe as ``smilesformer finetune``
(``train.fit_predictor``), so the Python API and the CLI build the same model from the same settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import Task, TrainConfig
from .data import SmilesformerError
from .descriptors import uses_descriptors
from .networks import PRESETS, network_with_new_head, random_network
from .predictors import Ensemble, Predictor, Transformer, load_predictor
from .tasks import ModelMeta
from .train import fit_predictor

__all__ = ["PRESETS", "ModelMeta", "SmilesModel", "SmilesEnsemble", "load_predictor"]

SmilesEnsemble = Ensemble
"""Several fine-tuned models of one task, predicting together (``predictors.Ensemble``)."""

_DEFAULTS = TrainConfig.__dataclass_fields__


class SmilesModel(Predictor):
    """A transformer encoder with a prediction head, its tokenizer, what it predicts, and what is built around it.

    Build one with ``from_pretrained`` (a checkpoint with a new head, or a fine-tuned model folder of any kind)
    or ``from_scratch`` (random weights), train it with ``fit``, and use ``predict`` / ``evaluate`` /
    ``save_pretrained``. ``model``, ``tokenizer`` and ``meta`` are those of the (first) transformer underneath,
    as explain and embed read them.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, meta: ModelMeta):
        self.predictor: Predictor = Transformer(model, tokenizer, meta)
        self.history: list[dict] = []
        """The training log of the (first) transformer; ``histories`` has every member's."""
        self.histories: list[list[dict]] = []
        self._make_member = None  # builds a fresh, untrained transformer from a seed (for ensembles)

    @classmethod
    def wrap(cls, predictor: Predictor) -> SmilesModel:
        """A ``SmilesModel`` around a fitted predictor."""
        out = cls.__new__(cls)
        out.predictor, out.history, out.histories, out._make_member = predictor, [], [], None
        return out

    # construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = "smilesformer-moses",
        task: Task | str | None = None,
        targets: Sequence[str] | None = None,
        n_classes: int = 2,
        max_length: int | None = None,
        descriptors: str = _DEFAULTS["descriptors"].default,
        seed: int = _DEFAULTS["seed"].default,
    ) -> SmilesModel:
        """Load a checkpoint.

        A fine-tuned model folder (with smilesformer.json; one model or an ensemble) loads ready to predict when
        no task is given. Otherwise the encoder is loaded and a fresh head is put on it for ``task`` / ``targets``.

        Args:
            name_or_path: bundled model name, local folder, or Hugging Face hub name.
            task: regression or classification; None to load a fine-tuned model as it is.
            targets: names of the predicted columns.
            n_classes: 2 for binary tasks, k > 2 for one multiclass target.
            max_length: longest tokenized SMILES until ``fit`` sets it from ``TrainConfig.max_length``; default the
                checkpoint's limit (at most 512).
            descriptors: "rdkit" for the head that also reads RDKit descriptors (see ``descriptors``), "none"
                for SMILES only, "auto" (``TrainConfig``'s default) for rdkit on a RoBERTa encoder.
            seed: seed of the new head's weights (torch's global random state is left as it was).

        Raises:
            SmilesformerError: the model cannot be found (offline and not cached, say).
        """
        if task is None:
            return cls.wrap(load_predictor(name_or_path))
        if not targets:
            raise SmilesformerError("give the target column name(s) for the new head")

        def make(member_seed: int) -> Transformer:
            meta = ModelMeta(Task(task), list(targets), n_classes, base_model=str(name_or_path))
            network, tokenizer = network_with_new_head(str(name_or_path), meta, max_length, descriptors, member_seed)
            return Transformer(network, tokenizer, meta)

        return cls._fresh(make, seed)

    @classmethod
    def from_scratch(
        cls,
        preset: str,
        task: Task | str,
        targets: Sequence[str],
        n_classes: int = 2,
        max_length: int = _DEFAULTS["max_length"].default,
        tokenizer: PreTrainedTokenizerBase | None = None,
        vocab_smiles: Sequence[str] | None = None,
        seed: int = _DEFAULTS["seed"].default,
        descriptors: str = "none",
    ) -> SmilesModel:
        """A model with random weights.

        Args:
            preset: a size in ``PRESETS``, or any checkpoint name/path whose architecture and tokenizer
                are copied (weights not), e.g. the bundled model for a fair random-init baseline.
            tokenizer: tokenizer to use; default: the checkpoint's, else the bundled model's, else a regex
                tokenizer built from ``vocab_smiles``.
            seed: seed of the weight initialization (torch's global random state is left as it was).
            descriptors: "rdkit" for the head that also reads RDKit descriptors; "auto" as in ``from_pretrained``.
        """

        def make(member_seed: int) -> Transformer:
            meta = ModelMeta(Task(task), list(targets), n_classes, max_length=max_length, base_model=f"random:{preset}")
            network, tok = random_network(preset, meta, tokenizer, vocab_smiles, descriptors, member_seed)
            return Transformer(network, tok, meta)

        return cls._fresh(make, seed)

    @classmethod
    def create(cls, name: str, task: Task | str, targets: Sequence[str], n_classes: int = 2,
               max_length: int | None = None, vocab_smiles: Sequence[str] | None = None,
               seed: int = _DEFAULTS["seed"].default,
               descriptors: str = _DEFAULTS["descriptors"].default) -> SmilesModel:
        """``from_scratch`` for names written ``random:<preset or checkpoint>``, else ``from_pretrained``.

        ``seed`` fixes the random weights: the whole model for ``random:``, the new head otherwise.
        """
        if name.startswith("random:"):
            return cls.from_scratch(name.removeprefix("random:"), task, targets, n_classes,
                                    max_length or _DEFAULTS["max_length"].default, vocab_smiles=vocab_smiles,
                                    seed=seed, descriptors=descriptors)
        return cls.from_pretrained(name, task, targets, n_classes, max_length, descriptors=descriptors, seed=seed)

    @classmethod
    def _fresh(cls, make, seed: int) -> SmilesModel:
        first = make(seed)
        out = cls(first.model, first.tokenizer, first.meta)
        out._make_member = make
        return out

    # training -----------------------------------------------------------------------------------------------
    def fit(
        self,
        smiles: Sequence[str],
        labels: np.ndarray | pd.DataFrame | Sequence[float],
        valid_smiles: Sequence[str] | None = None,
        valid_labels: np.ndarray | pd.DataFrame | Sequence[float] | None = None,
        config: TrainConfig | None = None,
        output_dir: str | Path | None = None,
    ) -> SmilesModel:
        """Fine-tune as ``config`` says, with the recipe ``smilesformer finetune`` runs (``train.fit_predictor``).

        Every ``TrainConfig`` field is honoured: the Trainer's settings, ``max_length`` (within the checkpoint's
        position limit), ``adapt``, ``augment``, ``ensemble`` (members from seeds seed, seed+1, ...), ``tta``
        and ``trees`` (the blend, weighted on the valid set). ``descriptors`` is decided when the head is built
        (``from_pretrained``): a config that asks for another head is refused.

        Args:
            smiles: training SMILES (already valid; see ``data.load_dataset``).
            labels: (n,) or (n, targets) floats; NaN marks a missing label (masked out).
            valid_smiles, valid_labels: optional validation set for early stopping, the best epoch, the blend
                weights and the interval scale.
            config: hyper-parameters; defaults to ``TrainConfig()``.
            output_dir: where checkpoints go (kept for resuming); a temporary folder if None.

        Returns:
            ``self``, fitted.
        """
        config = config or TrainConfig()
        if not isinstance(self.predictor, Transformer):
            raise SmilesformerError("this model is already an ensemble or a blend: fit a new model from its base "
                                    f"checkpoint ({self.meta.base_model!r}) instead")
        self._check_descriptors(config)
        if config.ensemble > 1 and self._make_member is None:
            raise SmilesformerError("ensemble > 1 trains new members from the base checkpoint: build the model with "
                                    "SmilesModel.from_pretrained(name, task, targets) or from_scratch, not from a "
                                    "fine-tuned folder")
        first = self.predictor

        def make(seed: int) -> Transformer:
            member = first if seed == config.seed else self._make_member(seed)
            limit = getattr(member.model.config, "max_position_embeddings", 514) - 2
            member.meta.max_length = min(config.max_length, limit, 512)
            return member

        self.predictor, histories = fit_predictor(make, smiles, labels, valid_smiles, valid_labels, config,
                                                  output_dir)
        self.histories, self.history = histories, histories[0]
        return self

    def _check_descriptors(self, config: TrainConfig) -> None:
        built = self.model.config.descriptor_set if uses_descriptors(self.model) else "none"
        if config.descriptors not in ("auto", built):
            raise SmilesformerError(
                f"TrainConfig(descriptors={config.descriptors!r}) asks for another head than this model has "
                f"({built}); the head is built with the model: pass descriptors={config.descriptors!r} to "
                "SmilesModel.from_pretrained / from_scratch")

    # what the predictor underneath offers -----------------------------------------------------------------------
    @property
    def meta(self) -> ModelMeta:
        return self.predictor.meta

    @property
    def members(self) -> list[Transformer]:
        return self.predictor.members

    @property
    def model(self) -> PreTrainedModel:
        return self.members[0].model

    @model.setter
    def model(self, network: PreTrainedModel) -> None:
        self.members[0].model = network

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.members[0].tokenizer

    def find(self, kind: type) -> Predictor | None:
        return self.predictor.find(kind)

    def forward(self, smiles, batch_size=128, progress=False, descriptors_of=None):
        return self.predictor.forward(smiles, batch_size, progress, descriptors_of)

    def passes(self, smiles, batch_size=128, progress=False, descriptors_of=None) -> np.ndarray:
        return self.predictor.passes(smiles, batch_size, progress, descriptors_of)

    def outputs(self, smiles, batch_size=128, progress=False):
        return self.predictor.outputs(smiles, batch_size, progress)

    def signals(self, smiles, batch_size=128, progress=False):
        return self.predictor.signals(smiles, batch_size, progress)

    def report(self, smiles, batch_size=128, progress=False):
        return self.predictor.report(smiles, batch_size, progress)

    def save_pretrained(self, folder: str | Path) -> Path:
        """A folder ``load_predictor`` and ``from_pretrained`` read back: a standard HF folder (safetensors
        weights, config, tokenizer) plus smilesformer.json, or ensemble members, trees beside them."""
        return self.predictor.save_pretrained(folder)

    def to(self, device: str | torch.device) -> SmilesModel:
        self.predictor.to(device)
        return self

    def __repr__(self) -> str:
        meta = self.meta
        return (f"SmilesModel({meta.task.value}, targets={meta.targets}, base={meta.base_model!r}, "
                f"predictor={type(self.predictor).__name__})")

