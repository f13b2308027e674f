"""Reading molecule tables, the public data-set registry, RDKit validation and the bad-input policy.

The policy: a row that cannot be used is never lost silently. With ``error`` the first bad rows are
listed (row number, value, reason, fix); with ``skip`` they are dropped, counted and returned so the
caller can write them to a report. Messages and ``bad_rows.csv`` name a row as "data row N", counted from 1
among the data rows (the header is not counted: in a CSV, data row N is line N + 1). Internally rows keep their
0-based position.

Every SMILES is held to a size limit (``MoleculeLimits``: characters, then atoms) before any RDKit work beyond
parsing: descriptors and drawings of a huge molecule take minutes, and one such row must not stall a batch job
or the service. A molecule over the limit is a bad row like any other.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import os
import re
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclasses_field
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import Chem, rdBase

from .config import BadInputPolicy, DataConfig, DuplicatePolicy, Task

__all__ = [
    "DATA_ENV",
    "cache_dir",
    "check_output",
    "readable_like_the_rest",
    "DATASETS",
    "DatasetInfo",
    "SmilesformerError",
    "BadInputError",
    "resolve_dataset",
    "read_table",
    "read_error",
    "check_header",
    "READ_ERRORS",
    "write_table",
    "iter_smiles",
    "parse_smiles",
    "mol_from_smiles",
    "MoleculeLimits",
    "set_molecule_limits",
    "data_row",
    "bad_rows_report",
    "validate_smiles",
    "parse_molecule",
    "randomized_smiles",
    "clean_smiles",
    "clean_labels",
    "merge_duplicates",
    "load_dataset",
    "file_sha256",
]

DATA_ENV = "SMILESFORMER_DATA"
"""Environment variable naming a folder that holds the registered data sets (as `<name>.csv.gz` or `<name>.csv`)."""

CACHE_ENV = "SMILESFORMER_CACHE"
"""Environment variable naming the download cache (default ~/.cache/smilesformer)."""

MAX_LISTED = 10  # bad rows listed in an error message; the rest are counted


class SmilesformerError(ValueError):
    """An input problem the user can fix; the message says what and how."""


class BadInputError(SmilesformerError):
    """Rows that cannot be used; ``bad`` holds every one of them (row, column, value, reason)."""

    def __init__(self, message: str, bad: pd.DataFrame):
        super().__init__(message)
        self.bad = bad


MAX_CHARS_ENV = "SMILESFORMER_MAX_CHARS"
MAX_ATOMS_ENV = "SMILESFORMER_MAX_ATOMS"


@dataclass(frozen=True)
class MoleculeLimits:
    """The largest molecule smilesformer works on; larger ones are bad rows ("too large"), never a stall.

    The defaults hold every molecule of the public data sets (the largest: 783 characters and 388 atoms, in
    AqSolDB). RDKit's 2D descriptors grow steeply with size (measured: 0.05 s at 100 atoms, 3.1 s at 400, 141 s at
    1,000), so the atom limit bounds the time one row can take. Change them with ``--max-atoms`` /
    ``--max-chars``, or the environment variables ``SMILESFORMER_MAX_ATOMS`` / ``SMILESFORMER_MAX_CHARS``
    (which worker processes inherit).
    """

    max_chars: int = 2000
    """Characters in one SMILES (checked before parsing)."""
    max_atoms: int = 400
    """Heavy atoms in one molecule (checked after parsing, before any other RDKit work)."""

    def __post_init__(self) -> None:
        if self.max_chars < 1 or self.max_atoms < 1:
            raise SmilesformerError(f"molecule limits must be >= 1, got max_chars={self.max_chars}, "
                                    f"max_atoms={self.max_atoms}")

    @classmethod
    def current(cls) -> MoleculeLimits:
        """The limits in force: the environment's, else the defaults."""
        values = {}
        for field_name, env in (("max_chars", MAX_CHARS_ENV), ("max_atoms", MAX_ATOMS_ENV)):
            raw = os.environ.get(env)
            if raw:
                try:
                    values[field_name] = int(raw)
                except ValueError:
                    raise SmilesformerError(f"{env}={raw!r} is not a whole number; set it to, say, "
                                            f"{getattr(cls, field_name)}") from None
        return cls(**values)


def set_molecule_limits(max_chars: int | None = None, max_atoms: int | None = None) -> MoleculeLimits:
    """Set the limits for this process and the workers it starts (through the environment); None keeps one."""
    limits = MoleculeLimits.current()
    limits = MoleculeLimits(max_chars if max_chars is not None else limits.max_chars,
                            max_atoms if max_atoms is not None else limits.max_atoms)
    os.environ[MAX_CHARS_ENV], os.environ[MAX_ATOMS_ENV] = str(limits.max_chars), str(limits.max_atoms)
    return limits


def data_row(row: int) -> str:
    """How a message names a row: counted from 1 among the data rows, the header not counted."""
    return f"data row {row + 1}"


@dataclass(frozen=True)
class DatasetInfo:
    """A public data set known by name."""

    name: str
    url: str
    sha256: str
    """Of the decompressed CSV."""
    smiles_col: str
    target_cols: tuple[str, ...]
    task: Task
    description: str


_DMOL = "https://raw.githubusercontent.com/whitead/dmol-book/34ff3fcfdc426b00f1e0f7851b8f9a6075c50b67/data"
_AFP = "https://raw.githubusercontent.com/OpenDrugAI/AttentiveFP/dda6708342ffe255ded73c459ad64214a4615542/data"
_DC = "https://raw.githubusercontent.com/deepchem/deepchem/fbe3b911a94a6eb8c84c1a9e7ac67a472c49ea80/datasets"

# Sources and checksums as recorded in the project's data notes (shared/data/README.md).
DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo("aqsoldb", f"{_DMOL}/curated-solubility-dataset.csv",
                    "7c47e021d03a5720f53cfddb7aef90c8911ea276a36306c839798733d8630332",
                    "SMILES", ("Solubility",), Task.regression, "AqSolDB aqueous solubility, LogS (9,982)"),
        DatasetInfo("esol", f"{_DC}/delaney-processed.csv",
                    "8c06a76f0c6487d29ab0f903e6a7a7139f189ab3c1178f159c8be8964602f189",
                    "smiles", ("measured log solubility in mols per litre",), Task.regression,
                    "ESOL (Delaney) solubility, log mol/L (1,128)"),
        DatasetInfo("lipophilicity", f"{_AFP}/Lipophilicity.csv",
                    "aed41590cb30609d51d8e08ad3ff06495a76e80e211358801f596b10da69bacd",
                    "smiles", ("exp",), Task.regression, "AstraZeneca logD at pH 7.4 (4,200)"),
        DatasetInfo("bbbp", f"{_DMOL}/BBBP.csv",
                    "6aecd84110e8c0549bc4e2e486c52267d4e775178fca8999f5465029e31e75bb",
                    "smiles", ("p_np",), Task.classification, "blood-brain barrier penetration (2,050)"),
        DatasetInfo("bace", f"{_AFP}/bace.csv",
                    "f3fb9ce90bada3e2bd6148b0df13f8f8145a357bf87df0dd5b391ede974fc737",
                    "mol", ("Class",), Task.classification, "BACE-1 inhibition, binary (1,513)"),
        DatasetInfo("clintox", f"{_AFP}/clintox.csv",
                    "9999816e760dd838358b5d88e81cea2fc062be4458ffa412ceecdba4f88a67b6",
                    "smiles", ("FDA_APPROVED", "CT_TOX"), Task.classification,
                    "clinical toxicity, 2 binary tasks (1,484)"),
    ]
}


def cache_dir() -> Path:
    """smilesformer's folder for downloads and derived files: $SMILESFORMER_CACHE, else ~/.cache/smilesformer."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "smilesformer"))


def resolve_dataset(name: str, download: bool = True) -> Path:
    """Find a registered data set: in $SMILESFORMER_DATA first, then the user cache, else download it.

    Raises:
        SmilesformerError: unknown name, or not found locally and the download failed.
    """
    if name not in DATASETS:
        raise SmilesformerError(f"unknown data set {name!r}; known: {', '.join(DATASETS)} (or give a file path)")
    found = locate_dataset(name)
    if found is not None:
        return found
    info = DATASETS[name]
    target = cache_dir() / f"{name}.csv"
    if not download:
        raise SmilesformerError(f"data set {name!r} is not in ${DATA_ENV} nor in the cache {target.parent}")
    try:
        with urllib.request.urlopen(info.url, timeout=30) as response:
            content = response.read()
    except OSError as exc:
        raise SmilesformerError(
            f"data set {name!r} was not found in ${DATA_ENV} ({os.environ.get(DATA_ENV, 'not set')}) nor in the "
            f"cache {target.parent}, and downloading {info.url} failed ({exc}). Set {DATA_ENV} to a folder "
            f"holding {name}.csv or {name}.csv.gz, or give the file path instead of the name."
        ) from exc
    digest = hashlib.sha256(content).hexdigest()
    if digest != info.sha256:
        raise SmilesformerError(f"downloaded {info.url} has sha256 {digest}, expected {info.sha256}; not used")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return target


def locate_dataset(name: str) -> Path | None:
    """Where a registered data set is on this machine, or None."""
    folders = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    folders.append(cache_dir())
    for folder in folders:
        for candidate in (folder / f"{name}.csv.gz", folder / f"{name}.csv"):
            if candidate.is_file():
                return candidate
    return None


def check_output(path: str | Path, folder: bool = False, option: str = "--out") -> Path:
    """Check, before any work, that a run can write ``path`` (a file, or with ``folder`` a folder it fills).

    Raises:
        SmilesformerError: one line naming the path as given and the fix: a folder where a file goes or the other
            way round, a file where a folder would have to be made, or a place this user cannot write in.
    """
    given = Path(path)
    if folder and given.exists() and not given.is_dir():
        raise SmilesformerError(f"{option} {path} is a file, not a folder: give the name of a folder (a new one is "
                                "made) or move the file away")
    if not folder and given.is_dir():
        raise SmilesformerError(f"{option} {path} is a folder: give a file name, such as {given / 'predictions.csv'}")
    place = given if folder else given.parent
    existing = place.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SmilesformerError(f"cannot write {option} {path}: {existing} is a file, so no folder can be made there; "
                                "choose another place")
    try:  # a real write, not os.access: root passes every access check, and a read-only mount fails them all
        probe = tempfile.NamedTemporaryFile(dir=existing, prefix=".smilesformer-write-test-")
        probe.close()
    except OSError as exc:
        raise SmilesformerError(f"cannot write {option} {path}: {existing} is not writable by this user "
                                f"({exc.strerror}); choose a folder you can write in, or ask for write access") from exc
    if not folder and given.exists() and not os.access(given, os.W_OK):
        raise SmilesformerError(f"cannot write {option} {path}: the file exists and is read-only; remove it or choose "
                                "another name")
    return given


def readable_like_the_rest(folder: str | Path) -> None:
    """Give the files of ``folder`` the permissions any new file gets here (the umask's): safetensors writes its
    weights 0600, so a model shared on a group machine could not be loaded by the colleagues who can read the
    rest of its run."""
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    for path in Path(folder).iterdir():
        if path.is_file() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _suffixes(path: Path) -> list[str]:
    suffixes = [s.lower() for s in path.suffixes]
    return suffixes[:-1] if suffixes and suffixes[-1] == ".gz" else suffixes


WRITABLE = (".csv", ".tsv", ".parquet")


def writable_kind(path: str | Path) -> str:
    """The format ``write_table`` writes ``path`` in (checked before any work is done).

    Raises:
        SmilesformerError: another extension (naming the ones that work).
    """
    kind = (_suffixes(Path(path)) or [""])[-1]
    if kind not in WRITABLE:
        raise SmilesformerError(f"cannot write {path}: give the output a .csv, .tsv or .parquet name")
    return kind


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as its extension says: .csv, .tsv or .parquet (``.gz`` after csv/tsv compresses it).

    Raises:
        SmilesformerError: another extension (naming the ones that work).
    """
    path, kind = Path(path), writable_kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False, sep="\t" if kind == ".tsv" else ",")
    return path


READ_ERRORS = (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError, zlib.error)
"""What reading a damaged or mis-encoded table raises; ``read_error`` turns each into a message."""


def _first_undecodable_line(path: Path) -> tuple[int, bytes] | None:
    """The first line (counted from 1) that is not UTF-8, and its bytes; None when every line decodes."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number, line
    return None


def read_error(path: Path, exc: Exception) -> SmilesformerError:
    """A message for a table that cannot be read: which line, or what is damaged, and what to do."""
    if isinstance(exc, pd.errors.EmptyDataError):
        return SmilesformerError(f"{path} is empty: it has no header and no rows")
    if isinstance(exc, UnicodeDecodeError):
        try:
            found = _first_undecodable_line(path)
        except READ_ERRORS:
            found = None
        where = (f"line {found[0]} ({data_row(found[0] - 2)} after a header line) holds {found[1][:80]!r}, "
                 if found else "")
        return SmilesformerError(f"cannot read {path}: it is not UTF-8 text: {where}({exc.reason}). Save the file "
                                 "as UTF-8 (in a spreadsheet: CSV UTF-8) and try again")
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        return SmilesformerError(f"cannot read {path}: the compressed file is damaged or cut short ({exc}); "
                                 "download or compress it again (gzip -t checks a .gz file)")
    return SmilesformerError(f"cannot read {path}: {exc}")


READABLE = (".csv", ".tsv", ".parquet", ".sdf", ".smi", ".smiles", ".txt")
READABLE_HINT = ".csv, .tsv, .parquet, .sdf, .smi, .smiles or .txt (the text ones gzip-compressed too, e.g. .csv.gz)"
SMILES_COLUMN_NAMES = ("smiles", "mol", "canonical_smiles", "smi")  # a column found without --smiles-col
_SEPARATORS = ",;\t|"


@dataclass(frozen=True)
class TextLayout:
    """How a text file of molecules is laid out, judged by its content as well as its extension.

    Attributes:
        sep: the separator of a delimited table with a header line; None for SMILES one per line (each
            optionally followed by whitespace and a name).
        header: for SMILES one per line, whether the first line is a header (it is not a molecule, the next are).
    """

    sep: str | None
    header: bool = False


def _sample_lines(path: Path, n: int = 50) -> list[str]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    lines: list[str] = []
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        for line in fh:
            if line.strip():
                lines.append(line.rstrip("\r\n"))
                if len(lines) == n:
                    break
    return lines


def _fields(line: str, sep: str) -> list[str]:
    return next(csv.reader([line], delimiter=sep), [])


def _consistent_separator(lines: list[str]) -> str | None:
    """The separator that splits every sampled line into the same number (2 or more) of fields: csv.Sniffer's
    pick among ``_SEPARATORS`` when it has one, else the first that does."""
    fits = []
    for d in _SEPARATORS:
        counts = {len(_fields(line, d)) for line in lines}
        if len(counts) == 1 and counts.pop() >= 2:
            fits.append(d)
    if not fits:
        return None
    try:
        sniffed = csv.Sniffer().sniff("\n".join(lines), delimiters=_SEPARATORS).delimiter
    except csv.Error:
        sniffed = None
    return sniffed if sniffed in fits else fits[0]


def _parses(text: str) -> bool:
    return mol_from_smiles(text) is not None


def sniff_text(path: str | Path, sep: str | None = None) -> TextLayout:
    """Read a text table's layout from its first lines (the standard library's ``csv.Sniffer`` among ``,;\t|``).

    A .csv or .tsv is a delimited table with a header: its extension's separator, or the one its lines are written
    with (spreadsheets in many locales write ``;``). A .smi, .smiles or .txt is SMILES one per line, unless it is
    a table with a header naming a SMILES column (a CSV saved as .txt); its first line is a header when it is no
    molecule but the next lines are. ``sep`` (``--sep``) decides where the content cannot.

    Raises:
        SmilesformerError: a .smi/.txt file of separated values without a header, which would otherwise be read as
            SMILES such as ``CCO,1.0``.
    """
    path = Path(path)
    kind = (_suffixes(path) or [""])[-1]
    if sep:
        return TextLayout(sep)
    lines = _sample_lines(path)
    if not lines:
        return TextLayout("\t" if kind == ".tsv" else "," if kind == ".csv" else None)
    found = _consistent_separator(lines)
    if kind in (".csv", ".tsv"):
        default = "\t" if kind == ".tsv" else ","
        return TextLayout(default if default in lines[0] or not found else found)
    if found is not None:
        header = [f.strip().lower() for f in _fields(lines[0], found)]
        if any(name in SMILES_COLUMN_NAMES for name in header):
            return TextLayout(found)
        firsts = [_fields(line, found)[0].strip() for line in lines[:20]]
        if found != "\t" and sum(map(_parses, firsts)) > len(firsts) / 2:
            raise SmilesformerError(
                f"{path} looks like values separated by {found!r} without a header line (line 1: {lines[0][:80]!r}), "
                "not SMILES one per line; add a header line naming the columns (smiles,...) and save it as .csv")
    tokens = [line.split(maxsplit=1)[0] for line in lines[:20]]
    header = len(tokens) > 1 and not _parses(tokens[0]) and sum(map(_parses, tokens[1:])) > (len(tokens) - 1) / 2
    return TextLayout(None, header)


def check_header(path: Path, columns: Sequence[object], sep: str = ",") -> None:
    """Refuse a table whose header names a column twice: pandas would silently rename the second (``x.1``)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        header = [name.strip() for name in next(csv.reader(fh, delimiter=sep), [])]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise SmilesformerError(f"{path}: the header names column(s) {', '.join(map(repr, repeated))} more than "
                                "once; rename them so each column has its own name")


def read_table(path: str | Path, sep: str | None = None) -> pd.DataFrame:
    """Read a molecule table: .csv, .tsv, .parquet, .sdf, .smi/.smiles/.txt (gzip allowed for text formats).

    Text files are read by content as well as extension (``sniff_text``): the separator a table is written with,
    a CSV saved as .txt, a header line on a SMILES file; ``sep`` decides where the content cannot. Header names
    lose surrounding spaces. An SDF gives a ``smiles`` column (RDKit canonical; unreadable records keep their row
    with an empty SMILES) plus its properties. A SMILES file gives ``smiles`` and, when present, ``name``.

    Raises:
        SmilesformerError: missing, empty or unreadable file, or an unknown extension.
    """
    path = Path(path)
    if not path.is_file():
        raise SmilesformerError(f"no such file: {path}")
    kind = (_suffixes(path) or [""])[-1]
    if kind not in READABLE:
        raise SmilesformerError(f"cannot read {path}: unknown extension {kind or '(none)'}; use {READABLE_HINT}")
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    layout = None
    try:
        if kind in (".csv", ".tsv", ".smi", ".smiles", ".txt"):
            layout = sniff_text(path, sep)
        if layout is not None and layout.sep is not None:
            table = pd.read_csv(path, sep=layout.sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            table.columns = [str(c).strip() for c in table.columns]
        elif layout is not None:
            rows = []
            with opener(path, "rt", encoding="utf-8-sig") as fh:
                for number, line in enumerate(fh):
                    parts = line.strip().split(maxsplit=1)
                    if parts and not (layout.header and number == 0):
                        rows.append(parts + [""] * (2 - len(parts)))
            table = pd.DataFrame(rows, columns=["smiles", "name"])
            if (table["name"] == "").all():
                table = table.drop(columns="name")
        elif kind == ".parquet":
            table = pd.read_parquet(path)
        else:
            with opener(path, "rb") as fh:
                supplier = Chem.ForwardSDMolSupplier(io.BytesIO(fh.read()))
                records = []
                for mol in supplier:
                    if mol is None:
                        records.append({"smiles": ""})
                        continue
                    record = {"smiles": Chem.MolToSmiles(mol)}
                    record.update({k: str(v) for k, v in mol.GetPropsAsDict().items()})
                    if mol.HasProp("_Name"):
                        record.setdefault("name", mol.GetProp("_Name"))
                    records.append(record)
            table = pd.DataFrame.from_records(records)
    except READ_ERRORS as exc:
        raise read_error(path, exc) from exc
    if layout is not None and layout.sep is not None:
        check_header(path, table.columns, layout.sep)
    if len(table) == 0:
        raise SmilesformerError(f"{path} has no data rows (columns: {', '.join(map(repr, map(str, table.columns)))})")
    return table.reset_index(drop=True)


def iter_smiles(path: str | Path, smiles_col: str | None = None, chunk_size: int = 100_000,
                sep: str | None = None) -> Iterator[str]:
    """Stream SMILES from a one-per-line file or a table's column without loading the file at once (the layout
    read as ``read_table`` reads it)."""
    path = Path(path)
    kind = (_suffixes(path) or [""])[-1]
    layout = sniff_text(path, sep) if kind in (".csv", ".tsv", ".smi", ".smiles", ".txt") else None
    if layout is not None and layout.sep is not None:
        for chunk in pd.read_csv(path, sep=layout.sep, dtype=str, keep_default_na=False, chunksize=chunk_size,
                                 encoding="utf-8-sig"):
            chunk.columns = [str(c).strip() for c in chunk.columns]
            col = smiles_col or _guess_smiles_col(chunk)
            require_columns(chunk, [col], path)
            yield from chunk[col]
    elif layout is None and kind in (".parquet", ".sdf"):
        table = read_table(path)
        yield from table[smiles_col or _guess_smiles_col(table)]
    else:
        opener = gzip.open if path.suffix.lower() == ".gz" else open
        with opener(path, "rt", encoding="utf-8-sig") as fh:
            for number, line in enumerate(fh):
                parts = line.split(maxsplit=1)
                if parts and not (layout is not None and layout.header and number == 0):
                    yield parts[0]


def _guess_smiles_col(table: pd.DataFrame) -> str:
    for col in table.columns:
        if str(col).strip().lower() in SMILES_COLUMN_NAMES:
            return col
    raise SmilesformerError(
        f"no SMILES column given and none is named smiles; columns: {', '.join(map(repr, map(str, table.columns)))}"
        "; name the column with --smiles-col"
    )


def require_columns(table: pd.DataFrame, columns: list[str], source: object = "the table") -> None:
    """Raise, listing the available columns, if any of ``columns`` is missing."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise SmilesformerError(
            f"column(s) {', '.join(map(repr, missing))} not in {source}; "
            f"available columns: {', '.join(map(repr, map(str, table.columns)))}"
        )


_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")


def mol_from_smiles(smiles: str, params: Chem.SmilesParserParams | None = None) -> Chem.Mol | None:
    """``Chem.MolFromSmiles`` without RDKit's log lines (warnings such as "not removing hydrogen atom without
    neighbors" on molecules already validated; a failure's reason comes from ``parse_smiles``)."""
    with rdBase.BlockLogs():
        return Chem.MolFromSmiles(smiles, params) if params is not None else Chem.MolFromSmiles(smiles)


def parse_smiles(smiles: object, limits: MoleculeLimits | None = None) -> tuple[Chem.Mol | None, str]:
    """Parse one SMILES with RDKit, within the size limits (``MoleculeLimits.current()`` unless given).

    Returns:
        (mol, "") when it parses, else (None, reason) with RDKit's own message or the limit it breaks.
    """
    if not isinstance(smiles, str) or not smiles.strip():
        return None, "empty SMILES"
    limits = limits or MoleculeLimits.current()
    if len(smiles.strip()) > limits.max_chars:
        return None, (f"too large: {len(smiles.strip())} characters, over the limit of {limits.max_chars} "
                      f"(raise it with --max-chars or {MAX_CHARS_ENV})")
    try:
        smiles.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800", which JSON can carry
        return None, f"not valid text: {exc.reason} at character {exc.start + 1} ({smiles[exc.start]!r})"
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles.strip())
    if mol is not None:
        if mol.GetNumAtoms() > limits.max_atoms:
            return None, (f"too large: {mol.GetNumAtoms()} atoms, over the limit of {limits.max_atoms} "
                          f"(raise it with --max-atoms or {MAX_ATOMS_ENV})")
        return mol, ""
    # RDKit says why a SMILES fails only through its log. Only for a failure, and only for this call, the log
    # goes to Python's sys.stderr, captured here; RDKit's default (C++ streams) is put back after, so importing
    # or using smilesformer leaves RDKit's logging as the user set it up. Switching streams enables or resets
    # each log level, so the levels the user had (e.g. warnings disabled with RDLogger) are put back too.
    status = rdBase.LogStatus()  # "rdApp.debug:disabled\nrdApp.info:disabled\n..."
    buffer = io.StringIO()
    rdBase.LogToPythonStderr()
    try:
        with contextlib.redirect_stderr(buffer):
            Chem.MolFromSmiles(smiles.strip())
    finally:
        rdBase.LogToCppStreams()
        for level in status.splitlines():
            name, state = level.rsplit(":", 1)
            (rdBase.EnableLog if state == "enabled" else rdBase.DisableLog)(name)
    lines: list[str] = []
    for line in buffer.getvalue().splitlines():
        line = _TIMESTAMP.sub("", line).replace("SMILES Parse Error: ", "").strip()
        if not line or line in lines or line.startswith("Failed parsing SMILES") or set(line) <= set("~^ "):
            continue  # the caret under the position cannot line up in a one-line message
        if lines and lines[-1].endswith(":"):
            lines[-1] += " " + line  # "check for mistakes around position 5:" + the text it points into
        else:
            lines.append(line)
    return None, "; ".join(lines) or "RDKit cannot parse it"


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
    return mol_from_smiles(smiles.strip(), params)


def randomized_smiles(smiles: Sequence[str], n: int, seed: int = 0) -> list[list[str]]:
    """``n`` randomized SMILES of each molecule (RDKit ``MolToRandomSmilesVect``; stereo kept).

    RDKit writes the same molecule from other starting atoms and branch orders. Deterministic for a given seed,
    so augmented training and test-time augmentation are reproducible.
    """
    out = []
    for i, s in enumerate(smiles):
        mol = mol_from_smiles(s)
        if mol is None:
            raise SmilesformerError(f"SMILES {i + 1}: cannot randomize invalid SMILES {s!r}; validate inputs first")
        out.append(list(Chem.MolToRandomSmilesVect(mol, n, randomSeed=seed + i)))
    return out


def validate_smiles(smiles: Sequence[object],
                    limits: MoleculeLimits | None = None) -> tuple[list[str | None], list[str]]:
    """Every row parsed with RDKit: the stripped SMILES (None where it fails) and the reason ("" where it parses).

    The rule every prediction path follows: keep every row, predict the valid ones, say why the others failed.
    """
    limits = limits or MoleculeLimits.current()
    clean, errors = [], []
    for s in smiles:
        mol, reason = parse_smiles(s, limits)
        clean.append(s.strip() if mol is not None else None)
        errors.append("" if mol is not None else f"invalid SMILES: {reason}")
    return clean, errors


def _bad_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["row", "column", "value", "reason"])


def bad_rows_report(bad: pd.DataFrame) -> pd.DataFrame:
    """Bad rows as written to ``bad_rows.csv``: ``data_row`` counted from 1 (the header not counted)."""
    return bad.assign(row=bad["row"] + 1).rename(columns={"row": "data_row"})


def _describe(bad: pd.DataFrame, what: str, fix: str, name_row: Callable[[int], str] = data_row) -> str:
    """The bad rows listed for a message; ``name_row`` names a row from its 0-based position (default: data row N
    counted from 1, for tables; the scikit-learn estimators name positions in X)."""
    counted = " (data rows counted from 1, the header not counted)" if name_row is data_row else ""
    lines = [f"{len(bad)} row(s) with {what}{counted}:"]
    for r in bad.head(MAX_LISTED).itertuples():
        lines.append(f"  {name_row(r.row)}, column {r.column!r}: {r.value!r}: {r.reason}")
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more")
    lines.append(fix)
    return "\n".join(lines)


_SKIP_FIX = "Fix or remove these rows, or pass --bad-input skip (bad_input='skip') to drop them into a report."


def clean_smiles(
    smiles: pd.Series, canonicalize: bool = False, column: str = "smiles"
) -> tuple[pd.Series, pd.DataFrame]:
    """Strip and validate SMILES with RDKit.

    Args:
        smiles: raw values, indexed by row number.
        canonicalize: return RDKit canonical SMILES instead of the stripped input.
        column: name used in the report.

    Returns:
        (clean, bad): ``clean`` has the same index as ``smiles`` with None where a row failed;
        ``bad`` lists the failed rows (row, column, value, reason).
    """
    clean: list[str | None] = []
    bad = []
    for row, value in smiles.items():
        mol, reason = parse_smiles(value)
        if mol is None:
            clean.append(None)
            bad.append({"row": row, "column": column, "value": value, "reason": reason})
        else:
            clean.append(Chem.MolToSmiles(mol) if canonicalize else value.strip())
    return pd.Series(clean, index=smiles.index, dtype=object), _bad_frame(bad)


def clean_labels(
    table: pd.DataFrame, target_cols: list[str], task: Task
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert label columns to floats and find the rows that cannot be trained on.

    A non-numeric value is always bad. A missing value is bad when there is one target; with several
    targets a row keeps its missing labels (masked out of loss and metrics) unless all are missing.
    Classification labels must be whole numbers (0/1 for binary tasks, 0..k-1 for multiclass).

    Returns:
        (labels, bad): float labels (NaN where missing) indexed like ``table``; the bad rows.
    """
    labels = pd.DataFrame(index=table.index)
    bad = []
    for col in target_cols:
        raw = table[col]
        text = raw.astype(str).str.strip()
        missing = raw.isna() | text.isin(["", "nan", "NaN", "NA", "N/A", "None", "null"])
        values = pd.to_numeric(text.where(~missing), errors="coerce")
        for row in values.index[values.isna() & ~missing]:
            bad.append({"row": row, "column": col, "value": raw[row], "reason": "not a number"})
        finite = values.notna()
        for row in values.index[finite & ~np.isfinite(values.fillna(0))]:
            bad.append({"row": row, "column": col, "value": raw[row], "reason": "not a finite number"})
        if task is Task.classification:
            for row in values.index[finite & ((values != values.round()) | (values < 0))]:
                bad.append({"row": row, "column": col, "value": raw[row],
                            "reason": "classification labels must be whole numbers >= 0 (0/1 for binary)"})
        if len(target_cols) == 1:
            for row in values.index[missing]:
                bad.append({"row": row, "column": col, "value": raw[row], "reason": "missing label"})
        labels[col] = values.where(np.isfinite(values.fillna(np.nan)))
    if len(target_cols) > 1:
        for row in labels.index[labels.isna().all(axis=1)]:
            if not any(b["row"] == row for b in bad):
                bad.append({"row": row, "column": ",".join(target_cols), "value": "", "reason": "every label missing"})
    return labels, _bad_frame(bad).sort_values("row", kind="stable").reset_index(drop=True)


CONFLICT_SD = 0.5
"""Regression labels of one molecule disagree when they span more than this many standard deviations of the
target (over all rows): for AqSolDB's logS (sd 2.4) more than 1.2 log units."""


def merge_duplicates(table: pd.DataFrame, target_cols: list[str], policy: DuplicatePolicy,
                     task: Task = Task.regression) -> tuple[pd.DataFrame, int, pd.DataFrame]:
    """Find molecules that appear more than once (by canonical SMILES), say which disagree, and apply ``policy``.

    A repeated molecule's labels conflict when a regression target spans more than ``CONFLICT_SD`` of its
    standard deviation, or a classification target holds different classes.

    Returns:
        (table, n_duplicates, report): the table (with ``average`` merged rows keep the first row's number and the
        mean label, or for classification the most frequent class; with ``drop-conflicts`` the conflicting
        molecules are gone), the number of rows that repeat an earlier molecule, and every row of a repeated
        molecule (row, smiles, its labels, ``molecule`` numbering the groups, ``conflict``).
    """
    canonical = table["smiles"].map(lambda s: Chem.MolToSmiles(mol_from_smiles(s)))
    n_dup = int(canonical.duplicated().sum())
    if n_dup == 0:
        return table, 0, pd.DataFrame(columns=["molecule", "row", "smiles", *target_cols, "conflict"])
    labelled = table.assign(_canon=canonical.values)
    repeated = labelled[canonical.duplicated(keep=False).values]
    grouped = repeated.groupby("_canon", sort=False)
    if task is Task.classification:
        conflict = grouped[target_cols].nunique().gt(1).any(axis=1)
    else:
        spread = grouped[target_cols].max() - grouped[target_cols].min()
        conflict = (spread > CONFLICT_SD * table[target_cols].std()).any(axis=1)
    report = repeated.assign(molecule=repeated["_canon"].map({c: i + 1 for i, c in enumerate(conflict.index)}),
                             conflict=repeated["_canon"].map(conflict))
    report = report[["molecule", "row", "smiles", *target_cols, "conflict"]].reset_index(drop=True)
    if policy is DuplicatePolicy.keep:
        return table, n_dup, report
    if policy is DuplicatePolicy.drop_conflicts:
        drop = labelled["_canon"].isin(conflict.index[conflict]).values
        return table[~drop], n_dup, report
    grouped = labelled.groupby("_canon", sort=False)
    merged = grouped.first()
    if task is Task.classification:  # the most frequent class; a tie goes to the first row's
        merged[target_cols] = grouped[target_cols].agg(lambda v: v.dropna().mode().iloc[0] if v.notna().any()
                                                        else np.nan)
    else:
        merged[target_cols] = grouped[target_cols].mean()
    merged["row"] = grouped["row"].first()
    merged = merged.reset_index(drop=True).set_index("row", drop=False)
    merged.index.name = None
    return merged.sort_index(), n_dup, report


@dataclass
class LoadedData:
    """A cleaned table ready to split and train on, with what was found on the way."""

    table: pd.DataFrame
    """Columns: row (position in the source), smiles (cleaned), one float column per target."""
    target_cols: list[str]
    task: Task
    bad: pd.DataFrame
    """Rows dropped under bad_input=skip (row, column, value, reason)."""
    n_duplicates: int
    source_path: Path
    source_rows: int
    raw: pd.DataFrame
    """The source table as read (sampled, if asked), for split columns and reports."""
    duplicates: pd.DataFrame = dataclasses_field(default_factory=pd.DataFrame)
    """Every row of a repeated molecule and whether its labels conflict (``merge_duplicates``)."""

    @property
    def conflicts(self) -> int:
        """Molecules whose repeated labels disagree."""
        return int(self.duplicates.loc[self.duplicates["conflict"].astype(bool), "molecule"].nunique()) \
            if len(self.duplicates) else 0


def load_dataset(config: DataConfig) -> LoadedData:
    """Read, validate and clean the data a config names, applying its bad-input and duplicate policies.

    Raises:
        SmilesformerError: missing column, empty file, or (bad_input=error) any bad row, listed.
    """
    if config.source in DATASETS and not Path(config.source).exists():
        info = DATASETS[config.source]
        path = resolve_dataset(config.source)
        smiles_col = config.smiles_col or info.smiles_col
        target_cols = list(config.target_cols) or list(info.target_cols)
        task = config.task or info.task
    else:
        path = Path(config.source)
        smiles_col = config.smiles_col
        target_cols = list(config.target_cols)
        task = config.task or Task.regression
    raw = read_table(path, config.sep)
    smiles_col = smiles_col or _guess_smiles_col(raw)
    if not target_cols:
        raise SmilesformerError(
            f"no target column given; pass --target COL (columns: {', '.join(map(repr, map(str, raw.columns)))})"
        )
    require_columns(raw, [smiles_col, *target_cols] + ([config.split_col] if config.split_col else []), path)
    source_rows = len(raw)
    if config.sample is not None and config.sample < 1:
        raw = raw.sample(frac=config.sample, random_state=config.seed).sort_index()

    smiles, bad_smiles = clean_smiles(raw[smiles_col], config.canonicalize, smiles_col)
    labels, bad_labels = clean_labels(raw, target_cols, task)
    bad = pd.concat([bad_smiles, bad_labels]).sort_values("row", kind="stable").reset_index(drop=True)
    if len(bad) and config.bad_input is BadInputPolicy.error:
        raise BadInputError(_describe(bad, "unusable SMILES or labels", _SKIP_FIX), bad)
    keep = ~raw.index.isin(bad["row"])
    table = pd.DataFrame({"row": raw.index[keep], "smiles": smiles[keep].values}, index=raw.index[keep])
    for col in target_cols:
        table[col] = labels.loc[keep, col].values
    if table.empty:
        raise SmilesformerError(f"no usable rows left in {path} after dropping {len(bad)} bad row(s)")
    table, n_dup, report = merge_duplicates(table, target_cols, config.duplicates, task)
    if table.empty:
        raise SmilesformerError(f"no rows left in {path}: every molecule's repeated labels disagree (see "
                                "duplicates.csv); use --duplicates keep or average")
    return LoadedData(table, target_cols, task, bad, n_dup, path, source_rows, raw, report)
