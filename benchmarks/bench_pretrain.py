"""Pretraining throughput: tokens/s and molecules/s of `smilesformer pretrain`, for several settings and,
optionally, for an older checkout of the package (the "before" of a speed change).

Each setting runs the real command for --steps optimizer steps on the same corpus (after a warm-up the
Trainer's first log line excludes), one after another, so run it on an otherwise idle machine.

    python benchmarks/bench_pretrain.py --corpus runs/corpus_test.smi --steps 60 \
        --before-src /path/to/old/checkout/src
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    # name: (extra CLI arguments, whether the "before" checkout knows them)
    "mlm15-b64": ["--objective", "mlm", "--batch-size", "64"],
    "mlm30-b64": ["--objective", "mlm", "--batch-size", "64", "--mlm-probability", "0.3"],
    "mlm+mtr-b64": ["--objective", "mlm+mtr", "--batch-size", "64", "--mlm-probability", "0.3"],
    "mlm+mtr-b128": ["--objective", "mlm+mtr", "--batch-size", "128", "--mlm-probability", "0.3"],
}


def run(src: Path, corpus: Path, steps: int, extra: list[str], work: Path, threads: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), HF_HUB_OFFLINE="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "smilesformer", "pretrain", "--corpus", str(corpus), "--out", str(out),
               "--preset", "small", "--max-steps", str(steps), "--logging-steps", str(max(steps // 4, 1)),
               "--save-steps", str(steps * 10), *extra]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    summary = json.loads((out / "model" / "pretrain_summary.json").read_text())
    shown = " ".join(command[2:]).replace(str(work), "<tmp>")  # no temporary path of this machine in results
    return {**summary["throughput"], "wall_seconds": round(wall, 1), "command": shown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="SMILES file, one per line")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    parser.add_argument("--before-src", type=Path, help="src/ folder of an older checkout to time as 'before'")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every run (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pretrain_throughput.json")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as tmp:
        work = Path(tmp)
        if args.before_src:
            row = run(args.before_src, args.corpus, args.steps, ["--objective", "mlm", "--batch-size", "64"], work,
                      args.threads)
            results.append({"code": "before", "setting": "mlm15-b64", **row})
            print(json.dumps(results[-1]))
        for name in args.settings.split(","):
            row = run(ROOT / "src", args.corpus, args.steps, SETTINGS[name], work, args.threads)
            results.append({"code": "after", "setting": name, **row})
            print(json.dumps(results[-1]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "cpu_count": os.cpu_count(), "threads": args.threads,
                                    "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
