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

from ..data import SmilesformerError, parse_smiles
from ..tokenization import ATOM_TOKEN_REGEX, tokenize_smiles

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


def parse_molecule(smiles: str) -> Chem.Mol:
    """Parse a SMILES keeping explicit hydrogens, so atom k is the k-th atom written.

    Raises:
        SmilesformerError: with the SMILES and RDKit's reason when it does not parse.
    """
    mol, reason = parse_smiles(smiles)
    if mol is None:
        raise SmilesformerError(f"invalid SMILES {smiles!r}: {reason}; fix or remove it")
    # Default parsing removes written [H] atoms and renumbers the rest; keep them to keep the string's order.
    params = Chem.SmilesParserParams()
    params.removeHs = False
    return Chem.MolFromSmiles(smiles.strip(), params)


def _element(token: str) -> str:
    """Element letters of an atom token: ``[13CH3+]`` -> ``c``... lower-cased for comparison."""
    body = token.strip("[]").lstrip("0123456789")
    return body.lower()


def char_atom_index(smiles: str, mol: Chem.Mol) -> np.ndarray:
    """Atom index of every character of ``smiles`` (-1 where the character spells no atom).

    Characters inside a bracket atom, brackets included, belong to that atom.

    Raises:
        SmilesformerError: if the atom tokens do not line up with RDKit's atoms (a SMILES feature
            this mapping does not know), rather than return a silently wrong map.
    """
    index = np.full(len(smiles), -1, dtype=np.int64)
    pos = atom = 0
    for token in tokenize_smiles(smiles):
        if ATOM_TOKEN_REGEX.match(token):
            if atom < mol.GetNumAtoms():
                symbol = mol.GetAtomWithIdx(atom).GetSymbol().lower()
                if not _element(token).startswith(symbol):
                    raise SmilesformerError(
                        f"cannot map tokens to atoms in {smiles!r}: token {token!r} at character {pos} "
                        f"is atom {atom} ({symbol}) for RDKit"
                    )
            index[pos:pos + len(token)] = atom
            atom += 1
        pos += len(token)
    if atom != mol.GetNumAtoms():
        raise SmilesformerError(
            f"cannot map tokens to atoms in {smiles!r}: {atom} atom tokens but RDKit reads {mol.GetNumAtoms()} atoms"
        )
    return index


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
    token_atoms = []
    for (start, end), special in zip(enc["offset_mapping"], enc["special_tokens_mask"]):
        span = chars[start:end] if not special else chars[:0]
        token_atoms.append(sorted({int(a) for a in span if a >= 0}))
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
