"""Which pretraining objective transfers best, at a budget a laptop can afford: MLM at 15% and 30% masking,
MTR, and MLM + MTR, each pretrained for the same steps on the same corpus, then fine-tuned on the same
scaffold split (SMILES only, no descriptors or trees). Settings are chosen on the validation RMSE; the test
RMSE is printed beside it and picks nothing.

    python benchmarks/bench_objectives.py --corpus runs/foundation/corpus.smi.gz --limit 20000 --steps 400
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from smilesformer import DataConfig, TrainConfig
from smilesformer.config import PretrainConfig
from smilesformer.pretrain import run_pretrain
from smilesformer.workflow import run_finetune

OBJECTIVES = {
    "mlm15": {"objective": "mlm", "mlm_probability": 0.15},
    "mlm30": {"objective": "mlm", "mlm_probability": 0.30},
    "mtr": {"objective": "mtr"},
    "mlm30+mtr": {"objective": "mlm+mtr", "mlm_probability": 0.30},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--limit", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--dataset", default="esol")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--n-jobs", type=int, default=0, help="processes for corpus cleaning and descriptors")
    parser.add_argument("--work", type=Path, default=Path("runs/objectives"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "objectives.json")
    args = parser.parse_args()

    results = []
    for name in args.objectives.split(","):
        started = time.perf_counter()
        model_dir = args.work / name / "pretrain" / "model"
        if not (model_dir / "config.json").is_file():
            config = PretrainConfig(args.corpus, limit=args.limit, preset=args.preset, max_steps=args.steps,
                                    batch_size=64, save_steps=args.steps, logging_steps=50, progress=False,
                                    n_jobs=args.n_jobs,
                                    **OBJECTIVES[name])
            model_dir = run_pretrain(config, args.work / name / "pretrain")
        pretrain_seconds = time.perf_counter() - started
        for seed in range(args.seeds):
            data = DataConfig(args.dataset, split="scaffold", seed=seed, bad_input="skip")
            train = TrainConfig(epochs=args.epochs, early_stopping_patience=3, seed=seed, progress=False,
                                descriptors="none", trees="none")
            result = run_finetune(data, str(model_dir), train, args.work / name / f"{args.dataset}_seed{seed}")
            row = {"objective": name, "seed": seed, "pretrain_steps": args.steps, "corpus_limit": args.limit,
                   "pretrain_seconds": round(pretrain_seconds, 1),
                   "valid_rmse": result.metrics["valid"]["mean"]["rmse"],
                   "test_rmse": result.metrics["test"]["mean"]["rmse"]}
            results.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dataset": args.dataset, "split": "scaffold", "results": results}, indent=2))
    best = min(results, key=lambda r: r["valid_rmse"])
    print(f"best on validation: {best['objective']} (valid RMSE {best['valid_rmse']:.3f}); wrote {args.out}")


if __name__ == "__main__":
    main()
