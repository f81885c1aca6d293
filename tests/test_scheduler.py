"""The slot scheduler's decision (snaketune.scheduler.decide_slot) on hand-made study states: no
Snakemake, no journal, no file system, no lock."""

from __future__ import annotations

import datetime
import sys

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from workflow_helpers import REPO

sys.path.insert(0, str(REPO / "workflow"))
from snaketune.config import Budget  # noqa: E402
from snaketune.scheduler import (FAILED, FINISHED, INTERRUPTED, NEW, RESUME, RETRAIN, RETRY,  # noqa: E402
                                 SKIP, SlotSettings, StudyState, committed_compute, decide_slot,
                                 enqueued_config)

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
LR = FloatDistribution(1e-5, 1e-1, log=True)


def trial(number: int, state: TrialState = TrialState.COMPLETE, lr: float = 1e-3, value: float | None = 1.0,
          reports: dict | None = None, system_attrs: dict | None = None, **user_attrs) -> FrozenTrial:
    """A trial as the journal gives it back: `user_attrs` (slot, attempt, ...) as keywords."""
    finished = state.is_finished()
    return FrozenTrial(number=number, state=state, value=value if state == TrialState.COMPLETE else None,
                       values=None, datetime_start=T0 + datetime.timedelta(minutes=number),
                       datetime_complete=T0 + datetime.timedelta(minutes=number + 1) if finished else None,
                       params={"learning_rate": lr}, distributions={"learning_rate": LR},
                       user_attrs=user_attrs, system_attrs=system_attrs or {},
                       intermediate_values=reports or {}, trial_id=number)


def settings(**changes) -> SlotSettings:
    return SlotSettings(**{"first_params": {}, "n_objectives": 1, "direction": "minimize", **changes})


def test_a_first_attempt_asks_the_sampler():
    decision = decide_slot(3, StudyState([trial(0, slot=0, attempt=1)]), settings())
    assert decision.kind == NEW
    assert decision.params == {} and decision.user_attrs == {"slot": 3, "attempt": 1}


def test_a_grid_slot_gets_its_grid_point():
    decision = decide_slot(0, StudyState([]), settings(first_params={"warmup_steps": 2, "optimizer": "sgd"}))
    assert decision.kind == NEW and decision.params == {"warmup_steps": 2, "optimizer": "sgd"}


@pytest.mark.parametrize("earlier, rank", [(0, 0), (1, 1), (2, 2), (3, None)])
def test_the_kth_first_attempt_takes_the_kth_enqueued_configuration(earlier, rank):
    """Its rank: the first attempts before it in the journal that take a configuration (a retry,
    a resumed paused trial or a trial made outside a slot take none)."""
    enqueue = [{"learning_rate": 0.01}, {"learning_rate": 0.02}, {"learning_rate": 0.03}]
    trials = [trial(i, slot=i, attempt=1) for i in range(earlier)]
    others = [trial(earlier, slot=0, attempt=2, retry_of=0), trial(earlier + 1, slot=9, attempt=1, promoted_from=0),
              trial(earlier + 2)]
    new = trial(earlier + 3, TrialState.RUNNING, slot=7, attempt=1)
    expected = None if rank is None else enqueue[rank]
    assert enqueued_config([*trials, *others, new], new.number, enqueue) == expected


def test_a_running_latest_attempt_was_interrupted_and_is_retried_with_its_parameters():
    running = trial(4, TrialState.RUNNING, lr=0.004, slot=2, attempt=1)
    decision = decide_slot(2, StudyState([trial(0, slot=0, attempt=1), running]), settings())
    assert decision.kind == RETRY and decision.reason == INTERRUPTED and decision.trial is running
    assert decision.params == {"learning_rate": 0.004}
    assert decision.user_attrs == {"slot": 2, "attempt": 2, "retry_of": 4}


def test_a_failed_attempt_is_retried_with_its_parameters_as_the_next_attempt():
    attempts = [trial(1, TrialState.FAIL, lr=0.02, slot=5, attempt=1, fail_reason="CUDA error"),
                trial(6, TrialState.FAIL, lr=0.02, slot=5, attempt=2, retry_of=1, fail_reason="CUDA error")]
    decision = decide_slot(5, StudyState(attempts), settings())
    assert decision.kind == RETRY and decision.reason == FAILED
    assert decision.params == {"learning_rate": 0.02}
    assert decision.user_attrs == {"slot": 5, "attempt": 3, "retry_of": 6}


def test_a_retry_takes_its_slots_enqueued_configuration_even_if_the_first_attempt_died_before():
    died = trial(0, TrialState.RUNNING, lr=0.5, slot=1, attempt=1)  # its enqueued values were never set
    decision = decide_slot(1, StudyState([died]), settings(enqueue_trials=[{"learning_rate": 0.01}]))
    assert decision.params == {"learning_rate": 0.01} and decision.user_attrs["enqueued"] is True


@pytest.mark.parametrize("checkpoint, kind", [(False, RETRY), (True, FINISHED)])
def test_a_completed_trial_whose_checkpoint_is_gone_is_trained_again(checkpoint, kind):
    done = trial(2, lr=0.003, slot=0, attempt=1)
    state = StudyState([done], has_checkpoint=lambda slot: checkpoint)
    decision = decide_slot(0, state, settings())
    assert decision.kind == kind
    if kind == RETRY:
        assert decision.reason == RETRAIN and decision.params == {"learning_rate": 0.003}
        assert decision.user_attrs == {"slot": 0, "attempt": 2, "retry_of": 2, "retrained": "its checkpoint was gone"}


def test_several_objectives_never_retrain_a_completed_trial():
    """No best model is built from a Pareto front, so its checkpoint is not needed."""
    state = StudyState([trial(0, slot=0, attempt=1)], has_checkpoint=lambda slot: False)
    assert decide_slot(0, state, settings(n_objectives=2)).kind == FINISHED


@pytest.mark.parametrize("state, reason", [(TrialState.PRUNED, None), (TrialState.FAIL, "diverged: loss is nan")])
def test_a_finished_slot_returns_its_trial(state, reason):
    attrs = {"fail_reason": reason} if reason else {}
    latest = trial(3, state, slot=1, attempt=2, retry_of=0, **attrs)
    decision = decide_slot(1, StudyState([trial(0, TrialState.FAIL, slot=1, attempt=1), latest]), settings())
    assert decision.kind == FINISHED and decision.trial is latest


def paused_study() -> list[FrozenTrial]:
    """Four trials reported at step 10; trial 1 (the best) was paused there, trial 3 (the worst) too."""
    rungs = {"completed_rung_0": 0.2}
    return [trial(0, slot=0, attempt=1, reports={10: 0.5, 20: 0.4}),
            trial(1, TrialState.PRUNED, lr=0.01, slot=1, attempt=1, reports={10: 0.2}, system_attrs=rungs),
            trial(2, slot=2, attempt=1, reports={10: 0.6, 20: 0.5}),
            trial(3, TrialState.PRUNED, slot=3, attempt=1, reports={10: 0.9})]


def test_a_paused_trial_due_for_promotion_is_resumed_with_its_checkpoint_and_rung_records():
    state = StudyState(paused_study(), paused_checkpoint=lambda t: f"trial_{t.user_attrs['slot']}/checkpoint-10")
    decision = decide_slot(4, state, settings(resume_pruned=2))
    assert decision.kind == RESUME and decision.trial.number == 1
    assert decision.params == {"learning_rate": 0.01}
    assert decision.user_attrs == {"slot": 4, "attempt": 1, "promoted_from": 1,
                                   "paused_checkpoint": "trial_1/checkpoint-10"}
    assert decision.system_attrs == {"completed_rung_0": 0.2}


def test_a_paused_trial_whose_checkpoint_is_gone_is_passed_over_and_none_wait_for_enqueued_ones():
    gone = StudyState(paused_study(), paused_checkpoint=lambda t: None)
    assert decide_slot(4, gone, settings(resume_pruned=2)).kind == NEW
    there = StudyState(paused_study(), paused_checkpoint=lambda t: "trial_1/checkpoint-10")
    waiting = [{"learning_rate": 0.01}] * 5  # four first attempts ran: the fifth configuration waits
    assert decide_slot(4, there, settings(resume_pruned=2, enqueue_trials=waiting)).kind == NEW
    assert decide_slot(4, there, settings(resume_pruned=None)).kind == NEW


def test_a_resumed_trials_retry_keeps_what_it_resumes_and_takes_no_enqueued_configuration():
    resumed = trial(4, TrialState.FAIL, lr=0.01, slot=4, attempt=1, promoted_from=1,
                    paused_checkpoint="trial_1/checkpoint-10")
    decision = decide_slot(4, StudyState([*paused_study(), resumed]),
                           settings(resume_pruned=2, enqueue_trials=[{"learning_rate": 0.05}] * 9))
    assert decision.kind == RETRY and decision.params == {"learning_rate": 0.01}
    assert decision.user_attrs == {"slot": 4, "attempt": 2, "retry_of": 4, "promoted_from": 1,
                                   "paused_checkpoint": "trial_1/checkpoint-10"}


@pytest.mark.parametrize("minutes, kind", [(29.0, NEW), (31.0, SKIP)])
def test_a_slot_starting_after_the_time_budget_is_skipped(minutes, kind):
    state = StudyState([], now=1000.0 + minutes * 60, started_at=1000.0)
    decision = decide_slot(0, state, settings(timeout_minutes=30))
    assert decision.kind == kind
    if kind == SKIP:
        assert decision.reason == ("skipped: the study's time budget (timeout_minutes=30) was spent "
                                   "1.0 min before this slot started")


def test_the_time_budget_only_stops_first_attempts():
    running = trial(0, TrialState.RUNNING, slot=0, attempt=1)
    state = StudyState([running], now=10_000.0, started_at=0.0)
    assert decide_slot(0, state, settings(timeout_minutes=1)).kind == RETRY


def test_a_running_trial_commits_its_max_steps_so_a_slot_beside_it_is_skipped():
    """Trial 0 trained 12 steps; trial 1 runs, resumed from step 10, for 40: 30 more committed."""
    trials = [trial(0, slot=0, attempt=1, metrics={"trained_steps": 12}),
              trial(1, TrialState.RUNNING, slot=1, attempt=1, resumed_from="trial_1/checkpoint-10")]
    spent = committed_compute(trials, "trained_steps", planned_steps=40)
    assert spent == 12 + 30
    assert decide_slot(2, StudyState(trials, spent=spent), settings(budget=Budget("trained_steps", 43))).kind == NEW
    decision = decide_slot(2, StudyState(trials, spent=spent), settings(budget=Budget("trained_steps", 42)))
    assert decision.kind == SKIP
    assert decision.reason == ("skipped: the study's compute budget (trained_steps=42) was spent (42) "
                               "before this slot started")


def test_a_trial_that_stopped_without_recording_counts_its_loss_curve_in_its_own_time():
    """The attempts of a slot share a loss curve: only the rows within a trial's start and end count."""
    stopped = trial(0, TrialState.FAIL, slot=0, attempt=1)
    start = stopped.datetime_start.timestamp()
    rows = [{"step": 8, "num_tokens": 800, "time": start - 600}, {"step": 5, "num_tokens": 500, "time": start + 30}]
    assert committed_compute([stopped], "trained_steps", loss_curve=lambda t: rows) == 5
    assert committed_compute([stopped], "trained_tokens", loss_curve=lambda t: rows) == 500
    two_devices = committed_compute([stopped], "gpu_hours", devices=2)
    assert two_devices == pytest.approx(2 * 60 / 3600)
