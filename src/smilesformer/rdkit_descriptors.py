"""RDKit's 2D descriptors of molecules: the sets, their computation, a cache per SMILES and a pool of worker
processes. Nothing here imports PyTorch or transformers.

The descriptor head (``descriptors``), the trees, MTR pretraining and the corpus all read descriptors from here.
It is kept apart from the head so that a process that only computes descriptors (a pool worker, the corpus's
workers, the CLI before it loads a model) starts in a fraction of a second: a spawned worker imports this module,
RDKit and NumPy, not PyTorch (about 5 s on a small machine). The CLI uses that to compute a fine-tuning set's
descriptors on a free core while the main process is still importing PyTorch.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from .data import MoleculeLimits, SmilesformerError, parse_smiles

__all__ = [
    "CACHE_MOLECULES",
    "DESCRIPTOR_SETS",
    "PARALLEL_MIN",
    "WORKERS_ENV",
    "allow_process_pool",
    "clear_descriptor_cache",
    "compute_descriptors",
    "descriptor_block",
    "descriptor_calculator",
    "descriptor_names",
    "descriptor_workers",
    "prefetch_descriptors",
    "shutdown_pool",
]

DESCRIPTOR_SETS = ("none", "rdkit", "fast", "mtr")
_FLOAT32_SAFE = 1e30


# The slow part of RDKit's 2D set, left out of "fast". Measured one descriptor at a time on 200 corpus molecules
# (benchmarks/bench_descriptor_cost.py): these families take 0.1-1.9 ms per molecule each (qed, BCUT2D's
# eigenvalues, Ipc, BertzCT, the E-state and Chi/Kappa families); the other ~150 together take about 2 ms.
SLOW_PREFIXES = ("BCUT2D_", "Chi", "Kappa", "EState_VSA", "VSA_EState", "FpDensityMorgan")
SLOW_NAMES = frozenset({"qed", "Ipc", "AvgIpc", "BertzCT", "SPS", "BalabanJ", "Phi", "MaxEStateIndex",
                        "MinEStateIndex", "MaxAbsEStateIndex", "MinAbsEStateIndex", "NumValenceElectrons",
                        "NumRadicalElectrons"})


# "mtr": what pretraining regresses (multi-task regression, ChemBERTa-2), chosen by value per millisecond
# (benchmarks/bench_descriptor_value.py --sets; docs/foundation.md): RDKit's C++ calculators only, each vector family
# (PEOE VSA bins, MQNs) computed by one call. About 0.45 ms per molecule against the fast set's 1.7-2.1: Crippen logP
# and MR (the most useful pair for solubility and lipophilicity) take 0.26 of it; the SlogP and SMR VSA bins
# (another 0.2) and NumHAcceptors (0.04; the MQNs count acceptors) are left out.
_MTR_SINGLES = ("MolLogP", "MolMR", "TPSA", "LabuteASA", "MolWt", "ExactMolWt", "HeavyAtomCount", "NumHeteroatoms",
                "NumHDonors", "RingCount", "NumAromaticRings", "NumAliphaticRings",
                "NumSaturatedRings", "NumAromaticHeterocycles", "NumAromaticCarbocycles", "NumAliphaticHeterocycles",
                "NumSaturatedHeterocycles", "NumHeterocycles", "FractionCSP3", "NumAmideBonds", "NumAtomStereoCenters",
                "NumSpiroAtoms", "NumBridgeheadAtoms", "Chi0v", "Chi1v", "Chi0n", "Chi1n", "HallKierAlpha", "Kappa1")
MQN_NAMES = tuple(f"MQN{i}" for i in range(1, 43))  # the 42 molecular quantum numbers (Nguyen et al. 2009)


@functools.cache
def _vector_families() -> dict[str, tuple[object, tuple[str, ...]]]:
    """Descriptors RDKit computes as one vector: (function, the names of its entries in order)."""
    from rdkit.Chem import rdMolDescriptors as rd

    return {"Crippen": (rd.CalcCrippenDescriptors, ("MolLogP", "MolMR")),  # one call gives both
            "PEOE_VSA": (rd.PEOE_VSA_, tuple(f"PEOE_VSA{i}" for i in range(1, 15))),
            "SlogP_VSA": (rd.SlogP_VSA_, tuple(f"SlogP_VSA{i}" for i in range(1, 13))),
            "SMR_VSA": (rd.SMR_VSA_, tuple(f"SMR_VSA{i}" for i in range(1, 11))),
            "MQN": (rd.MQNs_, MQN_NAMES)}


def descriptor_names(kind: str = "rdkit") -> list[str]:
    """Names of the descriptors in a set, in the order the model reads them.

    "rdkit": RDKit's whole 2D registry (217 in RDKit 2026.09); "fast": the same less its slow families
    (``SLOW_PREFIXES``, ``SLOW_NAMES``), about 150 descriptors at 6-7x the speed; "mtr": the pretraining targets,
    RDKit's cheap C++ calculators, the PEOE VSA bins and the MQN counts (85, about 0.45 ms per molecule).
    """
    if kind not in DESCRIPTOR_SETS[1:]:
        raise SmilesformerError(f"unknown descriptor set {kind!r}; choose one of {', '.join(DESCRIPTOR_SETS[1:])}")
    from rdkit.Chem import Descriptors

    if kind == "mtr":
        families = _vector_families()
        return [*_MTR_SINGLES, *(name for family in ("PEOE_VSA", "MQN") for name in families[family][1])]
    names = [name for name, _ in Descriptors._descList]  # RDKit's own registry of 2D descriptors
    if kind == "fast":
        names = [n for n in names if n not in SLOW_NAMES and not n.startswith(SLOW_PREFIXES)]
    return names


def compute_descriptors(smiles: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """RDKit descriptors of each SMILES, as float64 (n, len(names)).

    A SMILES RDKit cannot parse, or a descriptor it cannot compute or that is infinite, gives NaN (scaled to
    0, the training median, by the model). Values are clipped to +-1e30 so they survive float32. Results are
    kept per SMILES (``CACHE_MOLECULES`` of them, see ``_Cache``): the members of an ensemble, test-time
    spellings, the trees and the valid and test passes ask for the same molecules again, and RDKit takes a
    millisecond or more per molecule. A molecule ``prefetch_descriptors`` started is waited for, not redone.

    Raises:
        SmilesformerError: a name this RDKit does not know (a model saved with a newer RDKit, say).
    """
    return _CACHE.get(list(smiles), _known(tuple(names)))


def prefetch_descriptors(smiles: Sequence[str], names: Sequence[str], workers: int | None = None) -> None:
    """Start computing these molecules' descriptors in the process pool and return at once; a later
    ``compute_descriptors`` collects them. Streamed prediction calls it with the next chunk while the model runs
    on this one, so RDKit and the forward pass overlap; the CLI calls it with a fine-tuning set while PyTorch is
    imported. Does nothing without a pool (``descriptor_workers`` 1).

    ``workers``: the pool's processes (default ``descriptor_workers()``), for a caller that keeps a core busy itself.
    """
    if descriptor_workers() > 1:
        _CACHE.prefetch(list(smiles), _known(tuple(names)), workers or descriptor_workers())


def clear_descriptor_cache() -> None:
    """Forget every kept and pending result (benchmarks time a computation afresh with it)."""
    _CACHE.clear()


@functools.lru_cache(maxsize=16)
def _known(names: tuple[str, ...]) -> tuple[str, ...]:
    from rdkit.Chem import Descriptors

    known = set(dict(Descriptors._descList)) | set(MQN_NAMES)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SmilesformerError(f"this RDKit has no descriptor(s) {', '.join(unknown[:5])}: the model was trained "
                                "with another RDKit version; install that version to use it")
    return names


CACHE_MOLECULES = 25_000
"""Molecules whose descriptors are kept per descriptor list: a streamed chunk (10,000) and the next one."""
_BLOCKS_PER_WORKER = 4  # a few blocks per worker evens out slow molecules


class _Cache:
    """Descriptors per (descriptor list, SMILES as given), least recently used dropped first, and the blocks the
    pool is still computing.

    Written here because ``functools.lru_cache`` keys whole argument lists: the rows an ensemble, the trees or the
    next chunk's prefetch ask for come in different lists. The key is the SMILES as given, not a canonical one:
    canonicalizing costs a parse and a write per molecule in the calling process, where the model waits, and
    the repeats worth catching are spelled alike (test-time spellings are looked up by the SMILES they came
    from, see ``Augmented``). Only the calling thread touches it (futures are
    collected when a row is asked for), so it needs no lock.
    """

    def __init__(self, size: int):
        self.size = size
        self.rows: dict[tuple[str, ...], OrderedDict[str, np.ndarray]] = {}
        self.pending: dict[tuple[str, ...], dict[str, tuple[Future, int]]] = {}

    def clear(self) -> None:
        for waiting in self.pending.values():
            for future, _ in waiting.values():
                future.cancel()
        self.rows.clear()
        self.pending.clear()

    def get(self, smiles: list[str], names: tuple[str, ...]) -> np.ndarray:
        rows = self.rows.setdefault(names, OrderedDict())
        waiting = self.pending.setdefault(names, {})
        out = np.empty((len(smiles), len(names)))
        missing: dict[str, list[int]] = {}
        for i, s in enumerate(smiles):
            row = rows.get(s)
            if row is None and s in waiting:
                future, j = waiting.pop(s)
                row = self._keep(rows, s, future.result()[j])
            if row is None:
                missing.setdefault(s, []).append(i)
            else:
                rows.move_to_end(s)
                out[i] = row
        if missing:
            fresh = _compute(tuple(missing), names)
            for (s, positions), row in zip(missing.items(), fresh):
                out[positions] = self._keep(rows, s, row)
        return out

    def prefetch(self, smiles: list[str], names: tuple[str, ...], workers: int) -> None:
        pool = _pool(workers)  # first: starting another pool drops what the old one had pending
        rows, waiting = self.rows.setdefault(names, OrderedDict()), self.pending.setdefault(names, {})
        todo = [s for s in dict.fromkeys(smiles) if s not in rows and s not in waiting]
        if not todo:
            return
        step = -(-len(todo) // (_BLOCKS_PER_WORKER * workers))
        for start in range(0, len(todo), step):
            block = tuple(todo[start:start + step])
            future = pool.submit(descriptor_block, block, names)
            waiting.update((s, (future, j)) for j, s in enumerate(block))

    def _keep(self, rows: OrderedDict[str, np.ndarray], smiles: str, row: np.ndarray) -> np.ndarray:
        rows[smiles] = row
        while len(rows) > self.size:
            rows.popitem(last=False)
        return row


_CACHE = _Cache(CACHE_MOLECULES)


def _compute(smiles: tuple[str, ...], names: tuple[str, ...]) -> np.ndarray:
    workers = descriptor_workers()
    if workers > 1 and len(smiles) >= PARALLEL_MIN:
        step = -(-len(smiles) // (_BLOCKS_PER_WORKER * workers))
        blocks = [smiles[i:i + step] for i in range(0, len(smiles), step)]
        return np.concatenate(list(_pool(workers).map(descriptor_block, blocks, [names] * len(blocks))))
    return descriptor_block(smiles, names)


@functools.cache
def _functions() -> dict:
    """RDKit's 2D descriptor functions by name, each called so that it reuses what RDKit keeps on the molecule.

    RDKit's four E-state index descriptors (MaxEStateIndex, ...) default to ``force=1``: each computes the
    molecule's E-state indices anew, where RDKit's own E-state VSA bins call the same function with
    ``force=False`` and reuse the indices it leaves on the molecule. Called with ``force=False`` too, they
    return the same values and the indices are computed once per molecule (0.8 -> 0.2 ms per molecule for the
    four, measured on AqSolDB). Every molecule is parsed afresh, so nothing kept on one reaches another.
    """
    import inspect

    from rdkit.Chem import Descriptors

    functions = {}
    for name, fn in Descriptors._descList:  # RDKit's own registry
        try:
            force = inspect.signature(fn).parameters.get("force")
        except (TypeError, ValueError):  # a compiled function without a Python signature
            force = None
        functions[name] = functools.partial(fn, force=False) if force is not None and force.default else fn
    return functions


def descriptor_block(smiles: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """``compute_descriptors`` in this process, uncached: for callers that run their own pool (pretraining)."""
    from rdkit import rdBase

    calculate = descriptor_calculator(names)
    out = np.full((len(smiles), len(names)), np.nan)
    limits = MoleculeLimits.current()  # read once, not per molecule
    with rdBase.BlockLogs():  # some descriptors remove hydrogens again and warn ("not removing hydrogen atom
        for i, text in enumerate(smiles):  # without neighbors") about molecules already validated
            mol, _ = parse_smiles(text, limits)
            if mol is not None:
                calculate(mol, out[i])
    out[~np.isfinite(out)] = np.nan
    return np.clip(out, -_FLOAT32_SAFE, _FLOAT32_SAFE)


def descriptor_calculator(names: Sequence[str]):
    """A function ``(mol, row)`` that writes the descriptors ``names`` of a parsed molecule into ``row`` (NaN where
    one fails); a vector family (VSA bins, MQNs) named in full is computed by one call, not once per entry.

    Values are written as RDKit returns them: the caller masks non-finite ones and clips (``descriptor_block``).
    """
    functions = _functions()
    position = {name: j for j, name in enumerate(names)}
    vectors = []  # (function, [(index in the vector, column)]) for families computed whole
    singles = []
    covered: set[str] = set()
    for function, members in _vector_families().values():
        columns = [(k, position[n]) for k, n in enumerate(members) if n in position]
        if len(columns) > 1 or any(n not in functions for n in members if n in position):
            vectors.append((function, columns))
            covered.update(members)
    singles = [(functions[n], j) for n, j in position.items() if n not in covered]

    def calculate(mol, row: np.ndarray) -> None:
        for function, columns in vectors:
            try:
                values = function(mol)
            except Exception:  # noqa: BLE001 - a family that fails on one molecule is NaN, not fatal
                continue
            for k, j in columns:
                row[j] = values[k]
        for function, j in singles:
            try:
                row[j] = function(mol)
            except Exception:  # noqa: BLE001 - a descriptor that fails on one molecule is NaN, not fatal
                pass

    return calculate


PARALLEL_MIN = 2000
"""Inputs at least this long may be computed by a pool of processes (RDKit's descriptors are serial Python)."""
WORKERS_ENV = "SMILESFORMER_DESCRIPTOR_WORKERS"
_pool_allowed = False


def allow_process_pool() -> None:
    """Let long inputs use a pool of one process per CPU. The CLI calls this; a library user calls it (or sets
    $SMILESFORMER_DESCRIPTOR_WORKERS) only from a script whose work sits under ``if __name__ == "__main__":``,
    because the spawned workers import the main module again."""
    global _pool_allowed
    _pool_allowed = True


def descriptor_workers() -> int:
    """Processes that compute descriptors: $SMILESFORMER_DESCRIPTOR_WORKERS, else the usable CPUs once
    ``allow_process_pool`` was called, else 1 (serial)."""
    if multiprocessing.current_process().daemon:  # a pool worker itself may not start processes
        return 1
    value = os.environ.get(WORKERS_ENV)
    if value:
        return max(1, int(value))
    if not _pool_allowed:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    # Started once and kept: a spawned worker imports RDKit in about a second, too slow to pay per chunk.
    # spawn, not fork: forking a process whose torch already runs threads can deadlock.
    if workers not in _POOLS:
        shutdown_pool()
        _POOLS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=_die_with_parent, initargs=(os.getpid(),))
        atexit.register(shutdown_pool)  # the workers end with the process that started them
    return _POOLS[workers]


def _die_with_parent(parent: int) -> None:
    """A worker's start: end when the process that started it ends, even by SIGKILL (atexit never runs then, and
    a worker inside a long RDKit call would run on for minutes holding its memory).

    On Linux the kernel sends SIGKILL (prctl PR_SET_PDEATHSIG); elsewhere a thread checks the parent every
    second, which works between RDKit calls.
    """
    import ctypes
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="smilesformer-parent-watch").start()


def shutdown_pool() -> None:
    """Stop the descriptor workers, if any were started (the next long input starts them again)."""
    if _POOLS:
        _CACHE.pending.clear()  # their futures are cancelled
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)
