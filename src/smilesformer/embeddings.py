"""Molecule embeddings from any encoder: pooled, per token (aligned to atoms) and per layer.

What BERT-style encoders output, and what each pooling reads:

- ``hidden_states``: one (batch, tokens, hidden) tensor per layer, the embedding layer first
  (index 0) and the last encoder layer last (index L, or -1). The last one is the *sequence output*.
- ``cls``: the ``<s>`` token's vector (RoBERTa's [CLS]) of the chosen layer(s).
- ``mean`` / ``max``: mean or maximum over the molecule's tokens (special tokens included,
  padding masked out) of the chosen layer(s).
- ``head``: the classification head's pooled input, tanh(dense(<s>)) in RoBERTa's head, i.e. the
  features its last linear layer reads; only a model with a sequence-classification head has it.

Any saved encoder folder loads: a fine-tuned smilesformer model, an MTR-pretrained one (it has a
head), or an MLM-pretrained one such as the bundled model (encoder only), through ``AutoModel`` /
``AutoTokenizer``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .config import Pooling, Precision
from .data import SmilesformerError, parse_molecule, validate_smiles
from .descriptors import descriptor_inputs
from .networks import capture_input, head_input_layer, loading, resolve_model_source
from .predictors import ENSEMBLE_FILE, Predictor
from .tasks import META_FILE
from .tokenization import atoms_per_token, char_atom_index, length_batches, load_tokenizer, warn_unknown

__all__ = [
    "Pooling",
    "EmbedConfig",
    "Encoder",
    "TokenEmbedding",
    "Embeddings",
    "load_encoder",
    "check_config",
    "cpu_has_native_bf16",
    "inference_autocast",
    "resolve_inference_precision",
    "embed",
    "pool",
    "atom_index",
    "token_atoms",
    "embeddings_table",
    "embedding_matrix",
]

logger = logging.getLogger(__name__)


@dataclass
class EmbedConfig:
    """What to embed and how."""

    pooling: Pooling = Pooling.mean
    """cls, mean, max, or head (the classification head's pooled input)."""
    layer: int = -1
    """Hidden state to read: 0 = the embedding layer's output, 1..L = encoder layers, -1 = the last."""
    last_k: int = 1
    """If > 1, concatenate the last k hidden states (each pooled) instead of reading ``layer``."""
    per_token: bool = False
    """Also return the chosen layer(s) per token, with the atoms each token spells."""
    all_layers: bool = False
    """Also return every hidden state, pooled (and per token with ``per_token``)."""
    batch_size: int = 64
    """Molecules per forward pass (batches group molecules of similar length)."""
    precision: Precision = Precision.auto
    """Compute format: auto = bf16 on a GPU that has it, else fp32; bf16 also pays on CPUs with AVX512-BF16/AMX."""

    def __post_init__(self) -> None:
        self.pooling = Pooling(self.pooling)
        self.precision = Precision(self.precision)
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {self.batch_size}")
        if self.last_k < 1:
            raise ValueError(f"last_k must be >= 1, got {self.last_k}")
        if self.pooling is Pooling.head and (self.layer != -1 or self.last_k != 1 or self.all_layers):
            raise ValueError("head pooling reads the last layer through the classification head; "
                             "leave layer, last_k and all_layers at their defaults, or pool with cls/mean/max")

    def describe(self) -> dict:
        return {"pooling": self.pooling.value, "layer": self.layer, "last_k": self.last_k,
                "per_token": self.per_token, "all_layers": self.all_layers, "precision": self.precision.value}


@dataclass
class Encoder:
    """A model that gives hidden states, its tokenizer, and the longest input it takes."""

    model: PreTrainedModel
    """A sequence-classification model (its head gives ``head`` pooling) or a bare encoder."""
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    source: str = ""

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def head_module(self) -> torch.nn.Module | None:
        """The layer whose input is the head's pooled vector: RoBERTa's ``classifier.out_proj``, BERT's
        ``classifier`` (which reads the pooler's output); None for an encoder without a head."""
        return head_input_layer(self.model)

    def dim(self, config: EmbedConfig) -> int:
        """Length of one pooled embedding under ``config``."""
        return self.hidden_size * (config.last_k if config.last_k > 1 else 1)


def load_encoder(source: str | Path | Predictor | Encoder, device: str = "auto") -> Encoder:
    """Load an encoder from a model folder (fine-tuned or pretrained), a bundled name, or a ``SmilesModel``.

    A folder whose config names a ``...ForSequenceClassification`` architecture loads with its head
    (``head`` pooling works); any other (e.g. a masked-LM checkpoint) loads as a bare ``AutoModel``.

    Args:
        source: folder, bundled model name, hub name, ``SmilesModel`` or ``Encoder``.
        device: "auto" (GPU when there is one), "cpu", "cuda", ...

    Raises:
        SmilesformerError: the model cannot be found or loaded.
    """
    if isinstance(source, Encoder):
        encoder = source
    elif isinstance(source, Predictor):  # a SmilesModel or any fine-tuned predictor: its (first) transformer
        first = source.members[0]
        encoder = Encoder(first.model, first.tokenizer, first.meta.max_length, first.meta.base_model)
    else:
        name = resolve_model_source(str(source))
        folder = Path(name)
        if (folder / ENSEMBLE_FILE).is_file():  # an ensemble embeds with its first member
            folder = folder / json.loads((folder / ENSEMBLE_FILE).read_text())["members"][0]
            name = str(folder)
        # loading: a damaged file is named, a hub name offline gets what to do, transformers' load report is
        # silenced (a masked-LM checkpoint's LM head is left out on purpose; no pooler avoids a random one)
        with loading(str(source), name):
            config = AutoConfig.from_pretrained(name)
            tokenizer = load_tokenizer(name)
            if any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
                model = AutoModelForSequenceClassification.from_pretrained(name)
            else:
                try:
                    model = AutoModel.from_pretrained(name, add_pooling_layer=False)
                except TypeError:
                    model = AutoModel.from_pretrained(name)
        limit = getattr(config, "max_position_embeddings", 514) - 2  # RoBERTa offsets positions by 2
        max_length = min(tokenizer.model_max_length, limit, 512)
        if (folder / META_FILE).is_file():
            max_length = json.loads((folder / META_FILE).read_text()).get("max_length", max_length)
        encoder = Encoder(model, tokenizer, int(max_length), str(source))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder.model.to(device)
    encoder.model.eval()
    return encoder


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX), not by emulation."""
    # torch exposes these checks only as private helpers of torch.cpu; a torch without them counts as no.
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


def resolve_inference_precision(precision: Precision | str, device: torch.device) -> Precision:
    """The format ``auto`` means for inference on ``device``: bf16 on a GPU that supports it, fp32 on a CPU.
    Other values pass through.

    Not bf16 on a CPU, even one that does it natively (AVX512-BF16, AMX; ``--precision bf16`` asks for it): there
    a molecule's bf16 prediction moved by up to 1.3e-4 with the molecules batched beside it, and a prediction must
    not depend on its neighbours in the input.
    """
    precision = Precision(precision)
    if precision is not Precision.auto:
        return precision
    if device.type == "cuda":
        return Precision.bf16 if torch.cuda.is_bf16_supported() else Precision.fp32
    return Precision.fp32


def inference_autocast(precision: Precision | str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for a forward pass in ``precision`` (weights stay fp32; outputs are read back as fp32).

    ``auto`` follows ``resolve_inference_precision``. On the bundled model bf16 autocast moves mean-pooled
    embeddings by about 0.1% (relative L2) and runs about 1.8x faster than fp32 on an AVX512-BF16 CPU
    (measured with benchmarks/bench_inference.py), which ``--precision bf16`` trades for results that depend on the
    batch; ``auto`` on a CPU is fp32, the results of ``SmilesModel.predict``.
    """
    precision = resolve_inference_precision(precision, device)
    if precision is Precision.fp32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision is Precision.bf16 else torch.float16)


@dataclass
class TokenEmbedding:
    """One molecule, token by token.

    Attributes:
        tokens: token strings, special tokens included (truncated to the model's limit).
        offsets: (start, end) characters of the SMILES each token reads; (0, 0) for special tokens.
        token_atoms: indices of the atoms each token spells ([] for bonds, ring digits, specials).
        vectors: (tokens, dim) the chosen layer(s) per token; with the default layer, the sequence output.
        atom_vectors: (atoms, dim) mean of the vectors of the tokens that spell each atom; NaN for an
            atom cut off by truncation. Atom k is the k-th atom written in the SMILES, which is RDKit's
            atom k when the SMILES is parsed with ``removeHs=False``.
        layer_vectors: (layers + 1, tokens, hidden) every hidden state, with ``all_layers``.
    """

    tokens: list[str]
    offsets: list[tuple[int, int]]
    token_atoms: list[list[int]]
    vectors: np.ndarray
    atom_vectors: np.ndarray
    layer_vectors: np.ndarray | None = None


@dataclass
class Embeddings:
    """Embeddings of a list of SMILES: one row per input, in order; invalid ones are NaN with a reason."""

    smiles: list[str]
    error: list[str]
    """"" where the SMILES was embedded, else why not."""
    vectors: np.ndarray
    """(n, dim) float32 pooled embeddings; NaN rows for invalid SMILES."""
    truncated: np.ndarray
    """(n,) bool: the SMILES had more tokens than the model takes; only the first ones were read."""
    layer_vectors: np.ndarray | None = None
    """(n, layers + 1, hidden) every hidden state pooled, with ``all_layers``."""
    tokens: list[TokenEmbedding | None] | None = None
    """Per molecule, with ``per_token``; None for invalid SMILES."""

    @property
    def valid(self) -> np.ndarray:
        return np.array([e == "" for e in self.error], dtype=bool)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool token vectors into one vector per molecule.

    Args:
        hidden: (batch, tokens, hidden) one layer's output.
        mask: (batch, tokens) attention mask, 1 on real tokens, 0 on padding.
        pooling: cls, mean or max (``head`` is read from the head, not pooled here).

    Returns:
        (batch, hidden).
    """
    if pooling is Pooling.cls:
        return hidden[:, 0]
    keep = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, tokens, 1)
    if pooling is Pooling.mean:
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)
    if pooling is Pooling.max:
        return hidden.masked_fill(keep == 0, float("-inf")).max(1).values
    raise ValueError(f"pool() does not compute {pooling.value!r} pooling")


def atom_index(smiles: str) -> tuple[np.ndarray, int]:
    """Atom number of every character of a SMILES (-1 for characters that spell no atom), and the atom count.

    The same mapping explain uses (``tokenization.char_atom_index``), checked against RDKit's atoms.

    Raises:
        SmilesformerError: the SMILES does not parse, or its atom tokens do not line up with RDKit's atoms.
    """
    mol = parse_molecule(smiles)
    return char_atom_index(smiles, mol), mol.GetNumAtoms()


def token_atoms(smiles: str, offsets: Sequence[tuple[int, int]], special: Sequence[int]) -> list[list[int]]:
    """Atoms each token spells, from the tokenizer's character offsets (works for regex and BPE tokens).

    Args:
        smiles: the SMILES the tokenizer read.
        offsets: (start, end) character span per token.
        special: 1 for special tokens (they spell nothing), 0 otherwise.
    """
    return atoms_per_token(atom_index(smiles)[0], offsets, special)


def _atom_vectors(atoms_per_token: list[list[int]], n_atoms: int, vectors: np.ndarray) -> np.ndarray:
    """(atoms, dim): mean of the token vectors covering each atom; NaN where no token does."""
    incidence = np.zeros((n_atoms, len(atoms_per_token)), dtype=np.float32)  # (atoms, tokens)
    for t, atoms in enumerate(atoms_per_token):
        incidence[atoms, t] = 1.0
    counts = incidence.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (incidence @ vectors) / counts


def check_config(encoder: Encoder, config: EmbedConfig) -> None:
    """Raise if ``config`` asks for something ``encoder`` does not have (a layer, a head).

    Raises:
        SmilesformerError: saying what the model has and what to ask for instead.
    """
    n_states = encoder.n_layers + 1
    if not -n_states <= config.layer < n_states or config.last_k > n_states:
        raise SmilesformerError(f"the model has {n_states} hidden states (embedding layer + {encoder.n_layers} "
                                f"layers); got layer={config.layer}, last_k={config.last_k}")
    if config.pooling is Pooling.head and encoder.head_module() is None:
        raise SmilesformerError(f"{encoder.source or 'this model'} has no classification head, so no head pooling; "
                                "use --pooling cls/mean/max, or a fine-tuned model")


@torch.inference_mode()
def embed(source: str | Path | Predictor | Encoder, smiles: Sequence[str],
          config: EmbedConfig | None = None) -> Embeddings:
    """Embed SMILES with an encoder.

    Each SMILES is checked with RDKit first; an invalid one keeps its row (NaN vector, reason in
    ``error``). Batches group molecules of similar token length (``tokenization.length_batches``), so
    little padding is computed; padding is masked out of mean and max pooling.

    Args:
        source: an ``Encoder``, a ``SmilesModel``, or a model folder / name for ``load_encoder``.
        smiles: the molecules.
        config: pooling, layer(s) and extras; ``EmbedConfig()`` if None.

    Raises:
        SmilesformerError: ``head`` pooling on an encoder without a classification head, or a layer
            the model does not have.
    """
    config = config or EmbedConfig()
    encoder = load_encoder(source) if not isinstance(source, Encoder) else source
    check_config(encoder, config)
    n_states = encoder.n_layers + 1
    head = encoder.head_module() if config.pooling is Pooling.head else None
    smiles = [s if isinstance(s, str) else "" for s in smiles]
    n, dim, tok = len(smiles), encoder.dim(config), encoder.tokenizer
    clean, error = validate_smiles(smiles)
    valid = [i for i in range(n) if not error[i]]
    vectors = np.full((n, dim), np.nan, dtype=np.float32)
    layer_vectors = (np.full((n, n_states, encoder.hidden_size), np.nan, dtype=np.float32)
                     if config.all_layers else None)
    tokens: list[TokenEmbedding | None] | None = [None] * n if config.per_token else None
    truncated = np.zeros(n, dtype=bool)
    if not valid:
        return Embeddings(smiles, error, vectors, truncated, layer_vectors, tokens)

    enc = tok([clean[i] for i in valid], truncation=True, max_length=encoder.max_length,
              return_offsets_mapping=config.per_token, return_special_tokens_mask=config.per_token,
              return_overflowing_tokens=False)
    ids = enc["input_ids"]
    full_lengths = tok([clean[i] for i in valid], add_special_tokens=True, return_length=True, verbose=False)["length"]
    truncated[valid] = np.asarray(full_lengths) > encoder.max_length
    if truncated.any():
        logger.warning("%d SMILES are longer than max_length=%d tokens; only their first tokens were embedded",
                       int(truncated.sum()), encoder.max_length)
    warn_unknown(tok, [clean[i] for i in valid])
    selected = list(range(n_states - config.last_k, n_states)) if config.last_k > 1 else [config.layer]
    for batch in length_batches([len(x) for x in ids], config.batch_size):
        padded = tok.pad({"input_ids": [ids[j] for j in batch]}, return_tensors="pt")
        padded = {k: v.to(encoder.device) for k, v in padded.items()}
        if head is not None:  # a head that reads RDKit descriptors needs them to run
            padded.update(descriptor_inputs(encoder.model, [clean[valid[j]] for j in batch]))
        mask = padded["attention_mask"]  # (batch, tokens)
        with (capture_input(head) as captured,
              inference_autocast(config.precision, encoder.device)):
            hidden = encoder.model(**padded, output_hidden_states=True).hidden_states  # (batch, tokens, hidden) each
        rows = [valid[j] for j in batch]
        if head is not None:
            pooled = captured["pooled"]
        else:
            pooled = torch.cat([pool(hidden[k], mask, config.pooling) for k in selected], dim=-1)
        vectors[rows] = pooled.float().cpu().numpy()
        if layer_vectors is not None:
            layer_vectors[rows] = torch.stack([pool(h, mask, config.pooling) for h in hidden], 1).float().cpu().numpy()
        if tokens is not None:
            chosen = torch.cat([hidden[k] for k in selected], dim=-1).float().cpu().numpy()  # (batch, tokens, dim)
            every = torch.stack(hidden, 1).float().cpu().numpy() if config.all_layers else None
            for b, j in enumerate(batch):
                length = len(ids[j])
                text = clean[valid[j]]
                chars, n_atoms = atom_index(text)  # one RDKit parse per molecule
                atoms = atoms_per_token(chars, enc["offset_mapping"][j], enc["special_tokens_mask"][j])
                per_token = chosen[b, :length]
                tokens[valid[j]] = TokenEmbedding(
                    tok.convert_ids_to_tokens(ids[j]), [tuple(o) for o in enc["offset_mapping"][j]], atoms, per_token,
                    _atom_vectors(atoms, n_atoms, per_token),
                    every[b, :, :length] if every is not None else None)
    return Embeddings(smiles, error, vectors, truncated, layer_vectors, tokens)


def _fixed_lists(values: np.ndarray, valid: np.ndarray | None = None) -> pa.FixedSizeListArray:
    """(n, dim) floats as a fixed-size-list array (null where not ``valid``)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    mask = pa.array(~valid) if valid is not None else None
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[-1], mask=mask)


def _ragged(per_row: list[np.ndarray | None], dim: int) -> pa.ListArray:
    """Per row a (items, dim) array (or None) as list<fixed_size_list<float32, dim>>."""
    lengths = [len(v) if v is not None else 0 for v in per_row]
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    flat = [v for v in per_row if v is not None and len(v)]
    values = np.concatenate(flat) if flat else np.zeros((0, dim), dtype=np.float32)
    return pa.ListArray.from_arrays(offsets, _fixed_lists(values), mask=pa.array([v is None for v in per_row]))


def embeddings_table(emb: Embeddings, row_ids: Sequence[int] | None = None) -> pa.Table:
    """Arrow table, one row per input: row_id, smiles, embedding, [per-layer, per-token columns], error.

    ``embedding`` is a fixed-size list column (float32, one list per row) rather than one column per
    dimension: its schema stays one column whatever the width (a 4-layer concatenation of a base
    model is 3,072 floats), a missing embedding is a single null, and it converts to a matrix without
    copying (``embedding_matrix``); pandas reads it as one NumPy array per row, Polars as an Array.
    """
    n = len(emb.smiles)
    valid = emb.valid
    columns: dict[str, pa.Array] = {
        "row_id": pa.array(np.arange(n) if row_ids is None else np.asarray(row_ids), pa.int64()),
        "smiles": pa.array(emb.smiles, pa.string()),
        "embedding": _fixed_lists(emb.vectors, valid),
    }
    if emb.layer_vectors is not None:
        for k in range(emb.layer_vectors.shape[1]):
            columns[f"embedding_layer_{k}"] = _fixed_lists(emb.layer_vectors[:, k], valid)
    if emb.tokens is not None:
        dim = emb.vectors.shape[1]
        columns["tokens"] = pa.array([t.tokens if t else None for t in emb.tokens], pa.list_(pa.string()))
        columns["token_offsets"] = pa.array([t.offsets if t else None for t in emb.tokens],
                                            pa.list_(pa.list_(pa.int32(), 2)))
        columns["token_atoms"] = pa.array([t.token_atoms if t else None for t in emb.tokens],
                                          pa.list_(pa.list_(pa.int32())))
        columns["token_embeddings"] = _ragged([t.vectors if t else None for t in emb.tokens], dim)
        columns["atom_embeddings"] = _ragged([t.atom_vectors if t else None for t in emb.tokens], dim)
        if emb.layer_vectors is not None:
            hidden = emb.layer_vectors.shape[2]
            for k in range(emb.layer_vectors.shape[1]):
                columns[f"token_embeddings_layer_{k}"] = _ragged(
                    [t.layer_vectors[k] if t else None for t in emb.tokens], hidden)
    columns["truncated"] = pa.array(emb.truncated, pa.bool_())
    columns["error"] = pa.array(emb.error, pa.string())
    return pa.table(columns)


def embedding_matrix(table: pa.Table, column: str = "embedding") -> np.ndarray:
    """(n, dim) float32 matrix of a fixed-size-list column, NaN rows where it is null."""
    array = table.column(column).combine_chunks()
    dim = array.type.list_size
    values = array.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim) if array.null_count == 0 else None
    if values is not None:
        return values
    out = np.full((len(array), dim), np.nan, dtype=np.float32)
    keep = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False))
    # flatten() drops null slots, so the remaining values fill the non-null rows in order
    out[keep] = array.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return out
