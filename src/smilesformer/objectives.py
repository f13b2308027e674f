"""Masked language modelling and descriptor regression at once: one encoder, two heads, weighted losses.

ChemBERTa pretrains with MLM; ChemBERTa-2 found multi-task regression of RDKit descriptors (MTR) transfers
better. Both at once costs one forward pass per batch: the MLM head reads the masked tokens, a small MTR
head reads the <s> token of the same (masked) input and regresses the molecule's standardized descriptors,
so the encoder learns the grammar and whole-molecule chemistry together. The model is RoBERTa's own
``RobertaForMaskedLM`` with one added head (``mtr_head``); ``masked_lm_model`` hands back a plain
``RobertaForMaskedLM`` for the model folder, which then loads with ``AutoModelForMaskedLM`` anywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import DataCollatorForLanguageModeling, RobertaConfig, RobertaForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

__all__ = ["MTR_HEAD_FILE", "RobertaForMlmMtr", "MlmMtrCollator", "MtrCollator", "masked_mse", "masked_lm_model",
           "mtr_model"]

MTR_HEAD_FILE = "mtr_head.safetensors"  # mlm+mtr: the descriptor head, beside the RobertaForMaskedLM weights


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite targets only (a descriptor RDKit could not compute is NaN)."""
    mask = ~torch.isnan(target)
    diff = (pred.float() - torch.nan_to_num(target.float())) * mask
    return (diff ** 2).sum() / mask.sum().clamp(min=1)


class RobertaForMlmMtr(RobertaForMaskedLM):
    """``RobertaForMaskedLM`` plus an MTR head on the <s> token. The config carries ``n_descriptors`` (0: no MTR
    head), ``mlm_weight`` and ``mtr_weight``; the loss is ``mlm_weight * MLM + mtr_weight * MTR``.

    MLM alone trains this class too: its vocabulary projection runs on the masked positions only (15-30% of
    tokens) where ``RobertaForMaskedLM`` projects every token."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        hidden = config.hidden_size
        n = getattr(config, "n_descriptors", 0)  # 0: MLM alone
        self.mtr_head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden),
                                      nn.Linear(hidden, n)) if n else None
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, descriptors=None, **kwargs) -> MaskedLMOutput:
        hidden = self.roberta(input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        # (batch, tokens, hidden)
        loss = torch.zeros((), device=hidden.device)
        logits = None
        if labels is not None and self.config.mlm_weight > 0:
            masked = labels != -100  # the vocabulary projection runs on the masked positions only
            logits = self.lm_head(hidden[masked])  # (masked tokens, vocab)
            mlm = nn.functional.cross_entropy(logits.float(), labels[masked])
            loss = loss + self.config.mlm_weight * mlm
        if descriptors is not None and self.mtr_head is not None and self.config.mtr_weight > 0:
            mtr = masked_mse(self.mtr_head(hidden[:, 0]), descriptors)  # (batch, descriptors)
            loss = loss + self.config.mtr_weight * mtr
        return MaskedLMOutput(loss=loss, logits=logits)


class MlmMtrCollator:
    """RoBERTa-style dynamic masking of the token ids (a fresh draw each batch) plus the stacked descriptors."""

    def __init__(self, tokenizer, mlm_probability: float, seed: int):
        self.mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.mlm([{"input_ids": f["input_ids"]} for f in features])
        if "descriptors" in features[0]:
            batch["descriptors"] = torch.as_tensor(np.stack([f["descriptors"] for f in features]))
        return dict(batch)


class MtrCollator:
    """Pads the token ids (no masking) and stacks the descriptors: MTR alone, as in domain adaptation."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad({"input_ids": [f["input_ids"] for f in features]}, return_tensors="pt")
        batch["descriptors"] = torch.as_tensor(np.stack([f["descriptors"] for f in features]))
        return dict(batch)


def mtr_model(encoder_config: RobertaConfig, n_descriptors: int) -> RobertaForMlmMtr:
    """A ``RobertaForMlmMtr`` that trains on descriptors alone (MLM weight 0), shaped like ``encoder_config``."""
    skip = {"architectures", "model_type", "transformers_version", "id2label", "label2id", "num_labels",
            "problem_type", "descriptor_set", "descriptor_names"}
    values = {k: v for k, v in encoder_config.to_dict().items() if k not in skip}
    config = RobertaConfig(**values)
    config.n_descriptors, config.mlm_weight, config.mtr_weight = n_descriptors, 0.0, 1.0
    return RobertaForMlmMtr(config)


def masked_lm_model(model: RobertaForMlmMtr) -> RobertaForMaskedLM:
    """The encoder and MLM head of ``model`` as a plain ``RobertaForMaskedLM`` (config without the MTR keys)."""
    values = {k: v for k, v in model.config.to_dict().items()
              if k not in ("n_descriptors", "mlm_weight", "mtr_weight", "architectures")}
    plain = RobertaForMaskedLM(RobertaConfig(**values))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("mtr_head.")}
    plain.load_state_dict(state, strict=False)  # strict=False: the tied decoder weight may be absent
    plain.tie_weights()
    return plain
