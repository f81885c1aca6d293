"""The study: one Optuna journal file every trial process shares, and trial slots on top of it.

A Snakemake job `trial_<i>` is slot i of the budget, not an Optuna trial: its first attempt asks
the sampler for a new trial; a later attempt (after a failure or a kill) creates a new trial with
the same parameters, linked to the old one, so re-running the command re-runs failed trials as
they were. The journal keeps every attempt.
"""

from __future__ import annotations

import datetime
import json
import os
import time

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from snaketune import space as search_space
from snaketune import strategy

JOURNAL_NAME = "study.journal"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def is_finished(trial: FrozenTrial) -> bool:
    """Done for good: completed, pruned, or diverged (the same parameters would diverge again)."""
    return trial.state in FINISHED or (
        trial.state == TrialState.FAIL and str(trial.user_attrs.get("fail_reason", "")).startswith("diverged"))


def journal_path(tuning: dict) -> str:
    return os.path.join(tuning["output_dir"], JOURNAL_NAME)


# The lock is held only while one record is appended (milliseconds), so a lock file older than
# this was left by a killed process and is broken, rather than waited on forever.
LOCK_GRACE_SECONDS = 10


def open_storage(path: str) -> JournalStorage:
    # JournalFileOpenLock (open(O_CREAT|O_EXCL)) works on every filesystem, NFS included.
    lock = JournalFileOpenLock(path, grace_period=LOCK_GRACE_SECONDS)
    return JournalStorage(JournalFileBackend(path, lock_obj=lock))


def open_study(tuning: dict, slot: int = 0, storage: JournalStorage | None = None) -> optuna.Study:
    os.makedirs(tuning["output_dir"], exist_ok=True)
    storage = storage or open_storage(journal_path(tuning))
    study = optuna.create_study(
        storage=storage,
        study_name=tuning["study_name"],
        directions=tuning["directions"],
        sampler=strategy.make_sampler(tuning, slot),
        pruner=strategy.make_pruner(tuning),
        load_if_exists=True,
    )
    if DEFINITION_ATTR not in study.user_attrs:
        study.set_user_attr(DEFINITION_ATTR, study_definition(tuning))
    if STARTED_ATTR not in study.user_attrs:  # the clock of tuning.timeout_minutes
        study.set_user_attr(STARTED_ATTR, time.time())
    return study


STARTED_ATTR = "snaketune_started_at"
RUN_STARTED_ENV = "SNAKETUNE_RUN_STARTED"


class SlotSkipped(Exception):
    """The study's time budget was spent before this slot started: it finishes as skipped."""


def skipped_slots(study: optuna.Study) -> dict[int, str]:
    prefix = "snaketune_skipped_slot_"
    return {int(k[len(prefix):]): v for k, v in study.user_attrs.items() if k.startswith(prefix)}


def skip_slot(study: optuna.Study, slot: int, reason: str) -> None:
    study.set_user_attr(f"snaketune_skipped_slot_{slot}", reason)


# What a study's trials must share to be comparable: changing any of it needs a new study.
DEFINITION_ATTR = "snaketune_definition"


def study_definition(tuning: dict) -> dict:
    space = {p["name"]: {k: v for k, v in p.items() if k != "name"} for p in tuning["space"]}
    return {"space": space, "metrics": tuning["metrics"], "directions": tuning["directions"]}


def definition_conflicts(tuning: dict) -> list[str]:
    """Problems ('yaml.path: ...') if the config no longer matches the study already in its journal.

    Read-only: a journal that does not exist yet is not created.
    """
    path = journal_path(tuning)
    if not os.path.exists(path):
        return []
    storage = open_storage(path)
    names = {s.study_name: s for s in storage.get_all_studies()}
    if tuning["study_name"] not in names:
        return []
    stored = names[tuning["study_name"]].user_attrs.get(DEFINITION_ATTR)
    if stored is None:
        return []
    wanted = json.loads(json.dumps(study_definition(tuning)))  # same JSON types as the journal's
    hint = (f"study {tuning['study_name']!r} in {path} was run with a different {{what}}; "
            "to tune a new one, set a new tuning.output_dir (its trial files live there too; "
            "the existing study is kept as it is)")
    problems = []
    if stored["space"] != wanted["space"]:
        changed = sorted(name for name in set(stored["space"]) | set(wanted["space"])
                         if stored["space"].get(name) != wanted["space"].get(name))
        problems.append("tuning.tunable_*_params: " + hint.format(what=f"search space (changed: {', '.join(changed)})"))
    if stored["metrics"] != wanted["metrics"] or stored["directions"] != wanted["directions"]:
        problems.append("tuning.evaluation_metrics: " + hint.format(
            what=f"objectives ({stored['metrics']} {stored['directions']})"))
    return problems


def slot_attempts(study: optuna.Study, slot: int) -> list[FrozenTrial]:
    """Every trial that ran in `slot`, oldest first."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("slot") == slot]


def claim_trial(study: optuna.Study, slot: int, tuning: dict) -> tuple[optuna.Trial | None, FrozenTrial | None]:
    """The trial this job runs for `slot`, as (trial, None); or (None, finished) if done already.

    A first attempt runs its grid point (GridSampler) or asks the sampler, unless it is among the
    first len(tuning.enqueue_trials) trials to start (see enqueued_config). A RUNNING trial left in
    the slot was interrupted (Snakemake runs one job per slot at a time), so it is marked FAIL and
    its parameters are run again.
    Raises SlotSkipped when the study's time budget is spent before the slot's first attempt.
    """
    attempts = slot_attempts(study, slot)
    latest = attempts[-1] if attempts else None
    if latest is not None and is_finished(latest):
        return None, latest
    # The slot and attempt are part of the new trial from its creation: a job killed a moment
    # later leaves a RUNNING trial that the next run finds in its slot, never an orphan.
    if latest is None:
        check_time_budget(study, tuning)
        attrs = {"slot": slot, "attempt": 1}
        params = strategy.grid_points(tuning["space"])[slot] if tuning["sampler"] == "GridSampler" else {}
        trial_id = create_trial(study, params, tuning, attrs)
        enqueued = enqueued_config(study, study._storage.get_trial_number_from_id(trial_id), tuning)
        if enqueued is not None:
            set_params(study, trial_id, enqueued, tuning, {"enqueued": True})
        return optuna.Trial(study, trial_id), None
    if latest.state == TrialState.RUNNING:
        storage = study._storage  # the public storage API of the study's own JournalStorage
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), latest.number)
        storage.set_trial_user_attr(trial_id, "fail_reason", "interrupted")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    attrs = {"slot": slot, "attempt": latest.user_attrs.get("attempt", 1) + 1, "retry_of": latest.number}
    # The slot's enqueued configuration again, also if its first attempt died before taking it.
    enqueued = enqueued_config(study, attempts[0].number, tuning)
    params = {**latest.params, **(enqueued or {})}
    if enqueued is not None:
        attrs["enqueued"] = True
    return optuna.Trial(study, create_trial(study, params, tuning, attrs)), None


def enqueued_config(study: optuna.Study, trial_number: int, tuning: dict) -> dict | None:
    """The enqueued configuration (tuning.enqueue_trials) of the first attempt `trial_number`, if any.

    The k-th first attempt to start takes the k-th configuration, whichever slot it runs in:
    Snakemake starts slots in no fixed order, and "evaluated first" means first in time. The rank
    is read from the journal, whose order every process sees the same, so no lock is needed.
    """
    if not tuning["enqueue_trials"]:
        return None
    rank = sum(1 for t in study.get_trials(deepcopy=False)
               if t.number < trial_number and t.user_attrs.get("attempt") == 1)
    return tuning["enqueue_trials"][rank] if rank < len(tuning["enqueue_trials"]) else None


def check_time_budget(study: optuna.Study, tuning: dict) -> None:
    if not tuning["timeout_minutes"]:
        return
    # The clock of this invocation (set by the Snakefile's main process and passed to its jobs),
    # so growing n_trials later runs the new slots; the study's own start is the fallback.
    started = float(os.environ.get(RUN_STARTED_ENV) or study.user_attrs[STARTED_ATTR])
    elapsed = (time.time() - started) / 60
    if elapsed > tuning["timeout_minutes"]:
        raise SlotSkipped(f"skipped: the study's time budget (timeout_minutes={tuning['timeout_minutes']}) "
                          f"was spent {elapsed - tuning['timeout_minutes']:.1f} min before this slot started")


def create_trial(study: optuna.Study, params: dict, tuning: dict, user_attrs: dict) -> int:
    """A new RUNNING trial with `params` fixed and `user_attrs` set, in one journal write; its id.
    Wrap it in optuna.Trial only once its parameters are final: the sampler suggests the rest.

    Created directly as RUNNING rather than with enqueue_trial (WAITING): a WAITING trial could be
    popped by another process's ask() before this one.
    """
    distributions = search_space.distributions(tuning["space"])
    params = {k: v for k, v in params.items() if k in distributions}
    template = FrozenTrial(
        number=-1, state=TrialState.RUNNING, value=None, values=None,
        datetime_start=datetime.datetime.now(), datetime_complete=None,
        params=params, distributions={k: distributions[k] for k in params},
        user_attrs=dict(user_attrs), system_attrs={}, intermediate_values={}, trial_id=-1,
    )
    storage = study._storage
    return storage.create_new_trial(storage.get_study_id_from_name(study.study_name), template_trial=template)


def set_params(study: optuna.Study, trial_id: int, params: dict, tuning: dict, user_attrs: dict) -> None:
    """Fixes `params` (and sets `user_attrs`) on a trial that has not suggested anything yet."""
    distributions = search_space.distributions(tuning["space"])
    for name, value in params.items():
        if name in distributions:
            study._storage.set_trial_param(trial_id, name, distributions[name].to_internal_repr(value),
                                           distributions[name])
    for key, value in user_attrs.items():
        study._storage.set_trial_user_attr(trial_id, key, value)
