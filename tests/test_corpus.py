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


def test_stereo_gives_every_unassigned_centre_and_double_bond_a_label():
    mol = Chem.MolFromSmiles("CC(F)C=CC(Cl)Br")  # two centres and a stereo double bond, none assigned
    smiles, applied = transform_molecule(mol, _only("stereo"), random.Random(0))
    written = Chem.MolFromSmiles(smiles)
    assert applied == ["stereo"] and smiles.count("@") == 2 and ("/" in smiles or "\\" in smiles)
    assert connectivity_key(written) == connectivity_key(mol)
    assert transform_molecule(Chem.MolFromSmiles("CC(C)C"), _only("stereo"), random.Random(0))[1] == []


def test_element_graph_is_shared_by_every_molecule_with_the_same_inchikey_skeleton():
    """The prefilter may only ever let more through to the InChIKey check, never fewer."""
    from smilesformer.corpus import _graphs, _keys

    variants = ["Cc1occc1C(=O)Nc1ccccc1", "Cc1occc1C(=O)[15NH]c1ccccc1.[Na+].[Cl-]", "C[C@H](N)C(=O)O",
                "C[C@@H]([NH3+])C(=O)[O-]", "O=c1cccc[nH]1", "Oc1ccccn1", "CC(=O)Oc1ccccc1C(=O)O",
                "CC(=O)Oc1ccccc1C(=O)[O-].[K+]", "C/C=C/C(=O)O", "[2H]C([2H])([2H])C(=O)O", "CC(=O)O"]
    mols = [Chem.MolFromSmiles(s) for s in variants]
    for a in mols:
        for b in mols:
            if _keys(a) & _keys(b):
                assert _graphs(a) & _graphs(b), (Chem.MolToSmiles(a), Chem.MolToSmiles(b))
    assert not _graphs(mols[0]) & _graphs(mols[2])


@needs_shared_data
def test_corpus_descriptors_are_those_of_the_smiles_as_written(tmp_path):
    import gzip

    import numpy as np

    from smilesformer.data import iter_smiles
    from smilesformer.descriptors import descriptor_block, descriptor_names

    from .conftest import SHARED_DATA

    source = tmp_path / "source.smi"
    source.write_text("\n".join(s for _, s in zip(range(400), iter_smiles(SHARED_DATA / "moses_train.csv.gz"))))
    transforms = {name: 0.9 for name in TRANSFORMS}  # every transformation, often
    report = build_corpus(CorpusConfig(str(source), transforms=transforms, exclude=["esol"], n_jobs=1,
                                       descriptors="mtr"), tmp_path / "c.smi.gz")
    lines = gzip.open(tmp_path / "c.smi.gz", "rt").read().split()
    values = np.load(tmp_path / "c.smi.gz.descriptors.npy")
    assert values.shape == (len(lines), len(descriptor_names("mtr"))) == (report["kept"], 85)
    assert report["descriptors"]["names"] == descriptor_names("mtr")
    assert all(Chem.MolFromSmiles(s) is not None for s in lines)  # every line written reads back
    again = descriptor_block(lines, descriptor_names("mtr"))  # from the SMILES, parsed afresh
    np.testing.assert_allclose(values, again, rtol=1e-5, atol=1e-4, equal_nan=True)
    print(report["applied"])
    assert min(report["applied"].values()) > 0 and report["applied"]["stereo"] > 50  # every kind was checked
