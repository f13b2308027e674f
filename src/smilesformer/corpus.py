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
InChI takes about 0.3 ms a molecule, so each molecule is first checked against the benchmark sets' element graphs
(RDKit's ``MolHash`` ElementGraph of the molecule without stereo or isotopes: its atoms and bonds, no bond orders,
charges or hydrogens, about 0.1 ms): two molecules with the same InChIKey skeleton have the same element graph,
so only the few molecules whose graph matches are given an InChIKey, and exactly the same molecules go.

Every step works on one RDKit parse of each molecule, in worker processes: the skeleton check, the
transformations, the SMILES written and, when asked (``descriptors``), the RDKit descriptors pretraining's MTR
regresses, written beside the corpus (``<out>.descriptors.npy``) so ``smilesformer pretrain`` reuses them.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem, rdMolHash

from .data import (
    DATASETS,
    MoleculeLimits,
    SmilesformerError,
    cache_dir,
    check_output,
    file_sha256,
    iter_smiles,
    locate_dataset,
    mol_from_smiles,
    read_table,
)
from .rdkit_descriptors import DESCRIPTOR_SETS, descriptor_calculator, descriptor_names

__all__ = ["TRANSFORMS", "CorpusConfig", "benchmark_keys", "connectivity_key", "element_graph_key",
           "transform_molecule", "build_corpus", "DESCRIPTORS_SUFFIX", "SHARDS_SUFFIX", "MANIFEST", "ShardWriter"]

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
_STEREO_OR_ISOTOPE = re.compile(r"[@/\\]|\[\d")  # how a SMILES writes stereo (@, /, \) and isotopes ([13C])
DESCRIPTORS_SUFFIX = ".descriptors.npy"  # beside the corpus: float32 (molecules, descriptors), rows in corpus order


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
    descriptors: str = "none"
    """RDKit descriptors computed on each molecule as written, for MTR pretraining (``mtr``, ``fast``, ``rdkit``),
    saved beside the corpus as ``<out>.descriptors.npy``; "none": no file."""
    shard_size: int = 0
    """If > 0, also write the corpus as it is made, in shards of this many molecules (``<out>.shards/``: SMILES,
    token ids of the ``smiles`` tokenizer, the descriptors), each listed in ``manifest.json`` once complete, so
    ``smilesformer pretrain`` can train on the first shards while the others are prepared."""
    max_length: int = 128
    """Shards: tokens kept per molecule, special tokens included (as ``pretrain --max-length``)."""

    def __post_init__(self) -> None:
        if self.descriptors not in DESCRIPTOR_SETS:
            raise SmilesformerError(f"unknown descriptor set {self.descriptors!r}; choose one of "
                                    f"{', '.join(DESCRIPTOR_SETS)}")
        unknown = sorted(set(self.transforms) - set(TRANSFORMS))
        if unknown:
            raise SmilesformerError(f"unknown corpus transformation(s) {', '.join(unknown)}; known: "
                                    f"{', '.join(TRANSFORMS)}")
        if any(not 0 <= p <= 1 for p in self.transforms.values()):
            raise SmilesformerError(f"transformation probabilities must lie in [0, 1], got {self.transforms}")
        if self.limit is not None and self.limit <= 0:
            raise SmilesformerError(f"limit must be positive, got {self.limit}")
        if self.shard_size < 0 or self.max_length < 3:
            raise SmilesformerError(f"shard_size must be >= 0 and max_length >= 3, got {self.shard_size}, "
                                    f"{self.max_length}")


def connectivity_key(mol: Chem.Mol) -> str | None:
    """First block of the InChIKey (the skeleton: no stereo, isotopes or protonation), or None if InChI fails."""
    key = Chem.MolToInchiKey(mol)
    return key.split("-")[0] if key else None


def element_graph_key(mol: Chem.Mol, clean: bool = True) -> str:
    """The molecule's element graph (RDKit ``MolHash`` ElementGraph of the molecule without stereo or isotopes):
    what the InChIKey skeleton determines, at a third of its cost. ``clean=False`` skips removing stereo, isotopes
    and isotopic hydrogens (a copy and a Python loop over the atoms) for a molecule known to have none."""
    if clean:
        mol = Chem.Mol(mol)
        Chem.RemoveStereochemistry(mol)
        for atom in mol.GetAtoms():
            atom.SetIsotope(0)
        mol = Chem.RemoveAllHs(mol, sanitize=False)  # a deuterium, once plain H, is no atom of the skeleton
    return rdMolHash.MolHash(mol, rdMolHash.HashFunction.ElementGraph)  # hashes a copy: mol is left as it was


def _parent(mol: Chem.Mol) -> Chem.Mol:
    """The largest component of a multi-component molecule (a salt's organic part)."""
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return max(frags, key=lambda m: m.GetNumHeavyAtoms()) if len(frags) > 1 else mol


def _keys(mol: Chem.Mol) -> set[str]:
    """InChIKey skeletons of the molecule and of its largest component."""
    parent = _parent(mol)
    keys = {connectivity_key(mol), connectivity_key(parent) if parent is not mol else None}
    return {k for k in keys if k}


def _graphs(mol: Chem.Mol, clean: bool = True, single: bool = False) -> set[str]:
    """Element graphs of the molecule and of its largest component (``_keys``' cheap stand-in); ``single``: the
    molecule is known to be one component."""
    parent = mol if single else _parent(mol)
    graphs = {element_graph_key(mol, clean)}
    if parent is not mol:
        graphs.add(element_graph_key(parent, clean))
    return graphs


def _keys_of_smiles(smiles: Sequence[str]) -> tuple[set[str], set[str]]:
    with rdBase.BlockLogs():  # for this block only: RDKit's logging stays as the caller set it
        keys: set[str] = set()
        graphs: set[str] = set()
        for s in smiles:
            mol = mol_from_smiles(s.strip()) if isinstance(s, str) else None
            if mol is not None:
                keys |= _keys(mol)
                graphs |= _graphs(mol)
        return keys, graphs


def benchmark_keys(sources: Iterable[str], pool=None) -> tuple[set[str], dict[str, int]]:
    """InChIKey connectivity blocks of every molecule (and its largest component) in ``sources``.

    Args:
        sources: registered data set names (looked up locally: never downloaded here) or table paths.

    Returns:
        (keys, molecules read per source).

    Raises:
        SmilesformerError: a source that cannot be found, so a corpus is never silently left unfiltered.
    """
    keys, _, counts = _benchmark_skeletons(sources, pool)
    return keys, counts


def _benchmark_skeletons(sources: Iterable[str], pool=None) -> tuple[set[str], set[str], dict[str, int]]:
    """``benchmark_keys`` and the element graphs of the same molecules: (InChIKey skeletons, graphs, counts)."""
    keys: set[str] = set()
    graphs: set[str] = set()
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
            path = Path(source)
            smiles = list(iter_smiles(source))
        counts[source] = len(smiles)
        # Kept per file, RDKit version and key kind in the user cache: 20k benchmark molecules take 20-35 s of
        # InChI on two cores, and every corpus build (and test) asks for the same ones.
        cache = cache_dir() / "skeletons" / f"v1-{file_sha256(path)[:32]}-rdkit{rdBase.rdkitVersion}.json"
        if cache.is_file():
            saved = json.loads(cache.read_text())
            keys.update(saved["inchikey"])
            graphs.update(saved["element_graph"])
            continue
        found_keys: set[str] = set()
        found_graphs: set[str] = set()
        blocks = [smiles[i:i + 200] for i in range(0, len(smiles), 200)]
        for block_keys, block_graphs in _map(_keys_of_smiles, blocks, pool):
            found_keys |= block_keys
            found_graphs |= block_graphs
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"inchikey": sorted(found_keys), "element_graph": sorted(found_graphs)}))
        os.replace(tmp, cache)  # whole or not at all, for builds running side by side
        keys |= found_keys
        graphs |= found_graphs
    return keys, graphs, counts


def _random_stereoisomer(mol: Chem.Mol, rng: random.Random) -> Chem.Mol | None:
    """One stereoisomer, each unassigned stereocentre and stereo double bond given a label drawn at random.

    Written on RDKit's ``FindPotentialStereo`` (C++; it lists true stereo elements only, symmetric centres left out)
    rather than ``EnumerateStereoisomers``, whose Python loops over atoms cost 0.5 ms a molecule even for one
    isomer."""
    elements = [e for e in Chem.FindPotentialStereo(mol) if e.specified == Chem.StereoSpecified.Unspecified]
    if not elements:
        return None
    isomer = Chem.Mol(mol)
    for element in elements:
        if element.type == Chem.StereoType.Atom_Tetrahedral:
            isomer.GetAtomWithIdx(element.centeredOn).SetChiralTag(rng.choice(_TETRAHEDRAL))
        elif element.type == Chem.StereoType.Bond_Double:
            atoms = list(element.controllingAtoms)  # two slots per end, NOATOM where an end has one neighbour
            ends = [next((a for a in atoms[k:k + 2] if a != _NO_ATOM), None) for k in (0, 2)]
            if None in ends:
                continue
            bond = isomer.GetBondWithIdx(element.centeredOn)
            bond.SetStereoAtoms(*ends)
            bond.SetStereo(rng.choice(_DOUBLE))
    return isomer


_NO_ATOM = 2**32 - 1  # RDKit's StereoInfo::NOATOM, an empty slot of controllingAtoms
_TETRAHEDRAL = (Chem.ChiralType.CHI_TETRAHEDRAL_CW, Chem.ChiralType.CHI_TETRAHEDRAL_CCW)
_DOUBLE = (Chem.BondStereo.STEREOCIS, Chem.BondStereo.STEREOTRANS)


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
    salt = Chem.CombineMols(rw.GetMol(), Chem.MolFromSmiles(counter_ion))
    Chem.SanitizeMol(salt)  # ring information and valences, as the SMILES would give on reading
    return salt


def _isotope(mol: Chem.Mol, rng: random.Random) -> Chem.Mol | None:
    atoms = [a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() in _ISOTOPES]
    if not atoms:
        return None
    mol = Chem.Mol(mol)
    atom = mol.GetAtomWithIdx(rng.choice(atoms))
    atom.SetIsotope(_ISOTOPES[atom.GetSymbol()])
    mol.ClearComputedProps()  # a heavy isotope can make a neighbour a stereocentre: perceive stereo afresh ...
    Chem.SanitizeMol(mol)  # ... and rings and aromaticity, which that cleared too
    return mol


def transform_molecule(mol: Chem.Mol, transforms: dict[str, float], rng: random.Random) -> tuple[str, list[str]]:
    """Rewrite one molecule with the transformations the draw picks; returns (SMILES, names applied)."""
    smiles, applied, _ = _transform(mol, transforms, rng)
    return smiles, applied


def _transform(mol: Chem.Mol, transforms: dict[str, float], rng: random.Random) -> tuple[str, list[str], Chem.Mol]:
    """``transform_molecule``, also returning the molecule written (aromatic, before any Kekulé spelling), on which
    the descriptors are computed."""
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
    written = mol
    if kekule:
        written = Chem.Mol(mol)
        Chem.Kekulize(written, clearAromaticFlags=True)
        applied.append("kekule")
    if randomized:
        applied.append("random")
    if randomized:  # RDKit's own generator, seeded from ours, so a corpus is the same on every run
        smiles = Chem.MolToRandomSmilesVect(written, 1, randomSeed=rng.randrange(2**31), kekuleSmiles=kekule)[0]
    else:
        smiles = Chem.MolToSmiles(written, kekuleSmiles=kekule)
    return smiles, applied, mol


_SKELETON_CHANGES = {"iodo", "boronic", "phosphate", "salt"}  # the others keep the InChIKey's first block


@functools.cache
def _token_encoder(max_length: int):
    """The ``smiles`` tokenizer's Rust backend, truncating as ``pretrain`` does (one per worker process)."""
    from .tokenization import build_smiles_tokenizer

    backend = build_smiles_tokenizer(model_max_length=max_length).backend_tokenizer
    backend.enable_truncation(max_length)
    backend.no_padding()
    return backend


def _prepare_block(args: tuple) -> tuple[list, np.ndarray, list[np.ndarray] | None]:
    """Parse, check, transform and describe a block of molecules, each parsed once (see the module docstring).

    Returns each molecule's (SMILES written, transformations applied, element graphs of what it was and what it
    is) and its descriptors as float32 (block, descriptors); the parent, which holds the benchmark skeletons,
    decides what to drop."""
    with rdBase.BlockLogs():  # for this block only: RDKit's logging stays as the caller set it
        return _prepare_each(args)


def _prepare_each(args: tuple) -> tuple[list, np.ndarray, list[np.ndarray] | None]:
    start, smiles, transforms, seed, names, token_length = (*args, 0)[:6]
    calculate = descriptor_calculator(names) if names else None
    values = np.full((len(smiles), len(names)), np.nan)
    max_atoms = MoleculeLimits.current().max_atoms
    out = []
    # One generator per block (seeding one per molecule took 35 us, a tenth of the molecule's work): a molecule's
    # draw depends on the seed and its place in the corpus, so a corpus is the same on every run.
    rng = random.Random(seed * 1_000_003 + start)
    for offset, text in enumerate(smiles):
        mol = Chem.MolFromSmiles(text)
        if mol is None or mol.GetNumAtoms() > max_atoms:
            out.append(("", ["invalid"], set()))
            continue
        clean = bool(_STEREO_OR_ISOTOPE.search(text))
        graphs = _graphs(mol, clean, single="." not in text)
        try:
            new_smiles, applied, new = _transform(mol, transforms, rng)
        except Exception:  # noqa: BLE001 - RDKit can fail on an odd molecule: keep it as it was
            new_smiles, applied, new = text, ["transform_failed"], mol
        if _SKELETON_CHANGES & set(applied):
            graphs |= _graphs(new, clean)  # isotopes and stereo come after the skeleton changes, never from them
        if calculate is not None:
            calculate(new, values[offset])
        out.append((new_smiles, applied, graphs))
    values[~np.isfinite(values)] = np.nan
    ids = None
    if token_length:  # the token ids of the SMILES written, for shards pretraining reads while the rest is made
        encodings = _token_encoder(token_length).encode_batch([row[0] for row in out], add_special_tokens=True)
        ids = [np.asarray(e.ids, dtype=np.uint16) for e in encodings]
    return out, np.clip(values, -1e30, 1e30).astype(np.float32), ids


def _map(fn, items, pool):
    return pool.imap(fn, items) if pool is not None else map(fn, items)


def _confirmed(source: str, written: str, keys: set[str]) -> bool:
    """Whether a molecule whose element graph matched a benchmark molecule's has its InChIKey skeleton too."""
    with rdBase.BlockLogs():
        found: set[str] = set()
        for text in (source, written):
            mol = mol_from_smiles(text)
            if mol is not None:
                found |= _keys(mol)
    return bool(found & keys)


def build_corpus(config: CorpusConfig, out: str | Path) -> dict:
    """Write the transformed, benchmark-free corpus to ``out`` (one SMILES per line, gzip if it ends in .gz).

    Writes ``<out>.json`` beside it: the settings, counts per transformation, molecules removed as benchmark
    molecules, duplicates dropped, the benchmark sets checked, the corpus file's sha256 and the seconds each stage
    took; with ``config.descriptors``, also ``<out>.descriptors.npy``. Returns that report.
    """
    out = check_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = config.n_jobs or os.cpu_count() or 1
    started = time.perf_counter()
    smiles = [s.strip() for s in iter_smiles(config.source, config.smiles_col)]
    n_source = len(smiles)
    if config.limit and config.limit < len(smiles):
        smiles = random.Random(config.seed).sample(smiles, config.limit)
    drawn = len(smiles)
    smiles = list(dict.fromkeys(smiles))  # a source line repeated is drawn once
    seconds = {"read": time.perf_counter() - started}
    names = tuple(descriptor_names(config.descriptors)) if config.descriptors != "none" else ()
    block = 500
    token_length = config.max_length if config.shard_size else 0
    tasks = ((i, smiles[i:i + block], config.transforms, config.seed, names, token_length)
             for i in range(0, len(smiles), block))
    shards = ShardWriter(Path(str(out) + SHARDS_SUFFIX), config, names, len(smiles)) if config.shard_size else None
    totals: Counter = Counter(duplicates=drawn - len(smiles))
    opener = gzip.open if out.suffix == ".gz" else open
    tmp = out.with_name(out.name + ".partial")
    raw_values = out.with_name(out.name + ".descriptors.partial")
    seen: set[int] = set()  # hashes of the SMILES written: a molecule drawn twice, or two that became one
    # One pool for the whole build (spawn, not fork: the parent may run torch threads); a worker takes
    # seconds to import, too slow to start per step.
    pool = multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else None
    try:
        stage = time.perf_counter()
        keys, graphs, checked = _benchmark_skeletons(config.exclude, pool)
        seconds["benchmark_skeletons"] = time.perf_counter() - stage
        logger.info("%d benchmark skeletons from %s", len(keys), ", ".join(checked))
        stage = time.perf_counter()
        # compresslevel 1: level 9 (gzip's default) made the writer, one process, the bottleneck of the build
        with opener(tmp, "wt", **({"compresslevel": 1} if opener is gzip.open else {})) as fh, \
                open(raw_values, "wb") as values_out:
            for i, (results, values, ids) in enumerate(_map(_prepare_block, tasks, pool)):
                keep = np.zeros(len(results), dtype=bool)
                for j, (new_smiles, applied, mol_graphs) in enumerate(results):
                    if "invalid" in applied:
                        totals["invalid"] += 1
                    elif mol_graphs & graphs and _confirmed(smiles[i * block + j], new_smiles, keys):
                        totals["removed_benchmark"] += 1
                    elif hash(new_smiles) in seen:
                        totals["duplicates"] += 1
                    else:
                        seen.add(hash(new_smiles))
                        fh.write(new_smiles + "\n")
                        totals.update(applied)
                        totals["kept"] += 1
                        keep[j] = True
                        totals["graph_matches"] += bool(mol_graphs & graphs)
                        if shards is not None:
                            shards.add(new_smiles, ids[j], values[j])
                if names:
                    values_out.write(values[keep].tobytes())
            if shards is not None:
                shards.close()
        seconds["molecules"] = time.perf_counter() - stage
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if names:
        _save_rows(raw_values, Path(str(out) + DESCRIPTORS_SUFFIX), totals["kept"], len(names))
    os.replace(tmp, out)  # a killed run leaves only the .partial file, never a corpus that looks complete
    report = {
        "config": {**asdict(config), "source": Path(config.source).name},  # the file's name, not where it sat
        "source_molecules": n_source,
        "drawn": drawn,
        "kept": totals["kept"],
        "removed_benchmark": totals["removed_benchmark"],
        "invalid": totals["invalid"],
        "duplicates": totals["duplicates"],
        "transform_failed": totals["transform_failed"],
        "applied": {name: totals[name] for name in TRANSFORMS},
        "benchmark_sets": checked,
        "benchmark_skeletons": len(keys),
        "element_graph_matches": totals["graph_matches"] + totals["removed_benchmark"],
        "descriptors": {"set": config.descriptors, "names": list(names)} if names else None,
        "sha256": file_sha256(out),
        "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(str(out) + ".json").write_text(json.dumps(report, indent=2))
    return report


SHARDS_SUFFIX = ".shards"  # beside the corpus: the folder of its shards and their manifest.json
MANIFEST = "manifest.json"


class ShardWriter:
    """Writes the corpus as it is made, a shard at a time (SMILES, token ids, descriptors), and lists each in
    ``manifest.json`` once its files are complete, so a reader never sees half a shard."""

    def __init__(self, folder: Path, config: CorpusConfig, names: Sequence[str], expected: int):
        self.folder, self.size = folder, config.shard_size
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.manifest = {"tokenizer": "smiles", "max_length": config.max_length,
                         "descriptors": {"set": config.descriptors, "names": list(names)} if names else None,
                         "expected": expected, "shards": [], "complete": False}
        self._write_manifest()
        self._reset()

    def _reset(self) -> None:
        self.smiles: list[str] = []
        self.ids: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def add(self, smiles: str, ids: np.ndarray, values: np.ndarray) -> None:
        self.smiles.append(smiles)
        self.ids.append(ids)
        self.values.append(values)
        if len(self.smiles) == self.size:
            self._flush()

    def close(self) -> None:
        if self.smiles:
            self._flush()
        self.manifest["complete"] = True
        self._write_manifest()

    def _flush(self) -> None:
        name = f"shard-{len(self.manifest['shards']):05d}"
        lengths = np.fromiter((len(i) for i in self.ids), np.int64, len(self.ids))
        arrays = {"ids": np.concatenate(self.ids) if self.ids else np.empty(0, np.uint16),
                  "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)}
        if self.manifest["descriptors"]:
            arrays["descriptors"] = np.stack(self.values).astype(np.float32)
        for kind, array in arrays.items():
            tmp = self.folder / f"{name}.{kind}.tmp.npy"
            np.save(tmp, array)
            os.replace(tmp, self.folder / f"{name}.{kind}.npy")
        (self.folder / f"{name}.smi").write_text("\n".join(self.smiles) + "\n")
        self.manifest["shards"].append({"name": name, "molecules": len(self.smiles)})
        self._write_manifest()
        self._reset()

    def _write_manifest(self) -> None:
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2))
        os.replace(tmp, self.folder / MANIFEST)


def _save_rows(raw: Path, path: Path, rows: int, columns: int) -> None:
    """Raw float32 rows, appended as blocks came in, as a ``.npy`` array (one pass, in slices)."""
    source = np.memmap(raw, dtype=np.float32, mode="r", shape=(rows, columns)) if rows else np.empty((0, columns))
    target = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, columns))
    for start in range(0, rows, 200_000):
        target[start:start + 200_000] = source[start:start + 200_000]
    target.flush()
    del source, target
    os.remove(raw)
