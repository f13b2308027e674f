"""Embeddings: pooling (padding masked out), the head's pooled input, layers, per-token vectors aligned to
atoms, encoders without a head, bad input, and the `embed` command."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from rdkit import Chem
from transformers import AutoModelForMaskedLM
from typer.testing import CliRunner

from smilesformer.cli import app
from smilesformer.config import Precision
from smilesformer.data import SmilesformerError
from smilesformer.embeddings import (
    EmbedConfig,
    Pooling,
    embed,
    embedding_matrix,
    embeddings_table,
    load_encoder,
    token_atoms,
)
from smilesformer.networks import make_config
from smilesformer.tokenization import train_bpe_tokenizer

runner = CliRunner()
MOLECULES = ["CCO", "c1ccccc1C(=O)O", "CC(C)(C)c1ccc(O)cc1[N+](=O)[O-]", "C"]


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory, tiny_tokenizer):
    """A pretrained masked-LM encoder folder, like the bundled model: no head, no smilesformer.json."""
    torch.manual_seed(0)
    config = make_config("tiny", len(tiny_tokenizer), 128, tiny_tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("mlm")
    AutoModelForMaskedLM.from_config(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def encoder(make_tiny_model):
    return load_encoder(make_tiny_model(), device="cpu")


def _hidden(encoder, smiles: str) -> tuple[torch.Tensor, ...]:
    """Every hidden state of one molecule, unpadded: (1, tokens, hidden) each."""
    ids = encoder.tokenizer([smiles], return_tensors="pt")
    with torch.no_grad():
        return encoder.model(**ids, output_hidden_states=True).hidden_states


# Tests that compare with a plain forward pass ask for fp32: `auto` is bf16 on CPUs that do bf16 in hardware.
@pytest.mark.parametrize("pooling", [Pooling.mean, Pooling.max, Pooling.cls])
def test_pooling_is_the_unpadded_molecule_pooled(encoder, pooling):
    # Batched with longer molecules, each short one is padded; masking must make that invisible.
    emb = embed(encoder, MOLECULES, EmbedConfig(pooling=pooling, batch_size=4, precision="fp32"))
    for i, s in enumerate(MOLECULES):
        last = _hidden(encoder, s)[-1][0]  # (tokens, hidden)
        expected = {Pooling.mean: last.mean(0), Pooling.max: last.max(0).values, Pooling.cls: last[0]}[pooling]
        np.testing.assert_allclose(emb.vectors[i], expected.numpy(), atol=1e-5)


def test_head_pooling_is_the_classifier_input(encoder):
    emb = embed(encoder, MOLECULES, EmbedConfig(pooling="head", precision="fp32"))
    head = encoder.model.classifier
    for i, s in enumerate(MOLECULES):
        with torch.no_grad():
            expected = torch.tanh(head.dense(_hidden(encoder, s)[-1][0, 0]))
        np.testing.assert_allclose(emb.vectors[i], expected.numpy(), atol=1e-5)


def test_layers_last_k_and_all_layers(encoder):
    n_states = encoder.n_layers + 1
    first = embed(encoder, MOLECULES, EmbedConfig(layer=0))
    both = embed(encoder, MOLECULES, EmbedConfig(last_k=2, all_layers=True))
    assert both.vectors.shape == (len(MOLECULES), 2 * encoder.hidden_size)
    assert both.layer_vectors.shape == (len(MOLECULES), n_states, encoder.hidden_size)
    hidden = encoder.hidden_size
    np.testing.assert_allclose(both.vectors[:, hidden:], both.layer_vectors[:, -1], atol=1e-6)
    np.testing.assert_allclose(both.vectors[:, :hidden], both.layer_vectors[:, -2], atol=1e-6)
    np.testing.assert_allclose(first.vectors, both.layer_vectors[:, 0], atol=1e-6)
    assert not np.allclose(first.vectors, both.layer_vectors[:, -1])
    with pytest.raises(SmilesformerError, match="hidden states"):
        embed(encoder, MOLECULES, EmbedConfig(layer=n_states))
    with pytest.raises(ValueError, match="head pooling"):
        EmbedConfig(pooling="head", last_k=2)


def test_per_token_vectors_are_the_sequence_output_aligned_to_atoms(encoder):
    smiles = "CC(C)(C)c1ccc(O)cc1[N+](=O)[O-]"
    emb = embed(encoder, [smiles], EmbedConfig(per_token=True, precision="fp32"))
    mol = emb.tokens[0]
    last = _hidden(encoder, smiles)[-1][0].numpy()  # (tokens, hidden)
    np.testing.assert_allclose(mol.vectors, last, atol=1e-5)
    assert mol.tokens[0] == "<s>" and mol.tokens[-1] == "</s>"
    # Regex tokens: each atom is spelled by exactly one token, in RDKit's atom order.
    rdkit_mol = Chem.MolFromSmiles(smiles)
    atom_tokens = [(smiles[start:end], a) for (start, end), a in zip(mol.offsets, mol.token_atoms) if a]
    assert [a for _, a in atom_tokens] == [[k] for k in range(rdkit_mol.GetNumAtoms())]
    for text, (k,) in atom_tokens:  # the token's text spells the atom's element
        assert text.strip("[]").lower().startswith(rdkit_mol.GetAtomWithIdx(k).GetSymbol().lower())
        np.testing.assert_allclose(mol.atom_vectors[k], mol.vectors[mol.token_atoms.index([k])], atol=1e-6)
    assert mol.atom_vectors.shape == (rdkit_mol.GetNumAtoms(), encoder.hidden_size)


def test_bpe_tokens_map_to_every_atom(esol50):
    tokenizer = train_bpe_tokenizer(esol50["smiles"], vocab_size=400)
    smiles = "CCCCCCc1ccc(Cl)cc1"
    enc = tokenizer(smiles, return_offsets_mapping=True, return_special_tokens_mask=True)
    atoms = token_atoms(smiles, enc["offset_mapping"], enc["special_tokens_mask"])
    covered = sorted({a for t in atoms for a in t})
    assert covered == list(range(Chem.MolFromSmiles(smiles).GetNumAtoms()))
    assert any(len(t) > 1 for t in atoms), "BPE merges several atoms into one token"


def test_invalid_smiles_keep_their_row(encoder, tmp_path):
    emb = embed(encoder, ["CCO", "C1CC", "", "c1ccccc1"], EmbedConfig(per_token=True))
    assert emb.valid.tolist() == [True, False, False, True]
    assert np.isnan(emb.vectors[1]).all() and np.isfinite(emb.vectors[[0, 3]]).all()
    assert "invalid SMILES" in emb.error[1] and emb.tokens[1] is None
    table = embeddings_table(emb, row_ids=[10, 11, 12, 13])
    pq.write_table(table, tmp_path / "e.parquet")
    back = pq.read_table(tmp_path / "e.parquet")
    assert back.column("row_id").to_pylist() == [10, 11, 12, 13]
    assert back.column("embedding").null_count == 2 and back.column("tokens").null_count == 2
    np.testing.assert_array_equal(embedding_matrix(back), emb.vectors)


def test_truncated_molecules_are_flagged(make_tiny_model):
    model = make_tiny_model()
    model.meta.max_length = 8
    emb = embed(model, ["CCO", "CCCCCCCCCCCCCCCC"], EmbedConfig(per_token=True))
    assert emb.truncated.tolist() == [False, True]
    long = emb.tokens[1]
    assert len(long.tokens) == 8
    assert np.isnan(long.atom_vectors[-1]).all() and np.isfinite(long.atom_vectors[0]).all()


def test_encoder_without_head(mlm_dir):
    encoder = load_encoder(mlm_dir, device="cpu")
    assert encoder.head_module() is None
    emb = embed(encoder, MOLECULES, EmbedConfig(pooling="cls", precision="fp32"))
    mlm = AutoModelForMaskedLM.from_pretrained(mlm_dir).eval()
    ids = encoder.tokenizer([MOLECULES[1]], return_tensors="pt")
    with torch.no_grad():
        expected = mlm(**ids, output_hidden_states=True).hidden_states[-1][0, 0]
    np.testing.assert_allclose(emb.vectors[1], expected.numpy(), atol=1e-5)
    with pytest.raises(SmilesformerError, match="no classification head"):
        embed(encoder, MOLECULES, EmbedConfig(pooling="head"))


def test_embed_cli_parquet_and_npy(tiny_regressor_dir, mlm_dir, tmp_path):
    smiles = ["CCO", "not a smiles", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    pd.DataFrame({"id": range(4), "smiles": smiles}).to_csv(tmp_path / "in.csv", index=False)
    result = runner.invoke(app, ["embed", str(tiny_regressor_dir), "--data", str(tmp_path / "in.csv"),
                                 "--out", str(tmp_path / "e.parquet"), "--pooling", "head", "--chunk-size", "3"])
    assert result.exit_code == 0, result.output
    assert "1 invalid" in " ".join(result.output.split())  # rich wraps long lines
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert table["row_id"].tolist() == [0, 1, 2, 3] and table["smiles"].tolist() == smiles
    assert table["embedding"].isna().tolist() == [False, True, False, False]
    assert len(table["embedding"][0]) == 32 and table["error"][1].startswith("invalid SMILES")

    result = runner.invoke(app, ["embed", str(mlm_dir), "--data", str(tmp_path / "in.csv"),
                                 "--out", str(tmp_path / "e.npy"), "--last-k", "2", "--all-layers"])
    assert result.exit_code == 0, result.output
    matrix, layers = np.load(tmp_path / "e.npy"), np.load(tmp_path / "e.layers.npy")
    assert matrix.shape == (4, 64) and layers.shape == (4, 3, 32)
    assert np.isnan(matrix[1]).all() and np.isfinite(matrix[[0, 2, 3]]).all()
    rows = pd.read_csv(tmp_path / "e.rows.csv", keep_default_na=False)
    assert rows["smiles"].tolist() == smiles and [bool(e) for e in rows["error"]] == [False, True, False, False]

    result = runner.invoke(app, ["embed", str(mlm_dir), "--data", str(tmp_path / "in.csv"),
                                 "--out", str(tmp_path / "t.npy"), "--per-token"])
    assert result.exit_code == 2 and ".parquet" in " ".join(result.output.split())

    result = runner.invoke(app, ["embed", str(mlm_dir), "--data", str(tmp_path / "in.csv"),
                                 "--out", str(tmp_path / "h.parquet"), "--pooling", "head"])
    assert result.exit_code == 2 and "no classification head" in " ".join(result.output.split())
    assert not (tmp_path / "h.parquet.parts").exists(), "a run that wrote nothing leaves nothing behind"


def test_bf16_autocast_is_close_to_fp32(encoder):
    fp32 = embed(encoder, MOLECULES, EmbedConfig(precision="fp32"))
    bf16 = embed(encoder, MOLECULES, EmbedConfig(precision="bf16"))
    assert bf16.vectors.dtype == np.float32
    assert not np.array_equal(fp32.vectors, bf16.vectors), "the forward pass ran in bf16"
    np.testing.assert_allclose(bf16.vectors, fp32.vectors, atol=0.05)


def test_auto_precision_is_fp32_on_a_cpu_even_one_with_bf16(monkeypatch):
    """bf16 on a CPU made a molecule's prediction depend on its batch neighbours: asked for by name only."""
    from smilesformer import embeddings as emb

    cpu = torch.device("cpu")
    monkeypatch.setattr(emb, "cpu_has_native_bf16", lambda: True)
    assert emb.resolve_inference_precision("auto", cpu) is Precision.fp32
    assert emb.resolve_inference_precision("fp32", cpu) is Precision.fp32
    monkeypatch.setattr(emb, "cpu_has_native_bf16", lambda: False)
    assert emb.resolve_inference_precision("auto", cpu) is Precision.fp32
    assert isinstance(emb.inference_autocast("auto", cpu), contextlib.nullcontext)
    assert emb.resolve_inference_precision("bf16", cpu) is Precision.bf16, "an explicit choice is kept"


def test_a_prediction_does_not_depend_on_its_batch_neighbours(make_tiny_model, esol50):
    model = make_tiny_model()
    alone = model.predict(["CCO"])["logS_pred"].iloc[0]
    crowd = list(esol50["smiles"][:40]) + ["CCO"]
    among = model.predict(crowd, batch_size=16)["logS_pred"].iloc[-1]
    assert abs(alone - among) <= 1e-5 * max(1.0, abs(alone))
