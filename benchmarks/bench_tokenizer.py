"""Tokenizer coverage on every shared data set: molecules with at least one <unk>, round trip, tokens per
molecule, for any number of model folders' tokenizers (the bundled one by default).

    python benchmarks/bench_tokenizer.py [--models smilesformer-moses,path/to/old/model]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smilesformer.data import DATASETS, iter_smiles, locate_dataset
from smilesformer.networks import resolve_model_source
from smilesformer.tokenization import count_unknown, load_tokenizer


def coverage(tokenizer, smiles: list[str]) -> dict:
    ids = tokenizer(smiles, add_special_tokens=False)["input_ids"]
    return {"molecules": len(smiles), "with_unk": len(count_unknown(tokenizer, smiles)),
            "roundtrip": sum(tokenizer.decode(row) == s for s, row in zip(smiles, ids)),
            "mean_tokens": round(sum(map(len, ids)) / max(len(ids), 1), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smilesformer-moses")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tokenizer_coverage.json")
    args = parser.parse_args()
    sets = {}
    for name in DATASETS:
        path = locate_dataset(name)
        if path is None:
            raise SystemExit(f"{name} not found: set $SMILESFORMER_DATA")
        sets[name] = [s.strip() for s in iter_smiles(path, DATASETS[name].smiles_col)]
    report = {}
    for model in args.models.split(","):
        tokenizer = load_tokenizer(resolve_model_source(model))
        report[model] = {"vocab_size": len(tokenizer), **{n: coverage(tokenizer, s) for n, s in sets.items()}}
        print(model, json.dumps(report[model]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"models": report}, indent=2))


if __name__ == "__main__":
    main()
