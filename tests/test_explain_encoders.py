"""Explain on any encoder: the bundled pretrained model, a ChemBERTa-like byte-level BPE folder, a hub name; and
the views a notebook shows inline (head_view, model_view, an explanation's heat maps)."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem
from typer.testing import CliRunner

from smilesformer import SmilesformerError
from smilesformer.cli import app
from smilesformer.embeddings import Encoder
from smilesformer.explain import (
    AttentionView,
    Explanation,
    explain_dataset,
    explain_molecule,
    extract_attention,
    has_head,
    head_view,
    load_explainable,
    model_view,
)
from smilesformer.explain.loading import load_masked_lm

NOTEBOOK_MOLECULE = "CCCCC[C@@H](Br)CC"  # the seed notebook's molecule


@pytest.fixture(scope="module")
def bpe_roberta_dir(tmp_path_factory, esol50):
    """A tiny masked-LM RoBERTa folder laid out as ChemBERTa's checkpoints are: config.json, weights, and a
    byte-level BPE tokenizer as vocab.json + merges.txt (no tokenizer.json), trained here on SMILES."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForMaskedLM

    folder = tmp_path_factory.mktemp("chemberta_like")
    corpus = []
    for i, s in enumerate(esol50["smiles"]):  # as written and 3 ways more, seeded: the same folder every run
        corpus += [s] + list(Chem.MolToRandomSmilesVect(Chem.MolFromSmiles(s), 3, randomSeed=i + 1))
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    bpe.save_model(str(folder))  # vocab.json, merges.txt
    config = RobertaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, type_vocab_size=1)
    torch.manual_seed(0)
    RobertaForMaskedLM(config).save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    return folder


def _page_of(frame: str) -> str:
    """The page an ``<iframe srcdoc=...>`` holds."""
    match = re.search(r'srcdoc="([^"]*)"', frame)
    assert match, "no srcdoc iframe"
    return html.unescape(match.group(1))


def _data_of(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))


def _weights_of(data: dict) -> np.ndarray:
    n = len(data["tokens"])
    raw = np.frombuffer(base64.b64decode(data["attention_b64"]), np.uint8)
    return raw.reshape(data["layers"], data["heads"], n, n) / 255


# any encoder -------------------------------------------------------------------------------------------------------
def test_bpe_folder_attention_matches_the_network(bpe_roberta_dir):
    from transformers import RobertaForMaskedLM, RobertaTokenizer

    model = load_explainable(bpe_roberta_dir)
    assert isinstance(model, Encoder) and not has_head(model)
    smiles = "CCCCCCc1ccccc1Cl"
    result = extract_attention(model, smiles)[0]
    assert any(len(a) > 1 for a in result.token_atoms)  # BPE merged several atoms into one token
    assert sorted(k for a in result.token_atoms for k in a) == list(range(13))  # every atom spelled once
    # the same numbers straight from transformers, the way ChemBERTa's folders are read elsewhere
    tokenizer = RobertaTokenizer.from_pretrained(bpe_roberta_dir)
    assert tokenizer.convert_ids_to_tokens(tokenizer(smiles)["input_ids"]) == result.tokens
    net = RobertaForMaskedLM.from_pretrained(bpe_roberta_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        attentions = net(**tokenizer(smiles, return_tensors="pt"), output_attentions=True).attentions
    assert np.allclose(torch.cat(attentions).numpy(), result.weights, atol=1e-6)


def test_cli_explains_a_bpe_encoder_without_a_head(bpe_roberta_dir, tmp_path):
    out = tmp_path / "bpe"
    result = CliRunner().invoke(app, ["explain", str(bpe_roberta_dir), "--smiles", "c1ccccc1CCN", "--out", str(out),
                                      "--layer", "1", "--head", "1"])
    assert result.exit_code == 0, result.output
    assert "without a prediction head" in result.output
    for name in ("attention.html", "attention_bertviz.pt", "attention_L1_H1.png", "attention_L1_mean.svg",
                 "attention_rollout.svg", "head_entropy.png", "head_bond_share.png", "head_importance.png",
                 "tokens.csv", "atoms.csv"):
        assert (out / name).stat().st_size > 0, name
    for name in ("attribution.svg", "attribution.png"):  # these need a prediction head
        assert not (out / name).exists(), name
    saved = json.loads((out / "explanation.json").read_text())
    assert saved["prediction"] is None and saved["atom_attributions"] is None and saved["completeness_gap"] is None
    assert np.array(saved["attention"]["weights"]).shape[:2] == (2, 2)
    atoms = pd.read_csv(out / "atoms.csv")
    assert len(atoms) == 9 and "attribution" not in atoms and atoms["rollout"].sum() > 0


def test_cli_explains_the_bundled_pretrained_model(tmp_path):
    out = tmp_path / "bundled"
    args = ["explain", "smilesformer-moses", "--smiles", NOTEBOOK_MOLECULE, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = _data_of((out / "attention.html").read_text())
    bundled = load_explainable("smilesformer-moses")
    cfg = bundled.model.config
    assert (data["layers"], data["heads"]) == (cfg.num_hidden_layers, cfg.num_attention_heads)
    assert data["smiles"] == NOTEBOOK_MOLECULE and data["tokens"][0] == "<s>"
    expected = extract_attention(bundled, NOTEBOOK_MOLECULE)[0].weights
    assert np.allclose(_weights_of(data), expected, atol=0.5 / 255 + 1e-6)


def test_encoder_data_set_statistics_and_what_needs_a_head(bpe_roberta_dir, esol50, tmp_path):
    smiles = list(esol50["smiles"][:4]) + ["C1CC"]
    summary = explain_dataset(str(bpe_roberta_dir), smiles, tmp_path / "set")
    assert summary["n_invalid"] == 1 and summary["head_importance_objective"] == "masked_lm_loss"
    heads = pd.read_csv(tmp_path / "set" / "heads.csv")
    assert list(heads.columns) == ["layer", "head", "entropy", "bond_share", "importance"] and len(heads) == 4
    assert (heads["importance"] > 0).all()
    molecules = pd.read_csv(tmp_path / "set" / "molecules.csv")
    assert molecules["smiles"].tolist() == smiles and molecules["error"].fillna("").astype(bool).sum() == 1
    with pytest.raises(SmilesformerError, match="pruning .* needs a fine-tuned model"):
        explain_dataset(str(bpe_roberta_dir), smiles, tmp_path / "pruned", prune=1)
    bad = CliRunner().invoke(app, ["explain", str(bpe_roberta_dir), "--data", "x.csv", "--out", str(tmp_path),
                                   "--prune", "1"])
    assert bad.exit_code == 2 and "fine-tune it first" in bad.output


def test_a_hub_name_loads_from_the_hugging_face_cache(bpe_roberta_dir, tmp_path, monkeypatch):
    """A hub name whose files are in the local Hugging Face cache explains offline (the cache's layout:
    models--owner--name/refs/main names the snapshot holding the files)."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--someone--tiny-chemberta"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(bpe_roberta_dir, repo / "snapshots" / commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    view = head_view("someone/tiny-chemberta", "c1ccccc1CCN")
    direct = extract_attention(load_explainable(bpe_roberta_dir), "c1ccccc1CCN")[0]
    assert view.attention.tokens == direct.tokens
    assert np.allclose(view.attention.weights, direct.weights)


def test_a_hub_name_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["explain", "nobody-here/no-such-chemberta", "--smiles", "CCO",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no-such-chemberta" in result.output and "HF_HUB_OFFLINE=1" in result.output


def test_masked_lm_head_importance_is_the_gradient_of_the_masked_lm_loss(bpe_roberta_dir):
    """|d L / d gate| from one backward pass equals a finite difference of the masked-LM loss in the gate."""
    from transformers import RobertaForMaskedLM

    from smilesformer.explain.bertology import head_gates, masked_lm_head_importance

    encoder = load_explainable(bpe_roberta_dir)
    net = load_masked_lm(encoder)
    reference = RobertaForMaskedLM.from_pretrained(bpe_roberta_dir)
    assert torch.equal(net.lm_head.dense.weight, reference.lm_head.dense.weight)  # the saved head, not a new one
    smiles = "CCCCCCc1ccccc1Cl"
    net = net.double()  # float64, so the finite difference below is not lost in round-off
    importance = masked_lm_head_importance(net, encoder.tokenizer, [smiles], 128)
    assert importance.shape == (2, 2) and (importance > 0).all()
    layer, head = np.unravel_index(np.argmax(importance), importance.shape)
    # the same masking, by hand: one molecule, so the draws are the generator's first
    ids = torch.tensor([encoder.tokenizer(smiles)["input_ids"]])
    draw = torch.rand(ids.shape[1], generator=torch.Generator().manual_seed(0))[None]
    draw[torch.isin(ids, torch.tensor(encoder.tokenizer.all_special_ids))] = 2.0
    masked = (draw < 0.15) | (draw == draw.min())
    inputs = torch.where(masked, torch.full_like(ids, encoder.tokenizer.mask_token_id), ids)

    def loss(gate: float) -> float:
        gates = torch.ones(1, 2, 2, dtype=torch.float64)
        gates[0, layer, head] = gate
        with torch.no_grad(), head_gates(net, gates):
            logits = net(input_ids=inputs).logits[0]
        return float(torch.nn.functional.cross_entropy(logits[masked[0]], ids[0][masked[0]]))

    slope = (loss(1 + 1e-3) - loss(1 - 1e-3)) / 2e-3
    assert importance[layer, head] == pytest.approx(abs(slope), rel=1e-3)


def test_an_encoder_saved_without_its_lm_head_gets_no_importance(bpe_roberta_dir, tmp_path):
    from transformers import RobertaModel

    folder = tmp_path / "bare"
    RobertaModel.from_pretrained(bpe_roberta_dir).save_pretrained(folder)  # config: RobertaModel
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe_roberta_dir / name, folder / name)
    assert load_masked_lm(load_explainable(folder)) is None
    summary = explain_dataset(str(folder), ["CCO", "c1ccccc1N"], tmp_path / "set")
    assert summary["head_importance_objective"] is None
    assert "importance" not in pd.read_csv(tmp_path / "set" / "heads.csv")
    assert not (tmp_path / "set" / "head_importance.png").exists()


# inline views --------------------------------------------------------------------------------------------------------
def test_head_and_model_views_render_inline_offline():
    view = head_view("smilesformer-moses", NOTEBOOK_MOLECULE, layer=1, head=3)
    assert isinstance(view, AttentionView) and view.prediction is None
    frame = view._repr_html_()
    assert frame.startswith("<iframe") and 'sandbox="allow-scripts"' in frame
    page = _page_of(frame)
    assert page == view.html
    assert not re.search(r"https?:|require\(|requirejs|<script[^>]+src=|<link", page)  # nothing to fetch
    data = _data_of(page)
    assert (data["view"], data["layer"], data["head"]) == ("head", 1, 3)
    assert _data_of(_page_of(model_view("smilesformer-moses", NOTEBOOK_MOLECULE)._repr_html_()))["view"] == "model"
    with pytest.raises(SmilesformerError, match="layer 7 does not exist"):
        head_view("smilesformer-moses", NOTEBOOK_MOLECULE, layer=7)


def test_views_of_a_long_molecule(tiny_tokenizer):
    from smilesformer import SmilesModel

    model = SmilesModel.from_scratch("tiny", "regression", ["y"], max_length=400, tokenizer=tiny_tokenizer)
    smiles = "CC(=O)" * 40 + "O"  # 240 regex tokens
    view = head_view(model, smiles)
    data = _data_of(view.html)
    assert len(data["tokens"]) == 243 and set(data["prediction"]) == {"y_pred"}
    assert np.allclose(_weights_of(data), view.attention.weights, atol=0.5 / 255 + 1e-6)
    assert "height:900px" in view._repr_html_()  # taller views scroll inside their frame


def test_explanation_shows_its_heat_maps(tiny_regressor_dir):
    result = explain_molecule(str(tiny_regressor_dir), "CC(=O)Oc1ccccc1C(=O)O", n_steps=8)
    assert isinstance(result, Explanation) and isinstance(result, dict)
    json.dumps(result)
    shown = result._repr_html_()
    assert shown.count("<svg") == 2 and "completeness gap" in shown and "logS_pred" in shown
    assert "<script" not in shown and "<?xml" not in shown
    encoder = explain_molecule("smilesformer-moses", NOTEBOOK_MOLECULE)._repr_html_()
    assert encoder.count("<svg") == 1 and "without a prediction head" in encoder
