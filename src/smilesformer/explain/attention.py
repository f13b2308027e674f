"""Attention weights of every layer and head, mapped to atoms; rollout; bertviz's input format.

``torch.nn.functional.scaled_dot_product_attention`` never materializes the attention matrix, so the
weights exist only with the eager implementation; ``eager_attention`` switches to it for the duration of a
call and back, leaving a served model on its faster kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data import SmilesformerError
from ..tokenization import length_batches
from .atoms import MoleculeTokens, map_tokens, tokens_to_atoms
from .loading import network_parts

__all__ = [
    "MoleculeAttention",
    "eager_attention",
    "check_layer_head",
    "extract_attention",
    "attention_rollout",
    "atom_attention",
    "bertviz_format",
]


@dataclass
class MoleculeAttention:
    """One molecule's tokens, their atoms and the attention between them.

    Attributes:
        molecule: tokens, offsets, token -> atoms map and the RDKit molecule.
        weights: (layers, heads, tokens, tokens) attention; row i is where token i attends (sums to 1).
    """

    molecule: MoleculeTokens
    weights: np.ndarray

    @property
    def tokens(self) -> list[str]:
        return self.molecule.tokens

    @property
    def token_atoms(self) -> list[list[int]]:
        return self.molecule.token_atoms


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` with eager attention (the only kind that returns weights), then restore its kind."""
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if before != "eager":
            model.set_attn_implementation(before)


@torch.inference_mode()
def extract_attention(model, smiles: str | Sequence[str], batch_size: int = 32) -> list[MoleculeAttention]:
    """Attention of every layer and head for one SMILES or a batch.

    Args:
        model: a ``SmilesModel`` or an ``Encoder`` (``loading.load_explainable``): any encoder whose fast
            tokenizer gives character offsets, with or without a head.
        smiles: one SMILES or a sequence; invalid ones raise (``SmilesformerError`` naming the SMILES).
        batch_size: molecules per forward pass (similar lengths are batched together).

    Returns:
        One ``MoleculeAttention`` per input, in input order, padding removed.
    """
    smiles = [smiles] if isinstance(smiles, str) else list(smiles)
    net, tokenizer, max_length, device = network_parts(model)
    molecules = [map_tokens(s, tokenizer, max_length) for s in smiles]
    net.eval()
    results: list[MoleculeAttention | None] = [None] * len(molecules)
    with eager_attention(net):
        for batch in length_batches([len(m.input_ids) for m in molecules], batch_size):
            padded = tokenizer.pad({"input_ids": [molecules[i].input_ids for i in batch]}, return_tensors="pt")
            out = net(**{k: v.to(device) for k, v in padded.items()}, output_attentions=True)
            stacked = torch.stack(out.attentions, dim=1).float().cpu().numpy()  # (batch, layers, heads, T, T)
            for row, i in enumerate(batch):
                n = len(molecules[i].input_ids)
                results[i] = MoleculeAttention(molecules[i], stacked[row, :, :, :n, :n])
    return results  # type: ignore[return-value]


def check_layer_head(weights: np.ndarray, layer: int | None, head: int | None) -> None:
    """Raise, naming the valid range, for a layer or head the model does not have."""
    layers, heads = weights.shape[:2]
    if layer is not None and not 0 <= layer < layers:
        raise SmilesformerError(f"layer {layer} does not exist: the model has layers 0..{layers - 1}")
    if head is not None and not 0 <= head < heads:
        raise SmilesformerError(f"head {head} does not exist: the model has heads 0..{heads - 1}")


def attention_rollout(weights: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, ACL 2020, arXiv:2005.00928).

    Each layer's head-averaged attention is mixed with the identity (the residual connection), rows are
    renormalized, and the layers are multiplied from the first up: how much each input token flows into
    each position of the last layer.

    Args:
        weights: (layers, heads, tokens, tokens).
        residual: weight of the identity in each layer's mix (the paper's 0.5).

    Returns:
        (tokens, tokens) rollout; row 0 is what the ``<s>`` token, which the classifier reads, draws from.
    """
    n = weights.shape[-1]
    rollout = np.eye(n)
    for layer in weights:
        mixed = (1 - residual) * layer.mean(axis=0) + residual * np.eye(n)  # (T, T)
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        rollout = mixed @ rollout
    return rollout


def atom_attention(result: MoleculeAttention) -> np.ndarray:
    """Attention each atom receives, averaged over query tokens, per layer and head.

    Returns:
        (layers, heads, n_atoms).
    """
    received = result.weights.mean(axis=-2)  # (layers, heads, tokens): mean over query tokens
    return tokens_to_atoms(received, result.token_atoms, result.molecule.n_atoms)


def bertviz_format(result: MoleculeAttention) -> tuple[tuple[torch.Tensor, ...], list[str]]:
    """The arguments of ``bertviz.head_view(attention, tokens)``: per-layer (1, heads, T, T) tensors, tokens."""
    attention = tuple(torch.from_numpy(np.ascontiguousarray(layer))[None] for layer in result.weights)
    return attention, list(result.tokens)
