"""Load test of the web service on loopback: latency percentiles, throughput and 5xx count under concurrency.

Starts `smilesformer serve` in a subprocess on a free 127.0.0.1 port, then runs CLIENTS concurrent clients that
each send REQUESTS `/predict` requests (SMILES cycled from a table, every fifth request with an invalid SMILES
added, which must come back as a row error, never a 5xx). The loop is bounded in count and in time
(--max-seconds). Writes benchmarks/results/serve.json.

    python benchmarks/bench_serve.py [--model DIR_OR_NAME] [--clients 20] [--requests 50] [--smiles-per-request 4]

--model: a fine-tuned model folder is served as it is; a pretrained encoder (the bundled model by default, when
installed) or random:<preset> gets an untrained regression head first, which costs the same time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from smilesformer import SmilesModel, build_regex_tokenizer
from smilesformer.networks import bundled_model_path
from smilesformer.tasks import META_FILE

ROOT = Path(__file__).resolve().parent.parent
INVALID = "C1CC(("


def prepare_model(name: str, smiles: list[str], folder: Path) -> Path:
    """A folder `smilesformer serve` accepts: the model itself if fine-tuned, else one with a fresh head."""
    if Path(name).is_dir() and (Path(name) / META_FILE).is_file():
        return Path(name)
    if name.startswith("random:"):
        tokenizer = build_regex_tokenizer(smiles, model_max_length=128)
        model = SmilesModel.from_scratch(name.removeprefix("random:"), "regression", ["y"], tokenizer=tokenizer)
    else:
        model = SmilesModel.from_pretrained(name, task="regression", targets=["y"])
    return model.save_pretrained(folder / "model")


def stream_rate(model_dir: Path, smiles: list[str], n: int, threads: int | None, tmp: Path) -> dict:
    """``smilesformer predict``'s streamed path on ``n`` SMILES (the table cycled), in a fresh process with the
    server's thread setting; its own molecules/s (model loading not counted)."""
    data = tmp / "streamed.csv"
    pd.DataFrame({"smiles": [smiles[i % len(smiles)] for i in range(n)]}).to_csv(data, index=False)
    code = ("import json, sys; from smilesformer.threads import set_threads; set_threads(sys.argv[4]); "
            "from smilesformer.streaming import stream_predict; "
            "r = stream_predict(sys.argv[1], sys.argv[2], sys.argv[3], resume=False); "
            "print(json.dumps({'molecules': r.rows, 'seconds': round(r.seconds, 2), "
            "'molecules_per_second': round(r.molecules_per_second, 1)}))")
    done = subprocess.run([sys.executable, "-c", code, str(model_dir), str(data), str(tmp / "streamed_out.csv"),
                           str(threads or "auto")], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, port: int, wait_ms: float, threads: int | None, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "smilesformer.cli", "serve", str(model_dir), "--host", "127.0.0.1",
               "--port", str(port), "--max-wait-ms", str(wait_ms)]
    if threads is not None:
        command += ["--threads", str(threads)]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer /health within {timeout} s:\n{log.read_text()}")


async def client(http: httpx.AsyncClient, index: int, smiles: list[str], n_requests: int, per_request: int,
                 deadline: float, records: list[dict]) -> None:
    for i in range(n_requests):
        if time.monotonic() > deadline:
            return
        start = (index * n_requests + i) * per_request
        batch = [smiles[(start + j) % len(smiles)] for j in range(per_request)]
        if i % 5 == 0:
            batch[-1] = INVALID
        started = time.perf_counter()
        try:
            response = await http.post("/predict", json={"smiles": batch})
            status = response.status_code
            row_errors = sum(r["error"] is not None for r in response.json()["results"]) if status == 200 else None
        except httpx.HTTPError as exc:
            status, row_errors = f"transport error: {type(exc).__name__}", None
        records.append({"status": status, "seconds": time.perf_counter() - started, "n": len(batch),
                        "row_errors": row_errors, "invalid_sent": int(i % 5 == 0)})


async def load(url: str, smiles: list[str], clients: int, n_requests: int, per_request: int,
               max_seconds: float) -> tuple[list[dict], float]:
    records: list[dict] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        deadline = time.monotonic() + max_seconds
        started = time.perf_counter()
        await asyncio.gather(*(client(http, k, smiles, n_requests, per_request, deadline, records)
                               for k in range(clients)))
        return records, time.perf_counter() - started


def summarize(records: list[dict], wall: float) -> dict:
    table = pd.DataFrame(records)
    ok = table[table["status"] == 200]
    ms = ok["seconds"].to_numpy() * 1000
    statuses = table["status"].astype(str)
    return {
        "requests_sent": len(table),
        "requests_ok": len(ok),
        "status_5xx": int(statuses.str.match(r"5\d\d").sum()),
        "status_4xx": int(statuses.str.match(r"4\d\d").sum()),
        "transport_errors": int(statuses.str.startswith("transport").sum()),
        "invalid_smiles_reported_as_row_errors": bool((ok["row_errors"] == ok["invalid_sent"]).all()),
        "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
                       "p99": round(float(np.percentile(ms, 99)), 1), "mean": round(float(ms.mean()), 1),
                       "max": round(float(ms.max()), 1)} if len(ms) else None,
        "wall_seconds": round(wall, 2),
        "requests_per_second": round(len(ok) / wall, 1),
        "smiles_per_second": round(float(ok["n"].sum()) / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smilesformer-moses" if bundled_model_path() else "random:small")
    parser.add_argument("--smiles", default=str(ROOT / "tests" / "data" / "esol50.csv"),
                        help="table with a smiles column to cycle through")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--smiles-per-request", type=int, default=4)
    parser.add_argument("--wait-ms", type=float, default=5.0, help="the micro-batcher's max_wait_ms")
    parser.add_argument("--threads", type=int, default=None,
                        help="the server's CPU threads (default: the CLI's policy, the cores free at start)")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long")
    parser.add_argument("--streamed", type=int, default=20000,
                        help="then stream-predict this many SMILES (the table cycled) with the same model and "
                             "threads, for the service's share of streamed predict's SMILES/s (0: skip)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = parser.parse_args()

    smiles = pd.read_csv(args.smiles)["smiles"].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = prepare_model(args.model, smiles, Path(tmp))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "server.log"
        server = start_server(model_dir, port, args.wait_ms, args.threads, log)
        try:
            wait_until_up(url, server, log)
            httpx.post(url + "/predict", json={"smiles": smiles[:8]}, timeout=120)  # warm-up, not measured
            before = httpx.get(url + "/health").json()["batching"]
            records, wall = asyncio.run(load(url, smiles, args.clients, args.requests, args.smiles_per_request,
                                             args.max_seconds))
            after = httpx.get(url + "/health").json()["batching"]
            info = httpx.get(url + "/model").json()
        finally:
            server.terminate()
            server.wait(timeout=30)
        streamed = None
        if args.streamed:
            streamed = stream_rate(model_dir, smiles, args.streamed, args.threads, Path(tmp))

    batches = after["batches"] - before["batches"]
    requests = after["requests"] - before["requests"]
    results = {
        "model": args.model,
        "architecture": {k: info["config"][k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                                         "n_parameters")},
        "clients": args.clients, "requests_per_client": args.requests,
        "smiles_per_request": args.smiles_per_request, "max_wait_ms": args.wait_ms,
        "server_threads": args.threads,  # null: the CLI's --threads auto (the cores free when the server starts)
        **summarize(records, wall),
        "batching": {"model_calls": batches, "requests_per_model_call": round(requests / max(batches, 1), 2),
                     "largest_batch": after["largest_batch"]},
        "streamed_predict": streamed,
        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    if streamed:
        results["service_share_of_streamed"] = round(results["smiles_per_second"] / streamed["molecules_per_second"],
                                                     2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if results["status_5xx"]:
        sys.exit(f"{results['status_5xx']} responses were 5xx")


if __name__ == "__main__":
    main()
