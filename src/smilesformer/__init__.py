"""smilesformer: chemical language models (transformer encoders on SMILES) to pretrain, fine-tune,
evaluate, predict, embed, explain and serve."""

from .config import BadInputPolicy, DataConfig, DuplicatePolicy, Precision, SplitKind, Task, TrainConfig  # noqa: E402
from .data import DATASETS, BadInputError, SmilesformerError, load_dataset, read_table  # noqa: E402
from .embeddings import EmbedConfig, Pooling, embed  # noqa: E402
from .estimators import SmilesClassifier, SmilesEmbedder, SmilesRegressor  # noqa: E402
from .model import PRESETS, SmilesEnsemble, SmilesModel  # noqa: E402
from .predictors import load_predictor  # noqa: E402
from .splits import random_split, scaffold_split  # noqa: E402
from .streaming import stream_embed, stream_predict  # noqa: E402
from .tokenization import build_regex_tokenizer, tokenize_smiles, train_bpe_tokenizer  # noqa: E402
from .version import __version__  # noqa: E402
from .workflow import run_demo, run_evaluate, run_finetune, run_predict  # noqa: E402

__all__ = [
    "__version__",
    "BadInputError",
    "BadInputPolicy",
    "DATASETS",
    "DataConfig",
    "DuplicatePolicy",
    "EmbedConfig",
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
