"""Building and loading the Hugging Face networks: bundled, local or hub checkpoints, and random weights.

Heads are configured, not written: ``AutoModelForSequenceClassification`` with the task layout's
``num_labels`` and ``problem_type`` (regression MSE, one logit per binary target, or k classes). The one
head we add reads RDKit descriptors beside the encoder (``descriptors``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
)

from .config import DEFAULT_MODEL
from .data import SmilesformerError
from .descriptors import DESCRIPTOR_SETS, ENCODER_TYPES, descriptor_model_from_config, with_descriptor_head
from .tasks import META_FILE, ModelMeta
from .tokenization import build_regex_tokenizer, load_tokenizer

__all__ = ["PRESETS", "BUNDLED_DIR", "bundled_model_path", "resolve_model_source", "offline_error", "make_config",
           "seeded", "load_finetuned", "network_with_new_head", "random_network"]

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


def offline_error(name: str, exc: Exception) -> SmilesformerError:
    """The error for a model that is neither here nor reachable, saying what to do."""
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


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Random weights drawn from ``seed`` without touching the caller's random state: torch's global generator
    is restored on exit, so creating a model does not reseed the rest of a notebook."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_descriptors(kind: str) -> None:
    if kind != "auto" and kind not in DESCRIPTOR_SETS:
        raise SmilesformerError(f"unknown descriptor set {kind!r}; choose auto or one of {', '.join(DESCRIPTOR_SETS)}")


def _resolve_descriptors(kind: str, config) -> str:
    """``auto``: the RDKit descriptor head where it can go (a RoBERTa encoder), else none."""
    if kind != "auto":
        return kind
    return "rdkit" if config.model_type in ENCODER_TYPES else "none"


def load_finetuned(folder: Path, name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelMeta]:
    """A fine-tuned model folder's network, tokenizer and meta (``smilesformer.json``)."""
    if not (folder / META_FILE).is_file():
        raise SmilesformerError(f"{name} is not a fine-tuned smilesformer model (no {META_FILE}); "
                                "give task and targets to put a new head on it")
    try:
        tokenizer = load_tokenizer(str(folder))
        network = AutoModelForSequenceClassification.from_pretrained(str(folder))
    except OSError as exc:
        raise offline_error(name, exc) from exc
    return network, tokenizer, ModelMeta.load(folder)


def network_with_new_head(name: str, meta: ModelMeta, max_length: int | None, descriptors: str,
                          seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A pretrained encoder (bundled, local or hub) with a new head for ``meta``'s task, initialized from ``seed``.

    Sets ``meta.max_length`` to ``max_length`` within the checkpoint's position limit (the limit itself, at
    most 512, when None).
    """
    check_descriptors(descriptors)
    source = resolve_model_source(name)
    try:
        tokenizer = load_tokenizer(source)
        config = AutoConfig.from_pretrained(source)
        limit = min(getattr(config, "max_position_embeddings", 514) - 2, 512)
        meta.max_length = min(max_length or limit, limit)
        descriptors = _resolve_descriptors(descriptors, config)
        with seeded(seed):
            if descriptors != "none":
                network = with_descriptor_head(source, descriptors, num_labels=meta.num_labels,
                                               problem_type=meta.problem_type)
            else:
                # ignore_mismatched_sizes: an MTR-pretrained head (one output per descriptor) is replaced
                network = AutoModelForSequenceClassification.from_pretrained(
                    source, num_labels=meta.num_labels, problem_type=meta.problem_type, ignore_mismatched_sizes=True)
    except OSError as exc:
        raise offline_error(name, exc) from exc
    return network, tokenizer


def random_network(preset: str, meta: ModelMeta, tokenizer: PreTrainedTokenizerBase | None,
                   vocab_smiles: Sequence[str] | None, descriptors: str,
                   seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A network with random weights: a size in ``PRESETS``, or any checkpoint's architecture (weights not).

    The tokenizer, when not given, is the checkpoint's, else the bundled model's, else a regex tokenizer
    built from ``vocab_smiles``.
    """
    check_descriptors(descriptors)
    if preset in PRESETS:
        if tokenizer is None:
            bundled = bundled_model_path()
            if bundled is not None:
                tokenizer = load_tokenizer(bundled)
            elif vocab_smiles is not None:
                tokenizer = build_regex_tokenizer(vocab_smiles, model_max_length=meta.max_length)
            else:
                raise SmilesformerError("a random model needs a tokenizer or SMILES to build its vocabulary")
        config = make_config(preset, len(tokenizer), meta.max_length, tokenizer.pad_token_id,
                             num_labels=meta.num_labels, problem_type=meta.problem_type)
    else:
        source = resolve_model_source(preset)
        try:
            tokenizer = tokenizer or load_tokenizer(source)
            config = AutoConfig.from_pretrained(source, num_labels=meta.num_labels, problem_type=meta.problem_type)
        except OSError as exc:
            raise offline_error(preset, exc) from exc
        meta.max_length = min(meta.max_length, config.max_position_embeddings - 2)
    descriptors = _resolve_descriptors(descriptors, config)
    with seeded(seed):
        if descriptors != "none":
            network = descriptor_model_from_config(config, descriptors)
        else:
            network = AutoModelForSequenceClassification.from_config(config)
    return network, tokenizer
