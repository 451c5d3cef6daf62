"""Fit a training run to a wall-clock budget (``simclr train --time-budget-min``).

A run with a budget does not know its step count up front, but the cosine learning-rate schedule
needs one. So the run is sized twice over: :func:`probe_steps` times a few real steps (and one kNN
feature pass) before training, and :class:`BudgetReplanner` re-sizes it from the speed measured since
the last plan: at the end of warm-up (before the cosine phase), then at 50% and 80% of the way. A
machine that slows down mid-run (other jobs, thermal limits) still lands on its budget, and the later
corrections are small, so the schedule barely moves (a 3% longer run lowers the learning rate at the
halfway step by ~2%). Everything here is arithmetic on the clock; the training loop owns the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("simclr.train")

FIRST_PLAN_MARGIN = 0.98  # of the time left, planned at the end of warm-up
LATER_PLAN_MARGIN = 0.99  # at 50% and 80%: less is left to go wrong
PROBE_MARGIN = 0.97  # the first guess, from a handful of steps
REPLAN_AT = (0.5, 0.8)  # fractions of the planned run (after warm-up) where it is re-planned


def evaluations(total_steps: int, steps_per_epoch: int, eval_every: int) -> int:
    """How many kNN evaluations a run of ``total_steps`` makes: every ``eval_every`` epochs, plus
    the one at the end."""
    epochs = total_steps / steps_per_epoch
    return 1 + (int(epochs) // eval_every if eval_every else 0)


def probe_steps(
    run_steps: Callable[[int], int],
    time_eval: Callable[[], float],
    budget_s: float,
    started: float,
    steps_per_epoch: int,
    eval_every: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, float]:
    """``(steps, eval_seconds)``: the first plan, from timed real steps.

    ``run_steps(n)`` runs up to ``n`` training steps (fewer when an epoch is shorter) and returns how
    many it ran; the caller undoes them afterwards. 2 untimed steps warm up (allocations, kernel
    choice), then up to 6 are timed. ``time_eval()`` returns the seconds one evaluation will take
    (0 without one). ``started`` is the ``clock()`` reading at the start of the run, so set-up
    already spent counts against the budget.
    """
    run_steps(2)
    tick = clock()
    timed = run_steps(6)
    per_step = (clock() - tick) / max(1, timed)
    eval_seconds = time_eval()
    remaining = budget_s - (clock() - started)
    at_most = max(steps_per_epoch, int(remaining / per_step))  # the run without evaluations
    n_evals = evaluations(at_most, steps_per_epoch, eval_every)
    steps = int((remaining - n_evals * eval_seconds) * PROBE_MARGIN / per_step)
    log.info(
        "time budget: about %.2f s/step, %.0f s per evaluation -> %d steps (%.1f epochs)",
        per_step,
        eval_seconds,
        steps,
        steps / steps_per_epoch,
    )
    return max(1, steps), eval_seconds


class BudgetReplanner:
    """Re-sizes a running budgeted run from the speed measured since the last plan.

    Call :meth:`on_step` after every optimiser step; it returns the new total step count when it
    re-planned (the caller rebuilds its schedule) and None otherwise. The first plan is at
    ``calibrate_at`` (the end of warm-up, at least step 50), timed from step 10 so that the first,
    slow steps do not count; it then schedules re-plans at 50% and 80% of the remaining run.
    ``reduce`` averages a measured seconds-per-step over the ranks of a multi-process run, so all
    ranks agree on the step count; ``verbose`` logs each plan (the main rank's job).
    """

    def __init__(
        self,
        budget_s: float,
        started: float,
        eval_seconds: float,
        steps_per_epoch: int,
        eval_every: int,
        calibrate_at: int,
        reduce: Callable[[float], float] = float,
        clock: Callable[[], float] = time.perf_counter,
        verbose: bool = True,
    ) -> None:
        if calibrate_at < 1:
            raise ValueError(f"calibrate_at must be a step >= 1, got {calibrate_at}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.budget_s = budget_s
        self.started = started
        self.eval_seconds = eval_seconds
        self.steps_per_epoch = steps_per_epoch
        self.eval_every = eval_every
        self.calibrate_at = calibrate_at
        self.reduce = reduce
        self.clock = clock
        self.verbose = verbose
        self.replan_at: list[int] = []
        self._tick = (clock(), 0)

    def on_step(self, step: int, total_steps: int) -> int | None:
        if step == min(10, self.calibrate_at):
            self._tick = (self.clock(), step)
            return None
        if step != self.calibrate_at and step not in self.replan_at:
            return None
        since, since_step = self._tick
        per_step = self.reduce((self.clock() - since) / (step - since_step))
        reserve = self.eval_seconds * evaluations(
            total_steps, self.steps_per_epoch, self.eval_every
        )
        remaining = self.budget_s - (self.clock() - self.started) - reserve
        margin = FIRST_PLAN_MARGIN if step == self.calibrate_at else LATER_PLAN_MARGIN
        total = max(step + 1, step + int(margin * remaining / per_step))
        self._tick = (self.clock(), step)
        if step == self.calibrate_at:
            span = total - step
            self.replan_at = [step + int(f * span) for f in REPLAN_AT]
        if self.verbose:
            log.info(
                "time budget: measured %.3f s/step -> %d steps (%.1f epochs) in all",
                per_step,
                total,
                total / self.steps_per_epoch,
            )
        return total
