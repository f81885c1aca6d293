"""The slot scheduler: what trial slot i does when its job starts, decided, then written.

A Snakemake job `trial_<i>` is slot i of the budget, not an Optuna trial. `decide_slot` is a pure
function from the slot, the study's state (its trials, the clock, the compute spent, and the
checkpoint facts it needs, as plain values and callables: `StudyState`) and the study's settings
(`SlotSettings`) to a `SlotDecision`:

- `finished`: the slot's latest attempt is done for good (completed, pruned, diverged);
- `new`: a first attempt, with its grid point (GridSampler) or nothing (the sampler asks); the
  enqueued configuration of its rank is fixed once it exists (`enqueued_config`);
- `resume`: a first attempt that carries a paused (pruned) trial on from its checkpoint;
- `retry`: a later attempt with the latest one's parameters: it was interrupted (RUNNING: its
  process is gone, Snakemake runs one job per slot at a time), failed, or completed with its
  checkpoint gone (one objective: the best model is built from the best trial's checkpoint);
- `skip`: a first attempt past the study's time or compute budget.

`claim_trial` reads the state, asks `decide_slot`, and executes the decision in the journal: a
first attempt under the study's claim lock, so that a budget check and the trial it lets start are
one step across processes. `bench/replay.py` drives the same pure parts.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from snaketune import space as search_space
from snaketune import strategy
from snaketune.config import Budget, ConvergedStop, TuningParams
from snaketune.layout import (
    StudyLayout,
    TrialFiles,
    checkpoint_step,
    is_complete_checkpoint,
    read_loss_curve,
    trial_dir,
)
from snaketune.locks import claiming
from snaketune.database import fail_stale_trials
from snaketune.storage import storage_of, trial_id_of
from snaketune.study import (RUN_STARTED_ENV, STARTED_ATTR, enqueued_configurations, is_finished, own_trials, skip_slot,
                             skipped_slots)

FINISHED, NEW, RESUME, RETRY, SKIP = "finished", "new", "resume", "retry", "skip"
# Why a slot is tried again (SlotDecision.reason of a retry).
INTERRUPTED, FAILED, RETRAIN = "interrupted", "failed", "retrain"


class SlotSkipped(Exception):
    """The study's time or compute budget was spent before this slot started: it finishes as
    skipped."""


@dataclass(frozen=True)
class SlotSettings:
    """What the decision needs of the study's config (TuningParams), as plain values."""

    first_params: dict  # a first attempt's parameters: the slot's grid point (strategy.slot_params)
    n_objectives: int
    direction: str  # the first objective's: "minimize" or "maximize"
    resume_pruned: int | None = None  # η of tuning.resume_pruned: None, paused trials stay stopped
    enqueue_trials: Sequence[dict] = ()  # tuning.enqueue_trials, in the order they run
    timeout_minutes: float | None = None
    budget: Budget | None = None  # tuning.budget
    stop_when_converged: ConvergedStop | None = None  # tuning.stop_when_converged

    @classmethod
    def of(cls, tuning: TuningParams, slot: int, enqueue_trials: Sequence[dict] | None = None) -> SlotSettings:
        """`enqueue_trials`: the study's (study.enqueued_configurations); None: tuning.enqueue_trials."""
        return cls(first_params=strategy.slot_params(tuning, slot), n_objectives=len(tuning.metrics),
                   direction=tuning.directions[0], resume_pruned=tuning.resume_pruned,
                   enqueue_trials=tuning.enqueue_trials if enqueue_trials is None else enqueue_trials,
                   timeout_minutes=tuning.timeout_minutes, budget=tuning.budget,
                   stop_when_converged=tuning.stop_when_converged)


@dataclass(frozen=True)
class StudyState:
    """The study as a slot's decision sees it. The file-system facts are callables, asked only
    where the decision needs them."""

    trials: Sequence[FrozenTrial]  # every trial of the study, in number order
    now: float = 0.0  # seconds since the epoch
    started_at: float = 0.0  # when the time budget's clock started (this invocation, else the study)
    spent: float = 0.0  # compute spent or committed in the budget's unit (spent_compute)
    # Whether the slot's folder still holds a complete checkpoint (TrialFiles.last_checkpoint).
    has_checkpoint: Callable[[int], bool] = lambda slot: True
    # The checkpoint a paused trial saved where it stopped, relative to output_dir, or None when it
    # is gone (paused_checkpoint).
    paused_checkpoint: Callable[[FrozenTrial], str | None] = lambda trial: None


@dataclass(frozen=True)
class SlotDecision:
    """What a slot does: `kind` (FINISHED, NEW, RESUME, RETRY, SKIP); the trial to create with
    `params` fixed and `user_attrs`/`system_attrs` set (NEW, RESUME, RETRY); `trial`: the finished
    one (FINISHED), the attempt repeated (RETRY) or the paused one resumed (RESUME); `reason`:
    why a slot is skipped (SKIP) or tried again (RETRY: INTERRUPTED, FAILED or RETRAIN)."""

    kind: str
    params: dict = field(default_factory=dict)
    user_attrs: dict = field(default_factory=dict)
    system_attrs: dict = field(default_factory=dict)
    trial: FrozenTrial | None = None
    reason: str | None = None


def decide_slot(slot: int, state: StudyState, settings: SlotSettings) -> SlotDecision:
    """What slot `slot` does now, from the study's `state`: see the module's docstring. Pure: it
    reads only its arguments (and the callables of `state`)."""
    attempts = slot_attempts(state.trials, slot)
    if not attempts:
        return _first_attempt(slot, state, settings)
    latest = attempts[-1]
    retrain = (latest.state == TrialState.COMPLETE and settings.n_objectives == 1
               and not state.has_checkpoint(slot))
    if is_finished(latest) and not retrain:
        return SlotDecision(FINISHED, trial=latest)
    attrs = {"slot": slot, "attempt": latest.user_attrs.get("attempt", 1) + 1, "retry_of": latest.number,
             # a resumed paused trial stays one: from its own checkpoint, else from the paused one
             **{k: latest.user_attrs[k] for k in ("promoted_from", "paused_checkpoint") if k in latest.user_attrs}}
    if retrain:
        attrs["retrained"] = "its checkpoint was gone"
    # The slot's enqueued configuration again, also if its first attempt died before taking it
    # (a slot that resumed a paused trial took none: it keeps the paused trial's parameters).
    enqueued = (None if "promoted_from" in attempts[0].user_attrs
                else enqueued_config(state.trials, attempts[0].number, settings.enqueue_trials))
    if enqueued is not None:
        attrs["enqueued"] = True
    reason = RETRAIN if retrain else INTERRUPTED if latest.state == TrialState.RUNNING else FAILED
    return SlotDecision(RETRY, {**latest.params, **(enqueued or {})}, attrs, trial=latest, reason=reason)


def _first_attempt(slot: int, state: StudyState, settings: SlotSettings) -> SlotDecision:
    elapsed = (state.now - state.started_at) / 60
    if settings.timeout_minutes and elapsed > settings.timeout_minutes:
        return SlotDecision(SKIP, reason=f"skipped: the study's time budget (timeout_minutes="
                            f"{settings.timeout_minutes}) was spent {elapsed - settings.timeout_minutes:.1f} "
                            "min before this slot started")
    if settings.budget:
        unit, amount = settings.budget.unit, settings.budget.amount
        if state.spent >= amount:
            return SlotDecision(SKIP, reason=f"skipped: the study's compute budget ({unit}={amount:g}) was "
                                f"spent ({state.spent:.4g}) before this slot started")
    stop = settings.stop_when_converged
    converged = stop and strategy.convergence(list(state.trials), stop.patience, stop.min_improvement, settings.direction)
    if converged:
        return SlotDecision(SKIP, reason=converged)
    attrs = {"slot": slot, "attempt": 1}
    paused, checkpoint = paused_trial_to_resume(state, settings)
    if paused is None:
        return SlotDecision(NEW, dict(settings.first_params), attrs)
    # pause instead of kill: this slot carries the paused trial on
    return SlotDecision(RESUME, dict(paused.params), {**attrs, "promoted_from": paused.number,
                                                      "paused_checkpoint": checkpoint},
                        strategy.carried_over(paused), trial=paused)


def paused_trial_to_resume(state: StudyState, settings: SlotSettings) -> tuple[FrozenTrial | None, str | None]:
    """The paused (pruned) trial a slot starting now resumes instead of asking the sampler, and its
    checkpoint (state.paused_checkpoint), or (None, None): the first of strategy.promotions
    (η = settings.resume_pruned) whose checkpoint is still there; none while configurations of
    enqueue_trials wait to run first. Decided under the claim lock, so two slots never resume the
    same trial (on a file system without flock, where `claiming` cannot lock, two slots starting
    at the same moment can)."""
    if not settings.resume_pruned or enqueued_pending(state.trials, settings.enqueue_trials):
        return None, None
    for trial in strategy.promotions(list(state.trials), settings.resume_pruned, settings.direction):
        checkpoint = state.paused_checkpoint(trial)
        if checkpoint is not None:
            return trial, checkpoint
    return None, None


def slot_attempts(trials: Sequence[FrozenTrial], slot: int) -> list[FrozenTrial]:
    """Every trial that ran in `slot`, oldest first (`trials` in number order)."""
    return [t for t in trials if t.user_attrs.get("slot") == slot]


def enqueued_pending(trials: Sequence[FrozenTrial], enqueue_trials: Sequence[dict]) -> bool:
    """Whether configurations of `enqueue_trials` (tuning.enqueue_trials) have not started yet:
    fewer first attempts than configurations (a slot resuming a paused trial takes none)."""
    return sum(1 for t in trials if takes_a_configuration(t)) < len(enqueue_trials)


def takes_a_configuration(trial: FrozenTrial) -> bool:
    """A slot's first attempt that did not resume a paused trial: one that the sampler, a grid
    point or an enqueued configuration gives its parameters."""
    return trial.user_attrs.get("attempt") == 1 and "promoted_from" not in trial.user_attrs


def enqueued_config(trials: Sequence[FrozenTrial], trial_number: int, enqueue_trials: Sequence[dict]) -> dict | None:
    """The enqueued configuration (of `enqueue_trials`, tuning.enqueue_trials) of the first
    attempt `trial_number` among the study's `trials`, if any.

    The k-th first attempt to start takes the k-th configuration, whichever slot it runs in:
    Snakemake starts slots in no fixed order, and "evaluated first" means first in time. The rank
    is read from the journal, whose order every process sees the same, so no lock is needed.
    """
    if not enqueue_trials:
        return None
    rank = sum(1 for t in trials if t.number < trial_number and takes_a_configuration(t))
    return enqueue_trials[rank] if rank < len(enqueue_trials) else None


def committed_compute(trials: Sequence[FrozenTrial], unit: str, planned_steps=None, devices: int = 1,
                      loss_curve: Callable[[FrozenTrial], list[dict]] = lambda trial: [],
                      now: datetime.datetime | None = None) -> float:
    """The compute `trials` spent or committed, in `unit` (one of config.BUDGET_UNITS), every attempt
    included (a failed one spent it too).

    A finished trial counts what it recorded (`metrics.trained_steps`/`trained_tokens`: what that
    attempt trained, from the checkpoint it resumed from; its wall time for gpu_hours, times
    `devices`). A trial still running counts, for steps, the whole run it was started for (its
    max_steps parameter, else `planned_steps`, tuning's max_steps): that compute is committed, and
    a slot that starts beside it must see it; for tokens and hours, what it has spent so far (its
    `loss_curve` rows, its time until `now`). A trial that stopped without recording counts what
    its loss curve shows between its start and end (the attempts of a slot share the file).
    """
    total = 0.0
    for trial in trials:
        recorded = trial.user_attrs.get("metrics", {})
        if unit == "gpu_hours":
            seconds = trial.user_attrs.get("wall_seconds")
            if seconds is None and trial.datetime_start is not None:
                end = trial.datetime_complete or now or datetime.datetime.now()
                seconds = (end - trial.datetime_start).total_seconds()
            total += (seconds or 0.0) * devices / 3600
            continue
        if unit in recorded:
            total += recorded[unit]
            continue
        resumed_from = trial.user_attrs.get("resumed_from") or trial.user_attrs.get("paused_checkpoint")
        start = checkpoint_step(resumed_from) if resumed_from else 0
        if unit == "trained_steps" and trial.state == TrialState.RUNNING:
            steps = trial.params.get("max_steps") or planned_steps
            if isinstance(steps, int) and steps > 0:
                total += steps - start
                continue
        rows = loss_curve(trial)
        began = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
        ended = trial.datetime_complete.timestamp() if trial.datetime_complete else math.inf
        key = "step" if unit == "trained_steps" else "num_tokens"
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float))
                  and began - 1 <= row.get("time", began) <= ended + 1]
        total += max(0, max(values) - (start if key == "step" else 0)) if values else 0
    return total


def spent_compute(study: optuna.Study, tuning: TuningParams, unit: str) -> float:
    """committed_compute of the study's trials, counted from the journal across every process,
    with their loss curves read from their slots' folders."""
    def loss_curve(trial: FrozenTrial) -> list[dict]:
        folder = trial_dir(trial, tuning.layout)
        return read_loss_curve(TrialFiles(folder).loss_curve) if folder is not None else []

    return committed_compute(own_trials(study), unit, tuning.training_args.get("max_steps"),
                             max(1, tuning.gpu.gpus_per_trial), loss_curve)


def paused_checkpoint(trial: FrozenTrial, layout: StudyLayout) -> str | None:
    """The checkpoint a pruned `trial` saved where it stopped (train.ReportAndPrune), relative to
    the study's output_dir (a moved study still finds it); if that one is gone or not whole
    (layout.checkpoint_problem), the newest whole one it saved before; None when none is left."""
    folder = trial_dir(trial, layout)
    if folder is None or not trial.intermediate_values:
        return None
    stopped = max(trial.intermediate_values)
    checkpoint = next((c for c in TrialFiles(folder).checkpoints()
                       if checkpoint_step(c) <= stopped and is_complete_checkpoint(c)), None)
    return str(checkpoint.relative_to(layout.output_dir)) if checkpoint else None


def study_state(study: optuna.Study, tuning: TuningParams, budget: bool = False) -> StudyState:
    """The state of `study` for decide_slot, its file-system facts read from tuning.layout;
    `budget`: count the compute spent (a first attempt's check), else 0."""
    # The clock of this invocation (set by the Snakefile's main process and passed to its jobs),
    # so growing n_trials later runs the new slots; the study's own start is the fallback.
    started = float(os.environ.get(RUN_STARTED_ENV) or study.user_attrs.get(STARTED_ATTR, time.time()))
    spent = spent_compute(study, tuning, tuning.budget.unit) if budget and tuning.budget else 0.0
    layout = tuning.layout
    return StudyState(own_trials(study), time.time(), started, spent,
                      has_checkpoint=lambda slot: layout.trial(slot).last_checkpoint() is not None,
                      paused_checkpoint=lambda trial: paused_checkpoint(trial, layout))


def claim_trial(study: optuna.Study, slot: int, tuning: TuningParams) -> tuple[optuna.Trial | None, FrozenTrial | None]:
    """The trial this job runs for `slot`, as (trial, None); or (None, finished) if done already.
    Executes decide_slot's decision in the journal. Raises SlotSkipped when the study's time or
    compute budget is spent before the slot's first attempt."""
    # A database storage's trials whose process stopped beating (a dead node) are failed first, so
    # that they count as what they are (Optuna's own sweep; nothing where there are no heartbeats).
    fail_stale_trials(study)
    first = not slot_attempts(study.get_trials(deepcopy=False), slot)
    # A first attempt's budget check and the trial it lets start are one step (the claim lock), so
    # jobs starting side by side never both see the same compute left, nor resume the same paused
    # trial. Nothing else a first attempt decides depends on the others (a new trial's number is
    # the storage's to give), so without a budget or resume_pruned, slots claim side by side.
    locked = first and (tuning.budget is not None or bool(tuning.resume_pruned))
    with claiming(tuning.layout, tuning.storage, tuning.study_name) if locked else contextlib.nullcontext():
        enqueue = enqueued_configurations(study, tuning)
        decision = decide_slot(slot, study_state(study, tuning, budget=first), SlotSettings.of(tuning, slot, enqueue))
        if decision.kind == SKIP:
            raise SlotSkipped(decision.reason)
        if decision.kind == FINISHED:
            return None, decision.trial
        if decision.reason == INTERRUPTED:
            fail_interrupted(study, decision.trial)
        # The slot and attempt are part of the new trial from its creation: a job killed a moment
        # later leaves a RUNNING trial that the next run finds in its slot, never an orphan.
        trial_id = create_trial(study, decision.params, tuning.space, decision.user_attrs, decision.system_attrs)
    if decision.kind in (NEW, RESUME) and slot in skipped_slots(study):  # skipped under a smaller budget: it runs now
        skip_slot(study, slot, None)
    if decision.kind == NEW:  # its rank among first attempts is its place in the journal
        number = storage_of(study).get_trial_number_from_id(trial_id)
        enqueued = enqueued_config(own_trials(study), number, enqueue)
        if enqueued is not None:
            set_params(study, trial_id, enqueued, tuning.space, {"enqueued": True})
    return optuna.Trial(study, trial_id), None


def fail_interrupted(study: optuna.Study, trial: FrozenTrial) -> None:
    """Marks `trial` (RUNNING, its process gone) FAIL with fail_reason "interrupted"."""
    storage = storage_of(study)
    trial_id = trial_id_of(study, trial.number)
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", INTERRUPTED)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # failed meanwhile by another slot's start, its heartbeat silent (database.fail_stale_trials)


def create_trial(study: optuna.Study, params: dict, space: list[search_space.Parameter],
                 user_attrs: dict, system_attrs: dict | None = None) -> int:
    """A new RUNNING trial with `params` fixed and `user_attrs` (and `system_attrs`: the pruner's
    records a resumed trial carries over, strategy.carried_over) set, in one journal write; its id.
    Wrap it in optuna.Trial only once its parameters are final: the sampler suggests the rest.

    Created directly as RUNNING rather than with enqueue_trial (WAITING): a WAITING trial could be
    popped by another process's ask() before this one.
    """
    distributions = search_space.distributions(space)
    params = {k: v for k, v in params.items() if k in distributions}
    template = FrozenTrial(
        number=-1, state=TrialState.RUNNING, value=None, values=None,
        datetime_start=datetime.datetime.now(), datetime_complete=None,
        params=params, distributions={k: distributions[k] for k in params},
        user_attrs=dict(user_attrs), system_attrs=dict(system_attrs or {}), intermediate_values={}, trial_id=-1,
    )
    storage = storage_of(study)
    return storage.create_new_trial(storage.get_study_id_from_name(study.study_name), template_trial=template)


def set_params(study: optuna.Study, trial_id: int, params: dict, space: list[search_space.Parameter],
               user_attrs: dict) -> None:
    """Fixes `params` (and sets `user_attrs`) on a trial that has not suggested anything yet."""
    distributions = search_space.distributions(space)
    storage = storage_of(study)
    for name, value in params.items():
        if name in distributions:
            storage.set_trial_param(trial_id, name, distributions[name].to_internal_repr(value),
                                    distributions[name])
    for key, value in user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
