"""Domain adaptation before fine-tuning (--adapt mtr): descriptors of the training SMILES only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smilesformer import SmilesModel, TrainConfig
from smilesformer.data import SmilesformerError
from smilesformer.descriptors import descriptor_names
from smilesformer.train import adapt_mtr


def _encoder_state(model: SmilesModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.model.base_model.state_dict().items()}


def test_adapt_reads_training_smiles_only_and_moves_the_encoder(make_tiny_model, esol50, monkeypatch, tmp_path):
    import smilesformer.train as train

    seen: list[list[str]] = []
    real = train.compute_descriptors

    def spy(smiles, names):
        seen.append(list(smiles))
        return real(smiles, names)

    monkeypatch.setattr(train, "compute_descriptors", spy)
    smiles, y = esol50["smiles"].tolist(), esol50["logS"].to_numpy(float)
    model = make_tiny_model()
    before = _encoder_state(model)
    config = TrainConfig(epochs=1, adapt="mtr", adapt_epochs=2, batch_size=8, progress=False)
    history = adapt_mtr(model, smiles[:40], config, tmp_path / "adapt")
    assert seen == [smiles[:40]]
    assert history[-1]["epoch"] == pytest.approx(2)
    after = model.model.base_model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not (tmp_path / "adapt").exists()  # the adaptation leaves no folder behind

    seen.clear()
    fitted = make_tiny_model().fit(smiles[:40], y[:40], smiles[40:], y[40:],
                                   config=TrainConfig(epochs=1, batch_size=8, adapt="mtr", adapt_epochs=1,
                                                      progress=False))
    assert seen[0] == smiles[:40] and all(s in smiles[:40] for batch in seen for s in batch)
    assert np.isfinite(fitted.predict(["CCO"])["logS_pred"]).all()


def test_adapt_reuses_a_pretrained_mtr_head(make_tiny_model, esol50, tmp_path, monkeypatch):
    """A base model that ships mtr_head.safetensors lends its head, its descriptor statistics and its descriptor
    set (here "mtr", not the fallback "fast")."""
    import json

    from safetensors.torch import save_file

    import smilesformer.train as train
    from smilesformer.objectives import mtr_model

    model = make_tiny_model()
    names = descriptor_names("mtr")
    head = mtr_model(model.model.config, len(names)).mtr_head
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp_path / "mtr_head.safetensors"))
    (tmp_path / "descriptor_stats.json").write_text(json.dumps({"names": names, "mean": [0.0] * len(names),
                                                                "std": [1.0] * len(names)}))
    model.meta.base_model = str(tmp_path)
    loaded = train._pretrained_mtr(model.meta.base_model)
    assert loaded is not None and set(loaded[0]) == set(head.state_dict()) and loaded[1]["names"] == names
    asked = []
    real = train.compute_descriptors
    monkeypatch.setattr(train, "compute_descriptors", lambda smi, n: asked.append(list(n)) or real(smi, n))
    train.adapt_mtr(model, list(esol50["smiles"][:20]), TrainConfig(adapt="mtr", adapt_epochs=1, batch_size=8,
                                                                    progress=False), tmp_path / "adapt")
    assert asked == [names]
    (tmp_path / "mtr_head.safetensors").unlink()
    assert train._pretrained_mtr(model.meta.base_model) is None  # no head: a new one, on the fallback set


def test_adapt_setting_is_checked():
    with pytest.raises(ValueError, match="adapt must be"):
        TrainConfig(adapt="mlm")
    with pytest.raises(ValueError, match="adapt_epochs"):
        TrainConfig(adapt="mtr", adapt_epochs=0)


def test_adapt_refuses_a_non_roberta_encoder(esol50):
    from transformers import BertConfig, BertForSequenceClassification

    from smilesformer.tasks import ModelMeta
    from smilesformer.tokenization import build_smiles_tokenizer

    tok = build_smiles_tokenizer()
    net = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32, num_labels=1))
    model = SmilesModel(net, tok, ModelMeta("regression", ["y"]))
    with pytest.raises(SmilesformerError, match="RoBERTa"):
        adapt_mtr(model, ["CCO"], TrainConfig(adapt="mtr"), None)
