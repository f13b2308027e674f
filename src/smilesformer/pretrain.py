"""Pretraining: corpus cleaning (streamed), token and descriptor caches on disk, and the model card.

The corpus is read line by line and written, cleaned, to the run folder; token ids and RDKit
descriptors are computed once into memory-mapped ``.npy`` files, so a 10M-molecule corpus is never
held in memory, a resumed or repeated run reuses them, and a map-style dataset over them lets the
Trainer shuffle, group by length and skip exactly the batches already seen when it resumes.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem
from safetensors.torch import save_file
from torch.utils.data import Dataset
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from .config import Objective, PretrainConfig, TokenizerKind, save_config
from .corpus import DESCRIPTORS_SUFFIX, MANIFEST, SHARDS_SUFFIX
from .data import SmilesformerError, check_output, file_sha256, iter_smiles, parse_smiles, readable_like_the_rest
from .networks import make_config
from .objectives import MTR_HEAD_FILE, RobertaForMlmMtr, masked_lm_model
from .rdkit_descriptors import descriptor_block
from .rdkit_descriptors import descriptor_names as rdkit_descriptor_names
from .tokenization import (
    build_regex_tokenizer,
    build_smiles_tokenizer,
    coverage_report,
    element_tokens,
    train_bpe_tokenizer,
)

__all__ = [
    "clean_corpus",
    "TokenCache",
    "DescriptorCache",
    "compute_descriptors",
    "descriptor_names",
    "run_pretrain",
    "write_model_card",
    "export_model",
]

logger = logging.getLogger(__name__)

CHUNK = 10_000  # molecules per tokenization / descriptor chunk
FINETUNE_DROPOUT = 0.1  # RoBERTa's, written into the saved config whatever pretraining used
DESCRIPTOR_BLOCK = 1000  # molecules per descriptor task (and per resume point)
CORPUS_BUILD_FILE = "corpus_build.json"  # the corpus builder's report, copied into the model folder


def clean_corpus(config: PretrainConfig, out_dir: Path) -> tuple[Path, dict]:
    """Stream the corpus, keep the molecules RDKit parses, write them one per line.

    Invalid lines are counted and the first 1,000 are listed (line, value, reason) in invalid_lines.tsv;
    they never stop the run. Reuses an earlier result made from the same file with the same options.

    Returns:
        (path of the cleaned corpus, report with counts).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cleaned, report_path = out_dir / "corpus.smi", out_dir / "corpus_report.json"
    stat = os.stat(config.corpus)
    key = {"corpus": str(config.corpus), "size": stat.st_size, "mtime": int(stat.st_mtime), "limit": config.limit,
           "canonicalize": config.canonicalize, "dedupe": config.dedupe, "smiles_col": config.smiles_col}
    if cleaned.is_file() and report_path.is_file():
        report = json.loads(report_path.read_text())
        if report.get("key") == key:
            logger.info("reusing the cleaned corpus %s (%d molecules)", cleaned, report["kept"])
            return cleaned, report
    built = built_corpus_report(config.corpus)
    if built is not None and not config.canonicalize and config.smiles_col is None:
        # Made by `smilesformer corpus`: every line was parsed there and duplicates dropped, so parsing it again
        # would only repeat that work. Its lines are copied as they are.
        kept = 0
        with open(cleaned, "w") as out:
            for line in _lines_of(config.corpus):
                if config.limit and kept >= config.limit:
                    break
                out.write(line + "\n")
                kept += 1
        (out_dir / "invalid_lines.tsv").write_text("line\tvalue\treason\n")
        report = {"key": key, "read": kept, "invalid": 0, "duplicates": 0, "kept": kept, "prepared": True}
        report_path.write_text(json.dumps(report, indent=2))
        return cleaned, report
    counts = {"read": 0, "invalid": 0, "duplicates": 0, "kept": 0}
    seen: set[int] = set()  # hashes, not strings: ~10x less memory on a 10M-line corpus
    jobs = config.n_jobs or os.cpu_count() or 1
    chunks = ((chunk, config.canonicalize) for chunk in _chunks(iter_smiles(config.corpus, config.smiles_col), CHUNK))
    # RDKit parsing is the slow part (~0.2 ms a molecule): a pool of processes parses chunks in order.
    pool = multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else None
    try:
        with open(cleaned, "w") as out, open(out_dir / "invalid_lines.tsv", "w") as bad:
            bad.write("line\tvalue\treason\n")
            for parsed in (pool.imap(_parse_chunk, chunks) if pool else map(_parse_chunk, chunks)):
                for raw, smiles, canonical, reason in parsed:
                    counts["read"] += 1
                    if smiles is None:
                        counts["invalid"] += 1
                        if counts["invalid"] <= 1000:
                            bad.write(f"{counts['read']}\t{raw!r}\t{reason}\n")
                        continue
                    if config.dedupe:
                        h = hash(canonical)
                        if h in seen:
                            counts["duplicates"] += 1
                            continue
                        seen.add(h)
                    out.write(smiles + "\n")
                    counts["kept"] += 1
                    if config.limit and counts["kept"] >= config.limit:
                        break
                if config.limit and counts["kept"] >= config.limit:
                    break
    finally:
        if pool is not None:
            pool.terminate()  # with a limit, chunks still in flight are not needed
            pool.join()
    if counts["kept"] == 0:
        raise SmilesformerError(f"no valid SMILES in {config.corpus} ({counts['invalid']} invalid lines)")
    report = {"key": key, **counts}
    report_path.write_text(json.dumps(report, indent=2))
    if counts["invalid"]:
        logger.warning("%d invalid corpus lines skipped (first ones in %s)", counts["invalid"],
                       out_dir / "invalid_lines.tsv")
    return cleaned, report


def built_corpus_report(corpus: str | Path) -> dict | None:
    """The report ``smilesformer corpus`` wrote beside a corpus it made (``<corpus>.json``), if it still describes
    the file (same sha256): such a corpus is clean already and may carry its MTR descriptors."""
    path = Path(str(corpus) + ".json")
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except ValueError:
        return None
    return report if report.get("sha256") == file_sha256(corpus) else None


def _lines_of(path: str | Path) -> Iterator[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield line


def _parse_chunk(args: tuple[list[str], bool]) -> list[tuple[str, str | None, str, str]]:
    """(raw, SMILES to keep or None, canonical SMILES for de-duplication, reason it failed) per line."""
    chunk, canonicalize = args
    rows = []
    for raw in chunk:
        mol, reason = parse_smiles(raw)
        if mol is None:
            rows.append((raw, None, "", reason))
            continue
        canonical = Chem.MolToSmiles(mol)
        rows.append((raw, canonical if canonicalize else raw.strip(), canonical, ""))
    return rows


def _read_lines(path: Path) -> Iterator[str]:
    with open(path) as fh:
        for line in fh:
            yield line.rstrip("\n")


def _chunks(it: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in it:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class TokenCache(Dataset):
    """Token ids of a cleaned corpus in two memory-mapped arrays (flat ids, offsets); a map-style dataset."""

    def __init__(self, folder: Path, labels: np.ndarray | None = None, label_key: str = "labels"):
        self.ids = np.load(folder / "token_ids.npy", mmap_mode="r")
        self.offsets = np.load(folder / "token_offsets.npy", mmap_mode="r")
        self.labels = labels  # (n, k) float32 memmap of standardized descriptors, for MTR
        self.label_key = label_key  # "labels" (MTR alone) or "descriptors" (beside MLM's labels)

    @classmethod
    def build(cls, tokenizer: PreTrainedTokenizerBase, corpus: Path, folder: Path, max_length: int) -> TokenCache:
        """Tokenize the corpus in chunks (appending to disk), or reuse the cache if it matches the corpus."""
        stamp = {"corpus_sha256": file_sha256(corpus), "vocab": len(tokenizer), "max_length": max_length}
        stamp_path = folder / "token_cache.json"
        if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
            return cls(folder)
        dtype = np.uint16 if len(tokenizer) < 2**16 else np.int32
        # The Rust tokenizer itself, not the Python wrapper's __call__: the wrapper's batch of Python lists cost
        # 20 us a molecule in this one process (a third of the whole), the same ids (a test holds them equal).
        backend = copy.deepcopy(tokenizer.backend_tokenizer)
        backend.enable_truncation(max_length)
        backend.no_padding()
        lengths: list[np.ndarray] = []
        with open(folder / "token_ids.bin", "wb") as flat:
            for chunk in _chunks(_read_lines(corpus), CHUNK):
                encodings = backend.encode_batch(chunk, add_special_tokens=True)
                lengths.append(np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings)))
                flat.write(np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype).tobytes())
        raw = np.memmap(folder / "token_ids.bin", dtype=dtype, mode="r")
        np.save(folder / "token_ids.npy", raw)
        del raw
        os.remove(folder / "token_ids.bin")
        np.save(folder / "token_offsets.npy", np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64))
        stamp_path.write_text(json.dumps(stamp))
        return cls(folder)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per molecule, from the offsets (no item read)."""
        return np.diff(self.offsets)

    @property
    def tokens_per_molecule(self) -> float:
        return float(self.offsets[-1]) / max(1, len(self))

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.ids[self.offsets[i]:self.offsets[i + 1]].astype(np.int64).tolist()}
        if self.labels is not None:
            item[self.label_key] = np.asarray(self.labels[i], dtype=np.float32)
        return item


class ShardedCorpus(Dataset):
    """The shards ``smilesformer corpus --shards`` writes, read while it writes more (``corpus.ShardWriter``).

    A map-style dataset of the size the corpus will have, so the Trainer's sampler and schedule are fixed from
    the start: an index whose molecule is not ready yet stands for one that is (spread over them by a
    multiplicative hash), so the first shards are seen more often until the rest arrive. The manifest is read
    again every few seconds. MTR targets are standardized with the first shard's mean and standard deviation,
    clipped to +-10 as ``compute_descriptors`` does. Each process (the Trainer's data workers too) opens the
    shards' memory maps itself; a pickled copy carries none.
    """

    growing = True  # no lengths before the molecules exist: batches are drawn at random, not grouped by length
    REFRESH_SECONDS = 2.0

    def __init__(self, folder: Path, mean: np.ndarray | None = None, std: np.ndarray | None = None,
                 label_key: str = "labels"):
        self.folder = Path(folder)
        self.mean, self.std = mean, std  # None: MLM alone, no descriptors read
        self.label_key = label_key
        manifest = self.manifest()
        self.expected = int(manifest["expected"])
        self._reset()

    def _reset(self) -> None:
        self.shards: list[dict] = []
        self.ends = np.zeros(0, np.int64)  # cumulative molecules per shard
        self.complete = False
        self.next_read = 0.0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(shards=[], ends=np.zeros(0, np.int64), complete=False, next_read=0.0)
        return state

    def manifest(self) -> dict:
        return json.loads((self.folder / MANIFEST).read_text())

    def refresh(self, force: bool = False) -> int:
        """Open the shards listed since the last look; returns the molecules ready."""
        now = time.monotonic()
        if not self.complete and (force or now >= self.next_read):
            manifest = self.manifest()
            for entry in manifest["shards"][len(self.shards):]:
                name = entry["name"]
                shard = {"ids": np.load(self.folder / f"{name}.ids.npy", mmap_mode="r"),
                         "offsets": np.load(self.folder / f"{name}.offsets.npy", mmap_mode="r")}
                if self.mean is not None:
                    shard["descriptors"] = np.load(self.folder / f"{name}.descriptors.npy", mmap_mode="r")
                self.shards.append(shard)
                self.ends = np.append(self.ends, (self.ends[-1] if len(self.ends) else 0) + entry["molecules"])
            self.complete = manifest["complete"]
            self.next_read = now + self.REFRESH_SECONDS
        return int(self.ends[-1]) if len(self.ends) else 0

    def __len__(self) -> int:
        return self.expected

    @property
    def tokens_per_molecule(self) -> float:
        """The mean over the shards ready now."""
        self.refresh(force=True)
        tokens = sum(int(shard["offsets"][-1]) for shard in self.shards)
        return tokens / max(1, int(self.ends[-1]) if len(self.ends) else 0)

    def __getitem__(self, i: int) -> dict:
        ready = self.refresh()
        while ready == 0:  # a worker started before the first shard: wait for it
            time.sleep(0.5)
            ready = self.refresh(force=True)
        j = i if i < ready else (i * 2654435761) % ready
        k = int(np.searchsorted(self.ends, j, side="right"))
        shard, local = self.shards[k], j - (int(self.ends[k - 1]) if k else 0)
        offsets = shard["offsets"]
        item = {"input_ids": shard["ids"][offsets[local]:offsets[local + 1]].astype(np.int64).tolist()}
        if self.mean is not None:
            raw = np.asarray(shard["descriptors"][local], dtype=np.float64)
            item[self.label_key] = np.clip((raw - self.mean) / self.std, -10, 10).astype(np.float32)
        return item


def wait_for_shards(folder: Path, timeout: float = 600.0) -> dict:
    """The manifest once its first shard is listed (or the corpus is complete)."""
    deadline = time.monotonic() + timeout
    while True:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest["shards"] or manifest["complete"]:
            return manifest
        if time.monotonic() > deadline:
            raise SmilesformerError(f"no shard appeared in {folder} within {timeout:.0f} s: is `smilesformer "
                                    "corpus --shards` still running?")
        time.sleep(0.5)


def shard_folder(corpus: str | Path) -> Path | None:
    """``<corpus>.shards`` when `smilesformer corpus --shards` writes (or wrote) one there."""
    folder = Path(str(corpus) + SHARDS_SUFFIX)
    return folder if (folder / MANIFEST).is_file() else None


def _prepare_shards(config: PretrainConfig, folder: Path) -> tuple:
    """Tokenizer, dataset, coverage, corpus report and descriptor statistics for a corpus still being written."""
    if config.tokenizer is not TokenizerKind.smiles:
        raise SmilesformerError(f"a sharded corpus holds the token ids of the smiles tokenizer; use --tokenizer smiles "
                                f"(not {config.tokenizer.value}), or pretrain on the finished corpus file")
    manifest = wait_for_shards(folder)
    if manifest["max_length"] != config.max_length:
        raise SmilesformerError(f"the shards hold up to {manifest['max_length']} tokens per molecule, the run asks "
                                f"for --max-length {config.max_length}; make them with the same --max-length")
    tokenizer = build_smiles_tokenizer(model_max_length=config.max_length)
    first = manifest["shards"][0]["name"]
    coverage = coverage_report(tokenizer, (folder / f"{first}.smi").read_text().split()[:20_000])
    stats = None
    mean = std = None
    if config.objective in (Objective.mtr, Objective.both):
        names = descriptor_names(config.descriptor_set)
        carried = (manifest.get("descriptors") or {}).get("names")
        if carried != names:
            raise SmilesformerError(f"the shards carry {len(carried or [])} descriptors, not the "
                                    f"{config.descriptor_set!r} set; make them with --descriptors "
                                    f"{config.descriptor_set}")
        raw = np.load(folder / f"{first}.descriptors.npy").astype(np.float64)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(raw, axis=0), np.nanstd(raw, axis=0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        stats = {"descriptor_set": config.descriptor_set, "names": names, "mean": mean.tolist(), "std": std.tolist(),
                 "n": len(raw), "computed_by": "smilesformer corpus --shards (statistics of the first shard)"}
    dataset = ShardedCorpus(folder, mean, std)
    report = {"read": dataset.expected, "invalid": 0, "duplicates": 0, "kept": dataset.expected, "prepared": True,
              "streamed": True}
    return tokenizer, dataset, coverage, report, stats


def descriptor_names(descriptor_set: str = "mtr") -> list[str]:
    """The RDKit descriptors MTR regresses ("mtr", "fast" or "rdkit", see ``descriptors``)."""
    return rdkit_descriptor_names(descriptor_set)


def _descriptor_chunk(args: tuple[list[str], list[str]]) -> np.ndarray:
    chunk, names = args
    return descriptor_block(chunk, names).astype(np.float32)


class DescriptorCache:
    """Normalized RDKit descriptors of a cleaned corpus (memory-mapped), with their statistics."""

    def __init__(self, folder: Path):
        self.values = np.load(folder / "descriptors.npy", mmap_mode="r")
        self.stats = json.loads((folder / "descriptor_stats.json").read_text())


def compute_descriptors(corpus: Path, folder: Path, n_jobs: int = 0, descriptor_set: str = "mtr",
                        precomputed: Path | None = None) -> DescriptorCache:
    """Compute RDKit descriptors once, in parallel, standardize them and cache them on disk.

    NaN or infinite values stay NaN (masked out of the MTR loss). Each descriptor is standardized with
    its corpus mean and standard deviation and clipped to +-10 sd, because a few (Ipc, BertzCT) have
    heavy tails that would otherwise dominate the loss. Reused when the corpus is unchanged.

    Args:
        precomputed: raw descriptors ``smilesformer corpus`` computed (``.npy``, one row per corpus line, the
            same names), used instead of computing them again; its first rows when the corpus is a prefix.
    """
    stats_path = folder / "descriptor_stats.json"
    digest = file_sha256(corpus)
    names = descriptor_names(descriptor_set)
    if stats_path.is_file():
        stamp = json.loads(stats_path.read_text())
        if stamp.get("corpus_sha256") == digest and stamp.get("names") == names:
            logger.info("reusing the descriptor cache in %s", folder)
            return DescriptorCache(folder)
    n = sum(1 for _ in _read_lines(corpus))
    started = time.perf_counter()
    if precomputed is not None:
        raw = np.load(precomputed, mmap_mode="r")
        if raw.shape[0] < n or raw.shape[1] != len(names):
            raise SmilesformerError(f"{precomputed} holds {raw.shape} descriptors, not ({n}, {len(names)}): make "
                                    "the corpus again with `smilesformer corpus`")
        return _standardize(raw[:n], folder, {"corpus_sha256": digest, "descriptor_set": descriptor_set,
                                              "names": names, "n": n, "computed_by": "smilesformer corpus"},
                            started)
    # Raw values go to descriptors_raw.npy, block by block, with the rows done recorded beside them: a killed
    # run resumes where it stopped. The standardized copy is written from it in one pass at the end.
    raw_path, progress_path = folder / "descriptors_raw.npy", folder / "descriptors_raw.json"
    key = {"corpus_sha256": digest, "names": names, "n": n}
    done = 0
    if raw_path.is_file() and progress_path.is_file():
        progress = json.loads(progress_path.read_text())
        done = progress["rows_done"] if progress.get("key") == key else 0
    raw = np.lib.format.open_memmap(raw_path, mode="r+" if done else "w+", dtype=np.float32, shape=(n, len(names)))
    if done:
        logger.warning("resuming descriptors at row %d of %d", done, n)
    jobs = n_jobs or os.cpu_count() or 1
    lines = (line for i, line in enumerate(_read_lines(corpus)) if i >= done)
    chunks = ((chunk, names) for chunk in _chunks(lines, DESCRIPTOR_BLOCK))
    pos = done
    pool = multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else None
    try:
        for block in pool.imap(_descriptor_chunk, chunks) if pool else map(_descriptor_chunk, chunks):
            raw[pos:pos + len(block)] = block
            pos += len(block)
            raw.flush()
            progress_path.write_text(json.dumps({"key": key, "rows_done": pos}))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return _standardize(raw, folder, {"corpus_sha256": digest, "descriptor_set": descriptor_set, "names": names,
                                      "n": n}, started)


def _standardize(raw: np.ndarray, folder: Path, stamp: dict, started: float) -> DescriptorCache:
    """Standardize raw descriptors (NaN stays NaN) into ``descriptors.npy`` and write their statistics."""
    n, k = raw.shape
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a descriptor RDKit computed for no molecule
        mean = np.nanmean(raw, axis=0, dtype=np.float64)
        std = np.nanstd(raw, axis=0, dtype=np.float64)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    out = np.lib.format.open_memmap(folder / "descriptors.npy", mode="w+", dtype=np.float32, shape=(n, k))
    for start in range(0, n, 100_000):
        out[start:start + 100_000] = np.clip((raw[start:start + 100_000] - mean) / std, -10, 10)
    out.flush()
    del out, raw
    (folder / "descriptor_stats.json").write_text(json.dumps(
        {**stamp, "mean": mean.tolist(), "std": std.tolist(), "seconds": round(time.perf_counter() - started, 1)},
        indent=2))
    return DescriptorCache(folder)


def _build_tokenizer(config: PretrainConfig, corpus: Path) -> PreTrainedTokenizerBase:
    if config.tokenizer is TokenizerKind.bpe:
        return train_bpe_tokenizer(_read_lines(corpus), config.vocab_size, model_max_length=config.max_length)
    if config.tokenizer is TokenizerKind.smiles:
        return build_smiles_tokenizer(model_max_length=config.max_length)
    extra = element_tokens() if config.element_tokens else []
    return build_regex_tokenizer(_read_lines(corpus), model_max_length=config.max_length, extra_tokens=extra)


def run_pretrain(config: PretrainConfig, out_dir: str | Path, command: str | None = None,
                 started: float | None = None) -> Path:
    """Pretrain a model from scratch and write it, with tokenizer, caches, loss curve and card, to ``out_dir``.

    Interrupted runs resume from the last checkpoint in ``out_dir/checkpoints`` when run again with
    the same settings. With ``config.max_minutes`` the run ends within that many minutes of ``started`` (a
    ``time.time()``; default: now), preparation included. Returns the folder of the final model
    (``out_dir/model``).
    """
    from .plots import plot_training_curve
    from .train import distributed_state, run_pretraining

    out_dir = check_output(out_dir, folder=True)
    cache = out_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    started = started or time.time()
    state = distributed_state()  # one process, unless launched with torchrun / accelerate launch (DDP)
    shards = shard_folder(config.corpus)
    shard_stats = None
    if shards is not None:  # `smilesformer corpus --shards` is writing it: train on what is ready, as it comes
        tokenizer, dataset, coverage, corpus_report, shard_stats = _prepare_shards(config, shards)
    else:
        with state.main_process_first():  # the main process builds the caches; the others then reuse them
            corpus, corpus_report = clean_corpus(config, cache)
            tok_dir = cache / "tokenizer"
            if (tok_dir / "tokenizer.json").is_file():
                from .tokenization import load_tokenizer

                tokenizer = load_tokenizer(tok_dir)
            else:
                tokenizer = _build_tokenizer(config, corpus)
                tokenizer.save_pretrained(tok_dir)
            coverage = coverage_report(tokenizer, (s for i, s in zip(range(20_000), _read_lines(corpus))))
            dataset = TokenCache.build(tokenizer, corpus, cache, config.max_length)
    torch.manual_seed(config.seed)
    # Dropout off while pretraining (the profile gave its random masks ~10% of a CPU step, and a run of an
    # epoch or so does not overfit); the saved model gets RoBERTa's 0.1 back for fine-tuning.
    model_config = make_config(config.preset, len(tokenizer), config.max_length, tokenizer.pad_token_id,
                               hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout)
    extra_files: dict[str, dict] = {}
    n_descriptors = 0
    if shard_stats is not None:
        n_descriptors = len(shard_stats["names"])
        extra_files["descriptor_stats.json"] = shard_stats
    elif config.objective in (Objective.mtr, Objective.both):
        made_by = built_corpus_report(config.corpus) if corpus_report.get("prepared") else None
        carried = (made_by or {}).get("descriptors") or {}
        precomputed = Path(str(config.corpus) + DESCRIPTORS_SUFFIX) \
            if carried.get("names") == descriptor_names(config.descriptor_set) else None
        with state.main_process_first():
            descriptors = compute_descriptors(corpus, cache, config.n_jobs, config.descriptor_set, precomputed)
        dataset.labels = descriptors.values
        n_descriptors = descriptors.values.shape[1]
        extra_files["descriptor_stats.json"] = {k: v for k, v in descriptors.stats.items()}
    if config.objective is Objective.mtr:
        model_config.num_labels = n_descriptors
        model_config.problem_type = "regression"
        model = AutoModelForSequenceClassification.from_config(model_config)
    else:  # MLM, alone or with MTR: one class (see objectives)
        both = config.objective is Objective.both
        dataset.label_key = "descriptors"
        model_config.n_descriptors = n_descriptors if both else 0
        model_config.mlm_weight = config.mlm_weight if both else 1.0
        model_config.mtr_weight = config.mtr_weight if both else 0.0
        model = RobertaForMlmMtr(model_config)
    preparation = time.time() - started
    history, trained = run_pretraining(model, tokenizer, dataset, config, out_dir / "checkpoints", started)
    built = Path(str(config.corpus) + ".json")  # what `smilesformer corpus` wrote beside a corpus it made (read
    if built.is_file():  # after training: a corpus written while the model trained has its report only at the end)
        extra_files[CORPUS_BUILD_FILE] = json.loads(built.read_text())
    if shards is not None:  # what the corpus held by the end of training
        manifest = json.loads((shards / MANIFEST).read_text())
        ready = sum(entry["molecules"] for entry in manifest["shards"])
        corpus_report.update(read=ready, kept=ready, complete=manifest["complete"])

    model_dir = out_dir / "model"
    if state.is_main_process:  # one writer for the model folder
        if isinstance(model, RobertaForMlmMtr):  # the folder holds a plain RobertaForMaskedLM; the MTR head beside it
            model_dir.mkdir(parents=True, exist_ok=True)
            if model.mtr_head is not None:
                save_file({k: v.contiguous() for k, v in model.mtr_head.state_dict().items()},
                          str(model_dir / MTR_HEAD_FILE))
            model = masked_lm_model(model)
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = FINETUNE_DROPOUT
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        readable_like_the_rest(model_dir)
        save_config(model_dir / "pretrain_config.json", pretrain=config)
        for name, content in extra_files.items():
            (model_dir / name).write_text(json.dumps(content, indent=2))
        throughput = {k: trained[k] for k in ("tokens_per_second", "molecules_per_second", "measured_over",
                                              "world_size", "resumed_from")}
        summary = {"corpus": {k: v for k, v in corpus_report.items() if k != "key"},
                   "tokenizer_coverage": coverage, "throughput": throughput,
                   "preparation_seconds": round(preparation, 1),
                   "n_parameters": sum(p.numel() for p in model.parameters()),
                   "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
                   "steps": trained["steps"], "planned_steps": trained["planned_steps"],
                   "molecules_presented": trained["molecules_presented"], "epochs_done": trained["epochs"],
                   "budget": trained["budget"], "hardware": _hardware()}
        (model_dir / "pretrain_summary.json").write_text(json.dumps(summary, indent=2))
        (out_dir / "history.json").write_text(json.dumps(history, indent=2))
        plot_training_curve(history, model_dir / "loss_curve.png", title=f"{config.objective.value} pretraining")
        summary["wall_seconds"] = round(time.time() - started, 1)  # the command's, up to the card
        (model_dir / "pretrain_summary.json").write_text(json.dumps(summary, indent=2))
        write_model_card(model_dir, command)
    state.wait_for_everyone()  # the others return once the folder is complete: callers read it
    return model_dir


def export_model(model_dir: str | Path, out: str | Path, max_file_mb: int = 15) -> Path:
    """Copy a pretrained model folder with its weights in files of at most ``max_file_mb`` MB (sharded by
    ``save_pretrained``), e.g. to bring it back from a machine that returns files of limited size.

    The encoder is loaded with ``AutoModelForMaskedLM`` and saved again; the tokenizer, the MTR head, the
    descriptor statistics, the card and the pretraining records are copied as they are.
    """
    from transformers import AutoModelForMaskedLM

    model_dir, out = Path(model_dir), check_output(out, folder=True)
    if not (model_dir / "config.json").is_file():
        raise SmilesformerError(f"{model_dir} is not a model folder (no config.json)")
    out.mkdir(parents=True, exist_ok=True)
    AutoModelForMaskedLM.from_pretrained(model_dir).save_pretrained(out, max_shard_size=f"{max_file_mb}MB")
    for path in model_dir.iterdir():
        if path.is_file() and not path.name.startswith("model") and path.name != "config.json":
            shutil.copy2(path, out / path.name)
    readable_like_the_rest(out)
    too_big = [p.name for p in out.iterdir() if p.stat().st_size > max_file_mb * 2**20]
    if too_big:
        raise SmilesformerError(f"files over {max_file_mb} MB in {out}: {', '.join(too_big)}")
    return out


def write_model_card(model_dir: Path, command: str | None = None, notes: str = "") -> Path:
    """Write README.md (a model card) from the files pretraining left in ``model_dir``."""
    config = json.loads((model_dir / "pretrain_config.json").read_text())["pretrain"]
    summary = json.loads((model_dir / "pretrain_summary.json").read_text())
    model_config = json.loads((model_dir / "config.json").read_text())
    corpus, coverage, speed = summary["corpus"], summary["tokenizer_coverage"], summary["throughput"]
    objective = {"mlm": f"masked language modelling (RoBERTa-style dynamic masking, "
                        f"{config['mlm_probability']:.0%} of tokens)",
                 "mtr": "multi-task regression of standardized RDKit 2D descriptors (ChemBERTa-2 MTR)",
                 "mlm+mtr": f"masked language modelling ({config['mlm_probability']:.0%} of tokens masked, weight "
                            f"{config.get('mlm_weight', 1)}) and, from the same forward pass, regression of "
                            f"{config.get('descriptor_set', 'fast')!r} RDKit descriptors (weight "
                            f"{config.get('mtr_weight', 1)})"}[config["objective"]]
    command = command or pretrain_command(config)
    wall = summary["wall_seconds"]
    build_path = model_dir / CORPUS_BUILD_FILE
    build = ""
    if build_path.is_file():
        b = json.loads(build_path.read_text())
        applied = ", ".join(f"{k} {v:,}" for k, v in b["applied"].items())
        sets = ", ".join(f"{k} ({v:,})" for k, v in b["benchmark_sets"].items())
        build = (f"| corpus made by `smilesformer corpus` | {b['drawn']:,} of {b['source_molecules']:,} source "
                 f"molecules drawn (seed {b['config']['seed']}); **{b['removed_benchmark']:,} removed** because their "
                 f"InChIKey skeleton (first block) is that of a molecule in a benchmark set: {sets}; "
                 f"{b['kept']:,} kept. Transformations applied: {applied} |\n")
    card = f"""# {model_dir.name}

A RoBERTa encoder pretrained on SMILES with smilesformer's own `smilesformer pretrain` command.

| | |
|---|---|
| objective | {objective} |
{build}| corpus | `{Path(config["corpus"]).name}`: {corpus["read"]:,} lines read, {corpus["invalid"]:,} invalid, {corpus["duplicates"]:,} duplicates dropped, **{corpus["kept"]:,} molecules used**{f" (the first {config['limit']:,} valid ones)" if config.get("limit") else ""} |
| tokenizer | {config["tokenizer"]} ({model_config["vocab_size"]} tokens); on the first 20k corpus molecules: round-trip {coverage["roundtrip"]:.4f}, unknown-token rate {coverage["unk_rate"]:.5f}, {coverage["mean_tokens"]:.1f} tokens per molecule |
| architecture | {model_config["num_hidden_layers"]} layers, hidden {model_config["hidden_size"]}, {model_config["num_attention_heads"]} heads, feed-forward {model_config["intermediate_size"]}, max length {config["max_length"]}; {summary["n_parameters"]:,} parameters |
| training | {_training_line(config, summary)} |
{_budget_line(summary.get("budget"))}| final training loss | {summary["final_loss"]:.4f} (loss curve: `loss_curve.png`) |
| hardware | {summary["hardware"]} |
| throughput | {speed["tokens_per_second"] or 0:,.0f} tokens/s, {speed["molecules_per_second"] or 0:,.0f} molecules/s{f" ({speed['measured_over']})" if speed.get("measured_over") else ""} |
| wall time | {wall / 60:.1f} min |

{notes}

## Redo it (or scale it up)

```
{command}
```

On a bigger machine raise `--limit` (or drop it for the whole corpus), `--epochs` and `--preset`; on
several GPUs launch the same command under `torchrun --nproc_per_node N -m smilesformer.cli pretrain ...`
or `accelerate launch`; the Trainer runs data-parallel with no code change, in bf16 where the GPU has it.

## Use

```python
from smilesformer import SmilesModel
model = SmilesModel.from_pretrained("{model_dir.name}", task="regression", targets=["y"])
```
"""
    path = model_dir / "README.md"
    path.write_text(card)
    return path


NOT_ON_THE_CLI = ("progress", "element_tokens", "warmup_fraction", "weight_decay")  # PretrainConfig in Python only


def pretrain_command(config: dict, only: tuple[str, ...] | None = None, out: str = "RUN") -> str:
    """The ``smilesformer pretrain`` command line of a saved PretrainConfig, as the CLI spells its options (the
    fields in ``NOT_ON_THE_CLI`` are left out: they are set from Python)."""
    words = ["smilesformer pretrain", f"--out {out}"]
    for key, value in config.items():
        if value is None or key in NOT_ON_THE_CLI or (only is not None and key not in only):
            continue
        flag = "--" + {"learning_rate": "lr"}.get(key, key).replace("_", "-")
        words.append((flag if value else "--no-" + flag[2:]) if isinstance(value, bool) else f"{flag} {value}")
    return " ".join(words)


def _training_line(config: dict, summary: dict) -> str:
    """Steps, molecules presented and passes, as trained (not as planned: a budget or a callback may stop early)."""
    steps = summary["steps"]
    line = f"{steps:,} steps, batch {config['batch_size']} x {config['grad_accum']} accumulation"
    if "molecules_presented" in summary:
        line += (f" ({summary['molecules_presented']:,} molecule presentations, {summary['epochs_done']:.2f} passes "
                 f"over the corpus; {summary['planned_steps']:,} steps planned: "
                 + (f"--max-steps {config['max_steps']}" if config["max_steps"] > 0 else
                    f"{config['epochs']} epoch(s)") + ")")
    return line + f", peak learning rate {config['learning_rate']}, seed {config['seed']}"


def _budget_line(budget: dict | None) -> str:
    if not budget:
        return ""
    fits = budget["fits"]
    fitted = (f"measured {fits[-1]['steps_per_second']:.1f} steps/s; last step that fit: {budget['last_step']:,}"
              if fits else "stopped before a step rate was measured")
    return (f"| time budget | {budget['max_seconds'] / 60:.3g} min for the whole command: preparation "
            f"{budget['preparation_seconds']:.0f} s, training {budget['training_seconds']:.0f} s; {fitted}; "
            f"stopped because {budget['stopped_because']} |\n")


def _hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
