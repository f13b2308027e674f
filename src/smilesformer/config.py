"""Typed settings for data, training and pretraining, saved next to every run so a run folder explains itself."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = [
    "Task",
    "SplitKind",
    "Pooling",
    "Engine",
    "BadInputPolicy",
    "DuplicatePolicy",
    "Precision",
    "DataConfig",
    "TrainConfig",
    "PretrainConfig",
    "ServeConfig",
    "Objective",
    "TokenizerKind",
    "DEFAULT_MODEL",
    "demo_data_config",
    "demo_train_config",
    "save_config",
]

# The model `finetune` and `demo` start from when none is named: the bundled one, shipped in the package.
DEFAULT_MODEL = "smilesformer-moses"


class Task(str, Enum):
    """What the head predicts."""

    regression = "regression"
    classification = "classification"


class SplitKind(str, Enum):
    """How molecules are divided into train / valid / test."""

    random = "random"
    scaffold = "scaffold"
    column = "column"


class Pooling(str, Enum):
    """How a molecule's token vectors become one vector."""

    cls = "cls"
    mean = "mean"
    max = "max"
    head = "head"


class Engine(str, Enum):
    """Where the chunks run: this process, or a Ray cluster (local or remote)."""

    local = "local"
    ray = "ray"


class BadInputPolicy(str, Enum):
    """What to do with a row whose SMILES or label cannot be used."""

    error = "error"
    skip = "skip"


class DuplicatePolicy(str, Enum):
    """What to do with molecules that appear more than once (compared by canonical SMILES): keep every row,
    average (regression: the mean label; classification: the most frequent class), or drop the molecules whose
    labels disagree (``data.CONFLICT_SD``) and keep the rest."""

    keep = "keep"
    average = "average"
    drop_conflicts = "drop-conflicts"


class Precision(str, Enum):
    """Floating-point format. `auto` is bf16 on a GPU that has it, else fp32 (on a CPU bf16 is asked for by name:
    see `embeddings.resolve_inference_precision`)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class DataConfig:
    """Where the molecules come from and how they are cleaned and split."""

    source: str
    """A file (csv, tsv, parquet, sdf, smi; gzip allowed) or a registered data set name (`smilesformer datasets`)."""
    smiles_col: str | None = None
    """Column holding SMILES; a registered data set knows its own."""
    target_cols: list[str] = field(default_factory=list)
    """Label columns (one or many); a registered data set knows its own."""
    task: Task | None = None
    """regression or classification; a registered data set knows its own."""
    split: SplitKind = SplitKind.random
    """random, scaffold (Bemis-Murcko) or column (use `split_col`)."""
    split_col: str | None = None
    """With split=column: a column whose values are train / valid / test."""
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train, valid, test fractions; valid may be 0 (then no early stopping)."""
    seed: int = 0
    """Seed of the split and of any sampling."""
    sample: float | None = None
    """Use only this fraction of the rows (sampled with `seed`), as the notebook's 10% of AqSolDB."""
    bad_input: BadInputPolicy = BadInputPolicy.error
    """error: stop on the first bad rows; skip: drop them and write a report."""
    duplicates: DuplicatePolicy = DuplicatePolicy.keep
    """keep every row, average the labels of a repeated molecule, or drop-conflicts: drop the molecules whose
    labels disagree. Repeats and conflicts are reported (``duplicates.csv``) whichever is chosen."""
    canonicalize: bool = False
    """Feed the model RDKit canonical SMILES instead of the input spelling."""
    sep: str | None = None
    """Separator of a text table, where reading its content cannot decide (default: sniffed, see
    ``data.sniff_text``)."""

    def __post_init__(self) -> None:
        self.task = Task(self.task) if self.task is not None else None
        self.split = SplitKind(self.split)
        self.bad_input = BadInputPolicy(self.bad_input)
        self.duplicates = DuplicatePolicy(self.duplicates)
        self.fractions = tuple(float(f) for f in self.fractions)  # type: ignore[assignment]
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {self.fractions}")
        if self.fractions[0] == 0 or self.fractions[2] == 0:
            raise ValueError(f"train and test fractions must be > 0, got {self.fractions}")
        if self.split is SplitKind.column and not self.split_col:
            raise ValueError("split=column needs split_col, the column whose values are train / valid / test")
        if self.split_col and self.split is not SplitKind.column:
            raise ValueError(f"split_col {self.split_col!r} is given but split is {self.split.value!r}, which would "
                             "ignore it: use split='column' (--split column) to split by it, or leave split_col out")
        if self.sample is not None and not 0 < self.sample <= 1:
            raise ValueError(f"sample must be in (0, 1], got {self.sample}")


def demo_data_config(sample: float = 0.1, seed: int = 0) -> DataConfig:
    """The demo's data: the notebook's ``sample`` of AqSolDB, split 80/20 at random (no validation set)."""
    return DataConfig("aqsoldb", split=SplitKind.random, fractions=(0.8, 0.0, 0.2), sample=sample, seed=seed)


@dataclass
class TrainConfig:
    """Fine-tuning hyper-parameters (passed to the Hugging Face Trainer by `train.py`)."""

    epochs: int = 20
    """Maximum number of epochs (early stopping may end sooner)."""
    batch_size: int = 32
    """Molecules per training batch."""
    learning_rate: float = 1e-4
    """Peak learning rate of the linear schedule."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_fraction: float = 0.06
    """Share of the steps spent warming up the learning rate."""
    early_stopping_patience: int = 5
    """Stop after this many epochs without a better validation loss (needs a valid set)."""
    max_length: int = 128
    """Longest tokenized SMILES, special tokens included; longer ones are truncated and counted."""
    seed: int = 0
    """Seed of initialization, shuffling and dropout."""
    precision: Precision = Precision.auto
    """fp32, bf16, fp16, or auto (bf16 on a GPU that supports it)."""
    eval_batch_size: int = 128
    """Molecules per batch at evaluation and prediction."""
    group_by_length: bool = True
    """Batch molecules of similar token length together (a full sort, the batches shuffled each epoch; see
    ``train.SortedBatchSampler``), to cut padding."""
    pad_to_max_length: bool = False
    """Pad every batch to max_length, as simpletransformers does; only for speed comparisons."""
    resume: bool = True
    """Continue from the last checkpoint in the output folder when it was written with the same data, settings
    and model (another run's checkpoints are refused, naming the difference); False deletes them and starts over."""
    logging_steps: int = 10
    """Log the training loss every this many steps."""
    progress: bool = True
    """Show progress bars."""
    augment: int = 0
    """Randomized SMILES per training molecule; each epoch shows every molecule as one of its spellings."""
    tta: int = 0
    """Randomized SMILES per molecule averaged with the input at predict time (test-time augmentation)."""
    ensemble: int = 1
    """Models trained with seeds seed, seed+1, ...; their predictions are averaged, their spread reported."""
    layer_lr_decay: float = 1.0
    """Layer-wise learning-rate decay: layer k below the head trains at learning_rate x decay**k (1 = off)."""
    descriptors: str = "auto"
    """"rdkit": the head also reads the molecule's RDKit 2D descriptors (RoBERTa encoders; all 217); "fast": the
    same less RDKit's slow families (157, computed about 4x faster; the trees use them too); "none": SMILES only;
    "auto": rdkit on a RoBERTa encoder, none on others. Used where a run creates its model (``run_finetune``)."""
    trees: str = "auto"
    """"gbm": blend the fine-tuned model with gradient-boosted trees on RDKit descriptors, one weight per target
    chosen on the validation set (see ``trees``); "none": the transformer alone; "auto": gbm for regression
    (where it was measured to help), none for classification. Used by ``run_finetune``."""
    uncertainty: bool = True
    """With a validation set: fit an uncertainty (``<target>_sd`` and a 90% interval; calibrated probabilities and a
    confidence) and a domain check (``domain_similarity``, ``in_domain``) for every prediction (see
    ``uncertainty``); the model folder keeps the training molecules' fingerprints and pooled vectors (256 + 2 x hidden
    bytes each, at most 20,000 molecules)."""
    adapt: str = "none"
    """"mtr": before fine-tuning, a short domain-adaptation pass that regresses RDKit descriptors of the training
    SMILES only (never validation or test; Sultan et al. 2025); "none": off."""
    adapt_epochs: int = 3
    """Passes over the training SMILES of the adaptation step."""

    def __post_init__(self) -> None:
        self.precision = Precision(self.precision)
        if self.adapt not in ("none", "mtr"):
            raise ValueError(f"adapt must be 'none' or 'mtr', got {self.adapt!r}")
        if self.adapt_epochs <= 0:
            raise ValueError(f"adapt_epochs must be > 0, got {self.adapt_epochs}")
        if self.descriptors not in ("auto", "none", "rdkit", "fast"):
            raise ValueError(f"descriptors must be 'auto', 'none', 'rdkit' or 'fast', got {self.descriptors!r}")
        if self.trees not in ("auto", "gbm", "none"):
            raise ValueError(f"trees must be 'auto', 'gbm' or 'none', got {self.trees!r}")
        for name in ("augment", "tta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {self.ensemble}")
        if not 0 < self.layer_lr_decay <= 1:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        for name in ("epochs", "batch_size", "max_length", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


class Objective(str, Enum):
    """Pretraining objective: masked language modelling (ChemBERTa), multi-task regression of RDKit
    descriptors (ChemBERTa-2's MTR), or both at once (one encoder, an MLM head and an MTR head)."""

    mlm = "mlm"
    mtr = "mtr"
    both = "mlm+mtr"


class TokenizerKind(str, Enum):
    """smiles: a fixed vocabulary that spells every SMILES, bracket atoms split into element, chirality, H count,
    charge...; regex: one token per atom, bond, ring digit or whole bracket atom, vocabulary counted on the
    corpus; bpe: byte-level BPE trained on the corpus."""

    smiles = "smiles"
    regex = "regex"
    bpe = "bpe"


def demo_train_config(epochs: int = 5) -> TrainConfig:
    """The demo's settings: the notebook's 5 epochs, no validation set."""
    return TrainConfig(epochs=epochs, batch_size=16, learning_rate=1e-4, warmup_fraction=0.1)


@dataclass
class PretrainConfig:
    """Pretraining settings; saved in the model folder (pretrain_config.json) so the card can cite them."""

    corpus: str
    """SMILES file: one per line or a CSV/TSV column, gzip or not; streamed, never loaded whole."""
    smiles_col: str | None = None
    """Column of a CSV corpus (default: one named smiles)."""
    limit: int | None = None
    """Use at most this many valid molecules (the first ones of the corpus)."""
    canonicalize: bool = False
    """Train on RDKit canonical SMILES."""
    dedupe: bool = True
    """Drop repeated molecules (after canonicalization, if on)."""
    objective: Objective = Objective.mlm
    """mlm, mtr, or mlm+mtr."""
    tokenizer: TokenizerKind = TokenizerKind.smiles
    """smiles (fixed, covers every SMILES), regex or bpe (both counted on the corpus)."""
    vocab_size: int = 800
    """BPE vocabulary size."""
    element_tokens: bool = True
    """regex: also give every element (charges 0, +-1..3) in brackets its own token, so molecules
    outside the corpus's chemistry (salts, metals) do not collapse onto <unk>."""
    preset: str = "small"
    """Model size (see model.PRESETS)."""
    max_length: int = 128
    """Longest tokenized SMILES, special tokens included."""
    epochs: float = 1.0
    """Passes over the corpus."""
    max_steps: int = -1
    """If > 0, stop after this many optimizer steps (overrides epochs)."""
    max_minutes: float | None = None
    """Wall-clock budget of the whole run, preparation included: training gets the steps that fit the time
    preparation leaves, and its learning rate decays to zero on the last of them (see ``budget``)."""
    batch_size: int = 64
    """Molecules per device per step."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    learning_rate: float = 5e-4
    """Peak learning rate."""
    warmup_fraction: float = 0.05
    """Share of steps spent warming up."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    mlm_probability: float = 0.15
    """Share of tokens masked (80% <mask>, 10% random, 10% kept), re-drawn every batch."""
    descriptor_set: str = "mtr"
    """mtr, mlm+mtr: the RDKit descriptors regressed ("mtr": 85 cheap C++ ones, ~0.45 ms a molecule; "fast": ~150
    at ~2 ms; "rdkit": all 217, ~8 ms)."""
    dropout: float = 0.0
    """Dropout of the encoder while pretraining (the saved model gets 0.1 for fine-tuning)."""
    mlm_weight: float = 1.0
    """mlm+mtr: weight of the MLM loss."""
    mtr_weight: float = 1.0
    """mlm+mtr: weight of the MTR loss (mean squared error of standardized descriptors)."""
    save_steps: int = 500
    """Checkpoint every this many steps (resume continues from the last one)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (0: all of them, e.g. to measure downstream accuracy along the run)."""
    logging_steps: int = 50
    """Log loss and tokens/s every this many steps."""
    seed: int = 0
    """Seed of initialization, shuffling and masking."""
    precision: Precision = Precision.auto
    """fp32, bf16, fp16, or auto (bf16 on a GPU that supports it)."""
    n_jobs: int = 0
    """Processes for RDKit descriptors (0: all cores)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        self.objective = Objective(self.objective)
        self.tokenizer = TokenizerKind(self.tokenizer)
        self.precision = Precision(self.precision)
        if self.descriptor_set not in ("mtr", "fast", "rdkit"):
            raise ValueError(f"descriptor_set must be mtr, fast or rdkit, got {self.descriptor_set!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}; leave it out for no budget")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mlm_weight < 0 or self.mtr_weight < 0:
            raise ValueError("mlm_weight and mtr_weight must be >= 0")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be > 0, got {self.limit}")
        if self.batch_size <= 0 or self.grad_accum <= 0:
            raise ValueError("batch_size and grad_accum must be > 0")


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_config(path: str | Path, **sections: Any) -> None:
    """Write dataclasses (and plain values) as one JSON document, one key per section."""
    Path(path).write_text(json.dumps({k: _jsonable(v) for k, v in sections.items()}, indent=2))


@dataclass
class ServeConfig:
    """Request limits (larger requests are refused with a 4xx naming the limit) and batching settings."""

    max_smiles_per_request: int = 1000
    """SMILES in one ``/predict`` request (413 above it)."""
    max_smiles_length: int = 500
    """Characters in one SMILES (422 above it); SMILES longer than the model's token limit are truncated."""
    max_atoms: int = 200
    """Atoms in one molecule; a larger one gets a per-row ``error`` (its RDKit descriptors would hold the model
    thread for seconds: 0.3 s at 200 atoms, 3 s at 400). Every molecule of the public data sets but a few
    AqSolDB salts and polymers fits."""
    request_timeout_s: float = 60.0
    """A request still waiting for its results after this long is answered 503 (and not computed if its batch
    has not started), so no client waits without bound."""
    max_batch: int = 256
    """Most SMILES the micro-batcher puts in one model call."""
    max_wait_ms: float = 5.0
    """How long a request waits for others to share its model call."""
    batch_size: int = 16
    """Molecules per forward pass inside a model call (length-sorted, see ``predictors.Transformer.passes``).
    Small: a model call holds a few dozen molecules of mixed lengths, and batches of 16 padded less ran 1.6x
    faster than 64 on 40 ESOL molecules (2 CPU cores; see docs/serve.md)."""
    torch_threads: int | None = None
    """CPU threads of the model (``torch.set_num_threads``); None: as many as the process uses (the CLI chooses
    them with its ``--threads`` policy, by default the cores left free by other processes). On a machine whose
    cores are busy with other work, 1 avoids threads waiting on each other."""

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read (413 above it, before it is read): a full /predict request written as
        JSON with every character escaped (\\uXXXX, 6 bytes), plus room for the rest of the body."""
        return self.max_smiles_per_request * (6 * self.max_smiles_length + 4) + 65536

    def __post_init__(self) -> None:
        for name in ("max_smiles_per_request", "max_smiles_length", "max_atoms", "max_batch", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {self.torch_threads}")
