"""Embedding and prediction at scale: molecules/s and peak memory of the streamed path vs a naive HF loop.

Embeds (mean pooling, Parquet out) and predicts (a regression head, CSV out) the first N SMILES of the
MOSES training set with ``smilesformer.streaming`` (chunks read from disk, RDKit validation, length-sorted
batches, parts written as they finish), each in a fresh process so its peak RSS is its own. Beside it, a
naive Hugging Face loop over the same model: every batch padded to the model's max length
(``padding="max_length"``), input order, no validation, results kept in memory; it may run on a subset.

    python benchmarks/bench_inference.py [--n 1000000] [--naive-n 20000] [--precisions auto,fp32]
        [--subset fp32=100000] [--threads 2] [--model DIR]

``auto`` is the default a user gets (bf16 on a CPU that does bf16 in hardware, else fp32); ``--subset``
runs a format on the first N molecules only, to keep a slower format's run short.

Prediction needs a head: ``--head DIR`` (a fine-tuned model), else a freshly initialized regression head
on ``--model`` is saved and used. Speed does not depend on the head's weights, its values mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("SMILESFORMER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _setup(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _first_smiles(source: Path, n: int, out: Path) -> int:
    """Copy the first n SMILES of a (gzip) CSV into a one-column CSV, streamed."""
    opener = gzip.open if source.suffix == ".gz" else open
    count = 0
    with opener(source, "rt", newline="") as src, open(out, "w", newline="") as dst:
        reader = csv.reader(src)
        header = next(reader)
        col = next(i for i, name in enumerate(header) if name.lower() == "smiles")
        writer = csv.writer(dst)
        writer.writerow(["smiles"])
        for row in reader:
            if count == n:
                break
            writer.writerow([row[col]])
            count += 1
    return count


def _read_smiles(path: Path, n: int) -> list[str]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        return [row[0] for _, row in zip(range(n), reader)]


# each runs in its own process --------------------------------------------------------------------------------
def streamed_embed(model: str, data: str, out: str, threads: int, batch_size: int, chunk_size: int,
                   precision: str) -> dict:
    _setup(threads)
    from smilesformer.embeddings import EmbedConfig
    from smilesformer.streaming import stream_embed

    started = time.perf_counter()
    config = EmbedConfig(pooling="mean", batch_size=batch_size, precision=precision)
    summary = stream_embed(model, data, out, config=config, chunk_size=chunk_size, resume=False)
    seconds = time.perf_counter() - started
    return {"molecules": summary.rows, "invalid": summary.invalid, "seconds": round(seconds, 2),
            "molecules_per_second": round(summary.rows / seconds, 1), "peak_rss_mb": round(_peak_rss_mb(), 1),
            "output_mb": round(Path(out).stat().st_size / 2**20, 1)}


def streamed_predict(head: str, data: str, out: str, threads: int, batch_size: int, chunk_size: int,
                     precision: str) -> dict:
    _setup(threads)
    from smilesformer.streaming import stream_predict

    started = time.perf_counter()
    summary = stream_predict(head, data, out, batch_size=batch_size, chunk_size=chunk_size, resume=False,
                             precision=precision)
    seconds = time.perf_counter() - started
    return {"molecules": summary.rows, "invalid": summary.invalid, "seconds": round(seconds, 2),
            "molecules_per_second": round(summary.rows / seconds, 1), "peak_rss_mb": round(_peak_rss_mb(), 1),
            "output_mb": round(Path(out).stat().st_size / 2**20, 1)}


def naive_loop(model_dir: str, data: str, n: int, threads: int, batch_size: int, task: str) -> dict:
    """The loop a Hugging Face tutorial writes: pad to max length, input order, keep everything in memory."""
    _setup(threads)
    import numpy as np
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if task == "embed":
        model = AutoModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings - 2)
    smiles = _read_smiles(Path(data), n)
    outputs = []
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(smiles), batch_size):
            enc = tokenizer(smiles[start:start + batch_size], padding="max_length", max_length=max_length,
                            truncation=True, return_tensors="pt")
            out = model(**enc)
            if task == "embed":
                mask = enc["attention_mask"].unsqueeze(-1)  # (batch, tokens, 1)
                outputs.append(((out.last_hidden_state * mask).sum(1) / mask.sum(1)).numpy())
            else:
                outputs.append(out.logits.numpy())
    seconds = time.perf_counter() - started
    result = np.concatenate(outputs)
    return {"molecules": len(result), "seconds": round(seconds, 2),
            "molecules_per_second": round(len(result) / seconds, 1), "padded_to": max_length,
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def _in_fresh_process(fn, *args) -> dict:
    """Run ``fn`` in a new process, so the peak RSS it reports is its own (model, chunks, output), nothing else."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def _token_stats(model: str, data: Path, n: int) -> dict:
    from smilesformer.embeddings import load_encoder

    encoder = load_encoder(model, device="cpu")
    lengths = encoder.tokenizer(_read_smiles(data, n), truncation=True, max_length=encoder.max_length,
                                return_length=True)["length"]
    return {"mean_tokens": round(sum(lengths) / len(lengths), 1), "max_length": encoder.max_length,
            "padding_share_if_padded_to_max": round(1 - sum(lengths) / (len(lengths) * encoder.max_length), 3)}


def _auto_means() -> str:
    import torch

    from smilesformer.embeddings import resolve_inference_precision

    return resolve_inference_precision("auto", torch.device("cpu")).value


def _bf16_drift(model: str, data: Path, n: int) -> dict:
    """How far bf16 autocast moves the embeddings from fp32 on n molecules (relative L2 norm, cosine)."""
    import numpy as np

    from smilesformer.embeddings import EmbedConfig, embed, load_encoder

    encoder = load_encoder(model, device="cpu")
    smiles = _read_smiles(data, n)
    fp32, bf16 = (embed(encoder, smiles, EmbedConfig(pooling="mean", precision=p)).vectors for p in ("fp32", "bf16"))
    rel = np.linalg.norm(bf16 - fp32, axis=1) / np.linalg.norm(fp32, axis=1)
    cos = (bf16 * fp32).sum(1) / (np.linalg.norm(bf16, axis=1) * np.linalg.norm(fp32, axis=1))
    return {"molecules": len(smiles), "pooling": "mean", "relative_l2_mean": round(float(rel.mean()), 5),
            "relative_l2_max": round(float(rel.max()), 5), "cosine_min": round(float(cos.min()), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="molecules embedded and predicted (streamed)")
    parser.add_argument("--naive-n", type=int, default=20_000, help="molecules for the naive loop (a subset)")
    parser.add_argument("--data", type=Path, default=DATA / "moses_train.csv.gz")
    parser.add_argument("--model", default=None, help="model folder; default: the bundled model")
    parser.add_argument("--head", default=None, help="fine-tuned model for predict; default: a new head on --model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the CPU cores used)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--precisions", default="auto,fp32",
                        help="formats of the streamed runs (the naive loop is fp32, as a plain HF loop is)")
    parser.add_argument("--subset", default="", help="FORMAT=N,...: run these formats on the first N molecules")
    parser.add_argument("--label", default="", help="a note stored with the results (e.g. 'CPU shared')")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/inference.json"))
    args = parser.parse_args()

    from smilesformer import SmilesModel
    from smilesformer.networks import bundled_model_path

    model = args.model or str(bundled_model_path() or "")
    if not model:
        raise SystemExit("no bundled model in this installation: pass --model DIR")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        tmp = Path(tmp)
        data = tmp / "smiles.csv"
        n = _first_smiles(args.data, args.n, data)
        naive_n = min(args.naive_n, n)
        head = args.head
        if head is None:
            head = str(SmilesModel.from_pretrained(model, task="regression", targets=["y"]).save_pretrained(
                tmp / "head"))
        common = (args.threads, args.batch_size)
        results: dict = {
            "model": Path(model).name, "head": args.head or f"new regression head on {Path(model).name} (speed only)",
            "data": f"first {n:,} SMILES of {args.data.name}", "threads": args.threads,
            "batch_size": args.batch_size, "chunk_size": args.chunk_size, "label": args.label,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "load_average_1min_at_start": round(os.getloadavg()[0], 2),
            "tokens": _token_stats(model, data, min(n, 20_000)),
        }
        precisions = args.precisions.split(",")
        subset = {k: int(v) for k, v in (item.split("=") for item in args.subset.split(",") if item)}
        inputs = {}
        for precision in precisions:
            k = min(subset.get(precision, n), n)
            inputs[precision] = data if k == n else tmp / f"smiles_{k}.csv"
            if k < n:
                _first_smiles(data, k, inputs[precision])
        results["precision_auto_means"] = _auto_means()
        results["bf16_drift"] = _bf16_drift(model, data, 2000)
        runs = {"embed": (streamed_embed, model, tmp / "emb.parquet"), "predict": (streamed_predict, head,
                                                                                   tmp / "pred.csv")}
        for task, (fn, folder, out) in runs.items():
            results[task] = {"naive": _in_fresh_process(naive_loop, folder, str(data), naive_n, *common, task)}
            for precision in precisions:
                results[task][f"streamed_{precision}"] = _in_fresh_process(
                    fn, folder, str(inputs[precision]), str(out), *common, args.chunk_size, precision)
                out.unlink()
    for task in ("embed", "predict"):
        r = results[task]
        r["naive"]["note"] = f"measured on the first {naive_n:,} molecules" if naive_n < n else "same molecules"
        for precision in precisions:
            r[f"speedup_{precision}_vs_naive"] = round(
                r[f"streamed_{precision}"]["molecules_per_second"] / r["naive"]["molecules_per_second"], 2)
    results["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{results['data']}, model {results['model']}, {args.threads} threads")
    for col in ("task", "path", "molecules", "molecules/s", "peak RSS MB", "speed-up"):
        table.add_column(col, justify="right" if col not in ("task", "path") else "left")
    for task in ("embed", "predict"):
        r = results[task]
        for precision in precisions:
            s = r[f"streamed_{precision}"]
            label = f"auto = {results['precision_auto_means']}" if precision == "auto" else precision
            table.add_row(task, f"streamed (smilesformer), {label}", f"{s['molecules']:,}",
                          f"{s['molecules_per_second']:,.0f}", f"{s['peak_rss_mb']:,.0f}",
                          f"{r[f'speedup_{precision}_vs_naive']}x")
        table.add_row(task, f"naive HF loop, fp32, padded to {r['naive']['padded_to']}", f"{r['naive']['molecules']:,}",
                      f"{r['naive']['molecules_per_second']:,.0f}", f"{r['naive']['peak_rss_mb']:,.0f}", "1x")
    Console().print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
