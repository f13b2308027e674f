"""Attention views that a notebook shows inline: ``head_view`` and ``model_view``, for any model.

``head_view("smilesformer-moses", "CCCCC[C@@H](Br)CC")`` as the last line of a cell shows the interactive
head view (bertviz's ``head_view``, on the molecule), with no network, requirejs or notebook extension
(``html.attention_iframe`` says how); ``.save(path)`` writes the same page as a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .attention import MoleculeAttention, check_layer_head, extract_attention
from .html import attention_html, attention_iframe
from .loading import load_explainable, predict_one

__all__ = ["AttentionView", "head_view", "model_view"]


@dataclass(repr=False)
class AttentionView:
    """One molecule's attention page, opened on the head view or the model view.

    Attributes:
        attention: the molecule's tokens, atoms and (layers, heads, T, T) weights.
        prediction: the model's prediction ({column: value}), None for an encoder without a head.
        view: ``head`` or ``model``: the tab the page opens on.
        layer, head: the head view's first selection (None: the last layer, mean of its heads).
    """

    attention: MoleculeAttention
    prediction: dict | None = None
    view: str = "head"
    layer: int | None = None
    head: int | None = None

    @property
    def html(self) -> str:
        """The whole page (one offline file)."""
        return attention_html(self.attention, self.prediction, "Attention", self.view, self.layer, self.head)

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path``; it opens offline in any browser."""
        path = Path(path)
        path.write_text(self.html, encoding="utf-8")
        return path

    def __repr__(self) -> str:
        layers, heads, n, _ = self.attention.weights.shape
        smiles = self.attention.molecule.smiles
        return f"AttentionView({self.view} view of {smiles!r}: {layers} layers x {heads} heads, {n} tokens)"

    def _repr_html_(self) -> str:
        return attention_iframe(self.attention, self.prediction, "Attention", self.view, self.layer, self.head)


def _view(model, smiles: str, view: str, layer: int | None, head: int | None) -> AttentionView:
    model = load_explainable(model)
    attention = extract_attention(model, smiles)[0]
    check_layer_head(attention.weights, layer, head)
    return AttentionView(attention, predict_one(model, smiles), view, layer, head)


def head_view(model, smiles: str, layer: int | None = None, head: int | None = None) -> AttentionView:
    """Where each token attends in one layer and head (or the mean of a layer's heads), beside the molecule.

    Args:
        model: any model ``load_explainable`` reads: the bundled pretrained model's name, a Hugging Face
            folder or hub name, a fine-tuned folder, a ``SmilesModel`` or an ``Encoder``.
        smiles: one SMILES.
        layer, head: the first selection (default: last layer, mean of its heads); the page switches freely.

    Returns:
        An ``AttentionView``: shown inline as the last value of a notebook cell; ``.save(path)`` for a file.

    Raises:
        SmilesformerError: an invalid SMILES (with RDKit's reason), a model that cannot be loaded, or a
            layer/head the model does not have.
    """
    return _view(model, smiles, "head", layer, head)


def model_view(model, smiles: str) -> AttentionView:
    """Every layer and head at once as small attention maps; clicking one opens it in the head view.

    Args and returns as ``head_view``.
    """
    return _view(model, smiles, "model", None, None)
