"""Pretraining preparation per CPU core: corpus transformations, benchmark exclusion, cleaning, token cache and MTR
targets, before and after they became one pass over one RDKit parse per molecule.

Each side runs in its own process, one core (RDKit in this process, the Rust tokenizer told to use one thread), on
the same molecules drawn from MOSES. "before" is an older checkout (``--before-src``, e.g. a worktree at e49dc1d):
its corpus step (InChIKey exclusion, transformations, a parse back), `pretrain`'s cleaning parse, its tokenizer
call and its "fast" descriptors parsed once more; "after" is this checkout: ``corpus._prepare_block`` (one parse:
element-graph prefilter, transformations, "mtr" descriptors) and the token cache's tokenization. The figure
extrapolated to a 16-core GPU machine is printed beside it; the real one comes from that machine's
``breakdown.json`` (scripts/pretrain_gpu.sh).

``--exclusion`` also checks, on every benchmark molecule transformed as the corpus transforms (so nearly every
one should be caught), that the element-graph prefilter lets through every molecule the InChIKey skeleton catches.

    python benchmarks/bench_prepare.py --n 3000 --before-src ../old/src [--exclusion]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOSES_MOLECULES = 1_584_663

PROBE = r'''
import json, random, sys, time
import numpy as np
from smilesformer import corpus as C
from smilesformer import pretrain as P
from smilesformer.data import iter_smiles
from smilesformer.tokenization import build_smiles_tokenizer

n, source = int(sys.argv[1]), sys.argv[2]
smiles = random.Random(0).sample([s.strip() for s in iter_smiles(source)], n)
tokenizer = build_smiles_tokenizer(model_max_length=128)
stages = {}
def timed(name, fn):
    started = time.process_time()
    out = fn()
    stages[name] = (time.process_time() - started) / n * 1000
    return out
if hasattr(C, "_prepare_block"):  # one pass
    from smilesformer.descriptors import descriptor_names
    names = tuple(descriptor_names("mtr"))
    rows, _, _ = timed("corpus: parse, exclusion, transformations, MTR descriptors",
                    lambda: C._prepare_block((0, smiles, dict(C.TRANSFORMS), 0, names)))
    written = [r[0] for r in rows]
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(128)
    timed("token cache", lambda: backend.encode_batch(written, add_special_tokens=True))
else:  # the corpus command, then pretrain's cleaning, tokenization and descriptors, each parsing again
    rows = timed("corpus: parse, InChIKey exclusion, transformations, parse back",
                 lambda: C._transform_block((0, smiles, dict(C.TRANSFORMS), 0)))
    written = [r[0] for r in rows]
    timed("pretrain cleaning: parse, canonical SMILES", lambda: P._parse_chunk((written, False)))
    timed("token cache", lambda: tokenizer(written, truncation=True, max_length=128))
    names = P.descriptor_names("fast")
    timed("MTR descriptors ('fast'): parse, compute", lambda: P._descriptor_chunk((written, names)))
print(json.dumps({"stages_ms": {k: round(v, 4) for k, v in stages.items()},
                  "ms_per_molecule": round(sum(stages.values()), 4), "descriptors": len(names)}))
'''

EXCLUSION = r'''
import json, random, sys
from rdkit import RDLogger
from smilesformer import corpus as C
from smilesformer.data import DATASETS, locate_dataset, mol_from_smiles, read_table
RDLogger.DisableLog("rdApp.*")
keys, graphs, counts = C._benchmark_skeletons(sorted(DATASETS))
smiles = [str(s) for name in sorted(DATASETS) for s in read_table(locate_dataset(name))[DATASETS[name].smiles_col]]
rows, _, _ = C._prepare_block((0, smiles, {k: 0.5 for k in C.TRANSFORMS}, 0, ()))
inchikey = graph = missed = 0
for text, (written, applied, mol_graphs) in zip(smiles, rows):
    if "invalid" in applied:
        continue
    found = set()
    for s in (text, written):
        mol = mol_from_smiles(s)
        if mol is not None:
            found |= C._keys(mol)
    hit_key, hit_graph = bool(found & keys), bool(mol_graphs & graphs)
    inchikey += hit_key
    graph += hit_graph
    missed += hit_key and not hit_graph
print(json.dumps({"molecules": len(smiles), "caught_by_inchikey": inchikey, "passed_by_element_graph": graph,
                  "inchikey_catches_the_graph_missed": missed}))
'''


def probe(src: Path, n: int, source: Path, script: str = PROBE) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", script, str(n), str(source)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="molecules drawn from MOSES")
    parser.add_argument("--before-src", type=Path, help="src/ of an older checkout, the 'before'")
    parser.add_argument("--exclusion", action="store_true", help="also check the element-graph prefilter")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SMILESFORMER_DATA", ROOT.parent / "shared"
                                                                                               / "data")))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prepare.json")
    parser.add_argument("--note", default="", help="the machine's state, recorded with the figures (say, that "
                        "background jobs were paused: the load average lags a minute behind)")
    args = parser.parse_args()
    source = args.data / "moses_train.csv.gz"
    result: dict = {"n": args.n, "load_average_at_start": os.getloadavg()[0], "note": args.note}
    if args.before_src:
        result["before"] = probe(args.before_src, args.n, source)
        print("before", json.dumps(result["before"]))
    result["after"] = probe(ROOT / "src", args.n, source)
    print("after", json.dumps(result["after"]))
    for side in ("before", "after"):
        if side in result:
            ms = result[side]["ms_per_molecule"]
            result[side]["molecules_per_second_per_core"] = round(1000 / ms, 1)
            result[side]["moses_on_16_cores_seconds"] = round(MOSES_MOLECULES * ms / 1000 / 16, 1)
    if "before" in result:
        result["speedup_per_core"] = round(result["before"]["ms_per_molecule"] / result["after"]["ms_per_molecule"],
                                           2)
        print(f"speed-up per core: {result['speedup_per_core']}x")
    if args.exclusion:
        result["exclusion"] = probe(ROOT / "src", 0, source, EXCLUSION)
        print("exclusion", json.dumps(result["exclusion"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
