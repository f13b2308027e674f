"""What each RDKit 2D descriptor costs, and how fast the descriptor sets run: the measurement behind the
"fast" set (``smilesformer.descriptors.SLOW_PREFIXES`` / ``SLOW_NAMES``).

Each descriptor is timed alone on fresh copies of the molecules (RDKit caches partial results on a molecule,
so timing them one after another on the same object would credit the first of a family with the whole
family's cost); each set is timed as a whole, parsing included, as pretraining and the head compute it.

    python benchmarks/bench_descriptor_cost.py [--data esol] [--n 300]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rdkit import Chem
from rdkit.Chem import Descriptors

from smilesformer.data import DATASETS, iter_smiles, locate_dataset
from smilesformer.descriptors import descriptor_block, descriptor_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="lipophilicity", help="a registered data set or a SMILES file")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "descriptor_cost.json")
    args = parser.parse_args()
    path = locate_dataset(args.data) if args.data in DATASETS else args.data
    col = DATASETS[args.data].smiles_col if args.data in DATASETS else None
    smiles = [s.strip() for _, s in zip(range(args.n), iter_smiles(path, col))]
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    mols = [m for m in mols if m is not None]

    per_descriptor = {}
    for name, fn in Descriptors._descList:
        copies = [Chem.Mol(m) for m in mols]
        started = time.perf_counter()
        for m in copies:
            try:
                fn(m)
            except Exception:  # noqa: BLE001 - a descriptor that fails is timed all the same
                pass
        per_descriptor[name] = round((time.perf_counter() - started) / len(mols) * 1e3, 4)

    sets = {}
    for kind in ("rdkit", "fast"):
        names = descriptor_names(kind)
        started = time.perf_counter()
        descriptor_block(smiles, names)
        seconds = time.perf_counter() - started
        sets[kind] = {"descriptors": len(names), "ms_per_molecule": round(seconds / len(smiles) * 1e3, 2),
                      "molecules_per_second": round(len(smiles) / seconds, 1)}
        print(kind, json.dumps(sets[kind]))
    slowest = sorted(per_descriptor.items(), key=lambda kv: -kv[1])[:15]
    print("slowest alone (ms/molecule):", ", ".join(f"{k} {v}" for k, v in slowest))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": args.data, "molecules": len(smiles), "sets": sets,
                                    "per_descriptor_ms": per_descriptor}, indent=2))


if __name__ == "__main__":
    main()
