"""A busy machine: the demo's wall time alone, and beside a competing CPU-bound process, per thread setting.

The competitor is what a user's laptop or a shared CI machine runs beside us: another PyTorch job with its
default threads (one per core) doing matrix products, started before the demo and stopped after it. Each demo
is the whole command (``smilesformer --threads T demo --epochs E``), timed from outside.

    python benchmarks/bench_busy.py [--epochs 5] [--threads auto 2] [--cap 900]

Writes benchmarks/results/busy.json; a run over ``--cap`` seconds is stopped and reported as at least the cap.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPETITOR = """
import torch
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a / 512)
"""


def run_demo(threads: str, epochs: int, cap: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "smilesformer", "--threads", threads, "demo", "--epochs", str(epochs),
                   "--out", str(Path(tmp) / "demo")]
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        started = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=cap, env=env)
        except subprocess.TimeoutExpired:
            return {"seconds": cap, "stopped_at_cap": True}
        seconds = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(f"demo failed ({done.returncode}):\n{done.stderr[-2000:]}")
        line = next(x for x in done.stdout.splitlines() if x.startswith("test MSE"))
        return {"seconds": round(seconds, 1), "result": line}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", nargs="+", default=["auto", str(os.cpu_count())],
                        help="thread settings compared (a number is PyTorch's old default when it is the cores)")
    parser.add_argument("--cap", type=float, default=900.0, help="seconds after which one demo is stopped")
    parser.add_argument("--out", default="benchmarks/results/busy.json")
    args = parser.parse_args()

    results: dict = {"cpu_count": os.cpu_count(), "machine": platform.machine(), "epochs": args.epochs,
                     "competitor": "a PyTorch process with default threads doing 512x512 matrix products",
                     "idle": {}, "busy": {}}
    for threads in args.threads:
        results["idle"][threads] = run_demo(threads, args.epochs, args.cap)
        print(f"idle, --threads {threads}: {results['idle'][threads]}", flush=True)
    for threads in args.threads:
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
        try:
            time.sleep(3)  # the competitor is running (and counted as busy) before the demo starts
            results["busy"][threads] = run_demo(threads, args.epochs, args.cap)
        finally:
            competitor.kill()
            competitor.wait()
        print(f"busy, --threads {threads}: {results['busy'][threads]}", flush=True)
    results["slowdown_busy_vs_idle"] = {
        t: round(results["busy"][t]["seconds"] / results["idle"][t]["seconds"], 2) for t in args.threads}
    best_idle = min(r["seconds"] for r in results["idle"].values())
    results["slowdown_busy_vs_best_idle"] = {
        t: round(results["busy"][t]["seconds"] / best_idle, 2) for t in args.threads}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({k: results[k] for k in ("slowdown_busy_vs_idle", "slowdown_busy_vs_best_idle")}, indent=2))


if __name__ == "__main__":
    main()
