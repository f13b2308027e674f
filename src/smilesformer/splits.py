"""Train / valid / test splits: pure functions of (smiles, fractions, seed) returning index arrays."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from rdkit.Chem.Scaffolds import MurckoScaffold

from .data import SmilesformerError, data_row, mol_from_smiles

__all__ = ["Split", "random_split", "scaffold_split", "column_split", "bemis_murcko_scaffold"]

Split = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Positions (0-based, into the input sequence) of the train, valid and test molecules."""


def _sizes(n: int, fractions: Sequence[float]) -> tuple[int, int]:
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    if n_train + n_valid >= n:
        raise SmilesformerError(f"{n} molecules are too few for fractions {tuple(fractions)}: the test set is empty")
    return n_train, n_valid


def random_split(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Shuffle ``n`` positions with ``seed`` and cut them by ``fractions``."""
    n_train, n_valid = _sizes(n, fractions)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_valid]), np.sort(order[n_train + n_valid:])


def bemis_murcko_scaffold(smiles: str) -> str:
    """The Bemis-Murcko scaffold (ring systems and linkers) as canonical SMILES; "" for acyclic molecules."""
    mol = mol_from_smiles(smiles)
    if mol is None:
        raise SmilesformerError(f"cannot compute a scaffold for invalid SMILES {smiles!r}")
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Balanced scaffold split (as chemprop's): molecules sharing a scaffold land in the same set.

    Scaffold sets too big for valid or test (over half their size) go to train first, so the small
    sets keep enough molecules; the other scaffold sets are placed in an order shuffled by ``seed``.
    """
    n = len(smiles)
    n_train, n_valid = _sizes(n, fractions)
    n_test = n - n_train - n_valid
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[bemis_murcko_scaffold(s)].append(i)
    sets = list(groups.values())
    rng = np.random.default_rng(seed)
    big = [g for g in sets if len(g) > n_valid / 2 or len(g) > n_test / 2]
    small = [g for g in sets if not (len(g) > n_valid / 2 or len(g) > n_test / 2)]
    rng.shuffle(big)
    rng.shuffle(small)
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for group in big + small:
        if len(train) + len(group) <= n_train:
            train += group
        elif len(valid) + len(group) <= n_valid:
            valid += group
        else:
            test += group
    return np.sort(train), np.sort(valid), np.sort(test)


def column_split(values: Sequence[str], rows: Sequence[int] | None = None) -> Split:
    """Use a user's split column: values train / valid (or val, validation) / test, case-insensitive.

    ``rows`` (each value's 0-based row in the source table) name a bad value's row in the error.
    """
    names = {"train": 0, "training": 0, "valid": 1, "val": 1, "validation": 1, "dev": 1, "test": 2, "testing": 2}
    parts: list[list[int]] = [[], [], []]
    for i, v in enumerate(values):
        key = str(v).strip().lower()
        if key not in names:
            raise SmilesformerError(
                f"{data_row(rows[i] if rows is not None else i)} of the split column has {v!r}; use train, valid "
                "or test in that column"
            )
        parts[names[key]].append(i)
    if not parts[0] or not parts[2]:
        raise SmilesformerError("the split column needs at least one train row and one test row")
    return tuple(np.array(p, dtype=int) for p in parts)  # type: ignore[return-value]
