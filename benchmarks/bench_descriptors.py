"""What the RDKit descriptor head costs at predict time: descriptors/s, and streamed predict with and without.

On the first N SMILES of the MOSES training set: RDKit's 2D descriptors computed serially and by the
process pool the CLI uses (one process per CPU), then ``stream_predict`` (the path behind ``smilesformer
predict``) with a plain regression head (alone, and blended with gradient-boosted trees on RDKit's set,
``--trees gbm``), with the descriptor head, and with the descriptor head blended with the trees, each with
RDKit's whole set ("rdkit") and with the "fast" set, all new heads on the bundled model (speed does not
depend on the head's weights). Writes ``benchmarks/results/descriptors.json``.

    python benchmarks/bench_descriptors.py [--n 20000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench_inference import DATA, _first_smiles, _read_smiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--data", type=Path, default=DATA / "moses_train.csv.gz")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "descriptors.json")
    args = parser.parse_args()

    import torch

    from smilesformer import SmilesModel
    from smilesformer import rdkit_descriptors as d
    from smilesformer.predictors import TreeBlend
    from smilesformer.streaming import stream_predict
    from smilesformer.trees import fit_trees

    torch.set_num_threads(args.threads)
    d.allow_process_pool()  # as the CLI does
    results: dict = {"cpu_count": os.cpu_count(), "threads": args.threads, "workers": d.descriptor_workers(),
                     "load_average_1min_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="bench-descriptors-") as tmp:
        tmp = Path(tmp)
        data = tmp / "smiles.csv"
        n = _first_smiles(args.data, args.n, data)
        smiles, names = tuple(_read_smiles(data, n)), tuple(d.descriptor_names("rdkit"))
        started = time.perf_counter()
        d.descriptor_block(smiles, names)
        results["descriptors_per_second_serial"] = round(n / (time.perf_counter() - started), 1)
        d._pool(d.descriptor_workers())  # start the pool outside the timing, as a long CLI run amortizes it
        started = time.perf_counter()
        d.compute_descriptors(smiles, names)
        results["descriptors_per_second_pool"] = round(n / (time.perf_counter() - started), 1)
        d.clear_descriptor_cache()
        for kind in ("none", "none+trees", "rdkit", "rdkit+trees", "fast", "fast+trees"):
            head = SmilesModel.create("smilesformer-moses", "regression", ["y"], descriptors=kind.split("+")[0])
            predictor = head.predictor
            if kind.endswith("+trees"):  # trees fitted on 2,000 of the molecules, to predict their Crippen logP
                logp = d.descriptor_block(smiles[:2000], ["MolLogP"])
                tree_set = "rdkit" if kind.startswith("none") else kind.split("+")[0]  # a plain head's trees: RDKit's
                trees = fit_trees(predictor.meta, smiles[:2000], logp, names=d.descriptor_names(tree_set))
                predictor = TreeBlend(predictor, trees, [0.5])
            folder = predictor.save_pretrained(tmp / f"head_{kind}")
            d.clear_descriptor_cache()  # every variant computes its descriptors afresh
            started = time.perf_counter()
            stream_predict(folder, data, tmp / f"pred_{kind}.csv", resume=False, precision="fp32")
            results[f"predict_per_second_{kind}"] = round(n / (time.perf_counter() - started), 1)
    results["molecules"] = n
    results["predict_slowdown_with_descriptors"] = round(
        results["predict_per_second_none"] / results["predict_per_second_rdkit"], 2)
    results["predict_slowdown_with_descriptors_and_trees"] = round(
        results["predict_per_second_none"] / results["predict_per_second_rdkit+trees"], 2)
    for kind in ("none+trees", "rdkit", "rdkit+trees", "fast", "fast+trees"):
        results[f"share_of_plain_head_{kind}"] = round(
            results[f"predict_per_second_{kind}"] / results["predict_per_second_none"], 2)
    results["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
