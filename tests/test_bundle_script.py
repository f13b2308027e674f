"""scripts/bundle_gpu_model.py: a GPU run's budget, throughput and passes, read from its log into the summary
that writes the card."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("bundle_gpu_model", ROOT / "scripts" / "bundle_gpu_model.py")
bundle = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bundle)

LOG = """[1 s] env
[130 s] corpus done
{'loss': '7.309', 'grad_norm': '9.393', 'learning_rate': '0', 'epoch': '0.00128'}
DEADLINE: 41.0 steps/s, 2287 steps fit of 23428
{'train_runtime': '63.13', 'train_samples_per_second': '3.8e+05', 'train_steps_per_second': '36.23'}
[377 s] pretrain done
"""
SUMMARY = {"corpus": {"read": 799836, "invalid": 0, "duplicates": 184, "kept": 799652},
           "tokenizer_coverage": {"n": 20000, "roundtrip": 1.0, "unk_rate": 0.0, "mean_tokens": 38.84245},
           "throughput": {"tokens_per_second": None, "molecules_per_second": None, "world_size": 1,
                          "resumed_from": None},
           "wall_seconds": 232.0, "n_parameters": 3850626, "final_loss": 0.56, "steps": 2287, "hardware": "1 x GPU"}
CONFIG = {"batch_size": 1024, "grad_accum": 1}


def test_the_summary_records_what_the_run_did_not_what_it_planned():
    summary = bundle.corrected_summary(SUMMARY, CONFIG, bundle.read_run_log(LOG), deadline=380)
    assert summary["molecules_presented"] == 2287 * 1024 and summary["planned_steps"] == 23428
    assert summary["epochs_done"] == pytest.approx(2.93, abs=0.005)
    # 2,287 steps of 1,024 over the Trainer's 63.13 s: not its samples/s, which counts the planned 30 epochs
    assert summary["throughput"]["molecules_per_second"] == pytest.approx(37096, abs=1)
    budget = summary["budget"]
    assert budget["max_seconds"] == 250 and budget["training_seconds"] == 63.13
    assert budget["preparation_seconds"] == pytest.approx(377 - 130 - 63.13, abs=0.1)
    assert budget["stopped"] == "fitted" and budget["last_step"] == 2287


def test_a_log_without_the_budget_line_or_with_other_steps_stops_with_the_reason():
    with pytest.raises(SystemExit, match="budget fit line"):
        bundle.read_run_log(LOG.replace("DEADLINE", "deadline"))
    with pytest.raises(SystemExit, match="2000 steps"):
        bundle.corrected_summary({**SUMMARY, "steps": 2000}, CONFIG, bundle.read_run_log(LOG), deadline=380)
