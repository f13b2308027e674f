"""Explaining chemical language models on molecules: attention views, atom attributions and BERTology.

- ``atoms``: which atom each token spells (through character offsets; regex and BPE tokenizers).
- ``attention``: attention of every layer and head, rollout, atom-level attention, bertviz's format.
- ``attribution``: integrated gradients (captum) per token and per atom, with the completeness gap.
- ``draw``: atom heat maps on the 2D structure (RDKit) and layer x head grids.
- ``html``: a self-contained, offline head view and model view.
- ``bertology``: head entropy, attention on bonded atoms, head importance and pruning.
- ``report``: ``explain_molecule`` (JSON-ready) and folders of files for a molecule or a data set.
- ``views``: ``head_view`` and ``model_view``, which a notebook shows inline.
- ``loading``: any model: a fine-tuned one (everything) or an encoder without a head (attention only).

Attention is not explanation (Jain & Wallace 2019): the attribution maps, not the attention maps, say what
moved a prediction.
"""

from .atoms import MoleculeTokens, map_tokens, tokens_to_atoms
from .attention import MoleculeAttention, atom_attention, attention_rollout, bertviz_format, extract_attention
from .attribution import Attribution, integrated_gradients
from .bertology import (
    bond_attention_share,
    head_entropy,
    head_importance,
    least_important_heads,
    prune_heads,
    pruning_effect,
)
from .draw import draw_atom_heatmap, plot_head_grid, write_heatmap
from .html import attention_html, attention_iframe, write_attention_html
from .loading import has_head, load_explainable
from .report import Explanation, explain_dataset, explain_molecule, run_explain, write_molecule_explanation
from .views import AttentionView, head_view, model_view

__all__ = [
    "AttentionView",
    "Attribution",
    "Explanation",
    "MoleculeAttention",
    "MoleculeTokens",
    "atom_attention",
    "attention_html",
    "attention_iframe",
    "attention_rollout",
    "bertviz_format",
    "bond_attention_share",
    "draw_atom_heatmap",
    "explain_dataset",
    "explain_molecule",
    "extract_attention",
    "has_head",
    "head_view",
    "head_entropy",
    "head_importance",
    "integrated_gradients",
    "least_important_heads",
    "load_explainable",
    "map_tokens",
    "model_view",
    "plot_head_grid",
    "prune_heads",
    "pruning_effect",
    "run_explain",
    "tokens_to_atoms",
    "write_attention_html",
    "write_heatmap",
    "write_molecule_explanation",
]
