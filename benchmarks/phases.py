"""Run one `smilesformer` command in this process and say where its seconds went, phase by phase.

    python benchmarks/phases.py --json phases.json -- finetune --data ... --out ...

Each phase is a set of library functions timed exclusively (a phase's time excludes the time of other phases'
functions called inside it, so the phases add up to at most the whole); "other" is what no phase claims.
Training steps also count their tokens, so the achieved GFLOP/s of the steps can be set beside the machine's
measured fp32 matrix-multiply peak (printed too). Written for the benchmarks: a profiler (py-spy, cProfile)
says which lines are slow, this says which stage of a whole command is.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import psutil
import torch

# phase -> (module, attribute path) of the functions it times
PHASES: dict[str, list[tuple[str, str]]] = {
    "reading and validation": [("smilesformer.workflow", "load_dataset"), ("smilesformer.cli", "load_dataset")],
    "model loading": [("smilesformer.model", "SmilesModel.create")],
    "descriptors": [("smilesformer.rdkit_descriptors", "_Cache.get")],  # computing, or waiting for the workers
    "tokenization": [("transformers.tokenization_utils_base", "PreTrainedTokenizerBase.__call__")],
    "training steps (forward, backward)": [("transformers", "Trainer.training_step")],
    "training loop (batches, optimizer, logging)": [("transformers", "Trainer._inner_training_loop")],
    "evaluation per epoch": [("transformers", "Trainer.evaluate"),
                             ("transformers", "Trainer._maybe_log_save_evaluate")],
    "checkpoints": [("transformers", "Trainer._save_checkpoint"), ("transformers", "Trainer._load_best_model")],
    "trees": [("smilesformer.predictors", "fit_trees"), ("smilesformer.predictors", "tree_outputs")],
    "predictions": [("smilesformer.predictors", "Transformer.outputs")],
    "plots": [("smilesformer.workflow", "_write_plots"), ("smilesformer.workflow", "plot_training_curve")],
    "writing the model": [("smilesformer.predictors", "Transformer.save_pretrained")],
}


class Clock:
    """Exclusive time per phase: a stack of running phases, each paused while a nested one runs."""

    def __init__(self):
        self.seconds: dict[str, float] = {name: 0.0 for name in PHASES}
        self.stack: list[list] = []  # [phase, started, nested seconds]
        self.tokens = 0  # real (non-padding) tokens of the training steps
        self.padded_tokens = 0
        self.sequences = 0
        self.flops = 0.0

    def wrap(self, phase: str, fn):
        clock = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if clock.stack and clock.stack[-1][0] == phase:  # recursion within one phase: counted once
                return fn(*args, **kwargs)
            clock.stack.append([phase, time.perf_counter(), 0.0])
            try:
                if fn.__name__ == "training_step":
                    clock.count(args[2] if len(args) > 2 else kwargs["inputs"], args[1])
                return fn(*args, **kwargs)
            finally:
                _, started, nested = clock.stack.pop()
                spent = time.perf_counter() - started
                clock.seconds[phase] += spent - nested
                if clock.stack:
                    clock.stack[-1][2] += spent

        return timed

    def count(self, inputs: dict, model) -> None:
        """FLOPs of one training step, forward and backward (3x forward): the dense layers (2 per weight per token,
        on every padded position, which the matrix products compute too) and attention's two products."""
        ids = inputs["input_ids"]
        batch, length = ids.shape
        self.tokens += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else ids.numel()
        self.padded_tokens += batch * length
        self.sequences += batch
        config = getattr(model, "module", model).config
        dense = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embeddings" not in name)
        attention = 4 * config.num_hidden_layers * batch * length * length * config.hidden_size
        self.flops += 3 * (2 * dense * batch * length + attention)


def install(clock: Clock) -> None:
    import importlib

    for phase, targets in PHASES.items():
        for module_name, path in targets:
            owner = importlib.import_module(module_name)
            *parents, attr = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            setattr(owner, attr, clock.wrap(phase, getattr(owner, attr)))


def matmul_peak(n: int = 1024, repeats: int = 10) -> float:
    """fp32 GFLOP/s of an n x n matrix product with torch's threads, the best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def main() -> None:
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--json"]:
        out, args = Path(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    clock = Clock()
    started = psutil.Process().create_time()
    from smilesformer.cli import app  # the imports are part of the start-up

    install(clock)
    entered = time.time()
    code = 0
    try:
        app(args, standalone_mode=False)
    except SystemExit as exc:
        code = int(exc.code or 0)
    total = time.time() - started
    seconds = {"start-up (interpreter and imports)": entered - started, **clock.seconds}
    seconds["other"] = total - sum(seconds.values())
    steps = clock.seconds["training steps (forward, backward)"]
    peak = matmul_peak()
    result = {"exit_code": code, "total_seconds": round(total, 2),
              "phases": {k: round(v, 2) for k, v in seconds.items()},
              "training": {"sequences": clock.sequences, "tokens": clock.tokens, "padded_tokens": clock.padded_tokens,
                           "gflop": round(clock.flops / 1e9, 1),
                           "gflop_per_second": round(clock.flops / steps / 1e9, 1) if steps else None},
              "matmul_fp32_peak_gflop_per_second": round(peak, 1), "torch_threads": torch.get_num_threads()}
    if steps:
        result["training"]["share_of_peak"] = round(clock.flops / steps / 1e9 / peak, 3)
    print(json.dumps(result, indent=2))
    if out:
        out.write_text(json.dumps(result, indent=2))
    sys.exit(code)


if __name__ == "__main__":
    main()
