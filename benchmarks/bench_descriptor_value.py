"""What each family of the "fast" descriptor set costs and what it is worth, and what each slow family (in
RDKit's full set, left out of "fast") would add back: the measurements behind the choice of set.

Cost: each family computed alone as ``descriptor_block`` computes it (parsing subtracted; families that share
RDKit's cached intermediates, such as the Crippen contributions behind MolLogP and the SlogP/SMR VSA bins, are
timed as they run together). Value: the validation MAE of the suite's gradient-boosted trees
(``smilesformer.trees``' settings) trained on the set without that family, against the whole set, on scaffold
splits' train and validation parts only (test molecules are never read). The same for the slow families, the other
way round: the trees on the fast set plus that family, and on the full set. Writes
``benchmarks/results/descriptor_value.json``.

    python benchmarks/bench_descriptor_value.py [--splits aqsoldb:0,aqsoldb:1,lipophilicity:0] [--n-cost 600]

``--sets mtr`` measures the same for the set MTR pretraining regresses instead: each of its families' cost and
what the trees lose without it, beside the fast set (``descriptor_value_mtr.json``): value per millisecond.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np


def family(name: str) -> str:
    """The family a descriptor of RDKit's registry belongs to."""
    if name.startswith("fr_"):
        return "fragment counts (fr_)"
    if name.startswith(("SlogP_VSA", "SMR_VSA", "PEOE_VSA")):
        return "VSA bins"
    if "PartialCharge" in name:
        return "Gasteiger charges"
    if name.startswith("FpDensityMorgan"):
        return "Morgan density"
    if name in ("MolLogP", "MolMR"):
        return "Crippen logP/MR"
    return "counts and sizes"


def slow_family(name: str) -> str:
    """The family of a descriptor of the full set that "fast" leaves out (``descriptors.SLOW_*``)."""
    if name.startswith("BCUT2D_"):
        return "BCUT2D"
    if name.startswith(("Chi", "Kappa")):
        return "Chi and Kappa"
    if name.startswith(("EState_VSA", "VSA_EState")):
        return "E-state VSA bins"
    if "EStateIndex" in name:
        return "E-state indices"
    if name.startswith("FpDensityMorgan"):
        return "Morgan density"
    if name in ("Ipc", "AvgIpc", "BertzCT", "BalabanJ", "Phi", "SPS"):
        return "topological indices"
    if name in ("NumValenceElectrons", "NumRadicalElectrons"):
        return "electron counts"
    return name  # qed


def _ms_per_molecule(sample: list[str], members: list[str]) -> float:
    from smilesformer.descriptors import descriptor_block

    started = time.perf_counter()
    descriptor_block(sample, members)
    return (time.perf_counter() - started) / len(sample) * 1e3


def _valid_mae(keep: list[str], names: list[str], x_train, y_train, x_valid, y_valid) -> float:
    from sklearn.ensemble import HistGradientBoostingRegressor

    from smilesformer.trees import _params

    cols = [names.index(n) for n in keep]
    trees = HistGradientBoostingRegressor(**_params(0)).fit(x_train[:, cols], y_train)
    return round(float(np.mean(np.abs(trees.predict(x_valid[:, cols]) - y_valid))), 4)


def _table(dataset: str, tables: dict) -> tuple[list[str], np.ndarray, bool]:
    """A data set's SMILES and first target, read once; the flag says whether this call read it."""
    if dataset in tables:
        return (*tables[dataset], False)
    from smilesformer.config import DataConfig
    from smilesformer.data import load_dataset

    loaded = load_dataset(DataConfig(dataset, bad_input="skip"))
    table = loaded.table.reset_index(drop=True)
    tables[dataset] = (table["smiles"].tolist(), table[loaded.target_cols[0]].to_numpy(float))
    return (*tables[dataset], True)


def _cost_sample(smiles: list[str], n: int) -> tuple[list[str], float]:
    """The molecules timed, and what parsing them costs (MolWt is a sum over atoms: nearly all parse)."""
    sample = random.Random(0).sample(smiles, min(n, len(smiles)))
    return sample, _ms_per_molecule(sample, ["MolWt"])


def mtr_family(name: str) -> str:
    """The family a descriptor of the "mtr" set belongs to (the cost unit: a family is one RDKit call or a few)."""
    if name in ("MolLogP", "MolMR"):
        return "Crippen logP/MR"
    if name.startswith("PEOE_VSA"):
        return "PEOE VSA bins"
    if name.startswith("MQN"):
        return "MQN counts"
    return "counts, sizes, TPSA, ASA, Chi/Kappa"


def mtr_value(args) -> None:
    """Cost and validation value of each family of the "mtr" set, against the fast set."""
    from rdkit import rdBase

    from smilesformer.descriptors import descriptor_block, descriptor_names
    from smilesformer.splits import scaffold_split

    rdBase.DisableLog("rdApp.*")
    mtr, fast = descriptor_names("mtr"), descriptor_names("fast")
    columns = list(dict.fromkeys(mtr + fast))
    families: dict[str, list[str]] = {}
    for n in mtr:
        families.setdefault(mtr_family(n), []).append(n)
    results: dict = {"descriptors": len(mtr), "families": {f: len(v) for f, v in families.items()},
                     "cost_ms_per_molecule": {}, "valid_mae": {}, "load_average_at_start": round(os.getloadavg()[0], 2)}
    tables: dict = {}
    for spec in args.splits.split(","):
        dataset, seed = spec.split(":")
        smiles, y, first = _table(dataset, tables)
        if first:
            sample, parse = _cost_sample(smiles, args.n_cost)
            groups = [("mtr set", mtr), ("fast set", fast), *families.items()]
            results["cost_ms_per_molecule"][dataset] = {name: round(_ms_per_molecule(sample, members) - parse, 3)
                                                        for name, members in groups}
            print(dataset, "ms/molecule:", json.dumps(results["cost_ms_per_molecule"][dataset]), flush=True)
        train, valid, _ = scaffold_split(smiles, (0.8, 0.1, 0.1), int(seed))
        x = descriptor_block([smiles[i] for i in (*train, *valid)], columns)
        x_train, x_valid, y_train, y_valid = x[:len(train)], x[len(train):], y[train], y[valid]
        scores = {"mtr set": _valid_mae(mtr, columns, x_train, y_train, x_valid, y_valid),
                  "fast set": _valid_mae(fast, columns, x_train, y_train, x_valid, y_valid)}
        for name, members in families.items():
            keep = [n for n in mtr if n not in members]
            scores[f"mtr without {name}"] = _valid_mae(keep, columns, x_train, y_train, x_valid, y_valid)
        results["valid_mae"][f"{dataset} scaffold seed {seed}"] = scores
        print(f"{dataset} seed {seed} valid MAE:", json.dumps(scores), flush=True)
    out = args.out if args.out.name != "descriptor_value.json" else args.out.with_name("descriptor_value_mtr.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default="aqsoldb:0,aqsoldb:1,lipophilicity:0",
                        help="data set:seed pairs; each scores the families on its scaffold split's validation part")
    parser.add_argument("--n-cost", type=int, default=600, help="molecules per data set for the timing")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "descriptor_value.json")
    parser.add_argument("--sets", choices=["fast", "mtr"], default="fast",
                        help="fast: the fast set's families and RDKit's slow ones; mtr: the MTR set's families")
    args = parser.parse_args()
    if args.sets == "mtr":
        return mtr_value(args)

    from rdkit import rdBase

    from smilesformer.descriptors import descriptor_block, descriptor_names
    from smilesformer.splits import scaffold_split

    rdBase.DisableLog("rdApp.*")
    names, full = descriptor_names("fast"), descriptor_names("rdkit")
    families: dict[str, list[str]] = {}
    for n in names:
        families.setdefault(family(n), []).append(n)
    slow: dict[str, list[str]] = {}
    for n in full:
        if n not in names:
            slow.setdefault(slow_family(n), []).append(n)
    results: dict = {"descriptors": len(names), "families": {f: len(v) for f, v in families.items()},
                     "cost_ms_per_molecule": {}, "valid_mae": {},
                     "full_descriptors": len(full), "slow_families": {f: len(v) for f, v in slow.items()},
                     "slow_cost_ms_per_molecule": {}, "slow_valid_mae": {},
                     "load_average_at_start": round(os.getloadavg()[0], 2)}  # the timings want an idle machine
    tables: dict = {}
    for spec in args.splits.split(","):
        dataset, seed = spec.split(":")
        smiles, y, first = _table(dataset, tables)
        if first:
            sample, parse = _cost_sample(smiles, args.n_cost)
            for key, groups in (("cost_ms_per_molecule", [("whole set", names), *families.items()]),
                                ("slow_cost_ms_per_molecule", [("full set", full), *slow.items()])):
                results[key][dataset] = {name: round(_ms_per_molecule(sample, members) - parse, 3)
                                         for name, members in groups}
            print(dataset, "ms/molecule:", json.dumps(results["cost_ms_per_molecule"][dataset]),
                  json.dumps(results["slow_cost_ms_per_molecule"][dataset]), flush=True)
        train, valid, _ = scaffold_split(smiles, (0.8, 0.1, 0.1), int(seed))  # the suite's fractions
        x = descriptor_block([smiles[i] for i in (*train, *valid)], full)  # columns in the full set's order
        x_train, x_valid = x[:len(train)], x[len(train):]

        y_train, y_valid = y[train], y[valid]
        scores = {"whole set": _valid_mae(names, full, x_train, y_train, x_valid, y_valid)}
        for name, members in families.items():
            keep = [n for n in names if n not in members]
            scores[f"without {name}"] = _valid_mae(keep, full, x_train, y_train, x_valid, y_valid)
        results["valid_mae"][f"{dataset} scaffold seed {seed}"] = scores
        added = {"full set": _valid_mae(full, full, x_train, y_train, x_valid, y_valid)}
        for name, members in slow.items():
            added[name] = _valid_mae(names + members, full, x_train, y_train, x_valid, y_valid)
        results["slow_valid_mae"][f"{dataset} scaffold seed {seed}"] = added
        print(f"{dataset} seed {seed} valid MAE:", json.dumps(scores), "fast set plus:", json.dumps(added), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
