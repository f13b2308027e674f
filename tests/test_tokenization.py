"""Tokenizers: the regex keeps multi-character tokens whole and always joins back to the input."""

from __future__ import annotations

import gzip
import logging

import pandas as pd
import pytest

from smilesformer.data import DATASETS
from smilesformer.tokenization import (
    AROMATIC_SYMBOLS,
    build_regex_tokenizer,
    build_smiles_tokenizer,
    count_unknown,
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


# The compositional tokenizer: a fixed vocabulary that spells every SMILES -------------------------------------

def _shared_smiles(name: str, limit: int | None = None) -> list[str]:
    col = DATASETS[name].smiles_col if name in DATASETS else "SMILES"
    with gzip.open(SHARED_DATA / f"{name}.csv.gz", "rt") as fh:
        table = pd.read_csv(fh, usecols=[col], dtype=str, keep_default_na=False, nrows=limit)
    return [s.strip() for s in table[col]]


@pytest.mark.parametrize(
    "smiles, expected",
    [
        ("CCCCC[C@@H](Br)CC", ["C", "C", "C", "C", "C", "[", "C", "@@", "H", "]", "(", "Br", ")", "C", "C"]),
        ("[13CH3+:12]C%12CC%12", ["[", "1", "3", "C", "H", "3", "+", ":", "1", "2", "]", "C", "%12", "C", "C", "%12"]),
        ("[Na+].[Cl-]", ["[", "Na", "+", "]", ".", "[", "Cl", "-", "]"]),
        ("C/C=C\\C", ["C", "/", "C", "=", "C", "\\", "C"]),
        ("c1cc[se]c1", ["c", "1", "c", "c", "[", "se", "]", "c", "1"]),
        ("[C@TH1H](F)Cl", ["[", "C", "@", "TH", "1", "H", "]", "(", "F", ")", "Cl"]),
        ("[OH-]", ["[", "O", "H", "-", "]"]),
        ("[Sc+3]", ["[", "Sc", "+", "3", "]"]),
        ("CP(=O)(O)O", ["C", "P", "(", "=", "O", ")", "(", "O", ")", "O"]),
        ("B1OCCO1I", ["B", "1", "O", "C", "C", "O", "1", "I"]),
    ],
)
def test_smiles_tokenizer_splits_bracket_atoms_into_their_parts(smiles, expected):
    tok = build_smiles_tokenizer()
    assert tok.tokenize(smiles) == expected
    assert tok.unk_token_id not in tok(smiles)["input_ids"]


def test_smiles_vocabulary_spells_every_bracket_atom():
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    tok = build_smiles_tokenizer()
    atoms = []
    for z in range(1, 119):
        sym = table.GetElementSymbol(z)
        atoms += [f"[{sym}]", f"[{sym}+2]", f"[{sym}--]", f"[13{sym}@@H2-:7]", f"[{sym}@SP3]", f"[2{sym}@TB12+]"]
    atoms += [f"[{s}]" for s in AROMATIC_SYMBOLS] + [f"[{s}H+]" for s in AROMATIC_SYMBOLS] + ["[*]", "*", "[H]"]
    bonds = ["C-C", "C=C", "C#C", "C$C", "c:c", "C/C=C/C", "C\\C=C\\C", "C.C", "C1CC1", "C%99CC%99", "C(C)C"]
    for s in atoms + bonds:
        assert tok.unk_token_id not in tok(s)["input_ids"], s
        assert "".join(tok.tokenize(s)) == s


@needs_shared_data
@pytest.mark.parametrize("name", list(DATASETS) + ["moses_train"])
def test_smiles_tokenizer_has_no_unk_on_every_shared_smiles(name):
    smiles = _shared_smiles(name, limit=300_000 if name == "moses_train" else None)
    tok = build_smiles_tokenizer()
    assert count_unknown(tok, smiles) == []
    ids = tok(smiles, add_special_tokens=False)["input_ids"]
    bad = [s for s, row in zip(smiles, ids) if tok.decode(row) != s]
    assert not bad, bad[:5]


@needs_shared_data
def test_smiles_tokenizer_has_no_unk_on_rdkit_variants():
    """RDKit-written stereoisomers, charged forms, isotopologues, atom maps and random atom orders."""
    import random

    from rdkit import Chem
    from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions

    rng = random.Random(0)
    tok = build_smiles_tokenizer()
    variants = []
    for s in rng.sample(_shared_smiles("aqsoldb") + _shared_smiles("bbbp"), 400):
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            continue
        for isomer in EnumerateStereoisomers(mol, options=StereoEnumerationOptions(maxIsomers=3, rand=1)):
            variants.append(Chem.MolToSmiles(isomer, doRandom=True))
        variants.append(Chem.MolToSmiles(mol, kekuleSmiles=True))
        mol = Chem.RWMol(mol)
        atom = mol.GetAtomWithIdx(rng.randrange(mol.GetNumAtoms()))
        atom.SetIsotope(rng.choice([2, 13, 15, 18, 35, 125]))
        atom.SetFormalCharge(rng.choice([-2, -1, 1, 2, 3]))
        atom.SetAtomMapNum(rng.randrange(1, 100))
        atom.SetNoImplicit(True)
        variants.append(Chem.MolToSmiles(mol, doRandom=True))
    assert len(variants) > 1000
    assert count_unknown(tok, variants) == []
    assert all("".join(tok.tokenize(v)) == v for v in variants)


def test_smiles_tokenizer_loads_with_plain_transformers(tmp_path):
    """The saved tokenizer.json needs no smilesformer code: AutoTokenizer alone reads it."""
    import subprocess
    import sys

    build_smiles_tokenizer().save_pretrained(tmp_path)
    script = (
        "import sys; from transformers import AutoTokenizer; "
        f"t = AutoTokenizer.from_pretrained({str(tmp_path)!r}); "
        "assert 'smilesformer' not in sys.modules; "
        "print(' '.join(t.tokenize('CCCCC[C@@H](Br)CC')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["C", "C", "C", "C", "C", "[", "C", "@@", "H", "]", "(", "Br", ")", "C", "C"]


def test_count_unknown_flags_molecules_an_old_vocabulary_misses():
    old = build_regex_tokenizer(["CCO", "c1ccccc1"])
    smiles = ["CCO", "CCCCC[C@@H](Br)CC", "CI", "c1ccccc1"]
    assert count_unknown(old, smiles) == [1, 2]
    assert count_unknown(build_smiles_tokenizer(), smiles) == []


def test_unknown_tokens_are_warned_about_when_predicting_and_embedding(make_tiny_model, caplog):
    """A model whose vocabulary misses atoms (an old or hub model) says so, naming a molecule."""
    from smilesformer.embeddings import EmbedConfig, embed

    model = make_tiny_model()  # its regex vocabulary was counted on 50 ESOL molecules
    with caplog.at_level("WARNING", logger="smilesformer"):
        model.predict(["CCO", "CCCCC[C@@H](Br)CC"])
    assert "1 of 2 SMILES hold tokens this model's vocabulary does not know" in caplog.text
    assert "CCCCC[C@@H](Br)CC" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="smilesformer"):
        embed(model, ["CCCCC[C@@H](Br)CC"], EmbedConfig())
    assert "<unk>" in caplog.text


def test_counting_long_smiles_says_nothing_about_sequence_length():
    """Counting <unk> and truncation reads every SMILES whole: transformers' "Token indices sequence length is
    longer than the specified maximum" line must not reach the user (truncation is reported once, by us)."""
    from transformers.utils import logging as hf_logging

    from smilesformer.tokenization import warn_truncated

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    tokenizer = build_smiles_tokenizer(model_max_length=8)
    long = ["C" * 40, "CCO"]
    lines: list[str] = []
    handler = Keep()
    hf_logging.add_handler(handler)  # transformers' loggers do not propagate to caplog
    try:
        assert count_unknown(tokenizer, long) == []
        assert warn_truncated(tokenizer, long, 8) == 1
    finally:
        hf_logging.remove_handler(handler)
    assert not [line for line in lines if "sequence length" in line], lines
