"""Training on a wall-clock budget: the steps that fit, a schedule that ends on the last of them, and resume."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import TrainerControl

import smilesformer.budget as budget
from smilesformer.budget import BudgetSchedule, TimeBudget
from smilesformer.config import PretrainConfig
from smilesformer.pretrain import run_pretrain

from .conftest import needs_shared_data


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate(callback: TimeBudget, clock: Clock, seconds_per_step, start_step: int = 0, limit: int = 100_000):
    """Drive a TimeBudget as the Trainer would; returns the multiplier of every step taken."""
    state, control = SimpleNamespace(global_step=start_step), TrainerControl()
    callback.on_train_begin(None, state, control)
    values = []
    while state.global_step < min(callback.planned, limit):
        values.append(callback.schedule(state.global_step))
        clock.now += seconds_per_step(state.global_step)
        state.global_step += 1
        callback.on_step_end(None, state, control)
        if control.should_training_stop:
            break
    callback.on_train_end(None, state, control)
    return np.array(values), state.global_step


def test_schedule_is_the_linear_one_until_refitted_and_never_jumps():
    schedule = BudgetSchedule(1000, 0.1)
    assert schedule(0) == 0 and schedule(50) == pytest.approx(0.5) and schedule(100) == 1
    assert schedule(550) == pytest.approx(0.5) and schedule(1000) == 0
    values = []
    for step in range(600):
        if step in (30, 300):  # once in the warm-up, once in the decay
            schedule.refit(step, 400 if step == 30 else 500)
        values.append(schedule(step))
    assert np.abs(np.diff(values)).max() <= 0.1  # the steepest: the rest of a warm-up cut short, over 2% of 400
    assert schedule(499) < 0.01 and schedule(500) == 0


def test_a_slow_start_does_not_fit_too_few_steps_or_a_too_short_warm_up(monkeypatch):
    """The GPU run that taught it: 5 steps/s while data workers start, climbing to 47 over some 20 s."""
    clock = Clock()
    monkeypatch.setattr(budget.time, "time", clock)
    schedule = BudgetSchedule(40_000, 0.05)
    callback = TimeBudget(deadline=clock.now + 150, reserve=10, schedule=schedule, planned=40_000)
    values, steps = simulate(callback, clock, lambda step: 1 / min(47, 5 + 0.1 * step))
    assert clock.now <= callback.deadline - callback.reserve  # inside the budget
    assert steps > 0.9 * (420 + (140 - 22.4) * 47)  # nearly every step that fits (420 steps in the first 22.4 s)
    assert callback.reason == "fitted" and values[-1] < 0.01  # the learning rate ends at about zero
    assert schedule.warmup >= 0.04 * steps  # the warm-up is a share of the real run, not of a start-up guess
    assert np.abs(np.diff(values)).max() < 0.05
    summary = callback.summary(160, clock.now - 160)
    assert summary["stopped"] == "fitted" and summary["last_step"] == steps and summary["refits"] >= 3


def test_a_run_that_fits_its_budget_ends_on_its_planned_steps(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(budget.time, "time", clock)
    callback = TimeBudget(deadline=clock.now + 600, reserve=10, schedule=BudgetSchedule(500, 0.05), planned=500)
    values, steps = simulate(callback, clock, lambda step: 0.1)
    assert steps == 500 and callback.reason == "planned" and callback.schedule(499) < 0.01


def test_a_resumed_run_keeps_its_end_and_the_schedule_survives_a_checkpoint(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(budget.time, "time", clock)
    schedule = BudgetSchedule(10_000, 0.05)
    first = TimeBudget(deadline=clock.now + 100, reserve=5, schedule=schedule, planned=10_000)
    simulate(first, clock, lambda step: 0.05, limit=600)  # "killed" at step 600 of ~1,900 that fit
    end = schedule.total
    assert 1500 < end < 2000
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    saved = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule).state_dict()
    restored = BudgetSchedule(10_000, 0.05)  # what a new process builds, before the checkpoint is loaded
    torch.optim.lr_scheduler.LambdaLR(optimizer, restored).load_state_dict(saved)
    assert restored.total == end and restored.fitted
    # More time this time: the end stays where it was.
    again = TimeBudget(deadline=clock.now + 1000, reserve=5, schedule=restored, planned=10_000, resumed=True)
    values, steps = simulate(again, clock, lambda step: 0.05, start_step=600)
    assert steps == end and values[-1] < 0.01
    # Less time than the rest needs: it ends earlier, still at about zero.
    short = BudgetSchedule(10_000, 0.05)
    torch.optim.lr_scheduler.LambdaLR(optimizer, short).load_state_dict(saved)
    tight = TimeBudget(deadline=clock.now + 40, reserve=5, schedule=short, planned=10_000, resumed=True)
    values, steps = simulate(tight, clock, lambda step: 0.05, start_step=600)
    assert steps < end and values[-1] < 0.02 and tight.reason == "fitted"


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="max_minutes"):
        PretrainConfig(corpus="x.smi", max_minutes=0)


@needs_shared_data
def test_a_budgeted_pretraining_ends_inside_its_budget_with_the_rate_at_zero(tmp_path):
    corpus = tmp_path / "corpus.smi"
    from smilesformer.data import iter_smiles

    from .conftest import SHARED_DATA

    corpus.write_text("\n".join(s for _, s in zip(range(300), iter_smiles(SHARED_DATA / "moses_train.csv.gz"))))
    config = PretrainConfig(corpus=str(corpus), preset="tiny", batch_size=16, epochs=1000, max_minutes=0.3,
                            logging_steps=1, save_steps=10**6, learning_rate=1e-3, progress=False, n_jobs=1)
    started = time.time()
    model_dir = run_pretrain(config, tmp_path / "run", started=started)
    assert time.time() - started <= 0.3 * 60
    summary = json.loads((model_dir / "pretrain_summary.json").read_text())
    assert summary["budget"]["stopped"] in ("fitted", "deadline") and summary["steps"] > 20
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    rates = [h["learning_rate"] for h in history if "learning_rate" in h]
    assert rates[-1] < 0.05 * max(rates)
    assert summary["throughput"]["tokens_per_second"] > 0
    assert "time budget" in (model_dir / "README.md").read_text()
