"""RDKit descriptors joined to the encoder's pooled embedding: an optional prediction head.

A transformer reads a SMILES one token at a time; whole-molecule properties that RDKit computes exactly
(logP, TPSA, ring counts, charges, ...) it has to rediscover from the labels. chemprop-RDKit, which joins
such descriptors to chemprop's learned vector, is among the best published models on AqSolDB (TDC), and
``--descriptors rdkit`` does the same here: the head reads the <s> token's last hidden state concatenated
with the molecule's RDKit 2D descriptors (``rdkit.Chem.Descriptors``, 217 in RDKit 2026.09), scaled
robustly on the training set.

transformers' sequence-classification heads take no per-molecule features, so this module defines one
model class, ``RobertaWithDescriptorsForSequenceClassification``, and registers it with the Auto classes:
a saved folder then reloads through ``AutoModelForSequenceClassification`` like any other, and the
descriptor names and scaling travel inside it (config and buffers).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, RobertaConfig, RobertaModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.roberta.modeling_roberta import RobertaPreTrainedModel

from .data import SmilesformerError
from .rdkit_descriptors import (  # the RDKit side, re-exported: computing descriptors needs no PyTorch
    DESCRIPTOR_SETS,
    allow_process_pool,
    clear_descriptor_cache,
    compute_descriptors,
    descriptor_block,
    descriptor_calculator,
    descriptor_names,
    prefetch_descriptors,
)

__all__ = [
    "DESCRIPTOR_SETS",
    "allow_process_pool",
    "RobertaWithDescriptorsConfig",
    "RobertaWithDescriptorsForSequenceClassification",
    "clear_descriptor_cache",
    "compute_descriptors",
    "descriptor_block",
    "descriptor_calculator",
    "descriptor_names",
    "descriptor_inputs",
    "prefetch_descriptors",
    "uses_descriptors",
]

MODEL_TYPE = "smilesformer-roberta-descriptors"
ENCODER_TYPES = ("roberta", MODEL_TYPE)  # the model types the head goes on
CLIP = 6.0  # scaled descriptors are clipped to +-CLIP: a few (Ipc, say) reach 1e30 on large molecules


class RobertaWithDescriptorsConfig(RobertaConfig):
    """A RoBERTa config that also names the descriptors its head reads."""

    model_type = MODEL_TYPE

    def __init__(self, descriptor_set: str = "rdkit", descriptor_names: list[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.descriptor_set = descriptor_set
        self.descriptor_names = list(descriptor_names or [])


class DescriptorHead(nn.Module):
    """RoBERTa's classification head (dense, tanh, projection) with the descriptors joined to its input."""

    def __init__(self, config: RobertaWithDescriptorsConfig):
        super().__init__()
        n = len(config.descriptor_names)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(config.hidden_size + n, config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
        x = torch.cat([hidden[:, 0], descriptors.to(hidden.dtype)], dim=-1)  # (batch, hidden + descriptors)
        x = torch.tanh(self.dense(self.dropout(x)))
        return self.out_proj(self.dropout(x))  # (batch, labels)


class RobertaWithDescriptorsForSequenceClassification(RobertaPreTrainedModel):
    """RoBERTa encoder plus ``DescriptorHead``; ``forward`` takes raw descriptors (batch, n) as ``descriptors``.

    ``descriptor_center`` / ``descriptor_scale`` (median and IQR / 1.349 on the training set, see
    ``fit_scaling``) are buffers, saved with the weights. Without ``descriptors`` the encoder runs and
    ``logits`` is None: hidden states and attentions need no descriptors.
    """

    config_class = RobertaWithDescriptorsConfig

    def __init__(self, config: RobertaWithDescriptorsConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.classifier = DescriptorHead(config)
        n = len(config.descriptor_names)
        self.register_buffer("descriptor_center", torch.zeros(n))
        self.register_buffer("descriptor_scale", torch.ones(n))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:  # buffers a base checkpoint lacks: identity scaling until ``fit_scaling``
            init.zeros_(module.descriptor_center)
            init.ones_(module.descriptor_scale)

    @torch.no_grad()
    def fit_scaling(self, raw: np.ndarray) -> None:
        """Robust scaling from training descriptors (n, d): median, and IQR / 1.349 (the sd of a normal)."""
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # a descriptor RDKit computed for no molecule
            low, center, high = np.nanpercentile(raw, [25, 50, 75], axis=0)
            spread = (high - low) / 1.349
            fallback = np.nanstd(raw, axis=0)
        spread = np.where(spread > 0, spread, np.where(fallback > 0, fallback, 1.0))
        self.descriptor_center.copy_(torch.as_tensor(np.nan_to_num(center), dtype=torch.float32))
        self.descriptor_scale.copy_(torch.as_tensor(np.nan_to_num(spread, nan=1.0), dtype=torch.float32))

    def scale(self, descriptors: torch.Tensor) -> torch.Tensor:
        z = (descriptors.float() - self.descriptor_center) / self.descriptor_scale
        return torch.nan_to_num(z, nan=0.0).clamp(-CLIP, CLIP)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        descriptors: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.roberta(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        logits = loss = None
        if descriptors is not None:
            hidden = outputs.last_hidden_state  # (batch, tokens, hidden)
            logits = self.classifier(hidden, self.scale(descriptors.to(hidden.device)))
        elif labels is not None:
            raise SmilesformerError("this model's head reads RDKit descriptors: pass descriptors= with the labels")
        if labels is not None:
            if self.config.problem_type == "regression":
                loss = nn.functional.mse_loss(logits.float(), labels.float().view_as(logits))
            elif self.config.problem_type == "single_label_classification":
                loss = nn.functional.cross_entropy(logits.float(), labels.long().view(-1))
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


AutoConfig.register(RobertaWithDescriptorsConfig.model_type, RobertaWithDescriptorsConfig)
AutoModelForSequenceClassification.register(RobertaWithDescriptorsConfig,
                                            RobertaWithDescriptorsForSequenceClassification)


def uses_descriptors(net: torch.nn.Module) -> bool:
    """Whether ``net`` (an HF model, possibly DDP-wrapped) has a head that reads descriptors."""
    return bool(getattr(getattr(getattr(net, "module", net), "config", None), "descriptor_names", None))


def descriptor_inputs(net: torch.nn.Module, smiles: Sequence[str]) -> dict[str, torch.Tensor]:
    """The extra forward arguments ``net`` needs for these SMILES: {} for an ordinary model."""
    if not uses_descriptors(net):
        return {}
    raw = compute_descriptors(smiles, net.config.descriptor_names)
    return {"descriptors": torch.tensor(raw, dtype=torch.float32, device=next(net.parameters()).device)}


def _descriptor_config(base: RobertaConfig, descriptor_set: str, **overrides) -> RobertaWithDescriptorsConfig:
    skip = {"model_type", "architectures", "transformers_version", "descriptor_set", "descriptor_names"}
    if "num_labels" in overrides:  # the base's label names belong to its own head
        skip |= {"id2label", "label2id"}
    values = {k: v for k, v in base.to_dict().items() if k not in skip}
    values.update(overrides)
    names = descriptor_names(descriptor_set)
    return RobertaWithDescriptorsConfig(descriptor_set=descriptor_set, descriptor_names=names, **values)


def with_descriptor_head(source: str, descriptor_set: str, output_loading_info: bool = False,
                         **config_overrides) -> torch.nn.Module | tuple[torch.nn.Module, dict]:
    """The encoder weights of ``source`` (a RoBERTa checkpoint) under a new, randomly initialized descriptor head
    (with ``output_loading_info``, also transformers' record of missing and unused weights)."""
    base = AutoConfig.from_pretrained(source)
    if base.model_type not in ENCODER_TYPES:
        raise SmilesformerError(f"the descriptor head is built for RoBERTa encoders; {source} is a "
                                f"{base.model_type!r} model. Leave descriptors at 'none' for it")
    config = _descriptor_config(base, descriptor_set, **config_overrides)
    return RobertaWithDescriptorsForSequenceClassification.from_pretrained(
        source, config=config, ignore_mismatched_sizes=True, output_loading_info=output_loading_info)


def descriptor_model_from_config(base: RobertaConfig, descriptor_set: str) -> torch.nn.Module:
    """A randomly initialized descriptor model with the shape (and labels) of ``base``."""
    return RobertaWithDescriptorsForSequenceClassification(_descriptor_config(base, descriptor_set))
