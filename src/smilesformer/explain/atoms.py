"""Which atom each SMILES character, and so each token, spells.

RDKit numbers atoms in the order the SMILES writes them, so the k-th atom token of the string (regex
tokenizer) is atom k. From that, every character gets an atom index (or none), and any tokenizer's
tokens map to atoms through their character offsets: an atom-level token covers one atom, a byte-level
BPE token such as ``CCCC`` covers several, and a BPE piece of a bracket atom (``[``, ``nH``, ``+]``)
covers part of one. Bond symbols, ring-closure digits (``1``, ``%10``), branch parentheses and ``.`` spell
no atom; neither do special tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rdkit import Chem

from ..data import parse_molecule
from ..tokenization import atoms_per_token, char_atom_index

__all__ = ["MoleculeTokens", "parse_molecule", "char_atom_index", "map_tokens", "tokens_to_atoms", "bond_pairs"]


@dataclass
class MoleculeTokens:
    """A molecule as the model reads it.

    Attributes:
        smiles: the SMILES, stripped.
        mol: RDKit molecule with atoms in SMILES order (explicit ``[H]`` atoms kept, so they map too).
        tokens: token strings, special tokens included.
        input_ids: token ids.
        offsets: (start, end) character span per token; (0, 0) for special tokens.
        token_atoms: atom indices per token ([] for a token that spells no atom).
    """

    smiles: str
    mol: Chem.Mol
    tokens: list[str]
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    token_atoms: list[list[int]]

    @property
    def n_atoms(self) -> int:
        return self.mol.GetNumAtoms()


def map_tokens(smiles: str, tokenizer, max_length: int | None = None) -> MoleculeTokens:
    """Tokenize one SMILES and map each token to the atoms whose characters it covers.

    Args:
        smiles: one SMILES.
        tokenizer: any HF fast tokenizer that returns character offsets (regex or byte-level BPE).
        max_length: truncate to this many tokens, specials included (the model's limit).
    """
    smiles = smiles.strip() if isinstance(smiles, str) else smiles
    mol = parse_molecule(smiles)
    chars = char_atom_index(smiles, mol)
    enc = tokenizer(smiles, return_offsets_mapping=True, truncation=max_length is not None,
                    max_length=max_length, return_special_tokens_mask=True)
    token_atoms = atoms_per_token(chars, enc["offset_mapping"], enc["special_tokens_mask"])
    return MoleculeTokens(smiles, mol, tokenizer.convert_ids_to_tokens(enc["input_ids"]), list(enc["input_ids"]),
                          [tuple(o) for o in enc["offset_mapping"]], token_atoms)


def tokens_to_atoms(values: np.ndarray, token_atoms: Sequence[Sequence[int]], n_atoms: int) -> np.ndarray:
    """Move per-token values onto atoms.

    A token that covers several atoms (a BPE ``CCCC``) splits its value equally among them, so the atom
    values add up to the total of the atom-spelling tokens; an atom covered by several tokens (a BPE
    ``[`` + ``nH`` + ``]``) adds their values.

    Args:
        values: (..., tokens) per-token values.
        token_atoms: atoms per token.
        n_atoms: atoms in the molecule.

    Returns:
        (..., n_atoms) per-atom values.
    """
    values = np.asarray(values, dtype=np.float64)
    share = np.zeros((values.shape[-1], n_atoms))  # (tokens, atoms): how a token's value spreads on atoms
    for t, atoms in enumerate(token_atoms[: values.shape[-1]]):
        for a in atoms:
            share[t, a] = 1.0 / len(atoms)
    return values @ share


def bond_pairs(mol: Chem.Mol) -> np.ndarray:
    """(n_atoms, n_atoms) boolean adjacency from RDKit's bonds."""
    adjacency = np.zeros((mol.GetNumAtoms(), mol.GetNumAtoms()), dtype=bool)
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        adjacency[i, j] = adjacency[j, i] = True
    return adjacency
