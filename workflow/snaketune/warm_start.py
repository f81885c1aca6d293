"""Warm start (tuning.warm_start_from): an earlier study's finished trials as this study's history.

A study starts cold: its sampler knows nothing until its own first trials finish. With
`warm_start_from`, the run adds the earlier study's completed and pruned trials to the new study
before any trial job starts (Optuna's `Study.add_trials`), so TPE, GP and the others sample from
the first slot on as if those trials had run here. The median, percentile and pareto pruners compare
with their curves too; successive halving and hyperband start their rungs afresh (a rung record is
the earlier study's pruner's, not carried over).

- **The space may have changed.** A trial is added when its parameters are a point of the new
  space: each value inside the new range or choices (a range that grew keeps it), every parameter
  the new space tunes there present. It is added under the new space's distributions, so the
  sampler sees one space. Left out, counted by reason in a notice: a value outside the new space,
  a parameter the new space tunes that the trial lacks, a parameter it tuned that the new space
  does not (its fixed value may differ).
- **The objectives may not.** Values of other metrics or directions do not compare: refused.
  Other model, data or fixed arguments are said in a notice (the history is of another setting).
- **It is history, not this study's trials.** Each added trial carries `study.WARM_START_ATTR`
  (where it came from, its number there): the CSV, the summary, the best trial, the budget and
  every slot decision leave it out (`study.own_trials`); constraints (tuning.constraints) are
  judged again on its recorded metrics (a metric it did not record: not known to violate, said).
- **Once.** The study records where its history came from (`study.WARM_STARTED_ATTR`) once all
  of it is in: later runs never read the earlier study again (it may be gone), and a later
  warm_start_from naming another study is said to have no effect. A run cut short while adding
  adds what is missing, each earlier trial once; an earlier study that cannot be read is never
  recorded as added.
- `enqueue_best: k` also runs the earlier study's k best fitting configurations first, through
  the same queue as tuning.enqueue_trials (`study.WARM_START_ENQUEUED_ATTR`).

Written here because Optuna has no warm start across studies beyond `add_trials`, which takes
trials as they are: fitting them to a changed space, and keeping them out of a study's own
accounting, is snaketune's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from snaketune import metrics, strategy
from snaketune import space as search_space
from snaketune import study as studies
from snaketune.config import TuningConfig, TuningParams
from snaketune.errors import describe_error
from snaketune.locks import claiming


@dataclass(frozen=True)
class History:
    """What a warm start adds: `trials` (FrozenTrials in the new space's distributions, marked
    WARM_START_ATTR), `enqueued` (the best k configurations, best first), `notices`, one line
    each, for the console and `snaketune check`."""

    trials: list[FrozenTrial] = field(default_factory=list)
    enqueued: list[dict] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    unreadable: bool = False  # the earlier study could not be read (missing, unreachable)


def fit(params: dict, space: list[search_space.Parameter]) -> tuple[dict | None, str | None]:
    """`params` (an earlier trial's) as a point of `space`: (the values in space order, None), or
    (None, why not: "outside the new space: ...", "missing ...", "tunes ..."). A conditional
    parameter counts only where its condition holds for the values before it."""
    values = {}
    for param in search_space.ordered(space):
        if not search_space.is_active(param, values):
            continue
        if param.name not in params:
            return None, f"missing {param.name}, which this study tunes"
        problem = search_space.check_value(param, params[param.name])
        if problem:
            return None, f"outside the new space: {param.name} {problem}"
        values[param.name] = params[param.name]
    extra = sorted(set(params) - set(values))
    if extra:
        return None, f"tunes {', '.join(extra)}, which this study does not (or not there)"
    return values, None


def read_history(tune: TuningConfig) -> tuple[History, list[str]]:
    """(the history tuning.warm_start_from adds, problems 'tuning.warm_start_from: ...'). Reads the
    earlier study; raises nothing for a study that is missing or unreachable (a problem)."""
    tuning = tune.tuning
    source = tuning.warm_start
    path = "tuning.warm_start_from"
    if tuning.sampler == "GridSampler":
        return History(), [f"{path}: GridSampler runs every grid point once whatever ran before; warm-start "
                           "a sampler that learns from trials (TPESampler, GPSampler, ...)"]
    try:
        earlier = studies.load_study(source.output_dir or tuning.output_dir, source.study_name, url=source.storage)
    except Exception as error:  # noqa: BLE001 (missing, ambiguous, unreachable: each says what it is)
        return History(unreadable=True), [f"{path}: cannot read the earlier study: {describe_error(error)}"]
    names = studies.objective_names(earlier)
    directions = [d.name.lower() for d in earlier.directions]
    if (names, directions) != (list(tuning.metrics), list(tuning.directions)):
        return History(), [f"{path}: {source.where} optimised {names} ({', '.join(directions)}), this study "
                           f"{list(tuning.metrics)} ({', '.join(tuning.directions)}): their values do not compare. "
                           "Warm-start from a study with the same evaluation_metrics and evaluation_direction"]
    finished = [t for t in studies.latest_attempts(earlier) if t.state in studies.FINISHED]
    added, left_out = history_from(finished, tuning, source.where, earlier.study_name)
    notices = [f"{path}: {len(added)} of {len(finished)} finished trials of {source.where} are this study's history"
               + (f"; left out: {'; '.join(f'{len(numbers)} {kind} (trials {_numbers(numbers)})' for kind, numbers in left_out.items())}"
                  if left_out else "")]
    for constraint in tuning.constraints:
        unmeasured = [t.user_attrs[studies.WARM_START_ATTR]["trial"] for t in added
                      if constraint.metric not in t.user_attrs.get("metrics", {})]
        if unmeasured:
            notices.append(f"{path}: {len(unmeasured)} of the added trials did not record {constraint.metric} "
                           f"(trials {_numbers(unmeasured)}): not known to break tuning.constraints, they count as "
                           "feasible")
    changed = studies.changed_parts(earlier.user_attrs.get(studies.DEFINITION_ATTR) or {}, tuning, tune.definition)
    if changed:
        notices.append(f"{path}: {source.where} ran with other {', '.join(changed)}: its trials steer the sampler "
                       "as history of another setting")
    problems = []
    enqueued = best_configurations(added, tuning, source.enqueue_best)
    if source.enqueue_best and len(tuning.enqueue_trials) + len(enqueued) > tuning.n_trials:
        problems.append(f"{path}.enqueue_best: {len(enqueued)} configurations and {len(tuning.enqueue_trials)} of "
                        f"tuning.enqueue_trials for {tuning.n_trials} trials; raise n_trials or enqueue fewer")
    if source.enqueue_best > len(enqueued):
        notices.append(f"{path}.enqueue_best: {len(enqueued)} of {source.enqueue_best} configurations: the earlier "
                       "study has no more completed feasible trials that fit this space")
    return History(added, enqueued, notices), problems


def history_from(finished: list[FrozenTrial], tuning: TuningParams, where: str, study_name: str
                 ) -> tuple[list[FrozenTrial], dict[str, list[int]]]:
    """The earlier study's `finished` trials that fit `tuning.space`, as this study's history
    (`_as_history`), and {why: [earlier trial numbers]} of those left out. Pure: the replay bench
    warm-starts its studies with it too."""
    distributions = search_space.distributions(tuning.space)
    added, left_out = [], {}
    for trial in finished:
        values, why = fit(trial.params, tuning.space)
        if why:
            kind = why.split(":", 1)[0] if why.startswith("outside") else why
            left_out.setdefault(kind, []).append(trial.number)
            continue
        added.append(_as_history(trial, values, distributions, tuning, where, study_name))
    return added, left_out


def best_configurations(history: list[FrozenTrial], tuning: TuningParams, k: int) -> list[dict]:
    """The parameters of the `k` best completed feasible trials of `history`, best first: by the
    first objective in its direction (with several, those on the Pareto front first)."""
    completed = [t for t in history if t.state == TrialState.COMPLETE and studies.feasible(t) is not False]
    if not k or not completed:
        return []
    signs = [1.0 if d == "minimize" else -1.0 for d in tuning.directions]
    front = set()
    if len(signs) > 1:
        directions = [optuna.study.StudyDirection[d.upper()] for d in tuning.directions]
        front = {id(t) for t in studies.pareto_front(completed, directions)}  # not yet numbered: by identity
    ranked = sorted(completed, key=lambda t: (id(t) not in front, signs[0] * t.values[0]))
    return [dict(t.params) for t in ranked[:k]]


def _as_history(trial: FrozenTrial, values: dict, distributions: dict, tuning: TuningParams, where: str,
                study_name: str) -> FrozenTrial:
    """An earlier trial as a trial of this study: its values, curve and metrics, under this
    study's distributions, with its constraints judged by this study's (tuning.constraints)."""
    measured = trial.user_attrs.get("metrics", {})
    constraints = metrics.constraint_values(tuning.constraints, measured, unmeasured=0.0)
    origin = {"study": where, "study_name": study_name, "trial": trial.number}
    vectors = trial.user_attrs.get(strategy.INTERMEDIATE_VECTORS_ATTR)  # pruner: pareto's curves
    return optuna.trial.create_trial(
        state=trial.state, values=trial.values, params=values,
        distributions={name: distributions[name] for name in values},
        intermediate_values=dict(trial.intermediate_values),
        user_attrs={studies.WARM_START_ATTR: origin, "metrics": measured,
                    **({strategy.INTERMEDIATE_VECTORS_ATTR: vectors} if vectors else {})},
        system_attrs={f"constraints:{name}": value for name, value in constraints.items()})


def _numbers(numbers: list[int], shown: int = 8) -> str:
    return ", ".join(map(str, numbers[:shown])) + (f", ... ({len(numbers)})" if len(numbers) > shown else "")


def _pending(tune: TuningConfig) -> tuple[bool, bool, dict | None]:
    """(whether the run adds a warm start's history: one is configured and the study, if it exists,
    has not recorded one; whether the study has trials of its own already; its record of the
    history it holds, WARM_STARTED_ATTR, or None). Read-only."""
    tuning = tune.tuning
    if tuning.warm_start is None:
        return False, False, None
    study = studies.load_study(tuning.output_dir, tuning.study_name, missing_ok=True, url=tuning.storage)
    if study is None:
        return True, False, None
    record = study.user_attrs.get(studies.WARM_STARTED_ATTR)
    return record is None, bool(studies.own_trials(study)), record


def _settled(tune: TuningConfig) -> tuple[History | None, list[str], list[str]]:
    """(the history to add, None when nothing is to be added now; problems; notices):
    read_history's, except that
    - a study holding the history of another earlier study than warm_start_from names now keeps it
      (a notice: a study's history is added once);
    - a study with trials of its own goes on without its history when the earlier study cannot be
      read (a notice; nothing is recorded, so a later run adds it once it can be read), and refuses
      enqueue_best, whose configurations were meant to run first."""
    pending, started, record = _pending(tune)
    source = tune.tuning.warm_start
    if not pending:
        if record is not None and source is not None and record.get("from") != source.where:
            return None, [], [f"tuning.warm_start_from: the study holds the history of {record.get('from')} "
                              f"already, added once; {source.where} is not added (tune a new output_dir "
                              "to start from it)"]
        return None, [], []
    history, problems = read_history(tune)
    if problems and started and history.unreadable:
        return None, [], [f"{problems[0]}; the study, which has trials of its own, goes on without that history "
                          "for now"]
    if started and source.enqueue_best:
        problems.append("tuning.warm_start_from.enqueue_best: the study has trials of its own already, so the "
                        "earlier study's best configurations can no longer run first; remove enqueue_best (its "
                        "history is still added)")
    return history, problems, history.notices


def check(tune: TuningConfig) -> tuple[list[str], list[str]]:
    """(problems, notices) of tuning.warm_start_from, before a run (check.accepted_config): what
    the history will be, or why it cannot be. Nothing when the study holds its history already."""
    _, problems, notices = _settled(tune)
    return problems, notices


def start(tune: TuningConfig) -> list[str]:
    """Add the warm start's history to the study, once (the run's main process, before any job:
    Snakemake's onstart, holding the run lock); returns the lines to print. Creates the study if
    it is new (as its first trial would, with its definition)."""
    history, problems, notices = _settled(tune)
    if problems:  # checked at parse time; the earlier study changed or went since
        raise RuntimeError("; ".join(problems))
    if history is None:  # nothing to add now (added before, or unreadable for now): nothing recorded
        return [f"snaketune: warm start: {line}" for line in notices]
    tuning = tune.tuning
    study = studies.open_study(tuning, definition=tune.definition)
    with claiming(tuning.layout, tuning.storage, tuning.study_name):
        present = {t.user_attrs[studies.WARM_START_ATTR]["trial"] for t in study.get_trials(deepcopy=False)
                   if studies.is_history(t)}
        study.add_trials([t for t in history.trials
                          if t.user_attrs[studies.WARM_START_ATTR]["trial"] not in present])
        if history.enqueued:
            study.set_user_attr(studies.WARM_START_ENQUEUED_ATTR, history.enqueued)
        study.set_user_attr(studies.WARM_STARTED_ATTR, {"from": tuning.warm_start.where, "trials": len(history.trials),
                                                        "at": time.time()})
    return [f"snaketune: warm start: {line}" for line in notices]
