"""Training on a wall-clock budget: the steps that fit the time left, and a schedule that ends on the last of them.

A GPU window here is short and fixed (minutes), so ``smilesformer pretrain --max-minutes M`` must end within M
minutes however long its preparation took. Training gets what preparation leaves: after a short measured stretch
the step rate gives the steps that fit before the deadline (less a reserve for writing the model), and the
learning-rate schedule is re-shaped to them: linear warm-up, then linear decay to zero at the last step that fits.
The rate is measured again as training goes and the end moved to match, continuously (the decay restarts from the
learning rate of the moment, so no step sees a jump). The Trainer's own schedules take the number of steps once,
at the start, which is why this is written here rather than taken from transformers.

The schedule is a callable object, so PyTorch's ``LambdaLR`` saves its state in every checkpoint: a resumed run
continues the same schedule to the same last step, which a later budget may only bring forward, never extend.
"""

from __future__ import annotations

import math
import time
from collections import deque

from transformers import TrainerCallback

__all__ = ["BudgetSchedule", "TimeBudget", "STOP_REASONS"]

STOP_REASONS = {
    "planned": "the planned steps (epochs or max_steps) were done within the budget",
    "fitted": "reached the last step that fits the time budget",
    "deadline": "the time budget ran out before the last planned step",
}


STEADY = 0.1  # a rate within 10% of the last fit's is steady: start-up is over, the warm-up may be re-planned
SAFETY = 0.98  # share of the measured rate counted on: a slower stretch near the end must not overrun the deadline


class BudgetSchedule:
    """Learning-rate multiplier per optimizer step: warm-up to 1 over ``warmup`` steps, then linear decay to 0 at
    ``total``. A re-fit continues from the multiplier of the moment (``anchor_step``, ``anchor_value``): in the
    warm-up it ramps from there to 1, in the decay it decays from there to 0 at the new total, so the learning
    rate never jumps."""

    def __init__(self, total: int, warmup_fraction: float):
        self.total = max(1, total)
        self.warmup_fraction = warmup_fraction
        self.warmup = int(warmup_fraction * self.total)
        self.anchor_step = 0
        self.anchor_value = 0.0
        self.fitted = False  # True once the total came from a measured rate (kept in checkpoints)

    def __call__(self, step: int) -> float:
        anchored = self.anchor_step > 0 and step >= self.anchor_step
        if step < self.warmup:
            if anchored:
                return self.anchor_value + (1 - self.anchor_value) * (step - self.anchor_step) / (
                    self.warmup - self.anchor_step)
            return step / self.warmup
        start, value = (self.anchor_step, self.anchor_value) if anchored and self.anchor_step > self.warmup \
            else (self.warmup, 1.0)
        return max(0.0, value * (self.total - step) / max(1, self.total - start))

    def refit(self, step: int, total: int, settled: bool = True) -> None:
        """End the schedule at ``total`` steps, continuing from ``step``.

        In the warm-up, a ``settled`` fit (its rate steady) re-plans the warm-up as the new total's share, the
        peak reached at least 2% of the total later; an unsettled one only keeps the warm-up within half the run.
        """
        total = max(total, step + 1)
        value = self(step)
        if step < self.warmup and settled:
            self.warmup = min(total, max(int(self.warmup_fraction * total), step + max(1, total // 50)))
        elif step < self.warmup:
            self.warmup = min(self.warmup, max(total // 2, step + 1))
        self.anchor_step, self.anchor_value = step, value
        self.total = total
        self.fitted = True


class TimeBudget(TrainerCallback):
    """Stops training by ``deadline`` (a ``time.time()``), fitting ``schedule`` to the steps that fit.

    The first fit waits for ``probe_seconds`` of training (a fifth of the time there is, if less): start-up runs
    slow for seconds (data workers, kernels), and a fit on its rate plans far too few steps and a warm-up too
    short for a fresh model (measured on a GPU: 5 steps/s at step 36, 47 once running; a 42-step warm-up to a peak
    of 1.5e-3 left the MLM loss stuck at 3.4). Every fit uses the rate of the last ``window`` seconds, and only a
    rate that held steady since the last fit re-plans the warm-up.

    Args:
        deadline: when the whole command must have ended.
        reserve: seconds kept after training for writing the model, its card and plots.
        schedule: the learning-rate schedule the Trainer follows (re-fitted in place).
        planned: the steps the run would take without a budget (epochs or max_steps): never exceeded.
        resumed: a run continuing from a checkpoint keeps its schedule's end; the budget may only bring it forward.
        probe_seconds: training before the first fit.
        window: seconds of recent steps a rate is measured over.
    """

    def __init__(self, deadline: float, reserve: float, schedule: BudgetSchedule, planned: int,
                 resumed: bool = False, probe_seconds: float = 20.0, window: float = 5.0):
        self.deadline = deadline
        self.reserve = reserve
        self.schedule = schedule
        self.planned = planned
        self.resumed = resumed
        self.probe_seconds = probe_seconds
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()  # (time, step) of recent steps
        self.last_rate: float | None = None
        self.next_fit = 0.0
        self.fits: list[dict] = []
        self.reason = "planned"
        self.training_seconds = 0.0
        self._began = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._began = time.time()
        available = self.deadline - self.reserve - self._began
        self.window = min(self.window, max(available / 20, 0.5))
        self.next_fit = self._began + min(self.probe_seconds, available / 5)
        if self.resumed and self.schedule.fitted:
            self.planned = min(self.planned, self.schedule.total)  # the same end as before, or earlier

    def on_step_end(self, args, state, control, **kwargs):
        now, step = time.time(), state.global_step
        left = self.deadline - self.reserve - now
        if left <= 0:
            self.reason = "deadline"
            control.should_training_stop = True
            return control
        self.samples.append((now, step))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()  # keep one sample at least a window old
        at_end = step >= self.schedule.total and self.schedule.fitted
        if now >= self.next_fit or at_end:
            then, step_then = self.samples[0]
            if now > then and step > step_then:
                rate = (step - step_then) / (now - then)
                settled = self.last_rate is not None and abs(rate - self.last_rate) <= STEADY * rate
                self.last_rate = rate
                fit = min(self.planned, step + math.floor(SAFETY * rate * left))
                if self.resumed and self.schedule.fitted:
                    fit = min(fit, self.schedule.total)
                if fit != self.schedule.total or not self.schedule.fitted:
                    self.schedule.refit(step, fit, settled)
                    self.fits.append({"step": step, "steps_per_second": round(rate, 3),
                                      "seconds_left": round(left, 1), "last_step": self.schedule.total})
            self.next_fit = now + min(max(1.0, left / 20), 15.0)  # often: the end lands on time
        if step >= self.schedule.total and self.schedule.fitted:
            self.reason = "fitted" if self.schedule.total < self.planned else "planned"
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.training_seconds = time.time() - self._began

    def summary(self, budget_seconds: float, started: float) -> dict:
        """What the card and the summary record: the budget, the steps that fit and why training stopped."""
        return {"max_seconds": round(budget_seconds, 1), "reserve_seconds": round(self.reserve, 1),
                "preparation_seconds": round(self._began - started, 1),
                "training_seconds": round(self.training_seconds, 1), "planned_steps": self.planned,
                "last_step": self.schedule.total, "refits": len(self.fits), "fits": self.fits[:3] + self.fits[3:][-3:],
                "stopped": self.reason, "stopped_because": STOP_REASONS[self.reason]}
