"""What explain reads a model from: a fine-tuned model (a prediction head) or any encoder (none).

Attention, atom attention and most head statistics need only the encoder, so they work on every model
``embeddings.load_encoder`` loads: the bundled pretrained model, a local Hugging Face folder (ChemBERTa's
masked-LM checkpoints, a byte-level BPE ``vocab.json`` + ``merges.txt``), a hub name (cached, or reachable).
Predictions, integrated gradients and pruning need a head with known outputs, so they need a fine-tuned
smilesformer folder (``smilesformer.json``) or a ``SmilesModel``; head importance needs a loss: the task's, or
for a pretrained encoder the masked-LM loss where its checkpoint keeps that head (``load_masked_lm``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from ..data import SmilesformerError
from ..embeddings import Encoder, load_encoder
from ..model import SmilesModel
from ..networks import resolve_model_source
from ..predictors import ENSEMBLE_FILE, Predictor
from ..tasks import META_FILE

__all__ = ["load_explainable", "load_masked_lm", "network_parts", "has_head", "require_head", "predict_one"]

Explainable = SmilesModel | Encoder


def load_explainable(source: str | Path | Predictor | Encoder, device: str = "cpu") -> Explainable:
    """A model to explain, with its head where it has one.

    Args:
        source: a ``SmilesModel`` or any fine-tuned predictor, an ``Encoder``, or a name: a fine-tuned folder
            (``smilesformer.json`` or ``ensemble.json``), the bundled model's name, any Hugging Face folder,
            or a hub name.
        device: where a model loaded from a name goes ("cpu", "cuda", "auto").

    Returns:
        A ``SmilesModel`` (it predicts; attributions work) or an ``Encoder`` (attention and embeddings only).

    Raises:
        SmilesformerError: the model cannot be found or loaded (offline and not cached, say).
    """
    if isinstance(source, SmilesModel | Encoder):
        return source
    if isinstance(source, Predictor):
        return SmilesModel.wrap(source)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = Path(resolve_model_source(str(source)))
    if (folder / META_FILE).is_file() or (folder / ENSEMBLE_FILE).is_file():
        return SmilesModel.from_pretrained(folder).to(device)
    return load_encoder(source, device=device)


def network_parts(model: Explainable) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, int, torch.device]:
    """The network, tokenizer, longest input (tokens, specials included) and device of either kind of model."""
    if isinstance(model, Encoder):
        return model.model, model.tokenizer, model.max_length, model.device
    return model.model, model.tokenizer, model.meta.max_length, model.device


def has_head(model: Explainable) -> bool:
    """True for a fine-tuned model: it predicts, so its outputs can be attributed."""
    return not isinstance(model, Encoder)


def require_head(model: Explainable, what: str) -> SmilesModel:
    """The model as a ``SmilesModel``, or an error saying that ``what`` needs a fine-tuned model."""
    if not has_head(model):
        raise SmilesformerError(
            f"{what} needs a fine-tuned model (one with a prediction head and smilesformer.json); "
            f"{model.source or 'this encoder'} is an encoder without one. Attention, atom attention, entropy, "
            "attention on bonds and (where the checkpoint keeps its masked-LM head) head importance work on it; "
            "fine-tune it first (`smilesformer finetune --model ...`) for predictions, attributions and pruning")
    return model  # type: ignore[return-value]


def predict_one(model: Explainable, smiles: str) -> dict[str, float] | None:
    """A fine-tuned model's prediction for one SMILES as {column: value}; None for an encoder without a head."""
    if not has_head(model):
        return None
    row = model.predict([smiles]).iloc[0]
    return {k: float(v) for k, v in row.items() if k != "error"}


def load_masked_lm(model: Encoder) -> PreTrainedModel | None:
    """The masked-language-model head an encoder was pretrained with, on the same encoder weights, or None.

    None where the checkpoint's config names no ``...ForMaskedLM`` architecture or its files lack the LM head's
    weights (a head drawn at random would give meaningless importance scores).
    """
    architectures = model.model.config.architectures or []
    if not model.source or not any(a.endswith("ForMaskedLM") for a in architectures):
        return None
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report is read below instead of printed
    try:
        net, info = AutoModelForMaskedLM.from_pretrained(resolve_model_source(model.source), output_loading_info=True)
    except OSError:
        return None
    finally:
        hf_logging.set_verbosity(verbosity)
    if info["missing_keys"]:
        return None
    return net.to(model.device).eval()
