"""Splits are deterministic functions of (smiles, fractions, seed); scaffold sets never straddle."""

from __future__ import annotations

import numpy as np
import pytest

from smilesformer.data import SmilesformerError
from smilesformer.splits import bemis_murcko_scaffold, column_split, random_split, scaffold_split


def test_random_split_is_a_deterministic_partition():
    a = random_split(100, (0.8, 0.1, 0.1), seed=3)
    b = random_split(100, (0.8, 0.1, 0.1), seed=3)
    c = random_split(100, (0.8, 0.1, 0.1), seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert sorted(np.concatenate(a)) == list(range(100))
    assert [len(p) for p in a] == [80, 10, 10]


def test_scaffold_split_keeps_scaffolds_together(esol50):
    smiles = esol50["smiles"].tolist()
    parts = scaffold_split(smiles, (0.6, 0.2, 0.2), seed=0)
    assert sorted(np.concatenate(parts)) == list(range(len(smiles)))
    scaffolds = [{bemis_murcko_scaffold(smiles[i]) for i in p} for p in parts]
    assert not scaffolds[0] & scaffolds[1] and not scaffolds[0] & scaffolds[2] and not scaffolds[1] & scaffolds[2]
    again = scaffold_split(smiles, (0.6, 0.2, 0.2), seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(parts, again))


def test_column_split_and_its_errors():
    train, valid, test = column_split(["train", "Valid", "TEST", "train"])
    assert train.tolist() == [0, 3] and valid.tolist() == [1] and test.tolist() == [2]
    with pytest.raises(SmilesformerError, match="data row 2 .*'holdout'"):
        column_split(["train", "holdout", "test"])
    with pytest.raises(SmilesformerError, match="data row 8 .*'holdout'"):
        column_split(["train", "holdout", "test"], rows=[3, 7, 9])


def test_too_few_molecules_for_a_test_set():
    with pytest.raises(SmilesformerError, match="test set is empty"):
        random_split(3, (0.8, 0.2, 0.0 + 1e-9))
