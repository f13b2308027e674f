"""What attention heads do: entropy, attention on bonded atoms, importance (Michel et al.) and pruning.

transformers 5 removed both tools this analysis used to rely on: the ``head_mask`` forward argument and
``PreTrainedModel.prune_heads``. Importance is therefore measured with a multiplicative gate on each head's
output, registered with forward pre-hooks on the attention output projection (the gate, at 1, changes
nothing; its gradient is Michel et al.'s |d loss / d xi_h|). A pretrained encoder has no task loss; where its
checkpoint keeps the masked-language-model head it was pretrained with, its importance is measured on that
loss instead (``masked_lm_head_importance``). Pruning zeroes a head's query, key and value
projections and the output-projection columns that read it, which removes its contribution exactly while
keeping every layer's shape: a model whose layers had different head counts could not be described by one
``num_attention_heads`` in config.json and would not load with ``from_pretrained``. It saves no compute.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..data import SmilesformerError
from ..descriptors import descriptor_inputs
from ..tokenization import length_batches
from .atoms import bond_pairs
from .attention import MoleculeAttention

__all__ = [
    "head_entropy",
    "bond_attention_share",
    "head_importance",
    "masked_lm_head_importance",
    "least_important_heads",
    "prune_heads",
    "pruning_effect",
]


def head_entropy(results: Sequence[MoleculeAttention]) -> np.ndarray:
    """Mean entropy (nats) of each head's attention rows, over query tokens and molecules.

    Low entropy: a head that attends to one or two tokens; log(tokens): uniform attention.

    Returns:
        (layers, heads).
    """
    per_molecule = []
    for r in results:
        p = np.clip(r.weights, 1e-12, 1.0)
        per_molecule.append(-(p * np.log(p)).sum(axis=-1).mean(axis=-1))  # (layers, heads)
    return np.mean(per_molecule, axis=0)


def _bonded_tokens(r: MoleculeAttention) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, tokens) mask of distinct token pairs spelling bonded atoms, and (tokens,) atom-token mask."""
    adjacency = bond_pairs(r.molecule.mol).astype(float)  # (atoms, atoms)
    spells = np.zeros((len(r.token_atoms), r.molecule.n_atoms))  # (tokens, atoms): 1 where a token spells an atom
    for t, atoms in enumerate(r.token_atoms):
        spells[t, atoms] = 1
    bonded = spells @ adjacency @ spells.T > 0  # (tokens, tokens): some atom of one is bonded to some atom of other
    np.fill_diagonal(bonded, False)
    return bonded, spells.any(axis=1)


def bond_attention_share(results: Sequence[MoleculeAttention]) -> tuple[np.ndarray, float]:
    """Share of the attention of atom tokens that lands on tokens of bonded atoms, per head.

    Like Vig et al.'s attention-to-contacts analysis of protein language models (ICLR 2021,
    arXiv:2006.15222), with RDKit bonds as the contacts: the attention from every atom-spelling token, pooled
    over molecules, and the part of it on tokens whose atoms share a bond with the query token's atoms.

    Returns:
        (layers, heads) shares, and the share that uniform attention would give (the chance level).
    """
    on_bonds = 0.0
    total = 0.0
    chance_on, chance_total = 0.0, 0.0
    for r in results:
        bonded, atom_rows = _bonded_tokens(r)
        rows = r.weights[:, :, atom_rows, :]  # (layers, heads, atom tokens, tokens)
        on_bonds = on_bonds + (rows * bonded[atom_rows][None, None]).sum(axis=(-1, -2))
        total = total + rows.sum(axis=(-1, -2))
        chance_on += bonded[atom_rows].sum() / bonded.shape[1]
        chance_total += atom_rows.sum()
    if not np.any(total):
        raise SmilesformerError("no atom tokens to measure attention on bonds with")
    return on_bonds / total, float(chance_on / chance_total)


def _attention_outputs(net) -> list[torch.nn.Module]:
    """The linear layer that mixes the heads' outputs, per layer (BERT/RoBERTa layout)."""
    try:
        return [layer.attention.output.dense for layer in net.base_model.encoder.layer]
    except AttributeError as exc:
        raise SmilesformerError(f"head analysis supports BERT/RoBERTa encoders, not {type(net).__name__}") from exc


@contextlib.contextmanager
def head_gates(net, gates: torch.Tensor) -> Iterator[None]:
    """Multiply each head's output by a gate while the context is open.

    Args:
        net: the HF model.
        gates: (batch, layers, heads); 1 leaves the model as it is, 0 silences a head.
    """
    heads = net.config.num_attention_heads

    def make_hook(layer: int):
        def hook(module, args):
            context = args[0]  # (batch, tokens, heads * head_dim): the heads' outputs side by side
            b, t, width = context.shape
            gated = context.view(b, t, heads, width // heads) * gates[:, layer, None, :, None].to(context.dtype)
            return (gated.view(b, t, width), *args[1:])
        return hook

    handles = [m.register_forward_pre_hook(make_hook(i)) for i, m in enumerate(_attention_outputs(net))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _per_example_loss(meta, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(batch,) training loss per molecule; NaN labels are left out, as in fine-tuning."""
    return meta.layout.per_example_loss(meta, logits, labels)


def head_importance(model, smiles: Sequence[str], labels: np.ndarray | None = None,
                    batch_size: int = 32) -> tuple[np.ndarray, str]:
    """Head importance of Michel, Levy & Neubig, "Are Sixteen Heads Really Better than One?" (NeurIPS 2019).

    I_h = mean over molecules of |d L(x) / d xi_h|, with xi_h a gate on head h's output. A gate per molecule
    gives the per-molecule gradients, whose absolute values are averaged, in one backward pass per batch.

    Args:
        model: a ``SmilesModel``.
        smiles: valid SMILES.
        labels: (n, targets) labels (NaN where missing): L is the training loss. Without labels L is the
            model's summed output, so the score measures how much each head moves the prediction.

    Returns:
        (layers, heads) importance, and the objective used (``loss`` or ``output``).
    """
    net, tok, meta = model.model, model.tokenizer, model.meta
    net.eval()
    cfg = net.config
    enc_smiles = list(smiles)
    enc = tok(enc_smiles, truncation=True, max_length=meta.max_length)["input_ids"]
    y = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.float32).reshape(len(enc), -1))
    total = torch.zeros(cfg.num_hidden_layers, cfg.num_attention_heads)
    for batch in length_batches([len(x) for x in enc], batch_size):
        padded = tok.pad({"input_ids": [enc[i] for i in batch]}, return_tensors="pt")
        gates = torch.ones(len(batch), cfg.num_hidden_layers, cfg.num_attention_heads, device=model.device,
                           requires_grad=True)
        extra = descriptor_inputs(net, [enc_smiles[i] for i in batch])
        with head_gates(net, gates):
            logits = net(**{k: v.to(model.device) for k, v in padded.items()}, **extra).logits.float()
        if y is None:
            objective = logits.sum(-1)
        else:
            objective = _per_example_loss(meta, logits, y[torch.as_tensor(batch)].to(model.device))
        (grad,) = torch.autograd.grad(objective.sum(), gates)  # (batch, layers, heads): per-molecule gradients
        total += grad.abs().sum(0).cpu()
    return (total / len(enc)).numpy(), "output" if y is None else "loss"


def masked_lm_head_importance(net, tokenizer, smiles: Sequence[str], max_length: int, mask_fraction: float = 0.15,
                              seed: int = 0, batch_size: int = 32) -> np.ndarray:
    """Michel et al.'s head importance for a pretrained encoder, on its own pretraining loss (masked LM).

    In each molecule a fixed share of the non-special tokens (at least one), drawn from ``seed`` so every call
    masks the same ones, is replaced by the mask token; L(x) is the mean cross-entropy of the model's
    predictions for those tokens, and I_h the mean over molecules of |d L(x) / d xi_h|.

    Args:
        net: a ``...ForMaskedLM`` model (encoder and LM head).
        tokenizer: its tokenizer (with a mask token).
        smiles: valid SMILES.
        max_length: longest input in tokens, specials included.
        mask_fraction: share of tokens masked, as in pretraining.

    Returns:
        (layers, heads) importance.
    """
    if tokenizer.mask_token_id is None:
        raise SmilesformerError("masked-LM head importance needs a tokenizer with a mask token")
    net.eval()
    cfg = net.config
    device = next(net.parameters()).device
    enc = tokenizer(list(smiles), truncation=True, max_length=max_length)["input_ids"]
    generator = torch.Generator().manual_seed(seed)
    draws = [torch.rand(len(ids), generator=generator) for ids in enc]  # per molecule, in input order
    specials = torch.tensor(tokenizer.all_special_ids)
    total = torch.zeros(cfg.num_hidden_layers, cfg.num_attention_heads)
    for batch in length_batches([len(x) for x in enc], batch_size):
        padded = tokenizer.pad({"input_ids": [enc[i] for i in batch]}, return_tensors="pt")
        ids = padded["input_ids"]  # (batch, T)
        draw = torch.ones(ids.shape)
        for row, i in enumerate(batch):
            draw[row, : len(enc[i])] = draws[i]
        draw[torch.isin(ids, specials)] = 2.0  # never masked (padding is a special token too)
        masked = draw < mask_fraction
        masked |= draw == draw.min(dim=1, keepdim=True).values  # at least one token per molecule
        labels = torch.where(masked, ids, torch.full_like(ids, -100))
        inputs = torch.where(masked, torch.full_like(ids, tokenizer.mask_token_id), ids)
        gates = torch.ones(len(batch), cfg.num_hidden_layers, cfg.num_attention_heads, device=device,
                           requires_grad=True)
        with head_gates(net, gates):
            logits = net(input_ids=inputs.to(device), attention_mask=padded["attention_mask"].to(device)).logits
        losses = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels.to(device),
                                                   ignore_index=-100, reduction="none")  # (batch, T)
        per_molecule = losses.sum(1) / masked.sum(1).to(device)  # (batch,): mean over masked tokens
        (grad,) = torch.autograd.grad(per_molecule.sum(), gates)  # (batch, layers, heads)
        total += grad.abs().sum(0).cpu()
    return (total / len(enc)).numpy()


def least_important_heads(importance: np.ndarray, n: int, normalize: bool = True) -> dict[int, list[int]]:
    """The ``n`` heads with the lowest importance, as {layer: [heads]}.

    Args:
        normalize: divide each layer's scores by their L2 norm first, as Michel et al. do before pruning.
    """
    scores = importance / np.linalg.norm(importance, axis=1, keepdims=True).clip(min=1e-12) if normalize else importance
    if not 0 <= n < scores.size:
        raise SmilesformerError(f"cannot prune {n} of {scores.size} heads; choose 0..{scores.size - 1}")
    chosen: dict[int, list[int]] = {}
    for flat in np.argsort(scores, axis=None, kind="stable")[:n]:
        layer, head = divmod(int(flat), scores.shape[1])
        chosen.setdefault(layer, []).append(head)
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


@torch.no_grad()
def prune_heads(model, heads: dict[int, Sequence[int]]) -> None:
    """Silence heads in place (see the module docstring for why by zeroing) and record them in the model's meta.

    Args:
        model: a ``SmilesModel``; ``model.meta.extra["pruned_heads"]`` lists every head pruned so far, so a
            saved model says what was removed.
        heads: {layer: [head indices]}.
    """
    net = model.model
    layers = net.base_model.encoder.layer
    n_heads = net.config.num_attention_heads
    width = net.config.hidden_size // n_heads
    pruned = {int(k): set(v) for k, v in model.meta.extra.get("pruned_heads", {}).items()}
    for layer, chosen in heads.items():
        if not 0 <= layer < len(layers) or any(not 0 <= h < n_heads for h in chosen):
            raise SmilesformerError(f"no head {list(chosen)} in layer {layer}: the model has {len(layers)} layers "
                                    f"of {n_heads} heads")
        attention = layers[layer].attention
        for h in chosen:
            cols = slice(h * width, (h + 1) * width)
            for proj in (attention.self.query, attention.self.key, attention.self.value):
                proj.weight[cols] = 0  # zero query/key: the head's attention becomes uniform, visibly off
                proj.bias[cols] = 0
            attention.output.dense.weight[:, cols] = 0
        pruned.setdefault(int(layer), set()).update(int(h) for h in chosen)
    model.meta.extra["pruned_heads"] = {str(k): sorted(v) for k, v in sorted(pruned.items())}


def pruning_effect(model, smiles: Sequence[str], heads: dict[int, Sequence[int]],
                   labels: np.ndarray | None = None) -> tuple[dict, object]:
    """Prune a copy of the model and compare it with the original.

    Returns:
        A dict with ``pruned`` ({layer: heads}), ``n_pruned``, and ``before`` / ``after`` metrics (mean over
        targets, from ``SmilesModel.evaluate``) when labels are given, else ``prediction_shift``: the mean
        absolute change of the predictions; and the pruned copy.
    """
    pruned_model = copy.deepcopy(model)
    prune_heads(pruned_model, heads)
    report: dict = {"pruned": {str(k): list(v) for k, v in heads.items()}, "n_pruned": sum(map(len, heads.values()))}
    if labels is not None:
        report["before"] = model.evaluate(smiles, labels)["mean"]
        report["after"] = pruned_model.evaluate(smiles, labels)["mean"]
    else:
        before = model.predict(smiles).drop(columns="error").to_numpy(float)
        after = pruned_model.predict(smiles).drop(columns="error").to_numpy(float)
        report["prediction_shift"] = float(np.nanmean(np.abs(after - before)))
    return report, pruned_model
