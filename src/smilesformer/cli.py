"""The `smilesformer` command: one short command per verb (parse -> call the library -> print)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from .config import (
    DEFAULT_MODEL,
    BadInputPolicy,
    DataConfig,
    DuplicatePolicy,
    Engine,
    Objective,
    Pooling,
    Precision,
    PretrainConfig,
    ServeConfig,
    SplitKind,
    Task,
    TokenizerKind,
    TrainConfig,
    demo_data_config,
    demo_train_config,
)
from .data import (
    DATA_ENV,
    DATASETS,
    MAX_ATOMS_ENV,
    MAX_CHARS_ENV,
    READABLE_HINT,
    LoadedData,
    MoleculeLimits,
    SmilesformerError,
    load_dataset,
    locate_dataset,
    set_molecule_limits,
)
from .rdkit_descriptors import (
    CACHE_MOLECULES,
    allow_process_pool,
    descriptor_names,
    descriptor_workers,
    prefetch_descriptors,
)
from .threads import THREADS_ENV, choose_threads, set_threads

app = typer.Typer(help="Chemical language models on SMILES: fine-tune, evaluate, predict and more.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True)


NO_MODEL_COMMANDS = frozenset({"datasets", "corpus"})
"""Commands that run no model: they neither import torch nor spend a fifth of a second measuring busy cores."""


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")] = False,
    threads: Annotated[str, typer.Option(envvar=THREADS_ENV, help="CPU threads: 'auto' takes the cores other processes leave free when the command starts (a busy machine then slows it in proportion, not 5-13x), or a number.")] = "auto",
) -> None:
    try:
        if ctx.invoked_subcommand in NO_MODEL_COMMANDS:
            choose_threads(threads if threads.strip().lower() != "auto" else 1)  # the setting is checked all the same
        else:
            set_threads(threads)
    except ValueError as exc:
        _fail(exc)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)
    logging.getLogger("smilesformer").setLevel(logging.INFO if not verbose else logging.DEBUG)
    allow_process_pool()  # the CLI's entry points are safe to spawn workers from


def _read_and_start_descriptors(data: DataConfig, train: TrainConfig) -> LoadedData:
    """Read and check a fine-tuning table, then start its molecules' RDKit descriptors (what the descriptor head
    and the trees will read) in worker processes, and return the table.

    Called before PyTorch is imported. Importing PyTorch and transformers keeps one core busy for seconds, and
    RDKit's descriptors take about 6 ms a molecule, also on one core: started here, they run on the cores the
    import leaves free (all but one), and the fine-tune collects them from the cache (``compute_descriptors``).
    Written here, not in the workflow, because by the time the workflow runs, the import is over. The rule below
    is the defaults' ("auto" descriptors: the head on RoBERTa encoders; "auto" trees: for regression); where it
    guesses wrong (another encoder type) the workers only spent a free core.
    """
    loaded = load_dataset(data)
    smiles = loaded.table["smiles"].tolist()
    trees = train.trees == "gbm" or (train.trees == "auto" and loaded.task is Task.regression)
    if (train.descriptors != "none" or trees) and 0 < len(smiles) <= CACHE_MOLECULES:
        names = descriptor_names("fast" if train.descriptors == "fast" else "rdkit")
        prefetch_descriptors(smiles, names, workers=max(1, descriptor_workers() - 1))
    return loaded


def _fail(exc: Exception) -> None:
    # user data (a SMILES such as c1ccccc1[nH]) and extras (smilesformer[serve]) hold square brackets: escaped,
    # so rich prints them as written instead of reading them as markup
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextlib.contextmanager
def _interruptible(kept: str) -> Iterator[None]:
    """Ctrl-C: one line saying what was kept and how to go on, then exit 130 (the shell's code for it)."""
    try:
        yield
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted:[/] {escape(kept)}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def _print_metrics(metrics: dict, title: str) -> None:
    table = Table(title=title)
    table.add_column("set")
    table.add_column("target")
    keys = ["rmse", "mae", "mse", "r2", "pearson_r", "spearman_rho", "roc_auc", "pr_auc", "accuracy", "f1", "mcc"]
    shown = [k for k in keys if any(k in m for s in ("valid", "test", None) for m in
                                    (metrics.get(s, metrics) if s else metrics).get("per_target", {}).values())]
    for k in shown:
        table.add_column(k, justify="right")
    for split in ("valid", "test", None):
        block = metrics.get(split) if split else (metrics if "per_target" in metrics else None)
        if not block:
            continue
        for target, m in block["per_target"].items():
            table.add_row(split or "data", target, *[f"{m[k]:.4f}" if k in m else "" for k in shown])
    Console().print(table)
    _print_uncertainty(metrics)


def _print_uncertainty(metrics: dict) -> None:
    """One line per set and target on how well the uncertainty ranks and bounds the errors, and one on the domain."""
    for split in ("valid", "test", None):
        block = (metrics.get(split) or {}) if split else metrics
        name = split or "data"
        for target, m in (block.get("uncertainty") or {}).items():
            if target == "domain":
                if "ratio" in m:
                    console.print(f"{name}: {m['flagged']} of {m['n']} molecules flagged out of the domain; their "
                                  f"mean error is {m['ratio']:.2f}x that of the rest", markup=False, soft_wrap=True)
                continue
            parts = []
            if "spearman_sd_abs_error" in m:
                parts.append(f"Spearman(sd, |error|) {m['spearman_sd_abs_error']:.2f} "
                             f"(a perfect sd would give ~{m['spearman_expected']:.2f})")
            if "coverage_90" in m:
                parts.append(f"90% interval covers {m['coverage_90']:.2f}, mean width {m['mean_interval_width']:.3g}")
            if "mae_confident_half_ratio" in m:
                parts.append(f"MAE of the most confident half {m['mae_confident_half_ratio']:.2f}x the overall")
            if "ece" in m:
                parts.append(f"calibration error {m['ece']:.3f}, accuracy {m['accuracy']:.3f}, "
                             f"{m['accuracy_confident_half']:.3f} on the most confident half")
            if parts:
                console.print(f"{name} {target}: " + "; ".join(parts), markup=False, soft_wrap=True)


MaxAtoms = Annotated[int | None, typer.Option(
    help=f"Largest molecule, in atoms; larger ones are bad rows, not a stall (default {MoleculeLimits.max_atoms}, "
         f"or ${MAX_ATOMS_ENV}).")]
MaxChars = Annotated[int | None, typer.Option(
    help=f"Longest SMILES, in characters (default {MoleculeLimits.max_chars}, or ${MAX_CHARS_ENV}).")]

# the options predict and embed share: streaming, the engine and precision
DataOption = Annotated[str, typer.Option(help=f"Table of SMILES: {READABLE_HINT}; read by content too "
                                               "(separator, header line), or a data set name (see `datasets`).")]
SepOption = Annotated[str | None, typer.Option(help="Separator of a text table where its content cannot decide (default: sniffed from its first lines).")]
Resume = Annotated[bool, typer.Option(help="Continue an interrupted run from its last written chunk.")]
EngineOption = Annotated[Engine, typer.Option(
    "--engine", help="local, or ray (Ray Data on the local machine or $RAY_ADDRESS's cluster).")]
Workers = Annotated[int | None, typer.Option(
    help="Ray workers (default: one per GPU of the cluster, else one per CPU).")]
PrecisionOption = Annotated[Precision, typer.Option(
    "--precision", help="auto = bf16 where the GPU or CPU (AVX512-BF16, AMX) does it in hardware, else fp32; fp32 for "
                        "exact results.")]

def _set_limits(max_atoms: int | None, max_chars: int | None) -> None:
    if max_atoms is not None or max_chars is not None:
        set_molecule_limits(max_chars=max_chars, max_atoms=max_atoms)


def _default(cls, name: str):
    """A config field's default: the dataclass is the one place defaults live."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if callable(f.default_factory) else f.default


_D, _T = DataConfig, TrainConfig


@app.command()
def finetune(
    data: DataOption,
    target: Annotated[list[str] | None, typer.Option(help="Label column; repeat for multi-task.")] = None,
    smiles_col: Annotated[str | None, typer.Option(help="SMILES column (default: the data set's, or 'smiles').")] = None,
    task: Annotated[Task | None, typer.Option(help="Default: the data set's, else regression.")] = None,
    model: Annotated[str, typer.Option(help="Bundled name, local folder, hub name, or random:<tiny|small|base>.")] = DEFAULT_MODEL,
    split: Annotated[SplitKind | None, typer.Option(help="How to split train/valid/test (default: random; column when --split-col is given).")] = None,
    split_col: Annotated[str | None, typer.Option(help="Column of train/valid/test values to split by (--split column).")] = None,
    fractions: Annotated[tuple[float, float, float], typer.Option(help="Train, valid, test fractions.")] = _default(_D, "fractions"),
    sample: Annotated[float | None, typer.Option(help="Use only this fraction of the rows.")] = _default(_D, "sample"),
    bad_input: Annotated[BadInputPolicy, typer.Option(help="error: stop and list bad rows; skip: drop and report.")] = _default(_D, "bad_input"),
    duplicates: Annotated[DuplicatePolicy, typer.Option(help="keep every row; average the labels of a repeated molecule (classification: the most frequent class); or drop-conflicts: drop the molecules whose labels disagree. Repeats and conflicts are listed in duplicates.csv either way.")] = _default(_D, "duplicates"),
    canonicalize: Annotated[bool, typer.Option(help="Train on RDKit canonical SMILES.")] = _default(_D, "canonicalize"),
    sep: SepOption = None,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = _default(_T, "epochs"),
    batch_size: Annotated[int, typer.Option()] = _default(_T, "batch_size"),
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = _default(_T, "learning_rate"),
    max_length: Annotated[int, typer.Option(help="Longest tokenized SMILES; longer ones are truncated and counted.")] = _default(_T, "max_length"),
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs.")] = _default(_T, "early_stopping_patience"),
    precision: Annotated[Precision, typer.Option(help="auto = bf16 on a GPU that has it, else fp32.")] = _default(_T, "precision"),
    seed: Annotated[int, typer.Option(help="Seed of the split, the weights and training.")] = _default(_T, "seed"),
    augment: Annotated[int, typer.Option(help="Randomized SMILES per training molecule (SMILES enumeration); 0 = off.")] = _default(_T, "augment"),
    tta: Annotated[int, typer.Option(help="Randomized SMILES averaged per molecule at predict time; gives a spread.")] = _default(_T, "tta"),
    ensemble: Annotated[int, typer.Option(help="Models trained with seeds seed..seed+n-1 and averaged; gives a spread.")] = _default(_T, "ensemble"),
    layer_lr_decay: Annotated[float, typer.Option(help="Layer-wise learning-rate decay per layer below the head; 1 = off.")] = _default(_T, "layer_lr_decay"),
    descriptors: Annotated[str, typer.Option(help="'rdkit': the head also reads RDKit 2D descriptors (all 217); 'fast': 157 of them, about 4x faster to compute (the trees use them too); 'none': SMILES only; 'auto': rdkit on RoBERTa encoders.")] = _default(_T, "descriptors"),
    trees: Annotated[str, typer.Option(help="'gbm': blend with gradient-boosted trees on RDKit descriptors (weight chosen on the valid set); 'none': the transformer alone; 'auto': gbm for regression.")] = _default(_T, "trees"),
    adapt: Annotated[str, typer.Option(help="'mtr': first regress RDKit descriptors of the training SMILES (domain adaptation); 'none': off.")] = _default(_T, "adapt"),
    adapt_epochs: Annotated[int, typer.Option(help="Passes of the --adapt step over the training SMILES.")] = _default(_T, "adapt_epochs"),
    uncertainty: Annotated[bool, typer.Option("--uncertainty/--no-uncertainty", help="Fit an uncertainty and a domain check on the valid set (kept in the model folder: per training molecule 256 bytes of fingerprint and 2 per dimension of the pooled vector, at most 20,000 molecules).")] = _default(_T, "uncertainty"),
    out: Annotated[Path, typer.Option(help="Run folder (resumes from its checkpoints if interrupted).")] = Path("runs/finetune"),
    resume: Annotated[bool, typer.Option("--resume/--fresh", help="Continue an interrupted run in --out (only when its data and settings match), or delete its checkpoints and start over.")] = _default(_T, "resume"),
    max_atoms: MaxAtoms = None,
    max_chars: MaxChars = None,
) -> None:
    """Fine-tune a model on a labelled table and write a run folder (model, metrics, plots, split).

    With a validation set, every prediction carries an uncertainty fitted on it: <target>_sd and a 90% interval
    (regression), calibrated probabilities and <target>_confidence (classification), and a domain check
    (domain_similarity: Tanimoto similarity to the nearest training molecule; in_domain: False below a threshold
    chosen on the validation set). --ensemble > 1 or --tta > 0 add their spread to it.
    """
    try:
        _set_limits(max_atoms, max_chars)
        split = split or (SplitKind.column if split_col else _default(_D, "split"))
        data_config = DataConfig(data, smiles_col, list(target or []), task, split, split_col, fractions, seed,
                                 sample, bad_input, duplicates, canonicalize, sep)
        train_config = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, max_length=max_length,
                                   early_stopping_patience=patience, precision=precision, seed=seed,
                                   augment=augment, tta=tta, ensemble=ensemble, layer_lr_decay=layer_lr_decay,
                                   descriptors=descriptors, trees=trees, adapt=adapt, adapt_epochs=adapt_epochs,
                                   uncertainty=uncertainty, resume=resume)
        loaded = _read_and_start_descriptors(data_config, train_config)
        from .workflow import run_finetune  # PyTorch and transformers: seconds, while the workers compute

        with _interruptible(f"the checkpoints so far are kept in {out / 'checkpoints'}; run the same command again to resume from the last"):
            result = run_finetune(data_config, model, train_config, out, loaded)
    except (SmilesformerError, ValueError) as exc:
        _fail(exc)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    _print_metrics(result.metrics, f"fine-tuned {model}")
    console.print(f"run folder: {result.out_dir}  (model: {result.model_dir})", markup=False)


_P = PretrainConfig


@app.command()
def pretrain(
    corpus: Annotated[Path, typer.Option(help="SMILES file: one per line or a CSV column; gzip or not; streamed.")],
    out: Annotated[Path, typer.Option(help="Run folder: caches, checkpoints (resume), model/.")],
    smiles_col: Annotated[str | None, typer.Option(help="Column of a CSV corpus.")] = _default(_P, "smiles_col"),
    objective: Annotated[Objective, typer.Option(help="mlm (ChemBERTa), mtr (RDKit descriptors, ChemBERTa-2) or mlm+mtr (both, one forward pass).")] = _default(_P, "objective"),
    tokenizer: Annotated[TokenizerKind, typer.Option(help="smiles (fixed vocabulary, every SMILES), regex or bpe (counted on the corpus).")] = _default(_P, "tokenizer"),
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = _default(_P, "vocab_size"),
    preset: Annotated[str, typer.Option(help="Model size: tiny, small, medium, base.")] = _default(_P, "preset"),
    limit: Annotated[int | None, typer.Option(help="Use at most this many valid molecules.")] = _default(_P, "limit"),
    canonicalize: Annotated[bool, typer.Option()] = _default(_P, "canonicalize"),
    dedupe: Annotated[bool, typer.Option()] = _default(_P, "dedupe"),
    epochs: Annotated[float, typer.Option()] = _default(_P, "epochs"),
    max_steps: Annotated[int, typer.Option(help="If > 0, stop after this many steps.")] = _default(_P, "max_steps"),
    max_minutes: Annotated[float | None, typer.Option(help="Wall-clock budget of the whole command, preparation included: training gets the steps that fit what is left, its learning rate decaying to zero on the last.")] = _default(_P, "max_minutes"),
    batch_size: Annotated[int, typer.Option()] = _default(_P, "batch_size"),
    grad_accum: Annotated[int, typer.Option()] = _default(_P, "grad_accum"),
    lr: Annotated[float, typer.Option()] = _default(_P, "learning_rate"),
    max_length: Annotated[int, typer.Option()] = _default(_P, "max_length"),
    mlm_probability: Annotated[float, typer.Option(help="Share of tokens masked per batch.")] = _default(_P, "mlm_probability"),
    descriptor_set: Annotated[str, typer.Option(help="Descriptors MTR regresses: mtr (85 cheap ones), fast or rdkit.")] = _default(_P, "descriptor_set"),
    dropout: Annotated[float, typer.Option(help="Encoder dropout while pretraining (the saved model gets 0.1).")] = _default(_P, "dropout"),
    mlm_weight: Annotated[float, typer.Option(help="mlm+mtr: weight of the MLM loss.")] = _default(_P, "mlm_weight"),
    mtr_weight: Annotated[float, typer.Option(help="mlm+mtr: weight of the MTR loss.")] = _default(_P, "mtr_weight"),
    save_steps: Annotated[int, typer.Option()] = _default(_P, "save_steps"),
    keep_checkpoints: Annotated[int, typer.Option(help="Checkpoints kept (0: all).")] = _default(_P, "keep_checkpoints"),
    logging_steps: Annotated[int, typer.Option()] = _default(_P, "logging_steps"),
    precision: Annotated[Precision, typer.Option()] = _default(_P, "precision"),
    n_jobs: Annotated[int, typer.Option(help="Processes for descriptors (0: all cores).")] = _default(_P, "n_jobs"),
    seed: Annotated[int, typer.Option()] = _default(_P, "seed"),
) -> None:
    """Pretrain a chemical language model from scratch (MLM, MTR or both); rerun the same command to resume."""
    import psutil  # accelerate's dependency

    from .pretrain import run_pretrain

    # --max-minutes counts from the command's start, imports included; a clock that reads oddly (a sandbox's
    # process table, say) falls back to now rather than end the run at once.
    started = psutil.Process().create_time()
    if not time.time() - 600 < started <= time.time():
        started = time.time()
    try:
        config = PretrainConfig(str(corpus), smiles_col, limit, canonicalize, dedupe, objective, tokenizer, vocab_size,
                                preset=preset, max_length=max_length, epochs=epochs, max_steps=max_steps,
                                max_minutes=max_minutes,
                                batch_size=batch_size, grad_accum=grad_accum, learning_rate=lr,
                                mlm_probability=mlm_probability, descriptor_set=descriptor_set, dropout=dropout,
                                mlm_weight=mlm_weight, mtr_weight=mtr_weight,
                                save_steps=save_steps, keep_checkpoints=keep_checkpoints,
                                logging_steps=logging_steps, seed=seed,
                                precision=precision, n_jobs=n_jobs)
        with _interruptible(f"the caches and checkpoints so far are kept in {out}; run the same command again to resume"):
            model_dir = run_pretrain(config, out, command="smilesformer " + " ".join(sys.argv[1:]), started=started)
    except (SmilesformerError, ValueError) as exc:
        _fail(exc)
    summary = json.loads((model_dir / "pretrain_summary.json").read_text())
    console.print(f"model: {model_dir}\n{json.dumps(summary, indent=2)}", markup=False)


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="A pretrained model folder (run/model).")],
    out: Annotated[Path, typer.Option(help="Folder to write.")],
    max_file_mb: Annotated[int, typer.Option(help="Largest weights file; bigger weights are sharded.")] = 15,
) -> None:
    """Copy a pretrained model folder with its weights split into files of bounded size."""
    from .pretrain import export_model

    try:
        folder = export_model(model_dir, out, max_file_mb)
    except (SmilesformerError, OSError) as exc:
        _fail(exc)
    console.print(f"model: {folder}", markup=False)


@app.command()
def corpus(
    source: Annotated[Path, typer.Option(help="SMILES file (one per line or a CSV column; gzip or not), e.g. MOSES.")],
    out: Annotated[Path, typer.Option(help="Corpus to write, one SMILES per line (.gz: gzip); a report goes beside it.")],
    smiles_col: Annotated[str | None, typer.Option(help="Column of a CSV source.")] = None,
    limit: Annotated[int | None, typer.Option(help="Molecules drawn at random from the source (default: all).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    transform: Annotated[list[str] | None, typer.Option(help="NAME=P: probability of one transformation (stereo, iodo, boronic, phosphate, salt, isotope, kekule, random); repeatable.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Data set names or tables whose molecules are removed (default: every registered data set).")] = None,
    n_jobs: Annotated[int, typer.Option(help="Processes (0: all cores).")] = 0,
    descriptors: Annotated[str, typer.Option(help="RDKit descriptors for MTR pretraining, computed in the same pass and written beside the corpus (<out>.descriptors.npy, reused by `pretrain`): mtr, fast, rdkit or none.")] = "none",
    shards: Annotated[int, typer.Option(help="If > 0, also write the corpus as it is made, in shards of this many molecules (<out>.shards/), for a `pretrain` that starts on the first while the rest is made.")] = 0,
    max_length: Annotated[int, typer.Option(help="Shards: tokens kept per molecule (as pretrain's --max-length).")] = 128,
) -> None:
    """Make a pretraining corpus that exercises the whole SMILES grammar (stereo, salts, P, I, B, isotopes,
    randomized SMILES) from one that does not, with every benchmark molecule removed."""
    from .corpus import TRANSFORMS, CorpusConfig, build_corpus

    try:
        transforms = dict(TRANSFORMS)
        for item in transform or []:
            name, sep, value = item.partition("=")
            if not sep:
                raise SmilesformerError(f"--transform takes NAME=P, e.g. stereo=0.5; got {item!r}")
            transforms[name] = float(value)
        config = CorpusConfig(str(source), smiles_col, limit, seed, transforms,
                              list(exclude) if exclude else _default(CorpusConfig, "exclude"), n_jobs, descriptors,
                              shards, max_length)
        report = build_corpus(config, out)
    except (SmilesformerError, ValueError) as exc:
        _fail(exc)
    shown = {k: v for k, v in report.items() if k != "config"}
    if shown.get("descriptors"):  # the set's name and size, not its 85 names
        shown["descriptors"] = {"set": shown["descriptors"]["set"], "count": len(shown["descriptors"]["names"])}
    console.print(json.dumps(shown, indent=2), markup=False)


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A fine-tuned model folder (run/model).")],
    data: Annotated[str, typer.Option(help=f"Labelled table with the model's target columns: {READABLE_HINT}.")],
    smiles_col: Annotated[str | None, typer.Option()] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for metrics.json, predictions and plots.")] = None,
    sep: SepOption = None,
    max_atoms: MaxAtoms = None,
    max_chars: MaxChars = None,
) -> None:
    """Score a fine-tuned model on a labelled table."""
    from .workflow import run_evaluate

    try:
        _set_limits(max_atoms, max_chars)
        result = run_evaluate(model_dir, _data_path(data), smiles_col, out, sep=sep)
    except (SmilesformerError, ValueError) as exc:
        _fail(exc)
    _print_metrics(result.metrics, f"evaluation of {model_dir}")
    if result.metrics.get("invalid_rows"):
        console.print(f"[yellow]note:[/] {result.metrics['invalid_rows']} invalid SMILES left out of the metrics")
    print(json.dumps(result.metrics["mean"]))


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A fine-tuned model folder (run/model).")],
    data: DataOption,
    out: Annotated[Path, typer.Option(help="Output table (.csv, .tsv or .parquet).")],
    smiles_col: Annotated[str | None, typer.Option()] = None,
    sep: SepOption = None,
    batch_size: Annotated[int, typer.Option()] = 128,
    chunk_size: Annotated[int, typer.Option(help="Rows read, length-sorted and written at a time (bounds memory).")] = 10_000,
    resume: Resume = True,
    engine: EngineOption = Engine.local,
    workers: Workers = None,
    precision: PrecisionOption = Precision.auto,
    max_atoms: MaxAtoms = None,
    max_chars: MaxChars = None,
) -> None:
    """Append predictions to a table: same rows in the same order, with an `error` column; streamed in chunks."""
    from .streaming import stream_predict

    try:
        _set_limits(max_atoms, max_chars)
        with _interruptible(f"the chunks written so far are kept in {out}.parts; run the same command again to continue from there"):
            result = stream_predict(model_dir, _data_path(data), out, smiles_col, batch_size, chunk_size, progress=True,
                                    resume=resume, engine=engine, workers=workers, precision=precision, sep=sep)
    except (SmilesformerError, ValueError) as exc:
        _fail(exc)
    n_bad = result.invalid
    console.print(f"wrote {result.rows} rows to {out}" + (f" ({n_bad} invalid, see the error column)" if n_bad else ""),
                  soft_wrap=True, markup=False)


def _data_path(data: str) -> str:
    if data in DATASETS and not Path(data).exists():
        from .data import resolve_dataset

        return str(resolve_dataset(data))
    return data


@app.command()
def datasets() -> None:
    """List the registered public data sets and where each resolves on this machine."""
    table = Table(title=f"data sets (local folder: ${DATA_ENV} = {os.environ.get(DATA_ENV, 'not set')})")
    for col in ("name", "task", "smiles", "targets", "found at", "description"):
        table.add_column(col)
    for info in DATASETS.values():
        where = locate_dataset(info.name)
        table.add_row(info.name, info.task.value, info.smiles_col, ", ".join(info.target_cols),
                      str(where) if where else f"not local; downloads from {info.url}", info.description)
    Console(width=200).print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/demo"),
    model: Annotated[str | None, typer.Option(help="Default: the bundled pretrained model.")] = None,
    epochs: Annotated[int, typer.Option()] = 5,
    sample: Annotated[float, typer.Option(help="Fraction of AqSolDB used (the notebook's 10%).")] = 0.1,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """The notebook as one command: fine-tune on 10% of AqSolDB (80/20), print test MSE and Pearson r."""
    try:
        loaded = _read_and_start_descriptors(demo_data_config(sample, seed), demo_train_config(epochs))
        from .workflow import run_demo  # PyTorch and transformers: seconds, while the workers compute

        result = run_demo(out, model, sample, epochs, seed, loaded)
    except (SmilesformerError, ValueError) as exc:
        _fail(exc)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    test = result.metrics["test"]["per_target"]["Solubility"]
    print(f"test MSE = {test['mse']:.4f}   test Pearson r = {test['pearson_r']:.4f}   "
          f"(n_train = {result.metrics['n_train']}, n_test = {result.metrics['n_test']}, "
          f"{result.metrics['train_seconds']:.0f} s training)")
    print(f"parity plot: {result.out_dir / 'parity.png'}")


# --- explain commands (issue: explain) ---
@app.command()
def explain(
    model_dir: Annotated[str, typer.Argument(help="Any model: a fine-tuned folder (run/model; attention, attributions, predictions), or the bundled pretrained model (smilesformer-moses), a Hugging Face folder or hub name (attention and head statistics).")],
    out: Annotated[Path, typer.Option(help="Folder for the HTML view, heat maps, CSV and JSON files.")],
    smiles: Annotated[str | None, typer.Option(help="Explain one molecule.")] = None,
    data: Annotated[str | None, typer.Option(help="Or a file of molecules: per-atom and per-head statistics.")] = None,
    smiles_col: Annotated[str | None, typer.Option(help="SMILES column of --data.")] = None,
    layer: Annotated[int | None, typer.Option(help="Layer of the attention heat map (default: last).")] = None,
    head: Annotated[int | None, typer.Option(help="Head of the attention heat map (default: 0).")] = None,
    target: Annotated[int, typer.Option(help="Model output explained by integrated gradients.")] = 0,
    steps: Annotated[int, typer.Option(help="Integrated-gradients steps.")] = 50,
    limit: Annotated[int | None, typer.Option(help="With --data: use the first N rows.")] = None,
    prune: Annotated[int, typer.Option(help="With --data: prune the N least important heads, report the metric.")] = 0,
) -> None:
    """Attention views, atom attributions (integrated gradients) and head statistics."""
    from .explain import run_explain

    try:
        result = run_explain(model_dir, out, smiles, data, smiles_col, layer, head, target, steps, limit, prune)
    except (SmilesformerError, ValueError) as exc:
        _fail(exc)
    if smiles is not None:
        if result["attributed_output"] is None:
            print("an encoder without a prediction head: attention views and statistics, no prediction or attribution")
        else:
            print(f"{result['attributed_output']}: prediction {result['prediction']}, completeness gap "
                  f"{result['completeness_gap']:.2g}")
        console.print(f"wrote {len(result['files'])} files to {out} (open attention.html)", markup=False)
    else:
        print(json.dumps(result, indent=2))
        console.print(f"wrote molecules.csv, atoms.csv, elements.csv, heads.csv and head_*.png to {out}", markup=False)



# --- embed commands (issue: embeddings and inference at scale) ---


@app.command()
def embed(
    model: Annotated[str, typer.Argument(help="Model folder (fine-tuned, or a pretrained encoder) or bundled name.")],
    data: DataOption,
    out: Annotated[Path, typer.Option(help="Output: .parquet (one row per input) or .npy (pooled vectors only).")],
    smiles_col: Annotated[str | None, typer.Option()] = None,
    sep: SepOption = None,
    pooling: Annotated[Pooling, typer.Option(help="cls, mean, max, or head (the classification head's pooled input).")] = Pooling.mean,
    layer: Annotated[int, typer.Option(help="Hidden state: 0 = embedding layer, 1..L = encoder layers, -1 = last.")] = -1,
    last_k: Annotated[int, typer.Option(help="Concatenate the last k layers (each pooled) instead of one.")] = 1,
    per_token: Annotated[bool, typer.Option(help="Also write per-token vectors and the atoms each token spells.")] = False,
    all_layers: Annotated[bool, typer.Option(help="Also write every layer's output (pooled; per token with --per-token).")] = False,
    batch_size: Annotated[int, typer.Option()] = 64,
    chunk_size: Annotated[int | None, typer.Option(help="Rows per chunk (default 10,000; 1,000 with --per-token).")] = None,
    resume: Resume = True,
    engine: EngineOption = Engine.local,
    workers: Workers = None,
    precision: PrecisionOption = Precision.auto,
    max_atoms: MaxAtoms = None,
    max_chars: MaxChars = None,
) -> None:
    """Embed molecules: pooled, per-token (aligned to atoms) or per-layer encoder outputs; streamed in chunks."""
    from .embeddings import EmbedConfig
    from .streaming import stream_embed

    try:
        _set_limits(max_atoms, max_chars)
        config = EmbedConfig(pooling, layer, last_k, per_token, all_layers, batch_size, precision)
        with _interruptible(f"the chunks written so far are kept in {out}.parts; run the same command again to continue from there"):
            result = stream_embed(model, _data_path(data), out, smiles_col, config, chunk_size, progress=True,
                                  resume=resume, engine=engine, workers=workers, sep=sep)
    except (SmilesformerError, ValueError) as exc:
        _fail(exc)
    n_bad = result.invalid
    console.print(f"wrote {result.rows} embeddings to {out}" + (f" ({n_bad} invalid, see the error column)" if n_bad else ""),
                  soft_wrap=True, markup=False)



# --- serve commands (issue: web service) ---
@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="A fine-tuned model folder (run/model).")],
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 to accept other machines.")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    max_smiles: Annotated[int, typer.Option(help="Most SMILES per /predict request (413 above).")] = _default(
        ServeConfig, "max_smiles_per_request"),
    max_smiles_length: Annotated[int, typer.Option(help="Most characters per SMILES (422 above).")] = _default(
        ServeConfig, "max_smiles_length"),
    max_atoms: Annotated[int, typer.Option(help="Most atoms per molecule (a per-row error above).")] = _default(
        ServeConfig, "max_atoms"),
    timeout: Annotated[float, typer.Option(help="Seconds a request may wait for its results (503 after).")] = _default(
        ServeConfig, "request_timeout_s"),
    max_batch: Annotated[int, typer.Option(help="Most SMILES the micro-batcher puts in one model call.")] = _default(
        ServeConfig, "max_batch"),
    max_wait_ms: Annotated[float, typer.Option(help="How long a request waits to share a model call.")] = _default(
        ServeConfig, "max_wait_ms"),
    threads: Annotated[int | None, typer.Option(help="CPU threads of the model (default: one per core).")] = None,
) -> None:
    """Serve a model over HTTP: a web page at /, the API (/predict, /explain, /model, /health), docs at /docs."""
    try:
        from .serve import run_server
    except ImportError as exc:
        _fail(SmilesformerError(f"serving needs the serve extra: pip install 'smilesformer[serve]' ({exc})"))
    try:
        config = ServeConfig(max_smiles_per_request=max_smiles, max_smiles_length=max_smiles_length,
                             max_atoms=max_atoms, request_timeout_s=timeout, max_batch=max_batch,
                             max_wait_ms=max_wait_ms, torch_threads=threads)
        run_server(model_dir, host, port, config)
    except (SmilesformerError, ValueError) as exc:
        _fail(exc)


if __name__ == "__main__":
    app()
