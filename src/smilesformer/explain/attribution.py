"""Integrated gradients (Sundararajan et al., ICML 2017, arXiv:1703.01365) of a prediction, per token and atom.

captum's ``LayerIntegratedGradients`` interpolates the input embeddings (the word-embedding layer) between a
baseline and the molecule and integrates the gradient of one model output along that path. The baseline
keeps ``<s>`` and ``</s>`` and replaces every other token with ``<mask>`` (or ``<pad>``), so it is "the
same frame with no molecule in it" (an ``<unk>`` standing for an atom is replaced too). Completeness, sum of
attributions = f(x) - f(baseline), holds up to the integration error, which we report as the completeness gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import SmilesformerError
from ..descriptors import descriptor_inputs
from .atoms import MoleculeTokens, map_tokens, tokens_to_atoms

__all__ = ["Attribution", "integrated_gradients", "output_name"]


@dataclass
class Attribution:
    """Integrated-gradients attribution of one output for one molecule.

    Attributes:
        molecule: tokens and their atoms.
        output: what is explained (e.g. ``logS`` in label units, or the logit of class 1).
        token_attributions: (tokens,) attribution summed over the embedding dimension.
        atom_attributions: (n_atoms,) token attributions moved onto atoms (``tokens_to_atoms``).
        value: f(x), the explained output for the molecule.
        baseline_value: f(baseline).
        completeness_gap: |sum of attributions - (f(x) - f(baseline))|.
    """

    molecule: MoleculeTokens
    output: str
    token_attributions: np.ndarray
    atom_attributions: np.ndarray
    value: float
    baseline_value: float
    completeness_gap: float

    @property
    def non_atom_share(self) -> float:
        """Share of the total |attribution| on tokens that spell no atom (bonds, ring digits, specials)."""
        total = np.abs(self.token_attributions).sum()
        off = sum(abs(a) for a, atoms in zip(self.token_attributions, self.molecule.token_atoms) if not atoms)
        return float(off / total) if total > 0 else 0.0


def output_name(meta, target: int) -> str:
    """Name of model output ``target``: a regression target, or a class logit."""
    if not 0 <= target < meta.num_labels:
        raise SmilesformerError(f"target {target} is out of range: the model has {meta.num_labels} output(s) "
                                f"({', '.join(meta.targets)}); pass 0..{meta.num_labels - 1}")
    return meta.layout.output_name(meta, target)


def _position_ids(net, length: int) -> torch.Tensor:
    # RoBERTa numbers positions from padding_idx + 1 and gives <pad> tokens the padding position; passing the
    # molecule's positions explicitly keeps a <pad> baseline from also moving every position embedding.
    offset = getattr(net.base_model.embeddings, "padding_idx", -1) + 1
    return torch.arange(offset, offset + length)[None]  # (1, T)


def integrated_gradients(model, smiles: str, target: int = 0, n_steps: int = 50, baseline: str = "mask",
                         internal_batch_size: int = 64) -> Attribution:
    """Attribute one output of a fine-tuned model to the tokens and atoms of a SMILES.

    Args:
        model: a ``SmilesModel``.
        smiles: one SMILES.
        target: output index: regression target, binary target, or class of a multiclass model.
        n_steps: integration steps (Gauss-Legendre); more steps, smaller completeness gap.
        baseline: ``mask`` or ``pad``: the token that replaces every non-special token in the baseline.
        internal_batch_size: interpolation points per forward pass.

    Returns:
        An ``Attribution``; a regression output is the prediction itself, in label units.
    """
    try:
        from captum.attr import LayerIntegratedGradients
    except ImportError as exc:
        raise SmilesformerError("integrated gradients need captum: pip install 'smilesformer[explain]'") from exc

    name = output_name(model.meta, target)
    if baseline not in ("mask", "pad"):
        raise SmilesformerError(f"baseline must be 'mask' or 'pad', not {baseline!r}")
    molecule = map_tokens(smiles, model.tokenizer, model.meta.max_length)
    net, tok = model.model, model.tokenizer
    net.eval()
    # explain the prediction in label units where there are such; the shift moves f(x) and f(baseline) alike
    scale, shift = model.meta.layout.output_scale(model.meta, target)

    ids = torch.tensor([molecule.input_ids], device=model.device)  # (1, T)
    # The frame the tokenizer adds stays; <unk> stands for an atom the vocabulary lacks, so it is replaced too
    # (``get_special_tokens_mask`` would keep it and give that atom no attribution).
    frame = {tok.bos_token_id, tok.eos_token_id, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id} - {None}
    special = torch.tensor([i in frame for i in molecule.input_ids], device=model.device)[None]  # (1, T)
    fill = tok.mask_token_id if baseline == "mask" else tok.pad_token_id
    base_ids = torch.where(special, ids, torch.full_like(ids, fill))  # (1, T)
    positions = _position_ids(net, ids.shape[1]).to(model.device)
    # a head that reads RDKit descriptors gets the molecule's own at every step: the tokens are explained
    # with the descriptors held fixed
    extra = descriptor_inputs(net, [molecule.smiles])

    def forward(input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        # all-ones mask: a <pad> baseline token is attended like any other token
        fixed = {k: v.expand(len(input_ids), -1) for k, v in extra.items()}
        out = net(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), position_ids=position_ids, **fixed)
        return out.logits[:, target].float() * scale + shift  # (batch,)

    lig = LayerIntegratedGradients(forward, net.get_input_embeddings())
    attributions, delta = lig.attribute(
        ids, baselines=base_ids, additional_forward_args=(positions,), n_steps=n_steps,
        internal_batch_size=internal_batch_size, return_convergence_delta=True,
    )  # attributions: (1, T, hidden)
    with torch.no_grad():
        value = float(forward(ids, positions)[0])
        baseline_value = float(forward(base_ids, positions)[0])
    per_token = attributions.sum(dim=-1)[0].detach().float().cpu().numpy()  # (T,)
    return Attribution(
        molecule=molecule,
        output=name,
        token_attributions=per_token,
        atom_attributions=tokens_to_atoms(per_token, molecule.token_atoms, molecule.n_atoms),
        value=value,
        baseline_value=baseline_value,
        completeness_gap=float(abs(delta.item())),
    )
