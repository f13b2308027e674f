"""Bundle a model folder that a GPU window pretrained as smilesformer's default model, with a card that says
what the run did rather than what it planned.

The first GPU run (`smilesformer-mlm-mtr-800k`, project commit e49dc1d) predates `pretrain --max-minutes`: its
wall-clock budget was added by hand, so the summary it wrote has no budget, no throughput and the planned 30
epochs. Everything needed to correct that is in the run's own log: the step rate measured when the budget
was fitted, the steps that fit, the Trainer's training seconds and the recipe's timestamps. This script reads
them there (it fails if the log lacks one), records them in ``pretrain_summary.json`` the way
``pretrain --max-minutes`` records a budgeted run now, saves the weights as one fp32 file (plain
``AutoModelForMaskedLM``; 15 MB for the ``small`` shape), copies the rest and writes the card.

    python scripts/bundle_gpu_model.py MODEL_DIR RUN_LOG --deadline-seconds 380 \
        --out src/smilesformer/models/smilesformer-moses --notes card_notes.md

``--deadline-seconds``: when training had to end, counted from the start of the recipe's corpus step (the
hand-added budget; the run's README gives it). ``--notes``: Markdown appended to the card (downstream figures).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from smilesformer.budget import STOP_REASONS
from smilesformer.data import readable_like_the_rest
from smilesformer.pretrain import pretrain_command, write_model_card


def read_run_log(text: str) -> dict:
    """The figures of a budgeted GPU run, from its log."""
    def find(pattern: str, what: str) -> re.Match:
        match = re.search(pattern, text)
        if match is None:
            raise SystemExit(f"the run log has no {what} (looked for {pattern!r})")
        return match

    fit = find(r"DEADLINE: ([\d.]+) steps/s, (\d+) steps fit of (\d+)", "budget fit line")
    return {"steps_per_second": float(fit[1]), "last_step": int(fit[2]), "planned_steps": int(fit[3]),
            "train_runtime": float(find(r"'train_runtime': '([\d.]+)'", "Trainer train_runtime")[1]),
            "corpus_done": float(find(r"\[(\d+) s\] corpus done", "corpus timestamp")[1]),
            "pretrain_done": float(find(r"\[(\d+) s\] pretrain done", "pretrain timestamp")[1])}


def corrected_summary(summary: dict, config: dict, run: dict, deadline: float) -> dict:
    """The summary as a budgeted run records it, from the log's figures."""
    steps = summary["steps"]
    if steps != run["last_step"]:
        raise SystemExit(f"the summary says {steps} steps, the log's budget fit {run['last_step']}")
    batch = config["batch_size"] * config["grad_accum"]
    molecules = steps * batch
    seconds = run["train_runtime"]
    command_seconds = run["pretrain_done"] - run["corpus_done"]
    summary = dict(summary)
    summary.update(
        planned_steps=run["planned_steps"], molecules_presented=molecules,
        epochs_done=molecules / summary["corpus"]["kept"],
        # The Trainer's own samples/s divides the planned epochs' samples by the time: it reads 10x too high here.
        throughput={**summary["throughput"], "molecules_per_second": round(molecules / seconds, 1),
                    "tokens_per_second": round(molecules * summary["tokenizer_coverage"]["mean_tokens"] / seconds, 1),
                    "measured_over": f"{seconds:.1f} s of training, the Trainer's train_runtime"},
        preparation_seconds=round(command_seconds - seconds, 1),
        budget={"max_seconds": round(deadline - run["corpus_done"], 1), "preparation_seconds":
                round(command_seconds - seconds, 1), "training_seconds": seconds, "planned_steps": run["planned_steps"],
                "last_step": run["last_step"], "refits": 1, "fits": [{"steps_per_second": run["steps_per_second"]}],
                "stopped": "fitted", "stopped_because": STOP_REASONS["fitted"],
                "note": "added by hand for this run (the project had no --max-minutes yet); figures from its log"},
        wall_seconds=command_seconds)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("run_log", type=Path)
    parser.add_argument("--deadline-seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--notes", type=Path, default=None)
    args = parser.parse_args()

    from transformers import AutoModelForMaskedLM

    config = json.loads((args.model_dir / "pretrain_config.json").read_text())["pretrain"]
    summary = json.loads((args.model_dir / "pretrain_summary.json").read_text())
    summary = corrected_summary(summary, config, read_run_log(args.run_log.read_text()), args.deadline_seconds)

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    AutoModelForMaskedLM.from_pretrained(args.model_dir).save_pretrained(args.out)  # one file, fp32
    for path in args.model_dir.iterdir():
        if path.is_file() and not path.name.startswith("model") and path.name not in ("config.json", "README.md"):
            shutil.copy2(path, args.out / path.name)
    (args.out / "pretrain_summary.json").write_text(json.dumps(summary, indent=2))
    readable_like_the_rest(args.out)
    limit = json.loads((args.model_dir / "corpus_build.json").read_text())["config"]["limit"]
    command = (f"smilesformer corpus --source moses_train.csv.gz --out WORK/corpus.smi.gz --limit {limit}\n"
               + pretrain_command(config, out="WORK/run", only=("corpus", "objective", "mlm_probability", "preset",
                                                                "epochs", "batch_size", "learning_rate",
                                                                "descriptor_set", "precision"))
               + f"\n# training had to end {args.deadline_seconds:g} s after the corpus step began (by hand); the "
               "project's GPU recipe now: MINUTES=8 bash scripts/pretrain_gpu.sh (--max-minutes, the whole corpus)")
    notes = args.notes.read_text() if args.notes else ""
    write_model_card(args.out, command, notes=notes)
    print(json.dumps({k: summary[k] for k in ("steps", "planned_steps", "molecules_presented", "epochs_done",
                                              "throughput", "budget")}, indent=2))


if __name__ == "__main__":
    main()
