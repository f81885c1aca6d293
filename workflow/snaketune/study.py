"""The study: its trials' outcomes, opening and reading it, its best trials, and what defines it.

A Snakemake job `trial_<i>` is slot i of the budget, not an Optuna trial: its first attempt asks
the sampler for a new trial; a later attempt (after a failure or a kill) creates a new trial with
the same parameters, linked to the old one, so re-running the command re-runs failed trials as
they were (snaketune.scheduler decides and writes that). The storage keeps every attempt
(snaketune.storage: the one place that decides where a study is kept); the locks beside it are
snaketune.locks.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import time
import uuid
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from snaketune import metrics, strategy
from snaketune.config import TuningParams
from snaketune.errors import SnaketuneError
from snaketune.layout import ROW_REPORTS_ATTR, StudyLayout, write_json
from snaketune.locks import claiming
from snaketune.storage import record_storage, storage_of, study_storage

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyNotFound(SnaketuneError, FileNotFoundError):
    """No journal in the output directory, or no study of that name in it."""


class AmbiguousStudy(SnaketuneError, ValueError):
    """A journal holding several studies (or none yet), read without naming one."""


# What became of a trial, in the words the summaries use, from its state and fail_reason.
OUTCOMES = ("completed", "pruned", "diverged", "failed", "interrupted", "running")


def outcome(trial: FrozenTrial, run_over: bool = False) -> str:
    """One of OUTCOMES. A RUNNING trial is `interrupted` once the run is over (`run_over`: its
    process is gone, e.g. killed by SIGKILL), as is a FAIL whose reason is "interrupted"."""
    reason = str(trial.user_attrs.get("fail_reason", ""))
    if trial.state == TrialState.COMPLETE:
        return "completed"
    if trial.state == TrialState.PRUNED:
        return "diverged" if reason.startswith("diverged") else "pruned"
    if trial.state == TrialState.FAIL:
        return "diverged" if reason.startswith("diverged") else "interrupted" if reason == "interrupted" else "failed"
    return "interrupted" if run_over else "running"


def outcome_counts(trials: list[FrozenTrial], run_over: bool = False) -> dict[str, int]:
    counts = dict.fromkeys(OUTCOMES, 0)
    for trial in trials:
        counts[outcome(trial, run_over)] += 1
    return counts


def is_finished(trial: FrozenTrial) -> bool:
    """Done for good: completed, pruned, or diverged (the same parameters would diverge again)."""
    return trial.state in FINISHED or (
        trial.state == TrialState.FAIL and str(trial.user_attrs.get("fail_reason", "")).startswith("diverged"))


def open_study(tuning: TuningParams, slot: int = 0, storage: BaseStorage | None = None,
               definition: dict | None = None) -> optuna.Study:
    """The study as trial slot `slot` writes to it: created on first use, with the sampler and
    pruner of `tuning` (the resolved config's section). Readers use `load_study`.

    Records the study's definition (`study_definition(tuning, definition)`; `definition` is
    `TuningConfig.definition`) when it has none yet, or while no trial has finished (a config
    fixed after its first trials failed defines the study from then on; `definition_conflicts`
    has refused a change of space or objectives before any job)."""
    os.makedirs(tuning.output_dir, exist_ok=True)
    if storage is None:
        record_storage(tuning.layout, tuning.storage, tuning.study_name)
        # (the run's config check asked a database's schema version: check.accepted_config)
        storage = study_storage(tuning.layout, tuning.storage, check_schema=False).open()
    study = optuna.create_study(
        storage=storage,
        study_name=tuning.study_name,
        directions=tuning.directions,
        sampler=strategy.make_sampler(tuning, slot),
        pruner=strategy.make_pruner(tuning),
        load_if_exists=True,
    )
    wanted = _as_stored(study_definition(tuning, definition))
    attrs = study.user_attrs  # read once: each read is a query on a database storage
    stored = attrs.get(DEFINITION_ATTR)
    redefined = stored is None or (stored != wanted and definition is not None
                                   and not any(is_finished(t) for t in own_trials(study)))
    if redefined:
        study.set_user_attr(DEFINITION_ATTR, wanted)
    if STARTED_ATTR not in attrs:  # the clock of tuning.timeout_minutes
        study.set_user_attr(STARTED_ATTR, time.time())
    if attrs.get(SLOTS_ATTR) != tuning.n_trials:  # what the last run created
        study.set_user_attr(SLOTS_ATTR, tuning.n_trials)
    if study.metric_names is None:  # every reader (status, plots, dashboard) names objectives so
        with warnings.catch_warnings():  # experimental since Optuna 3.2, unchanged since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(tuning.metrics))
    if redefined or attrs.get(STUDY_ID_ATTR) is None or identity(tuning.layout) is None:
        with claiming(tuning.layout, tuning.storage, tuning.study_name):  # jobs side by side give the study one id
            record_identity(study, tuning.layout)
    return study


# The study's id: a user attribute of the study in its journal, and study.json's `study_id`.
STUDY_ID_ATTR = "snaketune_study_id"
OUTPUT_DIR_ATTR = "snaketune_output_dir"  # host:path of the folder the study's id was given in


def identity(layout: StudyLayout) -> dict | None:
    """study.json ({study_id, study_name, directions, metric_names, created_at}), or None."""
    try:
        return json.loads(layout.identity.read_text())
    except (OSError, ValueError):
        return None


def record_identity(study: optuna.Study, layout: StudyLayout) -> str:
    """Give `study` its id, once, and write study.json when it does not name it; returns the id.
    Call it holding the study's claim lock (locks.claiming), so that jobs starting side by side
    agree. A study from before ids were kept is given one here. (A journal without an id beside a
    study.json is refused before any job: recovery.journal_problem.)"""
    attrs = study.user_attrs
    study_id = attrs.get(STUDY_ID_ATTR)
    if study_id is None:
        study_id = uuid.uuid4().hex
        study.set_user_attr(STUDY_ID_ATTR, study_id)
        # where its folders are: a database holds other output_dirs' studies too (recovery.journal_problem)
        study.set_user_attr(OUTPUT_DIR_ATTR, f"{socket.gethostname()}:{layout.output_dir}")
    known = identity(layout) or {}
    if (known.get("study_id"), known.get("definition")) != (study_id, attrs.get(DEFINITION_ATTR)):
        # the definition too, so that a journal rebuilt from the folders keeps what it is checked against
        write_json(layout.identity, {
            "study_id": study_id, "study_name": study.study_name,
            "directions": [d.name.lower() for d in study.directions], "metric_names": study.metric_names,
            "created_at": known.get("created_at") or datetime.datetime.now().isoformat(timespec="seconds"),
            "definition": attrs.get(DEFINITION_ATTR)})
    return study_id



def load_study(output_dir: str | Path, study_name: str | None = None,
               missing_ok: bool = False, url: str | None = None) -> optuna.Study | None:
    """The study of `output_dir`, to read (aggregate, report, status, best, export): in its
    `study.journal`, or in the database its run recorded there or `url` names (tuning.storage;
    storage.study_storage decides).

    `study_name` may be left out when the journal holds one study, or the database's study was
    recorded in output_dir. Nothing is created: a missing journal or study raises StudyNotFound (a
    FileNotFoundError), or returns None with `missing_ok`; a journal with several studies and no
    `study_name` raises AmbiguousStudy (a ValueError); an unreachable database raises
    database.StorageUnreachable.
    """
    store = study_storage(StudyLayout(output_dir), url)
    path = store.where
    study_name = study_name or store.study_name
    if not store.exists():
        if missing_ok:
            return None
        raise StudyNotFound(f"no journal at {path}: is {output_dir} a study's output directory?"
                            if not store.shared else f"{path} holds no study yet")
    storage = store.open()
    names = optuna.get_all_study_names(storage)
    if study_name is None:
        if not names and not missing_ok:
            raise AmbiguousStudy(f"{path} holds no study yet")
        if len(names) > 1:
            raise AmbiguousStudy(f"{path} holds several studies ({', '.join(names)}); name one "
                                 "(--study-name)")
        study_name = names[0] if names else None
    if study_name not in names:
        if missing_ok:
            return None
        raise StudyNotFound(f"{path} holds no study named {study_name!r} "
                                f"(it holds: {', '.join(names) or 'none'})")
    return _read(storage, study_name)


def _read(storage: BaseStorage, study_name: str) -> optuna.Study:
    """Study `study_name` of `storage`, to read: its sampler is never asked for anything, so a
    RandomSampler, the cheapest to build."""
    return optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler())


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (one objective) or the Pareto front (several), among the feasible completed
    trials (tuning.constraints); empty before one completes, or when none is feasible.

    With one objective, among each slot's latest attempt rather than Optuna's `study.best_trial`:
    a completed trial whose checkpoint was deleted is trained again in its slot (scheduler.decide_slot), and
    the slot's folder then holds the new attempt's model. Several objectives: Optuna's front (such
    a slot is not trained again, no best model being built).
    """
    if len(study.directions) > 1:
        # over this study's own trials: a warm start's history has no model here
        return pareto_front(own_trials(study), study.directions)
    completed = [t for t in latest_attempts(study) if t.state == TrialState.COMPLETE and feasible(t) is not False]
    if not completed:
        return []
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return [pick(completed, key=lambda t: t.value)]


def pareto_front(trials: list[FrozenTrial], directions: list) -> list[FrozenTrial]:
    """The Pareto-optimal completed ones of `trials` (Optuna's front, Study.best_trials' rule:
    infeasible trials left out where constraints were recorded); `directions` are StudyDirections."""
    from optuna.study._multi_objective import _get_pareto_front_trials_by_trials  # no public form over a subset

    return _get_pareto_front_trials_by_trials(trials, directions, consider_constraint=any(t.constraints for t in trials))


def record_constraints(trial: optuna.Trial, constraints: list[metrics.Constraint], measured: dict,
                       completed: bool) -> None:
    """Record on `trial`, before it is told, its value of each of tuning.constraints
    (metrics.constraint_values over its finite metrics `measured`) with Optuna's
    Trial.set_constraint: Optuna's samplers (strategy.CONSTRAINED_SAMPLERS) and its Pareto front
    read them from there, and `feasible` does."""
    for name, value in metrics.constraint_values(constraints, measured, metrics.UNMEASURED_VIOLATION if completed else 0.0).items():
        trial.set_constraint(name, value)


def feasible(trial: FrozenTrial) -> bool | None:
    """Whether the trial kept every constraint recorded on it (record_constraints); None: none was
    (a study without tuning.constraints, a failed trial)."""
    if not trial.constraints:
        return None
    return all(value <= 0.0 for value in trial.constraints.values())


def violated_constraints(trial: FrozenTrial) -> list[str]:
    """The constraints the trial broke, by name ("peak_memory_gib <= 20"), with how far: "(+15%)",
    or "(not measured)" where the trial has no value of the metric (metrics.UNMEASURED_VIOLATION)."""
    measured = trial.user_attrs.get("metrics", {})

    def how_far(name: str, value: float) -> str:
        if name.split(" ", 1)[0] not in measured:
            return "not measured"
        return f"{value:+.4g}" if name.endswith(" 0") else f"{value:+.0%}"  # a bound 0: the plain excess

    return [f"{name} ({how_far(name, value)})" for name, value in trial.constraints.items() if value > 0.0]


def step_reports(trial: FrozenTrial) -> dict[int, float]:
    """The objective's values the trial reported during training, by training step; {} for a
    trial whose reports are per-row scores (ROW_REPORTS_ATTR)."""
    return {} if trial.user_attrs.get(ROW_REPORTS_ATTR) else trial.intermediate_values


def objective_names(study: optuna.Study, configured: list[str] | str | None = None) -> list[str]:
    """The objectives' names: `configured` when given (a tune config's tuning.evaluation_metrics:
    a study made without snaketune's names has only Optuna's), else those set on the study when it
    was created (older journals: from the study's definition), else Optuna's generic names."""
    if configured:
        return [configured] if isinstance(configured, str) else list(configured)
    if study.metric_names:
        return list(study.metric_names)
    definition = study.user_attrs.get(DEFINITION_ATTR) or {}
    if definition.get("metrics"):
        return list(definition["metrics"])
    return ["value"] if len(study.directions) == 1 else [f"objective_{i}" for i in range(len(study.directions))]


# A trial an earlier study ran, added to this one as history (tuning.warm_start_from:
# snaketune.warm_start): {"study": where it was, "study_name", "trial": its number there}. Optuna's
# sampler and pruner learn from it; every count, table, budget and decision of this study leaves it
# out (own_trials, latest_attempts).
WARM_START_ATTR = "warm_start"


# Study attributes of a warm start: where its history came from, once all of it is in (set last,
# so a run cut short adds what is missing next time), and the earlier study's best configurations
# it runs first (tuning.warm_start_from's enqueue_best), in order.
WARM_STARTED_ATTR = "snaketune_warm_started_from"
WARM_START_ENQUEUED_ATTR = "snaketune_warm_start_enqueued"


def enqueued_configurations(study: optuna.Study, tuning: TuningParams) -> list[dict]:
    """The configurations the study's first trials take, in order: tuning.enqueue_trials, then a
    warm start's best configurations (WARM_START_ENQUEUED_ATTR; read only where a warm start is
    configured: a study attribute read is a query per claim on a database)."""
    if tuning.warm_start is None or not tuning.warm_start.enqueue_best:
        return list(tuning.enqueue_trials)
    return [*tuning.enqueue_trials, *study.user_attrs.get(WARM_START_ENQUEUED_ATTR, [])]


def is_history(trial: FrozenTrial) -> bool:
    """Whether the trial is an earlier study's, added by a warm start (WARM_START_ATTR)."""
    return WARM_START_ATTR in trial.user_attrs


def own_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials in number order, less the history a warm start added."""
    return [t for t in study.get_trials(deepcopy=False) if not is_history(t)]


def latest_attempts(study: optuna.Study) -> list[FrozenTrial]:
    """One trial per slot, its latest attempt; trials made outside a slot are kept as they are,
    but for the placeholders of a rebuilt journal (LOST_ATTR: a number no trial folder held) and
    a warm start's history (WARM_START_ATTR)."""
    by_slot, others = {}, []
    for trial in own_trials(study):
        slot = trial.user_attrs.get("slot")
        if slot is None:
            if LOST_ATTR not in trial.user_attrs:
                others.append(trial)
        elif slot not in by_slot or trial.number > by_slot[slot].number:
            by_slot[slot] = trial
    return sorted([*by_slot.values(), *others], key=lambda t: (t.user_attrs.get("slot", 1e9), t.number))


# A trial of a journal rebuilt from the trial folders that stands for an attempt no folder held
# (recovery.rebuild_journal): FAIL, with its slot when a later attempt names it (retry_of).
LOST_ATTR = "lost"

STARTED_ATTR = "snaketune_started_at"
# The run's trial slots (n_trials as resolved: written, a budget's, the grid's or the default 10),
# for `snaketune status`: the YAML alone does not say them.
SLOTS_ATTR = "snaketune_trial_slots"
RUN_STARTED_ENV = "SNAKETUNE_RUN_STARTED"


SKIPPED_SLOT_ATTR = "snaketune_skipped_slot_"


def skipped_slots(study: optuna.Study) -> dict[int, str]:
    """{slot: why} of the slots skipped for lack of budget (and not started since)."""
    prefix = SKIPPED_SLOT_ATTR
    return {int(k[len(prefix):]): v for k, v in study.user_attrs.items() if k.startswith(prefix) and v}


def skip_slot(study: optuna.Study, slot: int, reason: str | None) -> None:
    """Records why `slot` was skipped; None: it started after all (a study attribute cannot be
    removed, so it is emptied)."""
    study.set_user_attr(f"{SKIPPED_SLOT_ATTR}{slot}", reason)


# What a study's trials must share to be comparable: changing any of it needs a new study.
DEFINITION_ATTR = "snaketune_definition"


def study_definition(tuning: TuningParams, definition: dict | None = None) -> dict:
    """What a study's trials share, so that their results compare: the search space and the
    objectives, the constraints their feasibility is judged by (tuning.constraints, when any: each
    trial records its values as it is told, and Optuna's samplers need every trial judged by the
    same ones), and (`definition`, from `TuningConfig.definition`) the model, the data, the fixed
    training and PEFT arguments. Stored in the journal by the first trial."""
    space = {p.name: {k: v for k, v in p.as_dict().items() if k != "name"} for p in tuning.space}
    constraints = {"constraints": [c.as_dict() for c in tuning.constraints]} if tuning.constraints else {}
    return {"space": space, "metrics": tuning.metrics, "directions": tuning.directions, **constraints,
            **(definition or {})}


def _as_stored(definition: dict) -> dict:
    return json.loads(json.dumps(definition, default=str))  # the JSON types the journal gives back


def changed_parts(stored: dict, tuning: TuningParams, definition: dict | None = None) -> list[str]:
    """The words (DEFINITION_PARTS) of each part of a study's stored definition (DEFINITION_ATTR)
    other than what `tuning` and `definition` define now: "model", "data", ..."""
    wanted = _as_stored(study_definition(tuning, definition))
    return [words for part, (_, words) in DEFINITION_PARTS.items()
            if part in stored and part in wanted and stored[part] != wanted[part]]


# The YAML path and the words for each part of a study's definition, in conflict messages.
DEFINITION_PARTS = {"model": ("model", "model"), "data": ("data", "data"),
                    "training": ("tuning.fixed_training_params", "fixed training parameters"),
                    "peft": ("tuning.fixed_peft_params", "PEFT settings"),
                    "generation": ("generation", "generation settings"),
                    "lm_eval": ("lm_eval", "lm-eval settings")}


def definition_conflicts(tuning: TuningParams, definition: dict | None = None) -> list[str]:
    """Problems ('yaml.path: ...') if the config no longer matches the study already in its journal
    (`definition` as for `study_definition`). The search space and objectives never change; the
    model, data and fixed arguments may while no trial has finished (nothing to compare with yet:
    a config fixed after its first trials failed).

    Read-only: a journal that does not exist yet is not created.
    """
    store = study_storage(tuning.layout, tuning.storage)
    path = store.where
    if not store.exists():
        return []
    # One study per output_dir: its trial_<i>/ folders, table and best model are that study's (a
    # database holds other folders' studies too).
    storage = store.open()  # once: the study below is read from the same storage (one journal parse, one engine)
    names = optuna.get_all_study_names(storage)
    if names and tuning.study_name not in names and not store.shared:
        return [f"tuning.study_name: {path} holds the study {names[0]!r}"
                + (f" (and {', '.join(map(repr, names[1:]))})" if names[1:] else "")
                + f", not {tuning.study_name!r}; an output_dir holds one study: set study_name back "
                f"to {names[0]!r} to continue it, or give the new study a new tuning.output_dir"]
    study = _read(storage, tuning.study_name) if tuning.study_name in names else None
    stored = None if study is None else study.user_attrs.get(DEFINITION_ATTR)
    if stored is None:
        return []
    wanted = _as_stored(study_definition(tuning, definition))
    if stored == wanted:
        return []
    def hint(what: str) -> str:  # (not str.format: a database URL's ${VAR} has braces)
        return (f"study {tuning.study_name!r} in {path} was run with other {what}; "
                "to tune a new one, set a new tuning.output_dir (its trial files live there too; "
                "the existing study is kept as it is)")

    problems = []
    if stored["space"] != wanted["space"]:
        changed = sorted(name for name in set(stored["space"]) | set(wanted["space"])
                         if stored["space"].get(name) != wanted["space"].get(name))
        problems.append("tuning.tunable_*_params: " + hint(f"search space (changed: {', '.join(changed)})"))
    if stored["metrics"] != wanted["metrics"] or stored["directions"] != wanted["directions"]:
        problems.append("tuning.evaluation_metrics: " + hint(
            f"objectives ({stored['metrics']} {stored['directions']})"))
    finished = any(is_finished(t) for t in own_trials(study))
    if finished and stored.get("constraints", []) != wanted.get("constraints", []):
        ran = ", ".join(name for c in stored.get("constraints", [])
                        for name, _, _ in metrics.Constraint.from_fields(c).bounds()) or "none"
        problems.append(f"tuning.constraints: study {tuning.study_name!r} in {path} judged its trials by other "
                        f"constraints ({ran}), recorded on each finished trial; set them back to continue it, or "
                        "set a new tuning.output_dir (warm_start_from the old one carries its trials over, judged "
                        "by the new constraints)")
    for part, (where, words) in DEFINITION_PARTS.items():
        if finished and part in stored and part in wanted and stored[part] != wanted[part]:
            old, new = stored[part], wanted[part]
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if part not in ("training", "peft"):
                problems.append(f"{where}: " + hint(f"{words} (changed: {', '.join(changed)})"))
                continue
            # A fixed argument: named by the YAML path that set it, with the value the study ran with.
            group = "training" if part == "training" else "peft"
            for key in changed:
                yaml_path = tuning.argument_paths.get((group, key), f"{where}.{key}")
                name = yaml_path.rsplit(".", 1)[-1]
                ran = f"{name}: {json.dumps(old[key])}" if key in old else f"no {name}"
                back = f"set it back to {json.dumps(old[key])}" if key in old else "remove it"
                problems.append(f"{yaml_path}: study "
                                f"{tuning.study_name!r} in {path} ran with {ran} (now {json.dumps(new.get(key))}): "
                                f"{back} to continue it, or set a new tuning.output_dir to tune a new study "
                                "(the existing one is kept as it is)")
    return problems


def restore_told_trials(tuning: TuningParams) -> list[str]:
    """Trials whose result is in their slot's metrics.json while the journal still says RUNNING
    (the record of the `tell` was cut short: see storage.JournalFile) are told again from that file.

    Call it holding the study's run lock (`hold_study`): then no trial of the study is running, and
    a RUNNING trial is one whose process is gone. Returns a line per trial restored.
    """
    study = load_study(tuning.output_dir, tuning.study_name, missing_ok=True, url=tuning.storage)
    if study is None:
        return []
    storage, said = storage_of(study), []
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in latest_attempts(study):
        slot = trial.user_attrs.get("slot")
        if trial.state != TrialState.RUNNING or slot is None:
            continue
        path = tuning.layout.trial(slot).metrics
        try:
            record = json.loads(path.read_text())
            state = TrialState[record["state"]]
            values = [float(record["values"][m]) for m in tuning.metrics] if state == TrialState.COMPLETE else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.get("trial_number") != trial.number or state not in (*FINISHED, TrialState.FAIL):
            continue
        storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                                       state, values)
        said.append(f"snaketune: trial {trial.number} (trial_{slot}/) finished {state.name}, but the journal's "
                    f"record of it was cut short; told again from {path}")
    return said

class RepeatedFailure(SnaketuneError, RuntimeError):
    """Trials with different parameters failed with the same error in this run: a cause outside
    the parameters (the config, the data, the environment), which every other trial would meet."""


def repeated_failure(study: optuna.Study, single_point: bool = False) -> str | None:
    """Why no further slot should start in this run, or None: two trials of this invocation (or
    one, when the space is a `single_point`) with different parameters failed with the same
    error (their directories aside), and none completed. Divergence and interruptions are about
    the parameters or the run, not the config, and do not count."""
    started = float(os.environ.get(RUN_STARTED_ENV) or 0)
    this_run = [t for t in latest_attempts(study)
                if t.datetime_start is not None and t.datetime_start.timestamp() >= started - 1]
    if any(t.state == TrialState.COMPLETE for t in this_run):
        return None
    by_reason: dict[str, list[FrozenTrial]] = {}
    for trial in this_run:
        if outcome(trial) == "failed" and trial.user_attrs.get("fail_reason"):
            reason = re.sub(r"trial_\d+", "trial_<i>", trial.user_attrs["fail_reason"])
            by_reason.setdefault(reason, []).append(trial)
    for reason, trials in by_reason.items():
        distinct = {json.dumps(t.params, sort_keys=True, default=str) for t in trials}
        if len(distinct) >= 2 or (single_point and trials):
            numbers = ", ".join(f"trial_{t.user_attrs.get('slot')} (trial {t.number})" for t in trials)
            return (f"{numbers} failed with the same error for different parameters, so the cause is "
                    f"not the parameters but the config, data or environment, and every other trial "
                    f"would fail the same way: {reason[:1000]}")
    return None
