"""A pretraining corpus that exercises the whole SMILES grammar, made from one that does not.

MOSES (ZINC clean leads) has no stereochemistry, no salts, no P, I or B, and every SMILES is canonical, so a
model pretrained on it never reads `[C@@H]`, `/`, `.` or `P`, and the downstream sets are full of them. RDKit
rewrites each molecule with a few transformations chosen at random (each with a probability, reproducible
from the seed); the descriptors MTR regresses are computed afterwards, on the molecule as written, so every
label stays true of its SMILES:

- ``stereo``: one stereoisomer of a molecule with unassigned stereocentres or stereo double bonds
  (``EnumerateStereoisomers``), written with ``@``/``@@`` and ``/``/``\\``;
- ``iodo``: an aromatic Cl or Br becomes I (aryl iodides are common in the benchmark sets);
- ``boronic``: an aromatic halide becomes a boronic acid, ``B(O)O`` (the Suzuki building block);
- ``phosphate``: an aliphatic OH becomes a phosphate ester, ``OP(=O)(O)O`` (prodrugs, nucleotides);
- ``salt``: a carboxylic acid becomes its sodium or potassium salt, or a basic amine its hydrochloride or
  hydrobromide, written as two charged components (``[NH+]``, ``[Cl-]``, ``.``);
- ``isotope``: one C, N or O carries a heavy isotope (``[13CH3]``), as labelled compounds do;
- ``kekule``: aromatic rings written with alternating single and double bonds (many data sets do);
- ``random``: a randomized, non-canonical atom order (SMILES enumeration), else the canonical SMILES.

Every molecule that appears in a benchmark data set is removed, before and after the transformations,
by the first block of its InChIKey (the connectivity: stereoisomers, salts' parents and isotopologues of a
benchmark molecule go too), so no benchmark figure is flattered by pretraining on its test molecules.
"""

from __future__ import annotations

import gzip
import json
import logging
import multiprocessing
import os
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rdkit import Chem, rdBase
from rdkit.Chem import AllChem
from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions

from .data import DATASETS, SmilesformerError, iter_smiles, locate_dataset, mol_from_smiles, read_table

__all__ = ["TRANSFORMS", "CorpusConfig", "benchmark_keys", "connectivity_key", "transform_molecule", "build_corpus"]

logger = logging.getLogger(__name__)

# Probability that each transformation is tried on a molecule (it applies only where the molecule allows).
TRANSFORMS: dict[str, float] = {
    "stereo": 0.6,
    "iodo": 0.3,
    "boronic": 0.08,
    "phosphate": 0.15,
    "salt": 0.25,
    "isotope": 0.03,
    "kekule": 0.15,
    "random": 0.5,
}

_REACTIONS = {
    "iodo": "[c:1][Cl,Br]>>[c:1]I",
    "boronic": "[c:1][Cl,Br,I]>>[c:1]B(O)O",
    "phosphate": "[CX4:1][OX2H1]>>[C:1]OP(=O)(O)O",
}
_ACID = Chem.MolFromSmarts("[CX3](=O)[OX2H1]")
# A basic amine: sp3 N, not an amide, sulfonamide, aniline or N-oxide.
_AMINE = Chem.MolFromSmarts("[NX3;!$(N-C=[O,S,N]);!$(N-S(=O)=O);!$(N-a);!$(N-[#7,#8]);!$(N#*);!$(N=*)]")
_ISOTOPES = {"C": 13, "N": 15, "O": 18}


@dataclass
class CorpusConfig:
    """How a pretraining corpus is made; saved beside it as corpus_config.json."""

    source: str
    """SMILES file: one per line or a CSV/TSV column, gzip or not (e.g. MOSES's train.csv.gz)."""
    smiles_col: str | None = None
    """Column of a CSV source (default: one named smiles, any case)."""
    limit: int | None = None
    """Molecules drawn (at random, by the seed) from the source; None: all of them."""
    seed: int = 0
    transforms: dict[str, float] = field(default_factory=lambda: dict(TRANSFORMS))
    """Probability of each transformation (see the module docstring); 0 turns one off."""
    exclude: list[str] = field(default_factory=lambda: sorted(DATASETS))
    """Registered data set names or table paths whose molecules must not be in the corpus."""
    n_jobs: int = 0
    """Processes (0: all cores)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.transforms) - set(TRANSFORMS))
        if unknown:
            raise SmilesformerError(f"unknown corpus transformation(s) {', '.join(unknown)}; known: "
                                    f"{', '.join(TRANSFORMS)}")
        if any(not 0 <= p <= 1 for p in self.transforms.values()):
            raise SmilesformerError(f"transformation probabilities must lie in [0, 1], got {self.transforms}")
        if self.limit is not None and self.limit <= 0:
            raise SmilesformerError(f"limit must be positive, got {self.limit}")


def connectivity_key(mol: Chem.Mol) -> str | None:
    """First block of the InChIKey (the skeleton: no stereo, isotopes or protonation), or None if InChI fails."""
    key = Chem.MolToInchiKey(mol)
    return key.split("-")[0] if key else None


def _parent(mol: Chem.Mol) -> Chem.Mol:
    """The largest component of a multi-component molecule (a salt's organic part)."""
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return max(frags, key=lambda m: m.GetNumHeavyAtoms()) if len(frags) > 1 else mol


def _keys(mol: Chem.Mol) -> set[str]:
    keys = {connectivity_key(mol), connectivity_key(_parent(mol))}
    return {k for k in keys if k}


def _keys_of_smiles(smiles: Sequence[str]) -> set[str]:
    keys: set[str] = set()
    with rdBase.BlockLogs():  # for this block only: RDKit's logging stays as the caller set it
        return _collect_keys(smiles, keys)


def _collect_keys(smiles: Sequence[str], keys: set[str]) -> set[str]:
    for s in smiles:
        mol = mol_from_smiles(s.strip()) if isinstance(s, str) else None
        if mol is not None:
            keys |= _keys(mol)
    return keys


def benchmark_keys(sources: Iterable[str], pool=None) -> tuple[set[str], dict[str, int]]:
    """InChIKey connectivity blocks of every molecule (and its largest component) in ``sources``.

    Args:
        sources: registered data set names (looked up locally: never downloaded here) or table paths.

    Returns:
        (keys, molecules read per source).

    Raises:
        SmilesformerError: a source that cannot be found, so a corpus is never silently left unfiltered.
    """
    keys: set[str] = set()
    counts: dict[str, int] = {}
    for source in sources:
        if source in DATASETS:
            path = locate_dataset(source)
            if path is None:
                raise SmilesformerError(f"benchmark data set {source!r} is not on this machine, so its molecules "
                                        "cannot be removed from the corpus; set $SMILESFORMER_DATA or drop it "
                                        "from exclude")
            smiles = read_table(path)[DATASETS[source].smiles_col].tolist()
        else:
            smiles = list(iter_smiles(source))
        counts[source] = len(smiles)
        blocks = [smiles[i:i + 500] for i in range(0, len(smiles), 500)]
        for block_keys in _map(_keys_of_smiles, blocks, pool):
            keys |= block_keys
    return keys, counts


def _random_stereoisomer(mol: Chem.Mol, rng: random.Random) -> Chem.Mol | None:
    options = StereoEnumerationOptions(onlyUnassigned=True, maxIsomers=8, rand=rng.randrange(2**31), unique=True)
    isomers = list(EnumerateStereoisomers(mol, options=options))
    if not isomers:
        return None
    isomer = isomers[rng.randrange(len(isomers))]
    Chem.AssignStereochemistry(isomer, cleanIt=True, force=True)
    return isomer if Chem.MolToSmiles(isomer) != Chem.MolToSmiles(mol) else None


def _react(mol: Chem.Mol, name: str, rng: random.Random) -> Chem.Mol | None:
    products = _reaction(name).RunReactants((mol,))
    rng.shuffle(products := list(products))
    for (product,) in products:
        try:
            Chem.SanitizeMol(product)
            return product
        except Exception:  # noqa: BLE001 - an unsanitizable product is skipped, the next one tried
            continue
    return None


_reaction_cache: dict[str, AllChem.ChemicalReaction] = {}


def _reaction(name: str) -> AllChem.ChemicalReaction:
    if name not in _reaction_cache:
        _reaction_cache[name] = AllChem.ReactionFromSmarts(_REACTIONS[name])
    return _reaction_cache[name]


def _salt(mol: Chem.Mol, rng: random.Random) -> Chem.Mol | None:
    acids = mol.GetSubstructMatches(_ACID)
    amines = mol.GetSubstructMatches(_AMINE)
    if not acids and not amines:
        return None
    rw = Chem.RWMol(mol)
    if acids and (not amines or rng.random() < 0.5):
        oxygen = rw.GetAtomWithIdx(rng.choice(acids)[2])
        oxygen.SetFormalCharge(-1)
        oxygen.SetNumExplicitHs(0)
        counter_ion = rng.choice(["[Na+]", "[K+]"])
    else:
        nitrogen = rw.GetAtomWithIdx(rng.choice(amines)[0])
        nitrogen.SetNumExplicitHs(nitrogen.GetTotalNumHs() + 1)
        nitrogen.SetNoImplicit(True)
        nitrogen.SetFormalCharge(1)
        counter_ion = rng.choice(["[Cl-]", "[Br-]"])
    try:
        Chem.SanitizeMol(rw)
    except Exception:  # noqa: BLE001 - a charge RDKit rejects: leave the molecule neutral
        return None
    return Chem.CombineMols(rw.GetMol(), Chem.MolFromSmiles(counter_ion))


def _isotope(mol: Chem.Mol, rng: random.Random) -> Chem.Mol | None:
    atoms = [a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() in _ISOTOPES]
    if not atoms:
        return None
    mol = Chem.Mol(mol)
    atom = mol.GetAtomWithIdx(rng.choice(atoms))
    atom.SetIsotope(_ISOTOPES[atom.GetSymbol()])
    return mol


def transform_molecule(mol: Chem.Mol, transforms: dict[str, float], rng: random.Random) -> tuple[str, list[str]]:
    """Rewrite one molecule with the transformations the draw picks; returns (SMILES, names applied)."""
    applied = []
    for name in ("iodo", "boronic", "phosphate", "salt", "isotope", "stereo"):
        if rng.random() >= transforms.get(name, 0):
            continue
        if name in _REACTIONS:
            new = _react(mol, name, rng)
        elif name == "salt":
            new = _salt(mol, rng)
        elif name == "isotope":
            new = _isotope(mol, rng)
        else:
            new = _random_stereoisomer(mol, rng)
        if new is not None:
            mol = new
            applied.append(name)
    kekule = rng.random() < transforms.get("kekule", 0)
    randomized = rng.random() < transforms.get("random", 0)
    if kekule:
        mol = Chem.Mol(mol)
        Chem.Kekulize(mol, clearAromaticFlags=True)
        applied.append("kekule")
    if randomized:
        applied.append("random")
    if randomized:  # RDKit's own generator, seeded from ours, so a corpus is the same on every run
        smiles = Chem.MolToRandomSmilesVect(mol, 1, randomSeed=rng.randrange(2**31), kekuleSmiles=kekule)[0]
    else:
        smiles = Chem.MolToSmiles(mol, kekuleSmiles=kekule)
    return smiles, applied


_SKELETON_CHANGES = {"iodo", "boronic", "phosphate", "salt"}  # the others keep the InChIKey's first block


def _transform_block(args: tuple[int, list[str], dict[str, float], int]) -> list[tuple[str, list[str], set[str]]]:
    """Transform a block of molecules; each comes back with the skeleton keys of what it was and what it is,
    so the parent, which holds the benchmark keys, decides what to drop."""
    with rdBase.BlockLogs():  # for this block only: RDKit's logging stays as the caller set it
        return _transform_each(args)


def _transform_each(args: tuple[int, list[str], dict[str, float], int]) -> list[tuple[str, list[str], set[str]]]:
    start, smiles, transforms, seed = args
    out = []
    for offset, text in enumerate(smiles):
        rng = random.Random(seed * 1_000_003 + start + offset)  # each molecule's draw depends on nothing else
        mol = mol_from_smiles(text)
        if mol is None:
            out.append(("", ["invalid"], set()))
            continue
        keys = _keys(mol)
        try:
            new_smiles, applied = transform_molecule(mol, transforms, rng)
            new = mol_from_smiles(new_smiles)
        except Exception:  # noqa: BLE001 - RDKit can fail on an odd molecule: keep it as it was
            new = None
        if new is None:  # a transformation RDKit cannot read back: keep the original
            new_smiles, applied = text, ["transform_failed"]
        elif _SKELETON_CHANGES & set(applied):
            keys |= _keys(new)
        out.append((new_smiles, applied, keys))
    return out


def _map(fn, items: list, pool):
    return pool.imap(fn, items) if pool is not None else map(fn, items)


def build_corpus(config: CorpusConfig, out: str | Path) -> dict:
    """Write the transformed, benchmark-free corpus to ``out`` (one SMILES per line, gzip if it ends in .gz).

    Writes ``<out>.json`` beside it: the settings, counts per transformation, molecules removed as benchmark
    molecules, and the benchmark sets checked. Returns that report.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = config.n_jobs or os.cpu_count() or 1
    started = time.perf_counter()
    smiles = [s.strip() for s in iter_smiles(config.source, config.smiles_col)]
    n_source = len(smiles)
    if config.limit and config.limit < len(smiles):
        smiles = random.Random(config.seed).sample(smiles, config.limit)
    block = 1000
    tasks = [(i, smiles[i:i + block], config.transforms, config.seed) for i in range(0, len(smiles), block)]
    totals: Counter = Counter()
    opener = gzip.open if out.suffix == ".gz" else open
    tmp = out.with_name(out.name + ".partial")
    # One pool for the whole build (spawn, not fork: the parent may run torch threads); a worker takes
    # seconds to import, too slow to start per step.
    pool = multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else None
    try:
        keys, checked = benchmark_keys(config.exclude, pool)
        logger.info("%d benchmark skeletons from %s", len(keys), ", ".join(checked))
        with opener(tmp, "wt") as fh:
            for results in _map(_transform_block, tasks, pool):
                for new_smiles, applied, mol_keys in results:
                    if "invalid" in applied:
                        totals["invalid"] += 1
                    elif mol_keys & keys:
                        totals["removed_benchmark"] += 1
                    else:
                        fh.write(new_smiles + "\n")
                        totals.update(applied)
                        totals["kept"] += 1
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    os.replace(tmp, out)  # a killed run leaves only the .partial file, never a corpus that looks complete
    report = {
        "config": {**asdict(config), "source": Path(config.source).name},  # the file's name, not where it sat
        "source_molecules": n_source,
        "drawn": len(smiles),
        "kept": totals["kept"],
        "removed_benchmark": totals["removed_benchmark"],
        "invalid": totals["invalid"],
        "transform_failed": totals["transform_failed"],
        "applied": {name: totals[name] for name in TRANSFORMS},
        "benchmark_sets": checked,
        "benchmark_skeletons": len(keys),
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(str(out) + ".json").write_text(json.dumps(report, indent=2))
    return report
