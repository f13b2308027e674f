"""Render BENCHMARKS.md from the JSON files the benchmark scripts wrote (benchmarks/results/*.json).

Every figure in BENCHMARKS.md comes from those files; run the scripts, then this:

    python benchmarks/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

from smilesformer.networks import bundled_model_path

RESULTS = Path(__file__).parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _pretraining() -> list[str]:
    folder = bundled_model_path()
    if folder is None:
        return []
    s = json.loads((folder / "pretrain_summary.json").read_text())
    c = json.loads((folder / "pretrain_config.json").read_text())["pretrain"]
    return ["## Pretraining the bundled model", "",
            f"`{folder.name}`: {s['n_parameters']:,} parameters, objective {c['objective']}, {s['steps']:,} steps "
            f"of {c['batch_size']} on {s['corpus']['kept']:,} corpus molecules, final training loss "
            f"{s['final_loss']:.4f}, "
            f"{s['throughput']['tokens_per_second']:,.0f} tokens/s ({s['throughput']['molecules_per_second']:,.0f} "
            f"molecules/s) on {s['hardware']}. Command, settings and loss curve: its model card "
            f"(`src/smilesformer/models/{folder.name}/README.md`).", ""]


def _tokenizer(r: dict) -> list[str]:
    models = list(r["models"])
    sets = [k for k in r["models"][models[0]] if k != "vocab_size"]
    lines = ["## Tokenizer coverage", "",
             "`python benchmarks/bench_tokenizer.py --models <folders>`: molecules holding at least one `<unk>` "
             "token, of all molecules in each shared data set (tokens per molecule in brackets).", "",
             "| tokenizer | vocabulary | " + " | ".join(sets) + " |", "|---" * (len(sets) + 2) + "|"]
    for name, m in r["models"].items():
        cells = [f"{m[s]['with_unk']:,} / {m[s]['molecules']:,} ({m[s]['mean_tokens']})" for s in sets]
        lines.append(f"| `{name}` | {m['vocab_size']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _pretrain_throughput(r: dict) -> list[str]:
    lines = ["## Pretraining throughput", "",
             f"`python benchmarks/bench_pretrain.py --steps {r['steps']}`: `smilesformer pretrain --preset small` "
             f"for {r['steps']} steps on the same 4,000-molecule corpus, one setting after another, "
             f"{r['threads'] or 'default'} torch threads, {r['cpu_count']} cores; `before` is the package before "
             "this change (`--before-src`).", "",
             "| code | setting | tokens/s | molecules/s |", "|---|---|---|---|"]
    for row in r["results"]:
        lines.append(f"| {row['code']} | {row['setting']} | {row['tokens_per_second']:,.0f} | "
                     f"{row['molecules_per_second']:,.1f} |")
    return lines + [""]


def _objectives(r: dict) -> list[str]:
    first = r["results"][0]
    lines = ["## Pretraining objectives at a small budget", "",
             f"`python benchmarks/bench_objectives.py --limit {first['corpus_limit']} --steps "
             f"{first['pretrain_steps']}`: each objective pretrains the `small` model for the same steps on the same "
             f"corpus molecules, then fine-tunes (SMILES only) on {r['dataset']} {r['split']} split; the validation "
             "RMSE picks, the test RMSE is shown and picks nothing.", "",
             "| objective | seed | valid RMSE | test RMSE | pretraining s |", "|---|---|---|---|---|"]
    for row in r["results"]:
        lines.append(f"| {row['objective']} | {row['seed']} | {row['valid_rmse']:.3f} | {row['test_rmse']:.3f} | "
                     f"{row['pretrain_seconds']:,.0f} |")
    return lines + [""]


def _descriptor_cost(r: dict) -> list[str]:
    lines = ["## RDKit descriptor cost", "",
             f"`python benchmarks/bench_descriptor_cost.py`: {r['molecules']} molecules of {r['data']}, one process.",
             "", "| set | descriptors | ms per molecule | molecules/s |", "|---|---|---|---|"]
    for name, s in r["sets"].items():
        lines.append(f"| {name} | {s['descriptors']} | {s['ms_per_molecule']} | {s['molecules_per_second']:,.0f} |")
    slow = sorted(r["per_descriptor_ms"].items(), key=lambda kv: -kv[1])[:10]
    lines += ["", "Slowest alone (ms per molecule): " + ", ".join(f"{k} {v}" for k, v in slow) + "."]
    return lines + [""]


def _descriptor_value(r: dict) -> list[str]:
    costs, maes = r["cost_ms_per_molecule"], r["valid_mae"]
    splits = list(maes)
    lines = ["## What each descriptor family costs and is worth", "",
             f"`python benchmarks/bench_descriptor_value.py`: the \"fast\" set ({r['descriptors']} descriptors) by "
             "family. Cost: ms of RDKit per molecule, each family computed alone (parsing subtracted). Value: "
             "validation MAE of the gradient-boosted trees without the family (train and validation parts of "
             "scaffold splits; no test molecule read). Lower MAE without a family means it did not pay for itself."
             + (f" Load average {r['load_average_at_start']} at the start." if "load_average_at_start" in r else ""),
             "", "| family | descriptors | " + " | ".join(f"ms, {d}" for d in costs) + " | "
             + " | ".join(f"valid MAE, {s}" for s in splits) + " |",
             "|---" * (2 + len(costs) + len(splits)) + "|"]
    for name in ["whole set", *r["families"]]:
        key = name if name == "whole set" else f"without {name}"
        count = r["descriptors"] if name == "whole set" else r["families"][name]
        lines.append(f"| {name} | {count} | " + " | ".join(f"{costs[d][name]:.3f}" for d in costs) + " | "
                     + " | ".join(f"{maes[s][key]:.3f}" for s in splits) + " |")
    if "slow_valid_mae" not in r:
        return lines + [""]
    costs, maes = r["slow_cost_ms_per_molecule"], r["slow_valid_mae"]
    lines += ["", f"The other way round: the families of RDKit's full set ({r['full_descriptors']} descriptors) that "
              "\"fast\" leaves out, each added back to the fast set alone. Lower validation MAE than the fast set's "
              "(the first table's \"whole set\" row) means the family pays for itself there.", "",
              "| added to the fast set | descriptors | " + " | ".join(f"ms, {d}" for d in costs) + " | "
              + " | ".join(f"valid MAE, {s}" for s in maes) + " |",
              "|---" * (2 + len(costs) + len(maes)) + "|"]
    for name in ["full set", *r["slow_families"]]:
        count = r["full_descriptors"] if name == "full set" else r["slow_families"][name]
        label = "all of them (the full set)" if name == "full set" else name
        lines.append(f"| {label} | {count} | " + " | ".join(f"{costs[d][name]:.3f}" for d in costs) + " | "
                     + " | ".join(f"{maes[s][name]:.3f}" for s in maes) + " |")
    return lines + [""]


def _finetune(r: dict) -> list[str]:
    dyn, pad = r["dynamic_padding_length_grouped"], r.get("padded_to_max_length")
    lines = ["## Fine-tuning and prediction speed (the demo)", "",
             "`python benchmarks/bench_finetune.py`: the demo's fine-tuning (10% of AqSolDB, 80/20, 5 epochs, "
             f"model `{r['model']}`, {r['torch_threads']} torch threads), then prediction of all of AqSolDB.", "",
             "| variant | molecules/s trained | training s | test MSE | test Pearson r |", "|---|---|---|---|---|",
             f"| dynamic padding, length-grouped batches (default) | {dyn['train_molecules_per_second']:.0f} | "
             f"{dyn['train_seconds']:.1f} | {dyn['test_mse']:.3f} | {dyn['test_pearson_r']:.3f} |"]
    if pad:
        lines.append(f"| every batch padded to max length, input order (as simpletransformers) | "
                     f"{pad['train_molecules_per_second']:.0f} | {pad['train_seconds']:.1f} | {pad['test_mse']:.3f} | "
                     f"{pad['test_pearson_r']:.3f} |")
    p = r["predict"]
    lines += ["", f"Prediction: {p['molecules']:,} molecules in {p['seconds']:.1f} s = "
              f"**{p['molecules_per_second']:,.0f} molecules/s**. Peak RSS of the whole benchmark process: "
              f"{r['peak_rss_mb']:,.0f} MB."]
    if "training_speedup_vs_padded" in r:
        lines.append(f"Dynamic padding with length grouping trains {r['training_speedup_vs_padded']}x faster than "
                     "padding every batch to the maximum length.")
    lines.append("Absolute timings on a shared 2-core machine vary from run to run; compare variants within one run.")
    return lines + [""]


def _mtr_value(r: dict) -> list[str]:
    first = next(iter(r["cost_ms_per_molecule"].values()))
    families = [k for k in first if k not in ("mtr set", "fast set")]
    lines = ["## What the MTR set's families cost and are worth", "",
             "`python benchmarks/bench_descriptor_value.py --sets mtr`: the set pretraining regresses ('mtr', "
             f"{r['descriptors']} descriptors) family by family. Cost: ms per molecule as `descriptor_block` computes "
             "it, parsing subtracted. Value: the validation MAE of the suite's gradient-boosted trees on the set, "
             "without each family, and on the fast set, on scaffold splits' train and validation parts (no test "
             f"molecule read). Load average {r['load_average_at_start']} at the start.", "",
             "| | " + " | ".join(f"{d} cost, ms" for d in r["cost_ms_per_molecule"]) + " | "
             + " | ".join(f"{k} valid MAE" for k in r["valid_mae"]) + " |",
             "|---|" + "---|" * (len(r["cost_ms_per_molecule"]) + len(r["valid_mae"]))]
    for name, key in [("mtr set", "mtr set"), ("fast set", "fast set")] + [(f"without {f}", f) for f in families]:
        costs = [f"{r['cost_ms_per_molecule'][d][key]:.3f}" for d in r["cost_ms_per_molecule"]]
        mae_key = name if name in ("mtr set", "fast set") else f"mtr {name}"
        maes = [f"{r['valid_mae'][k][mae_key]:.3f}" for k in r["valid_mae"]]
        lines.append(f"| {name} | " + " | ".join(costs) + " | " + " | ".join(maes) + " |")
    lines += ["", "Rows 'without X': the cost column is X's own cost, the MAE that of the set without it."]
    return lines + [""]


def _prepare(r: dict) -> list[str]:
    lines = ["## Pretraining preparation per core", "",
             f"`python benchmarks/bench_prepare.py --n {r['n']} --before-src <checkout at e49dc1d>/src --exclusion`: "
             "CPU time per molecule of every preparation step, one core each side, the same MOSES molecules "
             f"(load average {r['load_average_at_start']:.2f} at the start"
             + (f"; {r['note']}" if r.get("note") else "") + "). Before: the corpus step (InChIKey "
             "exclusion, transformations, a parse back), `pretrain`'s cleaning parse, its tokenizer call and its "
             "'fast' descriptors, each parsing again; after: one parse per molecule for all of it, the 'mtr' "
             "descriptors, and the Rust tokenizer called directly.", "",
             "| code | stage | ms per molecule |", "|---|---|---|"]
    for side in ("before", "after"):
        if side in r:
            lines += [f"| {side} | {stage} | {ms:.3f} |" for stage, ms in r[side]["stages_ms"].items()]
    lines += ["", "| code | ms per molecule | molecules/s per core | MOSES (1.58M) on 16 such cores | "
              "MTR descriptors |", "|---|---|---|---|---|"]
    for side in ("before", "after"):
        if side in r:
            x = r[side]
            lines.append(f"| {side} | {x['ms_per_molecule']:.3f} | {x['molecules_per_second_per_core']:,.0f} | "
                         f"{x['moses_on_16_cores_seconds']:.0f} s | {x['descriptors']} |")
    if "speedup_per_core" in r:
        lines += ["", f"**{r['speedup_per_core']}x** faster per core (target 4x)."]
    if "exclusion" in r:
        e = r["exclusion"]
        lines += ["", f"Benchmark exclusion: of {e['molecules']:,} benchmark molecules, transformed as the corpus "
                  f"transforms, the InChIKey skeleton catches {e['caught_by_inchikey']:,}; the element-graph "
                  f"prefilter passes {e['passed_by_element_graph']:,} on to it and misses "
                  f"**{e['inchikey_catches_the_graph_missed']}** of those it catches."]
    return lines + [""]


def _gpu_runs(r: dict) -> list[str]:
    lines = ["## The GPU recipe: where a window goes", "",
             "`scripts/pretrain_gpu.sh` (corpus, `pretrain --max-minutes`, export), each run's `breakdown.json`. "
             "Preparation is the corpus step and `pretrain` before its first step.", "",
             "| run | machine | molecules | window s | corpus s | pretrain preparation s | training s | export s | "
             "training share | steps | molecules presented | final loss | stopped |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        b = run["breakdown"]
        loss = f"{run['final_loss']:.3f}" if "final_loss" in run else ""
        lines.append(f"| {run['name']} | {b['hardware']} | {b['molecules']:,} | {b['window_seconds']:.0f} | "
                     f"{b['corpus_seconds']:.0f} | {b['pretrain_preparation_seconds']:.0f} | "
                     f"{b['training_seconds']:.0f} | {b['export_seconds']:.0f} | {b['training_share']:.0%} | "
                     f"{b['steps']:,} | {b['molecules_presented']:,} | {loss} | {b['stopped']} |")
    lines.append("")
    lines += [f"- {run['name']}: `{run['command']}`. {run['note']}" for run in r["runs"]]
    return lines + [""]


def _presets(rows: list[dict]) -> list[str]:
    lines = ["## Model size on this CPU: small against medium", "",
             "`python benchmarks/bench_finetune.py --model random:<preset> --skip-padded`: the demo's fine-tuning "
             "(10% of AqSolDB, 80/20, 5 epochs, default settings: `descriptors` and `trees` auto) from random "
             "weights of "
             "each shape, then prediction of all of AqSolDB, one after the other on an idle machine.", "",
             "| preset | fine-tune s (training) | whole command s | predict molecules/s | test MSE | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        d = r["dynamic_padding_length_grouped"]
        lines.append(f"| {r['model'].removeprefix('random:')} | {d['train_seconds']:.0f} | {d['wall_seconds']:.0f} | "
                     f"{r['predict']['molecules_per_second']:.0f} | {d['test_mse']:.3f} | "
                     f"{r['peak_rss_mb']:,.0f} |")
    return lines + [""]


def _vs_simpletransformers(rows: list[dict]) -> list[str]:
    lines = ["## Fine-tuning against simpletransformers (the seed notebook's tool)", "",
             "`python benchmarks/bench_vs_simpletransformers.py --shape <shape> --threads 2` (simpletransformers in "
             "its own environment: `make bench-st-env`): the notebook's task (10% of AqSolDB, 80/20, 5 epochs, "
             "regression) on the same random-init RoBERTa with the same byte-level BPE tokenizer, one after the other "
             "on an idle 2-core machine (the model's initial weights seeded, so both tools and both versions start "
             "alike). smilesformer is the whole command (`python -m smilesformer finetune`) with its defaults on "
             "(descriptor head, tree blend; no validation set, so the blend weight is 0.5), simpletransformers its "
             "`train_model` call alone. A `before` row is the same command from an earlier commit of the package "
             "(`--no-st`, `PYTHONPATH` at that checkout), timed in the same session.", "",
             "| shape | model | tokens per molecule | smilesformer s | simpletransformers s | speed-up | "
             "training steps GFLOP/s (share of the fp32 matmul peak) | smilesformer test MSE |",
             "|---|---|---|---|---|---|---|---|"]
    before = {r["shape"]: r for r in (_load(f"vs_simpletransformers_before_{shape}.json") for shape in
                                      ("small", "chemberta")) if r is not None}
    for r in rows:
        m = r.get("model", {})
        shape = (f"{m['num_hidden_layers']} layers, hidden {m['hidden_size']}, feed-forward {m['intermediate_size']}, "
                 f"BPE {m['vocab']}, max length {m['max_length']}") if m else "small (BPE 1,000, before the shapes)"
        steps = r.get("smilesformer_phases", {}).get("training", {})
        flops = f"{steps['gflop_per_second']:.0f} ({steps['share_of_peak']:.0%})" if steps else ""
        lines.append(f"| {r.get('shape', 'small')} | {shape} | {m.get('tokens_per_molecule', '')} | "
                     f"{r['smilesformer_command_seconds']:.1f} | {r['simpletransformers_train_model_seconds']:.1f} | "
                     f"**{r['speedup']}x** | {flops} | {r['smilesformer_test_mse']} |")
        if (b := before.get(r.get("shape"))) is not None:
            lines.append(f"| {r['shape']}, before (commit {b['smilesformer_commit']}) | same model | | "
                         f"{b['smilesformer_command_seconds']:.1f} | | "
                         f"{r['simpletransformers_train_model_seconds'] / b['smilesformer_command_seconds']:.2f}x | | "
                         f"{b['smilesformer_test_mse']} |")
    phased = [r for r in rows if "smilesformer_phases" in r]
    if phased:
        names = list(phased[0]["smilesformer_phases"]["phases"])
        lines += ["", "Where smilesformer's seconds went (`benchmarks/phases.py`, exclusive seconds per stage, from a "
                  "second run: phases.py imports PyTorch before the command starts, so there the descriptors wait "
                  "for the import instead of overlapping it, and its total is larger than the plain command's):",
                  "",
                  "| stage | " + " | ".join(r["shape"] for r in phased) + " |",
                  "|---|" + "---|" * len(phased)]
        for name in names:
            lines.append(f"| {name} | " + " | ".join(f"{r['smilesformer_phases']['phases'][name]:.1f}"
                                                     for r in phased) + " |")
    lines += ["", "Before commit a1b1748 the benchmark built its tokenizer with "
              "`RobertaTokenizerFast(vocab_file=..., merges_file=...)`, which transformers 5.23 (installed here) "
              "ignores: a tokenizer of the 5 special tokens that reads every molecule as 2 tokens. The 4.0-4.3x "
              "measured with it earlier may have timed such sequences; they are not comparable with these."]
    return lines + [""]


def _busy(r: dict) -> list[str]:
    lines = ["## A busy machine: the demo beside a competing process", "",
             f"`python benchmarks/bench_busy.py`: `smilesformer --threads T demo` ({r['epochs']} epochs), whole "
             f"command, alone and beside {r['competitor']}, on {r['cpu_count']} cores.", "",
             "| --threads | alone s | busy s | busy / alone |", "|---|---|---|---|"]
    for t in r["idle"]:
        busy = r["busy"][t]
        capped = " (stopped at the cap)" if busy.get("stopped_at_cap") else ""
        lines.append(f"| {t} | {r['idle'][t]['seconds']:.1f} | {busy['seconds']:.1f}{capped} | "
                     f"{r['slowdown_busy_vs_idle'][t]} |")
    return lines + ["", "`auto` (the default) takes the cores other processes leave free when the command starts; a "
                    "number of threads equal to the cores is PyTorch's own default.", ""]


def _transfer(r: dict) -> list[str]:
    st = r["settings"]
    lines = ["## Does pretraining transfer? (AqSolDB, scaffold split)", "",
             f"`python benchmarks/bench_transfer.py --seeds {st['seeds']} --epochs {st['epochs']}`: full AqSolDB, "
             f"balanced scaffold split 80/10/10, seeds 0..{st['seeds'] - 1} (split, initialization and order), "
             f"up to {st['epochs']} epochs with early stopping (patience {st['patience']}) on validation loss, "
             f"learning rate {st['lr']}, batch {st['batch_size']}; test-set metrics, mean ± sd over seeds. "
             f"Wall time {r['wall_seconds'] / 60:.0f} min.", "",
             "| model | RMSE | MAE | R2 | Pearson r |", "|---|---|---|---|---|"]
    for label, s in r["summary"].items():
        cells = " | ".join(f"{s[k]['mean']:.3f} ± {s[k]['sd']:.3f}" for k in ("rmse", "mae", "r2", "pearson_r"))
        lines.append(f"| {label} | {cells} |")
    pre, rnd = (r["summary"][k] for k in r["summary"])
    wins = sum(a["rmse"] < b["rmse"] for a, b in zip((x for x in r["runs"] if x["model"] == list(r["summary"])[0]),
                                                     (x for x in r["runs"] if x["model"] == list(r["summary"])[1])))
    lines += ["", f"Pretraining lowers test RMSE by {rnd['rmse']['mean'] - pre['rmse']['mean']:.3f} log units on "
              f"average and wins on {wins} of {len(r['runs']) // 2} seeds. A short fine-tuning budget favours the "
              "pretrained model; longer training narrows such gaps, and a bigger pretraining run (the whole corpus, "
              "more epochs, on a GPU) is the next step."]
    return lines + [""]


def _descriptors(r: dict) -> list[str]:
    return ["## The descriptor head at predict time", "",
            f"`python benchmarks/bench_descriptors.py --n {r['molecules']}`: the first {r['molecules']:,} MOSES "
            f"SMILES, {r['threads']} torch threads, a descriptor pool of {r['workers']} processes; load average "
            f"{r['load_average_1min_at_start']} at the start.", "",
            "| | molecules/s |", "|---|---|",
            f"| RDKit 2D descriptors, serial | {r['descriptors_per_second_serial']:,.0f} |",
            f"| RDKit 2D descriptors, process pool | {r['descriptors_per_second_pool']:,.0f} |",
            f"| streamed predict, plain head | {r['predict_per_second_none']:,.0f} |",
            *([f"| streamed predict, plain head + trees on RDKit's set | {r['predict_per_second_none+trees']:,.0f} "
               f"({r['share_of_plain_head_none+trees']:.0%}) |"] if "predict_per_second_none+trees" in r else []),
            f"| streamed predict, descriptor head | {r['predict_per_second_rdkit']:,.0f} |",
            *([f"| streamed predict, descriptor head + trees | {r['predict_per_second_rdkit+trees']:,.0f} |"]
              if "predict_per_second_rdkit+trees" in r else []),
            *([f"| streamed predict, descriptor head on the \"fast\" set (`--descriptors fast`) | "
               f"{r['predict_per_second_fast']:,.0f} ({r['share_of_plain_head_fast']:.0%} of the plain head) |",
               f"| streamed predict, \"fast\" head + trees on the same set | {r['predict_per_second_fast+trees']:,.0f} "
               f"({r['share_of_plain_head_fast+trees']:.0%}) |"] if "predict_per_second_fast" in r else []), "",
            f"The descriptor head makes prediction {r['predict_slowdown_with_descriptors']}x slower here"
            + (f"; with the trees blended in, {r['predict_slowdown_with_descriptors_and_trees']}x."
               if "predict_slowdown_with_descriptors_and_trees" in r else "."), ""]


def _serve(r: dict) -> list[str]:
    lat = r["latency_ms"]
    return ["## Web service under load (loopback)", "",
            f"`python benchmarks/bench_serve.py --model {r['model']} --threads {r['server_threads']}`: "
            f"{r['clients']} concurrent clients x {r['requests_per_client']} requests of {r['smiles_per_request']} "
            f"SMILES (every fifth with an invalid one).", "",
            "| p50 ms | p95 ms | p99 ms | 5xx | requests/s | SMILES/s | requests per model call |",
            "|---|---|---|---|---|---|---|",
            f"| {lat['p50']:.0f} | {lat['p95']:.0f} | {lat['p99']:.0f} | {r['status_5xx']} | "
            f"{r['requests_per_second']:.1f} | {r['smiles_per_second']:.0f} | "
            f"{r['batching']['requests_per_model_call']:.1f} |",
            "", f"Machine load average at the end: {r.get('load_average_1min_at_end', 'n/a')} (2 cores).",
            *([f"Streamed predict (`smilesformer predict`'s path) on the same model, threads and SMILES: "
               f"{r['streamed_predict']['molecules_per_second']:.0f} molecules/s; the service reaches "
               f"**{r['service_share_of_streamed']}** of it."] if r.get("streamed_predict") else []), ""]


def _inference(r: dict) -> list[str]:
    tok = r["tokens"]
    lines = ["## Embedding and prediction at scale", "",
             f"`python benchmarks/bench_inference.py --n {int(r['data'].split()[1].replace(',', ''))}`: {r['data']}, "
             f"model `{r['model']}`, {r['threads']} torch threads, batch {r['batch_size']}, chunks of "
             f"{r['chunk_size']:,} rows; each phase in a fresh process (its own peak RSS). MOSES SMILES average "
             f"{tok['mean_tokens']} tokens against the model's limit of {tok['max_length']}, so "
             f"{tok['padding_share_if_padded_to_max']:.0%} of a batch padded to the limit is padding. "
             f"`auto` is the default precision; on this CPU it means {r['precision_auto_means']}"
             + (" (the CPU does bf16 in hardware)." if r["precision_auto_means"] == "bf16" else "."), "",
             "| task | path | molecules | molecules/s | peak RSS MB | vs naive |", "|---|---|---|---|---|---|"]
    for task in ("embed", "predict"):
        t = r[task]
        for key, s in t.items():
            if not key.startswith("streamed_"):
                continue
            precision = key.removeprefix("streamed_")
            label = f"auto ({r['precision_auto_means']})" if precision == "auto" else precision
            lines.append(f"| {task} | smilesformer streamed, {label} | {s['molecules']:,} | "
                         f"{s['molecules_per_second']:,.0f} | {s['peak_rss_mb']:,.0f} | "
                         f"**{t[f'speedup_{precision}_vs_naive']}x** |")
        n = t["naive"]
        lines.append(f"| {task} | naive HF loop, fp32, padded to {n['padded_to']}, input order | {n['molecules']:,} | "
                     f"{n['molecules_per_second']:,.0f} | {n['peak_rss_mb']:,.0f} | 1x |")
    d = r.get("bf16_drift")
    if d:
        lines += ["", f"bf16 against fp32 on {d['molecules']:,} molecules ({d['pooling']} pooling): relative L2 "
                  f"difference {d['relative_l2_mean']:.4f} on average, {d['relative_l2_max']:.4f} at most; "
                  f"lowest cosine similarity {d['cosine_min']:.5f}."]
    lines += ["", f"Load average (1 min) {r['load_average_1min_at_start']} at the start and "
              f"{r.get('load_average_1min_at_end', 'n/a')} at the end (2 cores). {r.get('label', '')}".rstrip()]
    return lines + [""]


def _tuning(name: str, r: dict) -> list[str]:
    """A grid search's trials (tune.py --grid): validation figures per setting and early stopping read off them."""
    st, trials = r["settings"], sorted(r["trials"], key=lambda t: sorted(t["params"].items()))
    names, datasets = list(st["grid"]), st["datasets"].split(",")
    grid = ";".join(f"{k}={','.join(str(v) for v in vs)}" for k, vs in st["grid"].items())
    seed = st.get("seed", 0)  # files written before --seed existed are seed 0
    flags = (f" --seed {seed}" if seed else "") + (f" --tag {st['tag']}" if st["tag"] else "")
    lines = [f"## Fine-tuning defaults on validation sets: {name}", "",
             f"`python benchmarks/tune.py --datasets {st['datasets']} --split {st['split']} --grid \"{grid}\" "
             f"--epochs {st['epochs']} --patience {st['patience']}{flags}` "
             f"({r['wall_seconds'] / 60:.0f} min): model `{st['model']}` fine-tuned once per setting on each data "
             f"set's seed-{seed} {st['split']} split, trees off, every other setting at its default. Validation sets "
             "only: no test molecule is read. Score: the mean over data sets of validation RMSE / training labels' sd "
             "(regression) and 1 - validation ROC-AUC (classification); lower is better.", "",
             "| " + " | ".join(names) + " | " + " | ".join(f"{d} valid" for d in datasets) + " | score |",
             "|---" * (len(names) + len(datasets) + 1) + "|"]
    best = min(t["value"] for t in trials)
    for t in trials:
        cells = [f"{m['rmse']:.3f} RMSE" if "rmse" in m else f"{m['roc_auc']:.3f} ROC-AUC"
                 for m in (t["valid_metrics"][d] for d in datasets)]
        score = f"**{t['value']:.4f}**" if t["value"] == best else f"{t['value']:.4f}"
        lines.append("| " + " | ".join(str(t["params"][k]) for k in names) + " | " + " | ".join(cells)
                     + f" | {score} |")
    patiences = sorted(int(p) for p in trials[0]["curves"][datasets[0]]["early_stopping"])
    lines += ["", f"Early stopping, read off the same runs' validation-loss curves (exact for any patience up to the "
              f"runs' {st['patience']}: the schedule does not depend on it): epoch of the best validation loss, "
              "and for each patience the epoch it stops at / the validation loss it keeps.", "",
              "| " + " | ".join(names) + " | data set | epochs run | best epoch | "
              + " | ".join(f"patience {p}" for p in patiences) + " |",
              "|---" * (len(names) + 3 + len(patiences)) + "|"]
    for t in trials:
        for d in datasets:
            c = t["curves"][d]
            stops = c["early_stopping"]
            cells = [f"{stops[str(p)]['stopped_at_epoch']} / {stops[str(p)]['valid_loss']:.4f}" for p in patiences]
            lines.append("| " + " | ".join(str(t["params"][k]) for k in names) + f" | {d} | "
                         f"{len(c['valid_loss_per_epoch'])} | {stops[str(patiences[-1])]['best_epoch']} | "
                         + " | ".join(cells) + " |")
    return lines + [""]


def _trees(r: dict) -> list[str]:
    import statistics

    lines = ["## The blended trees' settings", "",
             f"`{r['command']}`: the trees alone (HistGradientBoosting on RDKit's 2D descriptors, `trees._params` "
             "but for the rounds and rate), fitted on the training molecules of the accuracy suite's split files and "
             f"scored on the validation molecules: {r['objective']}. Seconds are medians over the fits (a few ran "
             "beside another job), with skops writing and loading one model; lower is better everywhere.", "",
             "| rounds @ rate | validation score | by data set | fit s | write s | load s |",
             "|---|---|---|---|---|---|"]
    for row in r["summary"]:
        by = ", ".join(f"{k} {v:.4f}" for k, v in row["valid_score_by_dataset"].items())
        runs = [x for x in r["runs"] if x["setting"] == row["setting"]]
        median = {k: statistics.median(x[k] for x in runs) for k in ("fit_seconds", "save_seconds", "load_seconds")}
        lines.append(f"| {row['setting']} | {row['valid_score']:.4f} | {by} | {median['fit_seconds']:.1f} | "
                     f"{median['save_seconds']:.2f} | {median['load_seconds']:.2f} |")
    return lines + ["", "The default is 500 @ 0.1 since this run (1000 @ 0.05 before): 0.3% behind on validation, "
                    "half the seconds.", ""]


def _recipe(r: dict, speed: dict | None) -> list[str]:
    keys = {"plain head": "none", "plain head + trees": "none+trees", "descriptor head": "rdkit",
            "descriptor head + trees": "rdkit+trees"}
    lines = [f"## The default recipe on validation sets: {r['settings']['tag'] or 'recipe'}", "",
             f"`{r['command']}`: model `{r['settings']['model']}` fine-tuned with the package defaults twice per "
             "data set and seed (the accuracy suite's split files), SMILES only and with the descriptor head, both "
             "with the tree blend; the head alone, the trees alone and each blend are scored on the validation "
             f"molecules (no test molecule is read). Score: {r['objective']}; lower is better. Predict molecules/s: "
             + (f"`bench_descriptors.py --n {speed['molecules']}` (streamed predict, same model shape)."
                if speed else "not measured.") + "", "",
             "| recipe | score | by seed | by data set | predict molecules/s |", "|---|---|---|---|---|"]
    best = min(r["summary"], key=lambda row: row["score"])["recipe"]
    for row in r["summary"]:
        key = f"predict_per_second_{keys.get(row['recipe'], '')}"
        rate = f"{speed[key]:,.0f}" if speed and key in speed else ""
        score = f"**{row['score']:.4f}**" if row["recipe"] == best else f"{row['score']:.4f}"
        by = ", ".join(f"{k} {v:.4f}" for k, v in row["score_by_dataset"].items())
        lines.append(f"| {row['recipe']} | {score} | {', '.join(f'{v:.4f}' for v in row['score_by_seed'])} | "
                     f"{by} | {rate} |")
    lines += ["", "The runs: epochs, seconds, and the transformer's blend weight the workflow chose on the whole "
              "validation set (cross-fitted folds' weights in the result file).", "",
              "| data set | seed | head | epochs run | seconds | weight chosen |", "|---|---|---|---|---|---|"]
    for run in (x for x in r["runs"] if x["recipe"].startswith("run ")):
        lines.append(f"| {run['dataset']} | {run['seed']} | {run['recipe'].removeprefix('run ')} | "
                     f"{run['epochs_run']:.0f} | {run['seconds']:.0f} | "
                     f"{', '.join(f'{w:g}' for w in run['chosen_weights'])} |")
    return lines + [""]


# The foundation v3 comparison: each cell is a (result file, model row) pair, the first file present wins (a rerun
# with the package's own patience replaces an older 10/3 or 15/3 run). v1 rows live in files without "foundation"
# or "v3" in their name, v2's in accuracy_foundation_*, v3's in accuracy_v3_* (BENCHMARKS.md's header).
_V3 = "model:../shared/models/smilesformer-mlm-mtr-800k"  # v3 before it was bundled: the same weights
_V2 = "model:runs/models/smilesformer-moses-v2"  # v2 after v3 was bundled: its files as of commit 46622b9
_COMPARISON = {
    "v3, SMILES only": {"aqsoldb": [("v3_aqsoldb_smiles", "bundled"), ("v3_aqsoldb", _V3)],
                        "esol": [("v3_esol", "bundled")], "lipophilicity": [("v3_lipophilicity", "bundled")],
                        "bbbp": [("v3_bbbp", "bundled")]},
    "v3 + `--adapt mtr`": {"aqsoldb": [("v3_aqsoldb_smiles", "bundled+adapt=mtr")],
                           "esol": [("v3_esol", "bundled+adapt=mtr")],
                           "lipophilicity": [("v3_lipophilicity", "bundled+adapt=mtr")],
                           "bbbp": [("v3_bbbp", "bundled+adapt=mtr")]},
    "v2, SMILES only": {"aqsoldb": [("foundation_aqsoldb", "bundled")],
                        "esol": [("v2_esol", _V2), ("foundation_esol", "bundled")],
                        "lipophilicity": [("v2_lipophilicity", _V2), ("foundation_lipophilicity", "bundled")],
                        "bbbp": [("v2_bbbp", _V2), ("foundation_bbbp", "bundled")]},
    "v2 + `--adapt mtr`": {"esol": [("foundation_esol", "bundled+adapt=mtr")]},
    "random init (same shape)": {"aqsoldb": [("foundation_aqsoldb_random", "random")],
                                 "esol": [("foundation_esol_random", "random")],
                                 "lipophilicity": [("foundation_lipophilicity_baselines", "random")],
                                 "bbbp": [("foundation_bbbp_baselines", "random")]},
    "chemprop": {"aqsoldb": [("aqsoldb_scaffold", "chemprop")], "esol": [("esol_scaffold", "chemprop")],
                 "lipophilicity": [("foundation_lipophilicity_baselines", "chemprop")],
                 "bbbp": [("foundation_bbbp_baselines", "chemprop")]},
    "random forest, Morgan counts": {"aqsoldb": [("aqsoldb_scaffold", "rf")], "esol": [("esol_scaffold", "rf")],
                                     "lipophilicity": [("foundation_lipophilicity_baselines", "rf")],
                                     "bbbp": [("foundation_bbbp_baselines", "rf")]},
    "v3, default recipe (descriptor head + trees)": {
        "aqsoldb": [("v3_aqsoldb_default_20", "bundled+desc=rdkit+trees=gbm"),
                    ("v3_aqsoldb_default", "bundled+desc=rdkit+trees=gbm")]},
    "v2, default recipe (descriptor head + trees)": {
        "aqsoldb": [("foundation_aqsoldb_fast", "bundled+desc=rdkit+trees=gbm")],
        "esol": [("foundation_esol_fast", "bundled+desc=rdkit+trees=gbm")]},
}
_COMPARED = {"aqsoldb": ("AqSolDB MAE", "mae"), "esol": ("ESOL RMSE", "rmse"),
             "lipophilicity": ("Lipophilicity RMSE", "rmse"), "bbbp": ("BBBP ROC-AUC", "roc_auc")}


def _comparison() -> list[str]:
    """The foundation v3 table: every model on the same scaffold split files, test sets, from the suite's results."""
    def cell(sources: list[tuple[str, str]], dataset: str) -> str:
        metric = _COMPARED[dataset][1]
        for tag, model in sources:
            if (r := _load(f"accuracy_{tag}.json")) is None:
                continue
            row = next((x for x in r["summary"] if x["model"] == model and x["dataset"] == dataset
                        and x["split"] == "scaffold"), None)
            if row is not None:
                s = r["settings"]  # epochs/patience are smilesformer's settings; chemprop and the forest ignore them
                ours = not model.startswith(("chemprop", "rf", "gbm"))
                return (f"{row[f'{metric}_mean']:.3f} ± {row[f'{metric}_sd']:.3f} ({row['seeds']}"
                        + (f"; {s['epochs']}/{s['patience']})" if ours else ")"))
        return ""

    rows = [(label, [cell(by.get(d, []), d) for d in _COMPARED]) for label, by in _COMPARISON.items()]
    rows = [(label, cells) for label, cells in rows if any(cells)]
    if not rows:
        return []
    lines = ["## The bundled model (v3) against v2, random init, chemprop and a random forest", "",
             "The accuracy suite's scaffold split files (80/10/10, the same molecules in every row), test sets, mean "
             "± sd over seeds; in brackets the seeds and, for smilesformer, the fine-tuning's epochs/patience "
             "(the package's defaults are 20/5). Each cell comes from "
             "the `accuracy_*` section named in `benchmarks/report.py`'s `_COMPARISON`, rendered below with its "
             "command. Rows without a descriptor head read SMILES only and blend no trees.", "",
             "| model | " + " | ".join(name for name, _ in _COMPARED.values()) + " |",
             "|---|" + "---|" * len(_COMPARED)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return lines + [""]


def _uncertainty(r: dict) -> list[str]:
    def f(v, fmt=".2f"):
        return "" if v is None else format(v, fmt)

    lines = ["## Uncertainty and the domain check (default recipe, scaffold split files)", "",
             f"`{r['command']}` (it summarizes the runs in its work folder; they were run with the same script "
             "per data set: `--datasets esol,bbbp`, `--datasets aqsoldb,lipophilicity --aqsoldb-seeds 5 --seeds 3`, "
             "and `--chemprop-only` for chemprop's rows; the seeds each row has are in its heading). "
             "`default` is what a fine-tuned model fits (``uncertainty.DEFAULT_SIGNALS``); `default-embedding` "
             "is the same without the embedding distance, the default before it was added. Each method's "
             "error model and 90% interval are fitted on the validation set; `valid` is its cross-fitted validation "
             "Spearman (the figure a method is chosen on), the rest are test figures, means over seeds. `expected`: "
             "the Spearman were the errors drawn from the method's own sd; `half`: MAE of the most confident half "
             "over the overall MAE. chemprop: `-t regression-mve`, `--uncertainty-method mve`, z-scaling on the "
             "same validation rows; its interval is Gaussian on the calibrated sd.", ""]
    for dataset, b in r["summary"].items():
        seeds = len(b.get("seeds", []))
        if any(k in b for k in ("raw", "calibrated")):
            lines += [f"**{dataset}** ({seeds} seeds): probabilities", "",
                      "| | ECE | Brier | accuracy | accuracy of the most confident half |", "|---|---|---|---|---|"]
            for kind in ("raw", "calibrated"):
                if kind in b:
                    m = b[kind]
                    lines.append(f"| {kind} | {f(m['ece'], '.3f')} | {f(m['brier'], '.3f')} | "
                                 f"{f(m['accuracy'], '.3f')} | {f(m['accuracy_confident_half'], '.3f')} |")
        else:
            lines += [f"**{dataset}** ({seeds} seeds)", "",
                      "| method | valid Spearman | test Spearman | expected | coverage 90% | width | half |",
                      "|---|---|---|---|---|---|---|"]
            for method, m in b.items():
                if isinstance(m, dict) and "coverage_90" in m:
                    name = f"chemprop ({m['seeds']} seed{'s' * (m['seeds'] > 1)})" if method == "chemprop" else method
                    lines.append(f"| {name} | {f(m.get('valid_spearman_crossfit'))} | "
                                 f"{f(m.get('spearman_sd_abs_error'))} | {f(m.get('spearman_expected'))} | "
                                 f"{f(m.get('coverage_90'), '.3f')} | {f(m.get('mean_interval_width'))} | "
                                 f"{f(m.get('mae_confident_half_ratio'))} |")
        d = b.get("domain")
        if d and d.get("ratio") is not None:
            lines += ["", f"Domain check: {d['flagged']:.0f} of {d['n']:.0f} test molecules flagged on average; their "
                      f"mean error {f(d['error_flagged'], '.3f')} against {f(d['error_in_domain'], '.3f')} "
                      f"(ratio {f(d['ratio'])}, mean of the seeds' ratios). Predict time with the uncertainty: "
                      f"{f(b.get('predict_time_ratio'))}x the same model without it (measured beside the fine-tunes; "
                      "see the idle figure below when there is one)."]
        lines.append("")
    for t in (r.get("idle_timing") or {}).values():
        lines += [f"Predict time on an idle machine, {t['dataset']} (`{t['command']}`): {t['default']:.2f} s with the "
                  f"uncertainty against {t['without_uncertainty']:.2f} s without, for {t['molecules']} molecules "
                  f"({t['ratio']:.3f}x; best of 3)."]
        if "with_embeddings" in t.get("reference_fit_seconds", {}):
            r_fit = t["reference_fit_seconds"]
            lines[-1] += (f" Fitting the reference at the end of a fine-tune, {r_fit['train_molecules']} training "
                          f"molecules: {r_fit['with_embeddings']:.2f} s with their pooled vectors (one forward pass), "
                          f"{r_fit['fingerprints_only']:.2f} s for the fingerprints alone.")
        lines.append("")
    return lines


def _accuracy(name: str, r: dict) -> list[str]:
    hw = r["hardware"]
    where = hw["gpu"] or f"{hw['cpu_count']} CPU cores"
    compute = r.get("run_seconds_total", r["wall_seconds"])
    lines = [f"## Accuracy: {name}", "", f"`{r['command']}` on {where}; the runs took {compute / 60:.0f} min "
             "in all (the sum of each run's own time: finished runs are reused on a rerun). Splits "
             f"{'/'.join(str(round(f * 100)) for f in r['fractions'])} train/val/test, one split file per "
             "data set, split kind and seed, read by every model; test-set "
             "metrics, mean ± sd over seeds.", ""]
    if any(k.startswith("valid_") for x in r["summary"] for k in x):
        lines[-2] += (" The validation column is the mean over seeds of the validation set's figure, for the runs "
                      "that have one (smilesformer's): settings are chosen on it, never on test figures.")
    if r["settings"].get("only_finished"):
        lines[-2] += (" The command trained nothing: it gathered runs that other processes of the suite had "
                      "finished with the same settings in the same work folder.")
    if r.get("missing"):
        lines += [f"Not finished, so not in the table: {', '.join(r['missing'])}.", ""]
    rows = r["summary"]
    for task, metrics in (("regression", ("rmse", "mae", "r2")), ("classification", ("roc_auc", "pr_auc"))):
        block = [x for x in rows if x["task"] == task]
        if not block:
            continue
        unc = any("coverage_90_mean" in x for x in block)
        chosen_on = metrics[1] if task == "regression" else metrics[0]  # MAE, ROC-AUC
        valid = any(f"valid_{chosen_on}_mean" in x for x in block)
        head = " | ".join(m.upper().replace("_", "-") for m in metrics)
        head += f" | validation {chosen_on.upper().replace('_', '-')} (mean)" if valid else ""
        lines += [f"| data set | split | model | seeds | {head} |" + (" spread-error Spearman | 90% coverage |"
                                                                       if unc else ""),
                  "|---|---|---|---|" + "---|" * (len(metrics) + int(valid) + (2 if unc else 0))]
        for x in block:
            cells = " | ".join(f"{x[f'{m}_mean']:.3f}" + (f" ± {x[f'{m}_sd']:.3f}" if x["seeds"] > 1 else "")
                               for m in metrics)
            if valid:
                cells += f" | {x[f'valid_{chosen_on}_mean']:.4f}" if f"valid_{chosen_on}_mean" in x else " | "
            extra = ""
            if unc:
                extra = (f" {x['spearman_sd_abs_error_mean']:.2f} | {x['coverage_90_mean']:.2f} |"
                         if "coverage_90_mean" in x else " | |")
            lines.append(f"| {x['dataset']} | {x['split']} | {x['model']} | {x['seeds']} | {cells} |{extra}")
        lines.append("")
    blended = [x for x in r["runs"] if x.get("tree_weights")]
    if blended:  # what the validation set gave the transformer in its blend with the trees
        groups: dict = {}
        for x in blended:  # one weight per run: the suite's data sets have one target
            groups.setdefault((x["dataset"], x["model"]), []).append((x["seed"], x["tree_weights"][0]))
        lines += ["The transformer's weight in the tree blend (chosen on each run's validation set), by seed: "
                  + "; ".join(f"{model} on {dataset}: " + ", ".join(f"{w:g}" for _, w in runs)
                              + f" (seeds {', '.join(str(seed) for seed, _ in runs)}; mean "
                              f"{sum(w for _, w in runs) / len(runs):.2f})"
                              for (dataset, model), runs in groups.items()) + ".", ""]
    charts = [RESULTS / f"{name}_{split}.png" for split in sorted({x["split"] for x in rows})]
    charts = [c for c in charts if c.is_file()]
    lines += [f"![{c.stem}](benchmarks/results/{c.name})" for c in charts]
    return lines + [""]


def main() -> None:
    lines = ["# Benchmarks", "",
             "Measured on this project's development machine: 2 CPU cores, no GPU, unless a section says otherwise.",
             "Rendered by `python benchmarks/report.py` from `benchmarks/results/*.json`; rerun the commands to "
             "refresh.", "",
             "The bundled model is v3 since commit 966425d: the encoder pretrained on one H200 in 63 s of training "
             "(MLM + MTR, 800k molecules; its card in `src/smilesformer/models/smilesformer-moses/README.md`). "
             "Result files written before that measured v2 (same shape and tokenizer, pretrained on this CPU), "
             "which can be taken from git the same way as v1 below (commit 46622b9); the `model:../shared/models/"
             "smilesformer-mlm-mtr-800k` rows and `tune_v3_*` measured v3 before it was bundled; "
             "`model:runs/models/smilesformer-moses-v2` rows are v2, its files taken from commit 46622b9. "
             "v2 was bundled (compositional tokenizer, MLM + MTR on a grammar-covering corpus) at the "
             "foundation-model change. Result files written before it (fine-tuning and prediction speed, transfer, "
             "inference, service, descriptor head, and the `bundled` rows of the accuracy tables without "
             "`foundation` in their name) measured v1, the regex-tokenizer MLM model; `accuracy_foundation_*` "
             "tables measured v2. Their `model:runs/models/smilesformer-moses-v1` rows are v1, taken from the "
             "commit that bundled it: `mkdir -p runs/models/smilesformer-moses-v1 && for f in $(git ls-tree "
             "--name-only ba30694 src/smilesformer/models/smilesformer-moses/); do git show ba30694:$f > "
             "runs/models/smilesformer-moses-v1/$(basename $f); done`.", ""]
    lines += _pretraining()
    for name, render in (("tokenizer_coverage.json", _tokenizer), ("pretrain_throughput.json", _pretrain_throughput),
                         ("objectives.json", _objectives), ("descriptor_cost.json", _descriptor_cost),
                         ("descriptor_value.json", _descriptor_value)):
        if (r := _load(name)) is not None:
            lines += render(r)
    if (r := _load("finetune.json")) is not None:
        lines += _finetune(r)
    if (r := _load("descriptor_value_mtr.json")) is not None:
        lines += _mtr_value(r)
    if (r := _load("prepare.json")) is not None:
        lines += _prepare(r)
    if (r := _load("gpu_pretrain.json")) is not None:
        lines += _gpu_runs(r)
    presets = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("finetune_preset_*.json"))]
    if presets:
        lines += _presets(sorted(presets, key=lambda r: r["dynamic_padding_length_grouped"]["train_seconds"]))
    versus = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("vs_simpletransformers*.json"))
              if "_before_" not in p.name]
    if versus:
        lines += _vs_simpletransformers(versus)
    if (r := _load("demo_seeds.json")) is not None:
        lines += ["The demo's accuracy across that change (`" + r["command"] + "`): test MSE "
                  + ", ".join(f"{a} -> {b}" for a, b in zip(r["before"]["test_mse"], r["after"]["test_mse"]))
                  + f" (means {sum(r['before']['test_mse']) / 3:.3f} -> {sum(r['after']['test_mse']) / 3:.3f}; "
                  "the seeds differ by 0.35 among themselves).", ""]
    if (r := _load("busy.json")) is not None:
        lines += _busy(r)
    if (r := _load("transfer.json")) is not None:
        lines += _transfer(r)
    if (r := _load("inference.json")) is not None:
        lines += _inference(r)
    else:
        lines += ["## Inference at scale", "", "Not yet measured at 1M molecules: run "
                  "`python benchmarks/bench_inference.py` (see docs/embeddings.md).", ""]
    if (r := _load("serve.json")) is not None:
        lines += _serve(r)
    if (r := _load("trees.json")) is not None:
        lines += _trees(r)
    if (r := _load("descriptors.json")) is not None:
        lines += _descriptors(r)
    lines += _comparison()
    for path in sorted(RESULTS.glob("recipe*.json")):
        lines += _recipe(json.loads(path.read_text()), _load("descriptors.json"))
    if (r := _load("uncertainty.json")) is not None:
        lines += _uncertainty(r)
    for path in sorted(RESULTS.glob("tune_*.json")):
        if (r := json.loads(path.read_text()))["settings"].get("grid"):  # TPE searches have no grid to tabulate
            lines += _tuning(path.stem, r)
    for path in sorted(RESULTS.glob("accuracy*.json")):
        lines += _accuracy(path.stem, json.loads(path.read_text()))
    out = Path(__file__).parent.parent / "BENCHMARKS.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
