"""The pretraining corpus: transformations that exercise the SMILES grammar, and no benchmark molecule in it."""

from __future__ import annotations

import json
import random

import pytest
from rdkit import Chem

from smilesformer.corpus import TRANSFORMS, CorpusConfig, build_corpus, connectivity_key, transform_molecule
from smilesformer.data import SmilesformerError

from .conftest import needs_shared_data

ESOL_MOLECULE = "Cc1occc1C(=O)Nc2ccccc2"  # fenfuram, in ESOL; MOSES-like molecules around it below
SOURCE = ["CC(N)Cc1ccc(Cl)cc1", "OC(=O)CCc1ccc(Br)cc1", "CC(O)C1CCN(C)CC1", "CC(C)=CC(C)C(=O)O",
          "CC1CCN(C(=O)c2ccco2)CC1", "NCCc1ccccc1", ESOL_MOLECULE, "not a smiles"]


def _only(name: str) -> dict[str, float]:
    return {key: 1.0 if key == name else 0.0 for key in TRANSFORMS}


@pytest.mark.parametrize("name, check", [
    ("iodo", lambda m: any(a.GetSymbol() == "I" for a in m.GetAtoms())),
    ("boronic", lambda m: any(a.GetSymbol() == "B" for a in m.GetAtoms())),
    ("phosphate", lambda m: any(a.GetSymbol() == "P" for a in m.GetAtoms())),
    ("salt", lambda m: len(Chem.GetMolFrags(m)) == 2 and any(a.GetFormalCharge() for a in m.GetAtoms())),
    ("isotope", lambda m: any(a.GetIsotope() for a in m.GetAtoms())),
    ("stereo", lambda m: any(a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED for a in m.GetAtoms())),
])
def test_each_transformation_writes_what_it_names(name, check):
    source = {"iodo": "CC(N)Cc1ccc(Cl)cc1", "boronic": "CC(N)Cc1ccc(Cl)cc1", "phosphate": "CC(O)C1CCN(C)CC1",
              "salt": "OC(=O)CCc1ccc(Br)cc1", "isotope": "CCO", "stereo": "CC(N)Cc1ccc(Cl)cc1"}[name]
    smiles, applied = transform_molecule(Chem.MolFromSmiles(source), _only(name), random.Random(0))
    mol = Chem.MolFromSmiles(smiles)
    assert mol is not None and applied == [name] and check(mol), smiles


def test_kekule_and_random_spellings_keep_the_molecule():
    mol = Chem.MolFromSmiles("c1ccc2[nH]ccc2c1")
    for name in ("kekule", "random"):
        smiles, applied = transform_molecule(mol, _only(name), random.Random(3))
        assert applied == [name]
        assert Chem.MolToSmiles(Chem.MolFromSmiles(smiles)) == Chem.MolToSmiles(mol)
    assert "c" not in transform_molecule(mol, _only("kekule"), random.Random(0))[0]


@needs_shared_data
def test_build_corpus_removes_benchmark_molecules_and_reports(tmp_path):
    stereo_variant = "Cc1occc1C(=O)[15NH]c1ccccc1.[Na+].[Cl-]"  # an isotopologue salt of it: same skeleton
    source = tmp_path / "source.smi"
    source.write_text("\n".join(SOURCE + [stereo_variant]) + "\n")
    out = tmp_path / "corpus.smi.gz"
    report = build_corpus(CorpusConfig(str(source), seed=1, exclude=["esol"], n_jobs=1), out)
    import gzip

    lines = gzip.open(out, "rt").read().split()
    keys = {connectivity_key(Chem.MolFromSmiles(s)) for s in lines}
    assert connectivity_key(Chem.MolFromSmiles(ESOL_MOLECULE)) not in keys
    assert report["removed_benchmark"] == 2 and report["invalid"] == 1 and report["kept"] == len(lines) == 6
    assert report["benchmark_sets"] == {"esol": 1128}
    assert json.loads((tmp_path / "corpus.smi.gz.json").read_text())["kept"] == 6
    again = build_corpus(CorpusConfig(str(source), seed=1, exclude=["esol"], n_jobs=1), tmp_path / "again.smi.gz")
    assert gzip.open(tmp_path / "again.smi.gz", "rt").read().split() == lines and again["kept"] == 6


def test_corpus_config_rejects_unknown_transformations():
    with pytest.raises(SmilesformerError, match="unknown corpus transformation"):
        CorpusConfig("x.smi", transforms={"fluorinate": 0.5})


def test_missing_benchmark_set_stops_the_build(tmp_path, monkeypatch):
    monkeypatch.setenv("SMILESFORMER_DATA", str(tmp_path))
    monkeypatch.setenv("SMILESFORMER_CACHE", str(tmp_path))
    (tmp_path / "s.smi").write_text("CCO\n")
    with pytest.raises(SmilesformerError, match="cannot be removed"):
        build_corpus(CorpusConfig(str(tmp_path / "s.smi"), exclude=["esol"], n_jobs=1), tmp_path / "c.smi")
