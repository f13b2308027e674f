"""smilesformer: chemical language models (transformer encoders on SMILES) to pretrain, fine-tune,
evaluate, predict, embed, explain and serve.

The public names load on first use (PEP 562): ``import smilesformer`` and ``smilesformer --help`` do not pay for
PyTorch, transformers and scikit-learn until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "BadInputPolicy": "config", "DataConfig": "config", "DuplicatePolicy": "config", "Engine": "config",
    "Pooling": "config", "Precision": "config", "SplitKind": "config", "Task": "config", "TrainConfig": "config",
    "DATASETS": "data", "BadInputError": "data", "SmilesformerError": "data", "load_dataset": "data",
    "read_table": "data",
    "EmbedConfig": "embeddings", "embed": "embeddings",
    "SmilesClassifier": "estimators", "SmilesEmbedder": "estimators", "SmilesRegressor": "estimators",
    "PRESETS": "model", "SmilesEnsemble": "model", "SmilesModel": "model",
    "load_predictor": "predictors",
    "random_split": "splits", "scaffold_split": "splits",
    "stream_embed": "streaming", "stream_predict": "streaming",
    "build_regex_tokenizer": "tokenization", "tokenize_smiles": "tokenization", "train_bpe_tokenizer": "tokenization",
    "run_demo": "workflow", "run_evaluate": "workflow", "run_finetune": "workflow", "run_predict": "workflow",
}

__all__ = [
    "__version__",
    "BadInputError",
    "BadInputPolicy",
    "DATASETS",
    "DataConfig",
    "DuplicatePolicy",
    "EmbedConfig",
    "Engine",
    "PRESETS",
    "Pooling",
    "Precision",
    "SmilesClassifier",
    "SmilesEmbedder",
    "SmilesEnsemble",
    "SmilesModel",
    "SmilesRegressor",
    "SmilesformerError",
    "SplitKind",
    "Task",
    "TrainConfig",
    "build_regex_tokenizer",
    "embed",
    "load_dataset",
    "load_predictor",
    "random_split",
    "read_table",
    "run_demo",
    "run_evaluate",
    "run_finetune",
    "run_predict",
    "scaffold_split",
    "stream_embed",
    "stream_predict",
    "tokenize_smiles",
    "train_bpe_tokenizer",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smilesformer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what static tools and IDEs see
    from .config import (
        BadInputPolicy,
        DataConfig,
        DuplicatePolicy,
        Engine,
        Pooling,
        Precision,
        SplitKind,
        Task,
        TrainConfig,
    )
    from .data import DATASETS, BadInputError, SmilesformerError, load_dataset, read_table
    from .embeddings import EmbedConfig, embed
    from .estimators import SmilesClassifier, SmilesEmbedder, SmilesRegressor
    from .model import PRESETS, SmilesEnsemble, SmilesModel
    from .predictors import load_predictor
    from .splits import random_split, scaffold_split
    from .streaming import stream_embed, stream_predict
    from .tokenization import build_regex_tokenizer, tokenize_smiles, train_bpe_tokenizer
    from .workflow import run_demo, run_evaluate, run_finetune, run_predict
