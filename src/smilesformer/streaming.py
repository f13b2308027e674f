"""Predictions and embeddings for inputs of any size: read in chunks, written part by part, resumable.

The input is read ``chunk_size`` rows at a time (pandas' chunked CSV reader, pyarrow's Parquet batches,
line by line for .smi), each chunk is validated with RDKit, tokenized and run in batches of similar
length (``predictors.Transformer.passes`` / ``tokenization.length_batches``: the chunk is the sorting window),
and written as one part file next to the output (``<out>.parts/``) with a small ``manifest.json``.
Memory therefore depends on the chunk size, never on the input size. When every chunk is done the
parts are joined into ``out`` and the folder is removed; a run that stops half way leaves them, and
the same command continues after the last part written.

With ``engine=ray`` the chunks run on a Ray cluster (``ray.init()``: the local machine, or the cluster
that ``RAY_ADDRESS`` names) with Ray Data's ``map_batches``, one model per worker, in input order.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .config import Engine, Precision
from .data import (
    READ_ERRORS,
    READABLE,
    READABLE_HINT,
    SmilesformerError,
    _guess_smiles_col,
    _suffixes,
    check_header,
    check_output,
    read_error,
    read_table,
    require_columns,
    sniff_text,
)
from .embeddings import (
    EmbedConfig,
    Encoder,
    check_config,
    embed,
    embedding_matrix,
    embeddings_table,
    inference_autocast,
    load_encoder,
)
from .predictors import Predictor, descriptor_lists, load_predictor, predict_table
from .rdkit_descriptors import prefetch_descriptors
from .threads import usable_cores

__all__ = [
    "Engine",
    "StreamSummary",
    "DEFAULT_CHUNK_SIZE",
    "read_chunks",
    "predict_frame",
    "stream_predict",
    "stream_embed",
    "parts_dir",
]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 10_000
"""Rows per chunk: large enough that length sorting removes most padding, small enough to stay well
under a gigabyte with a base-size model (10k pooled 3,072-float embeddings are 120 MB)."""

PER_TOKEN_CHUNK_SIZE = 1_000
"""Rows per chunk when per-token vectors are kept: they are ~40x larger than one pooled vector."""


@dataclass
class StreamSummary:
    """What a streamed run wrote."""

    out: Path
    rows: int
    invalid: int
    chunks: int
    resumed_chunks: int
    """Chunks found already written by an earlier, interrupted run (not recomputed)."""
    seconds: float
    """Time spent on the chunks computed by this run."""

    @property
    def molecules_per_second(self) -> float:
        computed = self.rows * (self.chunks - self.resumed_chunks) / max(self.chunks, 1)
        return computed / self.seconds if self.seconds else float("nan")


def parts_dir(out: str | Path) -> Path:
    """The folder holding the parts and manifest of an unfinished run writing ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


# reading ----------------------------------------------------------------------------------------------------
def _iter_frames(path: Path, chunk_size: int, sep: str | None = None) -> Iterator[pd.DataFrame]:
    try:
        yield from _read_frames(path, chunk_size, sep)
    except READ_ERRORS as exc:  # a damaged .gz, or a line that is not UTF-8, found mid-file
        raise read_error(path, exc) from exc


def _read_frames(path: Path, chunk_size: int, sep: str | None = None) -> Iterator[pd.DataFrame]:
    kind = (_suffixes(path) or [""])[-1]
    layout = sniff_text(path, sep) if kind in (".csv", ".tsv", ".smi", ".txt", ".smiles") else None
    if layout is not None and layout.sep is not None:  # as read_table: by content as well as extension
        with pd.read_csv(path, sep=layout.sep, dtype=str, keep_default_na=False, chunksize=chunk_size,
                         encoding="utf-8-sig") as reader:
            for i, frame in enumerate(reader):
                frame.columns = [str(c).strip() for c in frame.columns]
                if i == 0:
                    check_header(path, frame.columns, layout.sep)
                yield frame
    elif kind == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
            yield batch.to_pandas()
    elif layout is not None:
        # As read_table: SMILES and an optional name; whether there is a name column is judged on the first chunk.
        opener = gzip.open if path.suffix.lower() == ".gz" else open
        with_names: bool | None = None
        rows: list[list[str]] = []
        with opener(path, "rt", encoding="utf-8-sig") as fh:
            for number, line in enumerate(itertools.chain(fh, [None])):
                if line is not None and not (layout.header and number == 0):
                    parts = line.strip().split(maxsplit=1)
                    if parts:
                        rows.append(parts + [""] * (2 - len(parts)))
                if rows and (len(rows) == chunk_size or line is None):
                    frame = pd.DataFrame(rows, columns=["smiles", "name"])
                    with_names = bool((frame["name"] != "").any()) if with_names is None else with_names
                    yield frame if with_names else frame.drop(columns="name")
                    rows = []
    else:
        # SDF records carry different properties, so the columns are only known once every record is read.
        table = read_table(path)
        for start in range(0, len(table), chunk_size):
            yield table.iloc[start:start + chunk_size]


def read_chunks(path: str | Path, chunk_size: int = DEFAULT_CHUNK_SIZE,
                smiles_col: str | None = None, sep: str | None = None) -> tuple[str, Iterator[pd.DataFrame]]:
    """Read a molecule table in chunks (any format ``read_table`` reads), values as ``read_table`` gives.

    Returns:
        (the SMILES column, an iterator of DataFrames with the input's columns, ``chunk_size`` rows each
        but the last).

    Raises:
        SmilesformerError: missing or empty file, unknown extension, or no SMILES column.
    """
    path = Path(path)
    if not path.is_file():
        raise SmilesformerError(f"no such file: {path}")
    kind = (_suffixes(path) or [""])[-1]
    if kind not in READABLE:
        raise SmilesformerError(f"cannot read {path}: unknown extension {kind or '(none)'}; use {READABLE_HINT}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    frames = _iter_frames(path, chunk_size, sep)
    first = next(frames, None)
    if first is None or len(first) == 0:
        raise SmilesformerError(f"{path} has no data rows")
    col = smiles_col or _guess_smiles_col(first)
    require_columns(first, [col], path)
    return col, itertools.chain([first], frames)


# writing ----------------------------------------------------------------------------------------------------
def _replace_from(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)  # atomic: a part or manifest is either complete or absent


class _TextOutput:
    """CSV / TSV: each part is the output's own text (the header in part 0), so joining is concatenation."""

    part_suffix = ".csv"

    def __init__(self, sep: str):
        self.sep = sep

    def write_part(self, data: pd.DataFrame, path: Path, first: bool) -> None:
        tmp = path.with_name(path.name + ".tmp")
        data.to_csv(tmp, index=False, header=first, sep=self.sep)
        _replace_from(tmp, path)

    def merge(self, parts: list[Path], out: Path) -> None:
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst)
        _replace_from(tmp, out)


class _ParquetOutput:
    """Parquet: one file per part, joined with a ParquetWriter (one part in memory at a time)."""

    part_suffix = ".parquet"

    def write_part(self, data: pd.DataFrame | pa.Table, path: Path, first: bool) -> None:
        table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        _replace_from(tmp, path)

    def merge(self, parts: list[Path], out: Path) -> None:
        # A column that is all null in one chunk has type null there; the permissive union types it.
        schema = pa.unify_schemas([pq.read_schema(p) for p in parts], promote_options="permissive")
        tmp = out.with_name(out.name + ".tmp")
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                writer.write_table(pq.read_table(part).cast(schema))
        _replace_from(tmp, out)


class _NpyOutput(_ParquetOutput):
    """Embeddings as .npy: (rows, dim) float32, NaN rows for invalid SMILES; ``<stem>.layers.npy``
    (rows, layers + 1, hidden) with all layers; ``<stem>.rows.csv`` (row_id, smiles, truncated, error)."""

    def merge(self, parts: list[Path], out: Path) -> None:
        n = sum(pq.read_metadata(p).num_rows for p in parts)
        schema = pq.read_schema(parts[0])
        layer_cols = [c for c in schema.names if c.startswith("embedding_layer_")]
        matrix = np.lib.format.open_memmap(out.with_name(out.name + ".tmp"), mode="w+", dtype=np.float32,
                                           shape=(n, schema.field("embedding").type.list_size))
        layers_path = out.with_name(out.stem + ".layers.npy")
        layers = None
        if layer_cols:
            hidden = schema.field(layer_cols[0]).type.list_size
            layers = np.lib.format.open_memmap(layers_path.with_name(layers_path.name + ".tmp"), mode="w+",
                                               dtype=np.float32, shape=(n, len(layer_cols), hidden))
        rows_path = out.with_name(out.stem + ".rows.csv")
        pos = 0
        with open(rows_path.with_name(rows_path.name + ".tmp"), "w") as rows:
            for k, part in enumerate(parts):
                table = pq.read_table(part, columns=["row_id", "smiles", "embedding", *layer_cols, "truncated",
                                                     "error"])
                matrix[pos:pos + table.num_rows] = embedding_matrix(table)
                if layers is not None:
                    for j, col in enumerate(layer_cols):
                        layers[pos:pos + table.num_rows, j] = embedding_matrix(table, col)
                table.select(["row_id", "smiles", "truncated", "error"]).to_pandas().to_csv(
                    rows, index=False, header=k == 0)
                pos += table.num_rows
        matrix.flush()
        del matrix
        _replace_from(out.with_name(out.name + ".tmp"), out)
        if layers is not None:
            layers.flush()
            del layers
            _replace_from(layers_path.with_name(layers_path.name + ".tmp"), layers_path)
        _replace_from(rows_path.with_name(rows_path.name + ".tmp"), rows_path)


def _output_for(out: Path, allowed: tuple[str, ...]):
    kind = out.suffix.lower()
    if kind not in allowed:
        raise SmilesformerError(f"cannot write {out}: use one of {', '.join(allowed)}")
    check_output(out)
    return {".csv": lambda: _TextOutput(","), ".tsv": lambda: _TextOutput("\t"), ".parquet": _ParquetOutput,
            ".npy": _NpyOutput}[kind]()


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``<out>.lock`` while a run writes ``out``: a second run asked for the same output stops at once with a
    message instead of both crashing on each other's parts. The lock is the kernel's (``flock``): it goes with
    the process, even one killed."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; runs are not guarded there
        yield
        return
    path = out.with_name(out.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise SmilesformerError(f"{out} is being written by another run ({holder}); wait for it to finish or "
                                    "give this run another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


# the chunk loop ---------------------------------------------------------------------------------------------
def _file_key(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _model_key(model_dir: str | Path) -> str:
    """Fingerprint of a model folder's config and weights (sizes and times), to refuse resuming with another."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return str(model_dir)
    digest = hashlib.sha256()
    for f in sorted(folder.rglob("*")):  # an ensemble keeps its members in subfolders
        if f.is_file():
            stat = f.stat()
            digest.update(f"{f.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return f"{folder.resolve()}#{digest.hexdigest()[:16]}"


def _load_manifest(work: Path, key: dict) -> dict | None:
    path = work / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("key") != key:
        logger.warning("%s belongs to a run with other inputs or settings; starting over", work)
        return None
    return manifest


def _save_manifest(work: Path, manifest: dict) -> None:
    tmp = work / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    _replace_from(tmp, work / "manifest.json")


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with molecules/s; yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} molecules/s" if task.speed else "", style="progress.data.speed")

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), speed_estimate_period=60) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def _count_rows(path: Path) -> int | None:
    """Rows of a Parquet file from its footer; None for text files (counting would read them twice)."""
    return pq.read_metadata(path).num_rows if path.suffix.lower() == ".parquet" else None


def _run_chunks(chunks: Iterator, process: Callable[[object, int], tuple[object, int]], output, out: Path,
                key: dict, resume: bool, progress: bool, total: int | None, description: str,
                prefetch: Callable[[object], None] | None = None) -> StreamSummary:
    """Process chunks in order, writing one part each and the manifest after each; join the parts at the end.

    ``process(chunk, first_row)`` returns (data to write, number of invalid rows). With ``resume``, the
    chunks an earlier run with the same key has written are skipped (read, not recomputed). ``prefetch(chunk)``
    is called with each chunk still to compute before it is processed: the first at once, the others while the
    chunk before them is processed.
    """
    with output_lock(out):
        return _chunks_into(chunks, process, output, out, key, resume, progress, total, description, prefetch)


def _chunks_into(chunks: Iterator, process, output, out: Path, key: dict, resume: bool, progress: bool,
                 total: int | None, description: str, prefetch) -> StreamSummary:
    work = parts_dir(out)
    manifest = _load_manifest(work, key) if resume else None
    if manifest is None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        manifest = {"key": key, "chunks": [], "rows_done": 0, "invalid": 0, "seconds": 0.0}
        _save_manifest(work, manifest)
    done = len(manifest["chunks"])
    if done:
        logger.warning("resuming: %d chunk(s), %d rows already written in %s", done, manifest["rows_done"], work)
    try:
        n_chunks, seconds = _write_parts(iter(chunks), process, output, work, manifest, progress, total, description,
                                         prefetch)
    except BaseException:
        if not manifest["chunks"]:  # nothing to resume from: leave no folder behind
            shutil.rmtree(work, ignore_errors=True)
        raise
    if n_chunks < done:
        raise SmilesformerError(f"{work} lists {done} chunks but the input has {n_chunks}; delete {work} and rerun")
    out.parent.mkdir(parents=True, exist_ok=True)
    output.merge([work / c["part"] for c in manifest["chunks"]], out)
    shutil.rmtree(work)
    return StreamSummary(out, manifest["rows_done"], manifest["invalid"], n_chunks, min(done, n_chunks), seconds)


def _write_parts(chunks: Iterator, process, output, work: Path, manifest: dict, progress: bool, total: int | None,
                 description: str, prefetch: Callable[[object], None] | None = None) -> tuple[int, float]:
    """Write a part for each chunk the manifest does not list yet, saving the manifest after each.

    With ``prefetch``, the next chunk is read before this one is processed and handed to it (to start work
    that overlaps this chunk's); the first chunk computed is handed to it too, before it is processed.

    Returns:
        (chunks in the input, seconds spent on the chunks computed now).
    """
    done = len(manifest["chunks"])
    rows = n_chunks = 0
    seconds = 0.0
    ahead = None
    with _progress_bar(progress, total, description) as advance:
        for k in itertools.count():
            started = time.perf_counter()  # fetching counts: with Ray, the chunk is computed while we wait for it
            chunk, ahead = (ahead if ahead is not None else next(chunks, None)), None
            if chunk is None:
                break
            n_chunks += 1
            if k < done:
                rows += manifest["chunks"][k]["rows"]
                advance(manifest["chunks"][k]["rows"])
                continue
            if prefetch is not None:
                if k == done:  # the first chunk to compute: started at once, overlapping its own validation
                    prefetch(chunk)
                ahead = next(chunks, None)
                if ahead is not None:
                    prefetch(ahead)
            data, n_invalid = process(chunk, rows)
            part = f"part-{k:06d}{output.part_suffix}"
            output.write_part(data, work / part, first=k == 0)
            elapsed = time.perf_counter() - started
            seconds += elapsed
            rows += len(chunk)
            manifest["chunks"].append({"part": part, "rows": len(chunk), "invalid": n_invalid})
            manifest.update(rows_done=rows, invalid=manifest["invalid"] + n_invalid,
                            seconds=round(manifest["seconds"] + elapsed, 3))
            _save_manifest(work, manifest)
            advance(len(chunk))
    return n_chunks, seconds


# predict ----------------------------------------------------------------------------------------------------
def predict_frame(model: Predictor, chunk: pd.DataFrame, smiles_col: str, batch_size: int = 128,
                  precision: Precision | str = Precision.auto, progress: bool = False) -> pd.DataFrame:
    """A table (or chunk of one) with the prediction columns and ``error`` appended; a prediction column
    whose name the table already uses gets a ``_1`` suffix."""
    with inference_autocast(precision, model.device):
        preds = predict_table(model, chunk[smiles_col].tolist(), batch_size=batch_size, progress=progress)
    chunk = chunk.reset_index(drop=True)
    clash = [c for c in preds.columns if c in chunk.columns]
    return pd.concat([chunk, preds.rename(columns={c: f"{c}_1" for c in clash})], axis=1)


def _spare_cores(model: Predictor) -> bool:
    """Whether CPU cores are left over while the model runs: it runs on a GPU, or uses fewer threads than cores."""
    import torch

    return model.device.type != "cpu" or usable_cores() > torch.get_num_threads()


def _use_gpu(model: Predictor) -> Predictor:
    import torch

    return model.to("cuda") if torch.cuda.is_available() else model


def stream_predict(model_dir: str | Path, data: str | Path, out: str | Path, smiles_col: str | None = None,
                   batch_size: int = 128, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool = False,
                   resume: bool = True, engine: Engine | str = Engine.local, workers: int | None = None,
                   precision: Precision | str = Precision.auto, sep: str | None = None) -> StreamSummary:
    """Predict every row of a table of any size into ``out`` (.csv, .tsv or .parquet).

    The output is the input table plus the prediction columns and ``error``: same rows, same order, as
    ``workflow.run_predict`` writes, but built chunk by chunk in bounded memory.

    Args:
        model_dir: a fine-tuned model folder.
        data: csv / tsv / parquet / smi (gzip allowed) or sdf.
        out: output file; its parts go to ``<out>.parts/`` until the run completes.
        smiles_col: SMILES column (default: one named smiles).
        batch_size: molecules per forward pass.
        chunk_size: rows read, sorted by length and written at a time.
        progress: show a progress bar with molecules/s.
        resume: continue an interrupted run from its last written chunk (same input, model and settings).
        engine: ``local`` (this process) or ``ray`` (Ray Data; no resume).
        workers: Ray workers (model replicas); default: one per GPU of the Ray cluster, else one per CPU.
        precision: auto (bf16 on a GPU that has it, else fp32), fp32, bf16 or fp16
            (see ``embeddings.resolve_inference_precision``).
        sep: separator of a text table where its content cannot decide (``data.sniff_text``).
    """
    data, out, engine, precision = Path(data), Path(out), Engine(engine), Precision(precision)
    output = _output_for(out, (".csv", ".tsv", ".parquet"))
    col, chunks = read_chunks(data, chunk_size, smiles_col, sep)
    key = {"task": "predict", "input": _file_key(data), "model": _model_key(model_dir), "smiles_col": col,
           "chunk_size": chunk_size, "batch_size": batch_size, "precision": precision.value,
           "format": out.suffix.lower()}
    if engine is Engine.ray:
        batches = _ray_map(data, chunks, _RayPredictor, {"model_dir": str(model_dir), "smiles_col": col,
                                                         "batch_size": batch_size, "precision": precision},
                           chunk_size, workers, "pandas")
        return _run_chunks(batches, lambda frame, first: (frame, int((frame["error"] != "").sum())), output, out,
                           key | {"engine": "ray"}, False, progress, _count_rows(data), "predicting (ray)")
    model = _use_gpu(load_predictor(model_dir))

    def process(chunk: pd.DataFrame, first: int) -> tuple[pd.DataFrame, int]:
        frame = predict_frame(model, chunk, col, batch_size, precision)
        return frame, int((frame["error"] != "").sum())

    # Overlap RDKit with the forward pass only where a core is left for it: on 2 cores that the model's threads
    # already fill, prefetching measured 221 molecules/s against 233 without (oversubscribed threads wait).
    lists = descriptor_lists(model) if _spare_cores(model) else []

    def prefetch(chunk: pd.DataFrame) -> None:  # RDKit in the pool on the next chunk while the model runs on this
        smiles = [s.strip() for s in chunk[col] if isinstance(s, str) and s.strip()]  # as validate_smiles passes them
        for names in lists:
            prefetch_descriptors(smiles, names)

    return _run_chunks(chunks, process, output, out, key, resume, progress, _count_rows(data), "predicting",
                       prefetch if lists else None)


# embed ------------------------------------------------------------------------------------------------------
def stream_embed(model: str | Path | Predictor | Encoder, data: str | Path, out: str | Path,
                 smiles_col: str | None = None, config: EmbedConfig | None = None, chunk_size: int | None = None,
                 progress: bool = False, resume: bool = True, engine: Engine | str = Engine.local,
                 workers: int | None = None, sep: str | None = None) -> StreamSummary:
    """Embed every SMILES of a table of any size into ``out`` (.parquet, or .npy for pooled vectors).

    Parquet: one row per input, in order: ``row_id``, ``smiles``, ``embedding`` (fixed-size list of
    float32), the per-layer / per-token columns asked for, ``truncated`` and ``error`` (null embedding
    and the reason for an invalid SMILES). See ``embeddings.embeddings_table``.

    Args:
        model: a model folder (fine-tuned or pretrained encoder), bundled name, ``SmilesModel`` (any predictor)
            or ``Encoder``.
        config: pooling, layer(s), per-token and per-layer outputs.
        chunk_size: rows per chunk; default 10,000 (1,000 with per-token output).
        Other arguments as ``stream_predict``.
    """
    data, out, engine = Path(data), Path(out), Engine(engine)
    config = config or EmbedConfig()
    allowed = (".parquet",) if config.per_token else (".parquet", ".npy")
    if config.per_token and out.suffix.lower() == ".npy":
        raise SmilesformerError("per-token embeddings differ in length per molecule: write them to .parquet")
    output = _output_for(out, allowed)
    chunk_size = chunk_size or (PER_TOKEN_CHUNK_SIZE if config.per_token else DEFAULT_CHUNK_SIZE)
    col, chunks = read_chunks(data, chunk_size, smiles_col, sep)
    model_ref = model.source if isinstance(model, Encoder) else (
        model.meta.base_model if isinstance(model, Predictor) else _model_key(model))
    key = {"task": "embed", "input": _file_key(data), "model": model_ref, "smiles_col": col,
           "chunk_size": chunk_size, "config": config.describe() | {"batch_size": config.batch_size},
           "format": out.suffix.lower()}
    if engine is Engine.ray:
        if isinstance(model, (Predictor, Encoder)):
            raise SmilesformerError("the ray engine loads the model on each worker: pass a model folder")
        batches = _ray_map(data, chunks, _RayEmbedder, {"model": str(model), "smiles_col": col, "config": config},
                           chunk_size, workers, "pyarrow")

        def renumber(table: pa.Table, first: int) -> tuple[pa.Table, int]:
            row_id = pa.array(np.arange(first, first + table.num_rows), pa.int64())
            return table.set_column(0, "row_id", row_id), _count_invalid(table)

        return _run_chunks(batches, renumber, output, out, key | {"engine": "ray"}, False, progress,
                           _count_rows(data), "embedding (ray)")
    encoder = load_encoder(model)
    check_config(encoder, config)  # before any part is written

    def process(chunk: pd.DataFrame, first: int) -> tuple[pa.Table, int]:
        emb = embed(encoder, chunk[col].tolist(), config)
        return embeddings_table(emb, np.arange(first, first + len(chunk))), int((~emb.valid).sum())

    return _run_chunks(chunks, process, output, out, key, resume, progress, _count_rows(data), "embedding")


def _count_invalid(table: pa.Table) -> int:
    return int(sum(1 for e in table.column("error").to_pylist() if e))


# ray --------------------------------------------------------------------------------------------------------
class _RayPredictor:
    """A Ray Data worker: loads the model once, then predicts each batch it is given."""

    def __init__(self, model_dir: str, smiles_col: str, batch_size: int, precision: Precision):
        self.model = _use_gpu(load_predictor(model_dir))
        self.smiles_col, self.batch_size, self.precision = smiles_col, batch_size, precision

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return predict_frame(self.model, batch, self.smiles_col, self.batch_size, self.precision)


class _RayEmbedder:
    """A Ray Data worker: loads the encoder once, then embeds each batch (row ids are set by the driver)."""

    def __init__(self, model: str, smiles_col: str, config: EmbedConfig):
        self.encoder = load_encoder(model)
        self.smiles_col, self.config = smiles_col, config

    def __call__(self, batch: pa.Table) -> pa.Table:
        emb = embed(self.encoder, batch.column(self.smiles_col).to_pylist(), self.config)
        return embeddings_table(emb)


def _ray_dataset(path: Path, chunks: Iterator[pd.DataFrame]):
    """A Ray Dataset of the input with every CSV value read as text, as the local engine reads it."""
    import pyarrow.csv as pacsv
    import ray.data

    kind = (_suffixes(path) or [""])[-1]
    # Reading is light next to the model. It asks for no CPU: with as many workers as CPUs, the workers hold
    # every CPU and a read that waits for one would never be scheduled (a deadlock, seen with Ray 2.60).
    if kind == ".parquet":
        return ray.data.read_parquet(str(path), num_cpus=0)
    if kind in (".csv", ".tsv"):
        header = next(chunks).columns  # the first chunk, already read to find the SMILES column
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in header}, strings_can_be_null=False,
                                       quoted_strings_can_be_null=False)
        return ray.data.read_csv(str(path), parse_options=pacsv.ParseOptions(delimiter="\t" if kind == ".tsv" else ","),
                                 convert_options=convert, num_cpus=0)
    raise SmilesformerError(f"the ray engine reads .csv, .tsv and .parquet (gzip allowed); convert {path} or use "
                            "--engine local")


def _ray_map(path: Path, chunks: Iterator[pd.DataFrame], worker_cls, worker_kwargs: dict, chunk_size: int,
             workers: int | None, batch_format: str) -> Iterator:
    """Run ``worker_cls`` over the input with Ray Data and yield its output batches in input order."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise SmilesformerError("the ray engine needs Ray: pip install 'smilesformer[ray]'") from exc
    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    workers = workers or gpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
    # A worker sees a GPU only if it asks Ray for one; without GPUs, each asks for a CPU.
    resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # outputs must come back in input order
    context.enable_progress_bars = False
    dataset = _ray_dataset(path, chunks).map_batches(
        worker_cls, fn_constructor_kwargs=worker_kwargs, batch_size=chunk_size, batch_format=batch_format,
        compute=ray.data.ActorPoolStrategy(size=workers), **resources)
    yield from dataset.iter_batches(batch_size=None, batch_format=batch_format)
