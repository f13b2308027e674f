"""SMILES tokenizers as ``PreTrainedTokenizerFast``: an atom-level regex tokenizer and a byte-level BPE.

Both are built with the Hugging Face ``tokenizers`` library, so they save and load with
``save_pretrained`` / ``from_pretrained``, give character offsets (used to map tokens to atoms)
and work with any HF model. Special tokens follow RoBERTa: ``<s> <pad> </s> <unk> <mask>``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from tokenizers.implementations import ByteLevelBPETokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .data import SmilesformerError

__all__ = [
    "char_atom_index",
    "atoms_per_token",
    "length_batches",
    "warn_unknown",
    "warn_truncated",
    "SMILES_REGEX",
    "SMILES_VOCAB",
    "AROMATIC_SYMBOLS",
    "SPECIAL_TOKENS",
    "ATOM_TOKEN_REGEX",
    "tokenize_smiles",
    "build_smiles_tokenizer",
    "build_regex_tokenizer",
    "element_tokens",
    "train_bpe_tokenizer",
    "load_tokenizer",
    "coverage_report",
    "count_unknown",
]

logger = logging.getLogger(__name__)

# Atom-level SMILES pattern of Schwaller et al., "Molecular Transformer", ACS Cent. Sci. 5, 1572 (2019),
# kept on one line (copies split over two lines silently lose alternatives such as `#`).
# One addition: a final `.` catch-all, so a character the pattern does not know (a typo, an
# unusual element outside brackets) becomes its own token instead of vanishing; the tokens then
# always join back to the input, which tests/test_tokenization.py checks over every shared data set.
SMILES_REGEX = r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|\%[0-9]{2}|[0-9]|.)"  # noqa: E501
_SMILES_PATTERN = re.compile(SMILES_REGEX)

# A token that spells an atom: a bracket atom, an organic-subset element (aliphatic or aromatic) or `*`.
ATOM_TOKEN_REGEX = re.compile(r"^(\[[^\]]+]|Br|Cl|B|C|N|O|S|P|F|I|b|c|n|o|s|p|\*)$")

BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
SPECIAL_TOKENS = [BOS, PAD, EOS, UNK, MASK]


def tokenize_smiles(smiles: str) -> list[str]:
    """Split a SMILES string into atom-level tokens (``"".join(tokens) == smiles``)."""
    return _SMILES_PATTERN.findall(smiles)


# The compositional tokenizer (after Smirk, Wadell et al., arXiv 2409.15370): outside brackets a token is
# an organic-subset atom, a bond, a branch or a ring closure, as in the regex above; a bracket atom is split
# into its parts, "[", isotope digits, element, chirality, "H", H count, charge, ":" class, "]", so
# `[C@@H]` reads as `[ C @@ H ]` and shares the embeddings of `C` and `H` with every other carbon and
# hydrogen. A short fixed vocabulary then spells every atom OpenSMILES allows, whatever the corpus held.
# Two regex passes, because which pieces a bracket holds depends on being inside one.
_OUTER_REGEX = r"\[[^\]]*\]|Br|Cl|%\d{2}|."
AROMATIC_SYMBOLS = ("b", "c", "n", "o", "p", "s", "se", "as", "te", "si")  # all that RDKit reads in rings
_INNER_REGEX = (r"\[|\]|(?<=@)(?:TH|AL|SP|TB|OH)|@@|[A-Z][a-z]?|se|as|te|si|[a-z]|%\d{2}|\d|.")


def _element_symbols() -> list[str]:
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    return [table.GetElementSymbol(z) for z in range(1, 119)]


def smiles_vocab() -> list[str]:
    """The compositional tokenizer's vocabulary (special tokens first): every piece of OpenSMILES."""
    punctuation = list("()[]=#$:/\\.~-+*@?>%") + ["@@", "TH", "AL", "SP", "TB", "OH"]
    digits = [str(d) for d in range(10)]
    rings = [f"%{n}" for n in range(10, 100)]
    return [*SPECIAL_TOKENS, *_element_symbols(), *AROMATIC_SYMBOLS, *punctuation, *digits, *rings]


SMILES_VOCAB = smiles_vocab()  # 258 tokens


def build_smiles_tokenizer(model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """The compositional SMILES tokenizer: a fixed vocabulary that covers every SMILES, no corpus needed.

    It saves as a plain ``tokenizer.json`` (two regex ``Split`` pre-tokenizers and a ``WordLevel`` model), so
    ``AutoTokenizer.from_pretrained`` loads it with no smilesformer import. Tokens join back to the input.
    """
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(SMILES_VOCAB))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_OUTER_REGEX), behavior="isolated"),
        pre_tokenizers.Split(Regex(_INNER_REGEX), behavior="isolated"),
    ])
    tokenizer.decoder = decoders.Fuse()
    return _wrap(tokenizer, model_max_length)


def count_unknown(tokenizer: PreTrainedTokenizerBase, smiles: Sequence[str]) -> list[int]:
    """Positions of the SMILES that hold at least one ``<unk>`` token under ``tokenizer`` (none when it has no
    unknown token). Old checkpoints and hub models have vocabularies that miss atoms; callers warn."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    ids = tokenizer(list(smiles), add_special_tokens=False, verbose=False)["input_ids"]
    return [i for i, row in enumerate(ids) if unk in row]


def _element(token: str) -> str:
    """Element letters of an atom token: ``[13CH3+]`` -> ``c``... lower-cased for comparison."""
    body = token.strip("[]").lstrip("0123456789")
    return body.lower()


def char_atom_index(smiles: str, mol) -> np.ndarray:
    """Atom index of every character of ``smiles`` (-1 where the character spells no atom).

    Characters inside a bracket atom, brackets included, belong to that atom. ``mol`` is the RDKit molecule
    parsed with its written hydrogens kept (``data.parse_molecule``), so atom k is the k-th atom written.

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


def atoms_per_token(chars, offsets: Sequence[tuple[int, int]], special: Sequence[int]) -> list[list[int]]:
    """Atoms each token spells: those of the characters its (start, end) span covers (works for regex and BPE
    tokens); a special token spells none.

    Args:
        chars: (characters,) atom index per character, from ``char_atom_index``.
        offsets: (start, end) character span per token.
        special: 1 for special tokens, 0 otherwise.
    """
    return [[] if s else sorted({int(a) for a in chars[start:end] if a >= 0})
            for (start, end), s in zip(offsets, special)]


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Positions grouped into batches of similar length (longest first), to cut padding at inference."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def warn_unknown(tokenizer: PreTrainedTokenizerBase, smiles: Sequence[str]) -> int:
    """How many SMILES hold a token the vocabulary lacks (read as ``<unk>``: its atom or bond is invisible to the
    model), with a warning naming the first few. Old checkpoints and hub models miss stereo atoms, salts, P, I
    or B; the bundled tokenizer spells every SMILES."""
    rows = count_unknown(tokenizer, smiles)
    if rows:
        examples = ", ".join(repr(smiles[i]) for i in rows[:3])
        logger.warning("%d of %d SMILES hold tokens this model's vocabulary does not know (read as <unk>), e.g. %s;"
                       " use a model whose tokenizer covers them, such as the bundled one", len(rows), len(smiles),
                       examples)
    return len(rows)


def warn_truncated(tokenizer: PreTrainedTokenizerBase, smiles: Sequence[str], max_length: int) -> int:
    """How many SMILES have more tokens than ``max_length`` (they are truncated, and we say so)."""
    # verbose=False: this count replaces transformers' own one-line "longer than" warning
    lengths = tokenizer(list(smiles), add_special_tokens=True, return_length=True, verbose=False)["length"]
    n = int(sum(length > max_length for length in lengths))
    if n:
        logger.warning("%d SMILES are longer than max_length=%d tokens and were truncated", n, max_length)
    return n


def _wrap(tokenizer: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    bos, eos = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    tokenizer.post_processor = processors.RobertaProcessing(
        (EOS, eos), (BOS, bos), trim_offsets=False, add_prefix_space=False
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        sep_token=EOS,
        cls_token=BOS,
        unk_token=UNK,
        pad_token=PAD,
        mask_token=MASK,
        model_max_length=model_max_length,
        padding_side="right",
    )


def element_tokens() -> list[str]:
    """Bracket atoms for every element with charge 0, +-1, +-2, +-3 (``[Na+]``, ``[Fe+3]``, ``[Se]`` ...)."""
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    charges = ["", "+", "-", "+2", "-2", "+3", "-3"]
    return [f"[{table.GetElementSymbol(z)}{c}]" for z in range(1, 119) for c in charges]


def build_regex_tokenizer(
    smiles: Iterable[str], min_frequency: int = 1, model_max_length: int = 256, extra_tokens: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """Build the atom-level regex tokenizer with a vocabulary read from a SMILES corpus.

    Args:
        smiles: corpus to count tokens in (any iterable; streamed).
        min_frequency: tokens seen fewer times map to ``<unk>``.
        model_max_length: longest sequence the model accepts, special tokens included.
        extra_tokens: tokens added after the corpus's own (e.g. ``element_tokens()``).

    Returns:
        A ``PreTrainedTokenizerFast`` whose pieces are the regex tokens.
    """
    counts: Counter[str] = Counter()
    for s in smiles:
        counts.update(tokenize_smiles(s.strip()))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for tok, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if n >= min_frequency and tok not in vocab:
            vocab[tok] = len(vocab)
    for tok in extra_tokens:
        vocab.setdefault(tok, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(SMILES_REGEX), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return _wrap(tokenizer, model_max_length)


def train_bpe_tokenizer(
    smiles: Iterable[str], vocab_size: int = 1000, min_frequency: int = 2, model_max_length: int = 256
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (as ChemBERTa's) on a SMILES corpus.

    Args:
        smiles: corpus (any iterable; streamed into the trainer).
        vocab_size: target vocabulary size, special tokens included.
        min_frequency: pairs seen fewer times are not merged.
        model_max_length: longest sequence the model accepts, special tokens included.
    """
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=False)
    bpe.train_from_iterator(
        (s.strip() for s in smiles), vocab_size=vocab_size, min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS, show_progress=False,
    )
    return _wrap(bpe._tokenizer, model_max_length)


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """Load any tokenizer saved with ``save_pretrained`` (ours, or a checkpoint's own, e.g. ChemBERTa's)."""
    return AutoTokenizer.from_pretrained(str(name_or_path))


def coverage_report(tokenizer: PreTrainedTokenizerBase, smiles: Iterable[str]) -> dict[str, float]:
    """How well a tokenizer covers a corpus.

    Returns:
        ``roundtrip`` (share of SMILES whose decoded tokens give back the input), ``unk_rate``
        (share of tokens that are ``<unk>``), ``mean_tokens`` (per molecule, specials excluded)
        and ``n`` (molecules read).
    """
    n = roundtrip = n_tokens = n_unk = 0
    unk_id = tokenizer.unk_token_id
    for s in smiles:
        s = s.strip()
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        n += 1
        n_tokens += len(ids)
        n_unk += sum(i == unk_id for i in ids)
        roundtrip += tokenizer.decode(ids) == s
    return {
        "n": n,
        "roundtrip": roundtrip / max(n, 1),
        "unk_rate": n_unk / max(n_tokens, 1),
        "mean_tokens": n_tokens / max(n, 1),
    }
