"""Tokenizers: the regex keeps multi-character tokens whole and always joins back to the input."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from smilesformer.data import DATASETS
from smilesformer.tokenization import (
    build_regex_tokenizer,
    coverage_report,
    load_tokenizer,
    tokenize_smiles,
    train_bpe_tokenizer,
)

from .conftest import SHARED_DATA, needs_shared_data


@pytest.mark.parametrize(
    "smiles, expected",
    [
        ("CCl", ["C", "Cl"]),
        ("BrC=O", ["Br", "C", "=", "O"]),
        ("CCCCC[C@@H](Br)CC", ["C", "C", "C", "C", "C", "[C@@H]", "(", "Br", ")", "C", "C"]),
        ("c1cc[nH]c1", ["c", "1", "c", "c", "[nH]", "c", "1"]),
        ("C%10CC%10", ["C", "%10", "C", "C", "%10"]),
        ("C#N", ["C", "#", "N"]),
        ("[Na+].[Cl-]", ["[Na+]", ".", "[Cl-]"]),
        ("F/C=C/F", ["F", "/", "C", "=", "C", "/", "F"]),
    ],
)
def test_regex_keeps_multicharacter_tokens_whole(smiles, expected):
    assert tokenize_smiles(smiles) == expected


def test_unknown_characters_are_kept_not_dropped():
    assert "".join(tokenize_smiles("CXC")) == "CXC"


@needs_shared_data
@pytest.mark.parametrize("name", list(DATASETS) + ["moses_train"])
def test_regex_tokens_join_back_on_every_shared_smiles(name):
    col = DATASETS[name].smiles_col if name in DATASETS else "SMILES"
    with gzip.open(SHARED_DATA / f"{name}.csv.gz", "rt") as fh:
        smiles = pd.read_csv(fh, usecols=[col], dtype=str, keep_default_na=False)[col]
    bad = [s for s in smiles if "".join(tokenize_smiles(s)) != s]
    assert not bad, bad[:5]


@needs_shared_data
def test_fast_tokenizers_round_trip_shared_smiles(esol50):
    with gzip.open(SHARED_DATA / "aqsoldb.csv.gz", "rt") as fh:
        smiles = [s.strip() for s in pd.read_csv(fh, usecols=["SMILES"])["SMILES"]]
    regex = build_regex_tokenizer(smiles)
    bpe = train_bpe_tokenizer(smiles[:3000], vocab_size=400)
    for tok in (regex, bpe):
        report = coverage_report(tok, smiles)
        assert report["roundtrip"] == 1.0
    assert coverage_report(regex, smiles)["unk_rate"] == 0.0


def test_tokenizers_save_load_and_offsets(tmp_path, esol50):
    for tok in (build_regex_tokenizer(esol50["smiles"]), train_bpe_tokenizer(esol50["smiles"], vocab_size=120)):
        tok.save_pretrained(tmp_path / "tok")
        again = load_tokenizer(tmp_path / "tok")
        s = "CC(=O)Oc1ccccc1C(=O)O"
        enc = again(s, return_offsets_mapping=True)
        assert enc["input_ids"] == tok(s)["input_ids"]
        assert enc["input_ids"][0] == again.bos_token_id and enc["input_ids"][-1] == again.eos_token_id
        pieces = [s[a:b] for a, b in enc["offset_mapping"][1:-1]]
        assert "".join(pieces) == s
        assert again.decode(enc["input_ids"], skip_special_tokens=True) == s


def test_regex_tokenizer_maps_unseen_tokens_to_unk(esol50):
    tok = build_regex_tokenizer(["CCO"])
    ids = tok("CC[Se]", add_special_tokens=False)["input_ids"]
    assert ids[-1] == tok.unk_token_id
