"""Explain: token -> atom maps, attention and its views, integrated gradients, head statistics and pruning."""

from __future__ import annotations

import base64
import copy
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from io import BytesIO

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from rdkit import Chem
from typer.testing import CliRunner

from smilesformer import SmilesformerError, SmilesModel, build_regex_tokenizer, train_bpe_tokenizer
from smilesformer.cli import app
from smilesformer.explain import (
    MoleculeAttention,
    atom_attention,
    attention_html,
    attention_rollout,
    bertviz_format,
    bond_attention_share,
    draw_atom_heatmap,
    explain_molecule,
    extract_attention,
    head_entropy,
    head_importance,
    integrated_gradients,
    least_important_heads,
    map_tokens,
    prune_heads,
    tokens_to_atoms,
    write_heatmap,
)
from smilesformer.explain.bertology import head_gates
from smilesformer.tokenization import ATOM_TOKEN_REGEX, tokenize_smiles

TRICKY = [
    "ClCCBr",  # two-letter organic-subset atoms
    "C[C@@H](Br)Cl",  # chiral bracket atom, branch
    "c1cc[nH]c1",  # aromatic ring with a bracket nH
    "C%10CCCCC%10",  # two-digit ring closure
    "[NH4+].[Cl-]",  # charges, a salt with '.'
    "CC(=O)[O-].[Na+]",
    "c1ccc2ccccc2c1",  # fused aromatic rings
    "F/C=C/F",  # stereo bonds
    "[2H]C([2H])([2H])O",  # isotopes
    "[H]OC#N",  # an explicit hydrogen, a triple bond
    "O=S(=O)(O)c1ccccc1",
]


@pytest.fixture(scope="module")
def regex_tokenizer(esol50):
    return build_regex_tokenizer(list(esol50["smiles"]) + TRICKY, model_max_length=128)


@pytest.fixture(scope="module")
def bpe_tokenizer(esol50):
    """Byte-level BPE trained on 300 SMILES: ESOL-50 written six ways each (RDKit random SMILES)."""
    corpus = []
    for i, s in enumerate(esol50["smiles"]):
        mol = Chem.MolFromSmiles(s)
        corpus += [Chem.MolToSmiles(mol, doRandom=True) for _ in range(6)] if i else [s]
    return train_bpe_tokenizer(corpus, vocab_size=300, model_max_length=128)


@pytest.fixture
def regressor(tiny_regressor_dir):
    return SmilesModel.from_pretrained(tiny_regressor_dir)


def _spans_of_atoms(smiles: str) -> list[tuple[int, int]]:
    """Character span of each atom, read off the regex tokens (an independent route to the same answer)."""
    spans, pos = [], 0
    for token in tokenize_smiles(smiles):
        if ATOM_TOKEN_REGEX.match(token):
            spans.append((pos, pos + len(token)))
        pos += len(token)
    return spans


# token -> atom maps ---------------------------------------------------------------------------------------
def test_regex_tokens_map_to_atoms_in_order(regex_tokenizer):
    for smiles in TRICKY:
        mt = map_tokens(smiles, regex_tokenizer)
        mol = mt.mol
        assert "<unk>" not in mt.tokens
        atoms = [a for a in mt.token_atoms if a]
        assert atoms == [[k] for k in range(mol.GetNumAtoms())], smiles  # one atom per atom token, in order
        for token, mapped in zip(mt.tokens, mt.token_atoms):
            if mapped:
                symbol = mol.GetAtomWithIdx(mapped[0]).GetSymbol()
                assert symbol.lower() in token.lower(), (smiles, token, symbol)
            else:
                assert not ATOM_TOKEN_REGEX.match(token), (smiles, token)


def test_regex_map_of_known_molecules(regex_tokenizer):
    mt = map_tokens("C[C@@H](Br)Cl", regex_tokenizer)
    assert list(zip(mt.tokens, mt.token_atoms)) == [
        ("<s>", []), ("C", [0]), ("[C@@H]", [1]), ("(", []), ("Br", [2]), (")", []), ("Cl", [3]), ("</s>", [])]
    mt = map_tokens("C%10CCCCC%10", regex_tokenizer)
    assert [a for t, a in zip(mt.tokens, mt.token_atoms) if t == "%10"] == [[], []]
    mt = map_tokens("[NH4+].[Cl-]", regex_tokenizer)
    assert list(zip(mt.tokens, mt.token_atoms))[1:4] == [("[NH4+]", [0]), (".", []), ("[Cl-]", [1])]
    mt = map_tokens("[H]OC#N", regex_tokenizer)  # the written hydrogen is atom 0, as in the string
    assert mt.n_atoms == 4 and mt.token_atoms[1:6] == [[0], [1], [2], [], [3]]


def test_bpe_tokens_map_through_character_offsets(bpe_tokenizer):
    multi_atom = False
    for smiles in TRICKY:
        mt = map_tokens(smiles, bpe_tokenizer)
        spans = _spans_of_atoms(smiles)
        assert len(spans) == mt.n_atoms
        covered = set()
        for (start, end), mapped in zip(mt.offsets, mt.token_atoms):
            expected = [k for k, (a, b) in enumerate(spans) if start < b and a < end] if end > start else []
            assert mapped == expected, (smiles, smiles[start:end])
            covered.update(mapped)
            multi_atom |= len(mapped) > 1
            text = smiles[start:end]
            if text and set(text) <= set("()=#/\\."):
                assert mapped == [], (smiles, text)  # branches, bonds, dots
            if text and not mapped:
                assert set(text) <= set("()=#/\\.%0123456789"), (smiles, text)  # ...and ring-closure digits
        assert covered == set(range(mt.n_atoms)), smiles  # every atom is spelled by some token
    assert multi_atom, "a BPE trained on SMILES should merge atoms such as CC into one token"


def test_tokens_to_atoms_splits_a_multi_atom_token():
    values = np.array([0.5, 3.0, 1.0, 2.0])  # tokens: <s>, "CCC", "(", "O"
    atoms = tokens_to_atoms(values, [[], [0, 1, 2], [], [3]], 4)
    assert np.allclose(atoms, [1.0, 1.0, 1.0, 2.0])


def test_invalid_smiles_names_smiles_and_reason(regressor):
    with pytest.raises(SmilesformerError, match=r"C1CC.*unclosed ring"):
        explain_molecule(regressor, "C1CC")


# attention ---------------------------------------------------------------------------------------------------
def test_attention_batch_matches_single_and_restores_kernel(regressor):
    net = regressor.model
    before = net.config._attn_implementation
    smiles = ["CCO", "c1ccccc1C(=O)O", "CCN(CC)CC"]
    batch = extract_attention(regressor, smiles)
    layers, heads = net.config.num_hidden_layers, net.config.num_attention_heads
    for s, result in zip(smiles, batch):
        single = extract_attention(regressor, s)[0]
        assert result.weights.shape == (layers, heads, len(result.tokens), len(result.tokens))
        assert np.allclose(result.weights, single.weights, atol=1e-5)  # padding removed, nothing leaked
        assert np.allclose(result.weights.sum(-1), 1, atol=1e-5)
    assert net.config._attn_implementation == before


def test_bertviz_format_and_atom_attention(regressor):
    result = extract_attention(regressor, "CC(=O)Nc1ccccc1")[0]
    attention, tokens = bertviz_format(result)
    assert len(attention) == regressor.model.config.num_hidden_layers
    assert all(a.shape == (1, *result.weights.shape[1:]) and isinstance(a, torch.Tensor) for a in attention)
    assert tokens == result.tokens
    per_atom = atom_attention(result)  # (layers, heads, atoms)
    atom_tokens = [i for i, a in enumerate(result.token_atoms) if a]
    expected = result.weights.mean(axis=-2)[..., atom_tokens]  # regex tokens: one token per atom, in order
    assert np.allclose(per_atom, expected)


def test_rollout_identity_and_rows():
    eye = np.broadcast_to(np.eye(5), (3, 2, 5, 5))
    assert np.allclose(attention_rollout(eye), np.eye(5))
    rng = np.random.default_rng(0)
    w = rng.random((3, 2, 5, 5))
    w /= w.sum(-1, keepdims=True)
    rollout = attention_rollout(w)
    assert np.allclose(rollout.sum(-1), 1)
    one_layer = 0.5 * w[0].mean(0) + 0.5 * np.eye(5)
    assert np.allclose(attention_rollout(w[:1]), one_layer / one_layer.sum(-1, keepdims=True))


# views ----------------------------------------------------------------------------------------------------------
class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.stack, self.text = [], [], {}

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.stack.append(len(self.tags) - 1)

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack:
            self.text[self.stack[-1]] = self.text.get(self.stack[-1], "") + data


def test_html_view_is_self_contained(regressor):
    result = extract_attention(regressor, "CCCCC[C@@H](Br)CC")[0]
    page = attention_html(result, {"logS_pred": -3.0})
    parser = _Tags()
    parser.feed(page)
    web = re.compile(r"https?:|//[a-z]", re.I)
    for i, (tag, attrs) in enumerate(parser.tags):
        if tag in ("script", "link", "img", "iframe", "object", "embed"):
            assert "src" not in attrs and "href" not in attrs, (tag, attrs)
            assert not any(web.search(str(v)) for v in attrs.values()), (tag, attrs)
            assert not web.search(parser.text.get(i, "")), f"a web reference inside <{tag}>"
    assert not any(tag == "link" for tag, _ in parser.tags)
    assert "@import" not in page and "url(" not in page
    scripts = [parser.text[i] for i, (tag, attrs) in enumerate(parser.tags) if tag == "script" and "id" in attrs]
    data = json.loads(scripts[0])
    layers, heads, n, _ = result.weights.shape
    assert (data["layers"], data["heads"], len(data["tokens"])) == (layers, heads, n)
    sent = np.frombuffer(base64.b64decode(data["attention_b64"]), np.uint8).reshape(result.weights.shape) / 255
    assert np.allclose(sent, result.weights, atol=0.5 / 255 + 1e-6)  # one byte per weight
    assert len(data["atoms"]) == result.molecule.n_atoms


def test_heatmaps_render_valid_png_and_svg(tmp_path):
    smiles = "c1cc[nH]c1C%10CCCC%10.[Na+]"
    n = Chem.MolFromSmiles(smiles).GetNumAtoms()
    signed = np.linspace(-1, 1, n)
    svg_path, png_path = write_heatmap(smiles, signed, tmp_path / "attribution", legend="test")
    root = ET.fromstring(svg_path.read_text().split("?>", 1)[-1])
    assert root.tag.endswith("svg") and "class='legend'" in svg_path.read_text()  # RDKit draws text as paths
    image = Image.open(png_path)
    image.verify()
    assert image.format == "PNG" and image.size == (500, 380)
    png = draw_atom_heatmap(smiles, np.linspace(0, 1, n), fmt="png", size=(300, 200))
    assert Image.open(BytesIO(png)).size == (300, 200)
    with pytest.raises(SmilesformerError, match="atoms"):
        draw_atom_heatmap(smiles, [1.0, 2.0])


# attributions ------------------------------------------------------------------------------------------------
def test_integrated_gradients_completeness(make_tiny_model):
    model = make_tiny_model()
    torch.manual_seed(1)
    with torch.no_grad():  # larger random weights, so the output moves clearly between baseline and molecule
        for p in model.model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    smiles = "c1ccccc1C(=O)Nc1ccc(Cl)cc1"
    attr = integrated_gradients(model, smiles, n_steps=50)
    change = attr.value - attr.baseline_value
    assert abs(change) > 0.1
    assert abs(attr.token_attributions.sum() - change) == pytest.approx(attr.completeness_gap, abs=1e-5)
    assert attr.completeness_gap < 1e-3 * abs(change)
    assert attr.completeness_gap < integrated_gradients(model, smiles, n_steps=2).completeness_gap
    non_atom = sum(a for a, atoms in zip(attr.token_attributions, attr.molecule.token_atoms) if not atoms)
    assert attr.atom_attributions.sum() + non_atom == pytest.approx(attr.token_attributions.sum(), abs=1e-5)
    assert attr.value == pytest.approx(float(model.predict([smiles]).iloc[0, 0]), abs=1e-4)
    unknown = integrated_gradients(model, "c1ccccc1[Se]C")  # [Se] is not in the ESOL-50 vocabulary
    assert unknown.molecule.tokens[9] == "<unk>" and unknown.molecule.token_atoms[9] == [6]
    assert abs(unknown.atom_attributions[6]) > 0  # replaced in the baseline like any atom, so attributed


def test_explain_molecule_is_json_and_consistent(regressor):
    smiles = "CC(=O)Oc1ccccc1C(=O)O"
    out = explain_molecule(regressor, smiles, layer=1, head=0)
    json.dumps(out)
    assert out["error"] is None and out["smiles"] == smiles
    assert out["prediction"] == pytest.approx(regressor.predict([smiles]).drop(columns="error").iloc[0].to_dict())
    n_tokens, n_atoms = len(out["tokens"]), out["n_atoms"]
    assert n_atoms == Chem.MolFromSmiles(smiles).GetNumAtoms() == len(out["atom_attributions"])
    assert len(out["token_atoms"]) == n_tokens
    cfg = regressor.model.config
    weights = np.array(out["attention"]["weights"])
    assert weights.shape == (cfg.num_hidden_layers, cfg.num_attention_heads, n_tokens, n_tokens)
    assert np.array(out["atom_attention"]["weights"]).shape == (cfg.num_hidden_layers, cfg.num_attention_heads, n_atoms)
    assert out["attribution_svg"].lstrip().startswith("<?xml") and "</svg>" in out["attribution_svg"]
    with pytest.raises(SmilesformerError, match="layer 9"):
        explain_molecule(regressor, smiles, layer=9)
    with pytest.raises(SmilesformerError, match="target 3"):
        explain_molecule(regressor, smiles, target=3)


def test_explain_with_a_bpe_model(bpe_tokenizer):
    model = SmilesModel.from_scratch("tiny", "regression", ["y"], tokenizer=bpe_tokenizer)
    out = explain_molecule(model, "CCCCCCc1ccccc1Cl")
    assert any(len(a) > 1 for a in out["token_atoms"])
    assert len(out["atom_attributions"]) == out["n_atoms"] == 13


# BERTology -------------------------------------------------------------------------------------------------------
def test_entropy_and_bond_share_on_known_attention(regex_tokenizer):
    mt = map_tokens("CCO", regex_tokenizer)  # <s> C C O </s>; bonds C0-C1, C1-O2
    n = len(mt.tokens)
    uniform = MoleculeAttention(mt, np.full((1, 1, n, n), 1 / n))
    assert head_entropy([uniform])[0, 0] == pytest.approx(np.log(n))
    share, chance = bond_attention_share([uniform])
    assert share[0, 0] == pytest.approx(chance) and chance == pytest.approx((1 + 2 + 1) / 3 / n)
    to_neighbour = np.zeros((1, 1, n, n))
    for i, j in [(0, 0), (1, 2), (2, 3), (3, 2), (4, 4)]:  # every atom token attends to a bonded atom
        to_neighbour[0, 0, i, j] = 1
    assert bond_attention_share([MoleculeAttention(mt, to_neighbour)])[0][0, 0] == pytest.approx(1.0)
    assert head_entropy([MoleculeAttention(mt, to_neighbour)])[0, 0] == pytest.approx(0.0, abs=1e-9)


def test_head_gate_zero_equals_pruning(regressor, esol50):
    smiles = list(esol50["smiles"][:6])
    importance, objective = head_importance(regressor, smiles, esol50["logS"][:6].to_numpy(float))
    cfg = regressor.model.config
    assert objective == "loss" and importance.shape == (cfg.num_hidden_layers, cfg.num_attention_heads)
    assert np.isfinite(importance).all() and (importance > 0).all()
    assert head_importance(regressor, smiles)[1] == "output"
    heads = least_important_heads(importance, 1)
    (layer, (head,)), = heads.items()
    enc = regressor.tokenizer(smiles, padding=True, return_tensors="pt")
    gates = torch.ones(len(smiles), cfg.num_hidden_layers, cfg.num_attention_heads)
    gates[:, layer, head] = 0
    with torch.no_grad():
        plain = regressor.model(**enc).logits
        with head_gates(regressor.model, gates):
            gated = regressor.model(**enc).logits
        assert torch.allclose(regressor.model(**enc).logits, plain)  # hooks removed on exit
        pruned = copy.deepcopy(regressor)
        prune_heads(pruned, heads)
        assert torch.allclose(pruned.model(**enc).logits, gated, atol=1e-5)
        assert not torch.allclose(gated, plain)


def test_pruned_model_saves_loads_and_predicts(regressor, tmp_path):
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    before = regressor.predict(smiles)
    prune_heads(regressor, {0: [0], 1: [1]})
    after = regressor.predict(smiles)
    assert regressor.meta.extra["pruned_heads"] == {"0": [0], "1": [1]}
    regressor.save_pretrained(tmp_path / "pruned")
    loaded = SmilesModel.from_pretrained(tmp_path / "pruned")
    assert loaded.meta.extra["pruned_heads"] == {"0": [0], "1": [1]}
    reloaded = loaded.predict(smiles)
    assert np.allclose(reloaded["logS_pred"], after["logS_pred"], atol=1e-5)
    assert not np.allclose(before["logS_pred"], after["logS_pred"], atol=1e-6)


# CLI ----------------------------------------------------------------------------------------------------------
def test_cli_explain_one_molecule(tiny_regressor_dir, tmp_path):
    out = tmp_path / "one"
    result = CliRunner().invoke(app, ["explain", str(tiny_regressor_dir), "--smiles", "CC(=O)Oc1ccccc1C(=O)O",
                                      "--out", str(out), "--layer", "1", "--head", "1", "--steps", "16"])
    assert result.exit_code == 0, result.output
    for name in ("attention.html", "attention_bertviz.pt", "attention_L1_H1.png", "attention_L1_mean.svg",
                 "attention_rollout.png", "attribution.svg", "attribution.png", "head_entropy.png",
                 "head_bond_share.png", "head_importance.png", "tokens.csv", "atoms.csv", "explanation.json"):
        assert (out / name).stat().st_size > 0, name
    saved = torch.load(out / "attention_bertviz.pt")
    assert len(saved["attention"]) == 2 and saved["tokens"][0] == "<s>"
    bad = CliRunner().invoke(app, ["explain", str(tiny_regressor_dir), "--smiles", "C1CC", "--out", str(out)])
    assert bad.exit_code == 2 and "C1CC" in bad.output


def test_cli_explain_data_set(tiny_regressor_dir, esol50, tmp_path):
    table = esol50.head(5).copy()
    table.loc[2, "smiles"] = "not a smiles"
    table.to_csv(tmp_path / "mols.csv", index=False)
    out = tmp_path / "set"
    result = CliRunner().invoke(app, ["explain", str(tiny_regressor_dir), "--data", str(tmp_path / "mols.csv"),
                                      "--out", str(out), "--steps", "16", "--prune", "1"])
    assert result.exit_code == 0, result.output
    molecules = pd.read_csv(out / "molecules.csv")
    assert molecules["smiles"].tolist() == table["smiles"].tolist()  # every row, in order
    assert molecules["error"].fillna("").astype(bool).tolist() == [False, False, True, False, False]
    atoms = pd.read_csv(out / "atoms.csv")
    assert sorted(atoms["row"].unique()) == [0, 1, 3, 4]
    heads = pd.read_csv(out / "heads.csv")
    assert len(heads) == 4 and {"entropy", "bond_share", "importance"} <= set(heads.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_invalid"] == 1 and summary["head_importance_objective"] == "loss"
    assert {"before", "after"} <= set(summary["pruning"]) and (out / "pruned_model" / "smilesformer.json").exists()
    assert (out / "head_importance.png").exists() and (out / "elements.csv").exists()
