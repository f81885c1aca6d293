"""Replay bench: Optuna samplers and pruners against the learning-curve table, hundreds of seeds in minutes.

A replayed study is the default study (config/tune.yaml) with an arm's pruner settings. Its trials
are asked exactly as a trial job asks them (`snaketune.scheduler.claim_trial`'s first attempt):
`create_trial` with the slot's fixed parameters (`strategy.slot_params`), the slot's sampler
(`strategy.make_sampler`, seeded by slot), `space.suggest`. The sampled point is
snapped to the nearest point of the table's grid (the learning rate in log space), and the trial
then reports that point's recorded eval_loss at every `report_every_steps` step and asks the
pruner (`snaketune.strategy.make_pruner`), stopping where it says, as `train.ReportAndPrune` does.
A trial's cost is its trained steps. Several trials run side by side with `--workers`: the clock is
trained steps, and a new slot starts when a worker is free, while the compute the study has
committed (finished trials' steps, running trials' max_steps: `scheduler.committed_compute`'s rule) is under
the budget.

Arms: the unpruned study of `--n-trials` trials is the baseline of each seed. Every pruned arm gets
the baseline's compute as its budget (`tuning.budget: {trained_steps: ...}`, slots past it are
skipped), so the trials pruning saves buy more trials. For each arm and seed it reports the best
eval_loss at equal compute, the compute at which it first came within 1% of the baseline's best,
and whether the pruner stopped the trial that would have finished best among those the arm started.

    python bench/replay.py [--seeds 200] [--n-trials 24] [--arms median percentile ...] [--workers 1]
                           [--processes 2] [--table bench/data/learning_curves_smollm2.json [MORE.json]]
    python bench/replay.py --validate OUTPUT_DIR [OUTPUT_DIR ...]

Training seeds: a study's tuning.seed is also its trials' training seed (SFTConfig.seed: the LoRA
initialisation and the data order), and near the optimum it moves a configuration's curve by more
than the configurations differ. Several tables pooled with `--table` (the first table, seed 0, and
`bench/learning_curves.py --training-seeds`'s) give each point a curve per training seed; replayed
seed i then trains all its trials, baseline and arms alike, under the i-th training seed in turn,
and the report breaks the gain down by training seed.

`--validate` checks the replay against a real study: it follows the study's journal operation by
operation (Optuna's own log, so the order in which parallel jobs reported and finished is the real
one) and, at every report where the trial job asked the pruner, asks the replay's pruner on the
study as it stood at that operation; at every trial its sampler proposed, it asks the replay's
sampler. It prints each disagreement and exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import copy
import heapq
import itertools
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import REPO

import optuna
import yaml
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from snaketune import space as search_space
from snaketune import strategy
from snaketune import study as studies
from snaketune.config import TuningParams
from snaketune.validate import load_tune_config, read_default_tune_yaml
from snaketune.layout import StudyLayout
from snaketune.scheduler import RESUME, SlotSettings, StudyState, create_trial, decide_slot

optuna.logging.set_verbosity(optuna.logging.ERROR)

TABLE = REPO / "bench" / "data" / "learning_curves_smollm2.json"
TRAINING_SEED = "seed"  # the table's parameter that is the training seed (SFTConfig.seed), not searched
WITHIN = 0.01  # "reached the unpruned best": within 1% of it
# Pruned arms: tuning overrides of the default study. Optuna's pruners as snaketune ships them.
ARMS = {
    "none": {"pruner": "none"},
    # The arm of bench/pruning.py's earlier real runs (best-loss ratio 1.051 at 12 trials).
    "percentile25": {"pruner": "percentile", "report_every_steps": 10,
                     "pruner_kwargs": {"percentile": 25.0, "n_startup_trials": 2, "n_warmup_steps": 10}},
    # Optuna's defaults (n_startup_trials 5, n_warmup_steps 0), reporting every 5 or 10 steps.
    "median_optuna5": {"pruner": "median", "report_every_steps": 5, "pruner_kwargs": {}},
    "median_optuna10": {"pruner": "median", "report_every_steps": 10, "pruner_kwargs": {}},
}
# Variants of Optuna's percentile rule: which share of the completed trials a trial must beat, from
# which step, after how many completed trials.
for _pct in (25, 50, 75):
    for _warmup in (10, 20):
        for _startup in (3, 5):
            ARMS[f"p{_pct}_w{_warmup}_s{_startup}"] = {
                "pruner": "percentile", "report_every_steps": 10,
                "pruner_kwargs": {"percentile": float(_pct), "n_startup_trials": _startup,
                                  "n_warmup_steps": _warmup}}


def asha(min_resource, reduction_factor: int, resume_pruned: bool | int, every: int = 10) -> dict:
    """A successive_halving arm: its first rung, η, tuning.resume_pruned (False: kill) and how often
    the trial reports."""
    return {"pruner": "successive_halving", "report_every_steps": every, "resume_pruned": resume_pruned,
            "pruner_kwargs": {"min_resource": min_resource, "reduction_factor": reduction_factor}}


ARMS.update({
    # Successive halving that kills (snaketune's successive_halving pauses unless told not to).
    "asha4": asha(10, 4, False),
    "asha2": asha(10, 2, False),
    "asha2_r20": asha(20, 2, False),
    "hyperband": {"pruner": "hyperband", "report_every_steps": 5,
                  "pruner_kwargs": {"min_resource": 5, "max_resource": 40, "reduction_factor": 3}},
    # Pause instead of kill (tuning.resume_pruned: η): a paused trial resumes from its checkpoint
    # once it is among the best 1/η of its step's values. asha4_pause is what `pruner:
    # successive_halving` alone ran until the replay across training seeds (bench/RESULTS.md).
    "asha2_pause": asha(10, 2, 2),
    "asha4_pause": asha(10, 4, 4),
    # A later first rung, pausing the worse half at step 20: what `pruner: successive_halving` alone
    # runs on the default study (report every quarter of 40 steps, first rung at half, η 2).
    "asha2_r20_pause": asha(20, 2, 2),
    # More first rungs after step 10 (asha4_pause's), for the replay across training
    # seeds: at step 20 with η 3 or 4, at step 30 with η 2, and every 5 steps with the first at 15.
    "asha3_r20_pause": asha(20, 3, 3),
    "asha4_r20_pause": asha(20, 4, 4),
    "asha2_r30_pause": asha(30, 2, 2),
    "asha2_r15_pause": asha(15, 2, 2, every=5),
    # The top-K baseline (bench/search_features.py topk) done asynchronously: one rung at step 10
    # (first report) keeping the best 1/8 or 1/9 of the values there; every later report a rung too.
    "asha8_r10_pause": asha(10, 8, 8),
    "asha9_r10_pause": asha(10, 9, 9),
    "p75_w20_s3_pause": {"pruner": "percentile", "report_every_steps": 10, "resume_pruned": 4,
                         "pruner_kwargs": {"percentile": 75.0, "n_startup_trials": 3, "n_warmup_steps": 20}},
    # The same with Optuna's min_resource "auto" (1% of the first completed trial's steps: step 1),
    # what `pruner: successive_halving` ran before its first rung became the first report.
    "asha4_auto_pause": asha("auto", 4, 4),
    "p25_w10_s3_pause": {"pruner": "percentile", "report_every_steps": 10, "resume_pruned": 4,
                         "pruner_kwargs": {"percentile": 25.0, "n_startup_trials": 3, "n_warmup_steps": 10}},
})


class ConsecutivePruner(optuna.pruners.BasePruner):
    """Candidate: prunes only when `wrapped` says so at each of the trial's last `patience` reports
    (judged against the study as it is now), so one bad report early in a noisy curve stops nothing.
    Optuna's PatientPruner is another rule (no improvement of the trial's own values)."""

    def __init__(self, wrapped: optuna.pruners.BasePruner, patience: int):
        self.wrapped, self.patience = wrapped, patience

    def prune(self, study, trial) -> bool:
        steps = sorted(trial.intermediate_values)[-self.patience:]
        if len(steps) < self.patience:
            return False
        for last in steps:
            view = optuna.trial.FrozenTrial(
                number=trial.number, state=trial.state, value=None, values=None,
                datetime_start=trial.datetime_start, datetime_complete=None, params=trial.params,
                distributions=trial.distributions, user_attrs=trial.user_attrs, system_attrs=trial.system_attrs,
                intermediate_values={s: v for s, v in trial.intermediate_values.items() if s <= last},
                trial_id=trial._trial_id)  # noqa: SLF001: a percentile rule never writes to the trial
            if not self.wrapped.prune(study, view):
                return False
        return True


class AllReportsPercentilePruner(optuna.pruners.BasePruner):
    """Candidate: a trial's value at a step against the `percentile` of every other trial's value at
    the same step (complete, pruned or running: every report, not only the completed trials'
    Optuna's PercentilePruner counts), once `n_min_reports` trials reported that step and from
    step `n_warmup_steps` on. Equal steps are equal trained tokens here (fixed batch and length)."""

    def __init__(self, percentile: float, n_min_reports: int = 3, n_warmup_steps: int = 0):
        self.percentile, self.n_min_reports, self.n_warmup_steps = percentile, n_min_reports, n_warmup_steps

    def prune(self, study, trial) -> bool:
        import numpy as np

        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        others = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False)
                  if t.number != trial.number and step in t.intermediate_values]
        if len(others) < self.n_min_reports:
            return False
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        value = trial.intermediate_values[step]
        cut = np.percentile(others, self.percentile if minimize else 100 - self.percentile)
        return value > cut if minimize else value < cut


# Candidate arms: the same tuning overrides (report_every_steps) with a pruner built here.
CANDIDATES = {
    "percentile25_x2": ({"report_every_steps": 10},
                        lambda: ConsecutivePruner(optuna.pruners.PercentilePruner(
                            25.0, n_startup_trials=2, n_warmup_steps=10), patience=2)),
    "median_x2": ({"report_every_steps": 10},
                  lambda: ConsecutivePruner(optuna.pruners.MedianPruner(
                      n_startup_trials=3, n_warmup_steps=10), patience=2)),
    "median5_x3": ({"report_every_steps": 5},
                   lambda: ConsecutivePruner(optuna.pruners.MedianPruner(
                       n_startup_trials=3, n_warmup_steps=10), patience=3)),
    "allreports50": ({"report_every_steps": 10}, lambda: AllReportsPercentilePruner(50.0, 3, 10)),
    "allreports50_x2": ({"report_every_steps": 10},
                        lambda: ConsecutivePruner(AllReportsPercentilePruner(50.0, 3, 10), patience=2)),
}
DEFAULT_ARMS = [name for name in ARMS if name != "none"] + list(CANDIDATES)


def arm_settings(name: str) -> tuple[dict, object]:
    """(tuning overrides, a pruner factory or None for the one the overrides name)."""
    if name in CANDIDATES:
        overrides, make = CANDIDATES[name]
        return {"pruner": "none", **overrides}, make
    return dict(ARMS[name]), None

# Optuna's journal operation codes (its file format: JournalOperation in optuna.storages.journal).
CREATE_TRIAL, SET_TRIAL_INTERMEDIATE_VALUE = 4, 7


# -- the table --------------------------------------------------------------------------------------


class Table:
    """The learning-curve table (bench/learning_curves.py): one row per grid point and training seed.

    `paths`: one table file, or several whose rows are pooled (e.g. the first table and one made
    with other training seeds, `learning_curves.py --training-seeds`). A row's training seed
    (SFTConfig.seed: the LoRA initialisation and the data order) is its `seed` parameter, or its
    table's `training_seed`. A replayed study trains every trial under one training seed, as a real
    study does under its tuning.seed: `for_training_seed(s)` is the table as such a study sees it
    (the first seed by default).

    `lookup(params)` is the row of the grid point nearest to `params`: a number on a log grid (the
    learning rate) snaps to the nearest grid value in log space; other parameters must be grid
    values; a grid parameter the study does not tune takes the table's `default_space` value.
    With `interpolate`, a number between two grid values gets the curves of both, interpolated
    linearly in log space (a continuous objective, as the sampler sees it, at the price of values
    nobody measured).
    """

    def __init__(self, paths: Path | str | list, interpolate: bool = False):
        paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
        tables = [json.loads(path.read_text()) for path in paths]
        data = tables[0]
        self.paths, self.path, self.data, self.interpolate = paths, paths[0], data, interpolate
        self.max_steps = data["max_steps"]
        if any(t["max_steps"] != self.max_steps for t in tables):
            raise ValueError(f"{', '.join(map(str, paths))}: tables of different max_steps cannot be pooled")
        # The parameters' grid (the training seed apart): each parameter's values over all tables.
        self.grid = {}
        for t in tables:
            for name, values in t["grid"].items():
                if name != TRAINING_SEED:
                    self.grid.setdefault(name, [])
                    self.grid[name] += [v for v in values if v not in self.grid[name]]
        self.fixed = {k: v["fixed"] for k, v in data["default_space"].items() if "fixed" in v}
        self.rows = {}
        for path, t in zip(paths, tables):
            for r in t["rows"]:
                seed = r["params"].get(TRAINING_SEED, t.get("training_seed"))
                if seed is None and len(tables) > 1:
                    raise ValueError(f"{path}: its rows say no training seed (a `seed` parameter or the "
                                     "table's training_seed): it cannot be pooled with another table")
                key = (seed, *self._key(r["params"]))
                if key in self.rows:
                    raise ValueError(f"{path}: {r['params']} at training seed {seed} is in another of the "
                                     "pooled tables too: pool tables of different training seeds")
                self.rows[key] = r
        self.training_seeds = sorted({key[0] for key in self.rows}, key=lambda s: (s is None, s))
        self.training_seed = self.training_seeds[0]
        self.points = len(self.rows)
        self.grid_points = sum(t["grid_points"] for t in tables)
        self.steps = sorted({int(s) for r in self.rows.values() for s in r["curve"]})

    def for_training_seed(self, seed) -> Table:
        """The table as a study trained under `seed` sees it (one of `training_seeds`)."""
        if seed not in self.training_seeds:
            raise KeyError(f"training seed {seed!r}: the table has {self.training_seeds}")
        view = copy.copy(self)
        view.training_seed = seed
        return view

    def describe(self) -> str:
        """Its files, points, training seeds, machines and dates, for a report."""
        tables = [json.loads(path.read_text()) for path in self.paths]
        return (f"{' + '.join(path.name for path in self.paths)} ({self.points} points of "
                f"{self.grid_points}; training seeds {', '.join(map(str, self.training_seeds))}; "
                f"{'; '.join(sorted({t['machine'] + ', ' + t['date'] for t in tables if 'machine' in t}))})")

    def _key(self, params: dict) -> tuple:
        return tuple(params[name] for name in self.grid)

    def _neighbours(self, name: str, value) -> list[tuple[object, float]]:
        """The grid values of `name` that `value` takes its curves from, with their weights."""
        values = self.grid[name]
        if value in values:
            return [(value, 1.0)]
        if not (isinstance(value, float) and value > 0):
            raise KeyError(f"{name}={value!r} is not in the table's grid {values}")
        nearest = min(values, key=lambda v: abs(math.log(v) - math.log(value)))
        below = [v for v in values if v <= value]
        above = [v for v in values if v >= value]
        if not self.interpolate or not below or not above:
            return [(nearest, 1.0)]
        low, high = max(below), min(above)
        weight = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
        return [(low, 1.0 - weight), (high, weight)]

    def snap(self, params: dict) -> dict:
        """The grid point nearest to `params`."""
        return {name: max(self._neighbours(name, params.get(name, self.fixed.get(name))),
                          key=lambda pair: pair[1])[0] for name in self.grid}

    def _row(self, point: dict) -> dict:
        row = self.rows.get((self.training_seed, *self._key(point)))
        if row is None:
            raise KeyError(f"the table has no curve for {point} at training seed {self.training_seed} "
                           f"(a partial table: {self.points} of {self.grid_points} points)")
        return row

    def lookup(self, params: dict) -> dict:
        """{'curve': {step (str): value}, 'final': value} for `params`."""
        axes = [self._neighbours(name, params.get(name, self.fixed.get(name))) for name in self.grid]
        curve, final = {}, 0.0
        for combo in itertools.product(*axes):
            weight = math.prod(w for _, w in combo)
            row = self._row(dict(zip(self.grid, (v for v, _ in combo))))
            final += weight * row["final"]
            for step, value in row["curve"].items():
                curve[step] = curve.get(step, 0.0) + weight * value
        return {"curve": curve, "final": final}

    def seconds_per_step(self, params: dict) -> float:
        """The training seconds per step measured for the grid point nearest to `params`."""
        return float(self._row(self.snap(params))["step_seconds"])

    def complete(self, default_space: bool = True) -> bool:
        """Every point of the default study's space (the table's `default_space`), or of the whole
        grid, has its curve at every training seed."""
        names = list(self.grid)
        for seed, combo in itertools.product(self.training_seeds, itertools.product(*self.grid.values())):
            point = dict(zip(names, combo))
            in_space = not default_space or all(point[k] == v for k, v in self.fixed.items())
            if in_space and (seed, *self._key(point)) not in self.rows:
                return False
        return True


# -- one replayed study -----------------------------------------------------------------------------


def study_tuning(arm: dict, seed: int, n_trials: int, budget_steps: int | None,
                 tuned_grid: dict | None = None) -> TuningParams:
    """The default study's TuningParams with an arm's overrides, seeded and budgeted;
    `tuned_grid` ({name: values}) tunes those of the table's fixed parameters too (categorical)."""
    raw = read_default_tune_yaml(REPO)
    tuning = raw["tuning"]
    tuning.update(seed=seed, n_trials=n_trials, study_name="replay", **arm)
    for name, values in (tuned_grid or {}).items():
        tuning["tunable_training_params"][name] = {"type": "categorical", "choices": list(values)}
    if budget_steps is not None:
        tuning["budget"] = {"trained_steps": budget_steps}
    return load_tune_config(raw, base_dir=REPO, validated=True).tuning


@dataclass
class Run:
    """One attempt of a trial in a replayed study: a new trial, or a paused one resumed from the
    checkpoint of the step it was paused at (`resumed_from`)."""

    slot: int
    trial: optuna.Trial
    row: dict
    started: float
    report_steps: list[int]  # the steps it reports at in this attempt
    eval_cost: float
    resumed_from: int = 0
    next_report: int = 0
    stopped_at: int | None = None  # the step it was pruned (paused) at; None: trained to the end

    def cost(self, k: int) -> float:
        """Compute this attempt has spent at its k-th report: steps trained since it (re)started
        and its evaluations."""
        return self.report_steps[k] - self.resumed_from + self.eval_cost * (k + 1)

    def planned(self) -> float:
        return self.cost(len(self.report_steps) - 1)


@dataclass
class StudyResult:
    """What a replayed study did: per trial (slot order) the point, its steps and what it would have
    reached trained to the end, and the best value after each finished trial, with the compute
    spent (all trials' trained steps) at that moment."""

    trials: list[dict] = field(default_factory=list)
    best_after: list[tuple[float, float]] = field(default_factory=list)  # (compute spent, best so far)
    compute: float = 0.0
    best: float = math.inf
    study: optuna.Study | None = None  # the replayed study (in memory)

    def best_within(self, compute: float) -> float:
        """The best value found by the time `compute` steps were spent."""
        values = [best for spent, best in self.best_after if spent <= compute + 1e-9]
        return values[-1] if values else math.inf

    def compute_to_reach(self, target: float) -> float:
        """Compute spent when the best first came to `target` or below (inf: never)."""
        return next((spent for spent, best in self.best_after if best <= target), math.inf)

    def stopped_the_best(self) -> bool:
        """The trial that would have finished best, of those it started, was pruned."""
        if not self.trials:
            return False
        best = min(self.trials, key=lambda t: t["final"])
        return best["stopped_at"] is not None and not any(
            t["stopped_at"] is None and t["point"] == best["point"] for t in self.trials)


def replay_study(tuning: TuningParams, table: Table, workers: int = 1,
                 pruner: optuna.pruners.BasePruner | None = None, eval_cost: float = 0.0,
                 history: list[FrozenTrial] | None = None) -> StudyResult:
    """Runs one study against the table: tuning.n_trials slots at most, `workers` trials at a time,
    and while the compute committed is under tuning.budget's trained_steps (checked when a slot
    starts). Its pruner is the one tuning names (`strategy.make_pruner`) unless `pruner` is given.

    Compute is trained steps plus `eval_cost` (in steps' worth of time) per evaluation: a trial
    evaluates at each report, or once at the end without report_every_steps. It is also the clock
    that orders the reports of trials running side by side.

    tuning.resume_pruned (η) pauses instead of killing, as the workflow does: a pruned trial keeps
    its checkpoint, and a free worker first resumes the paused trial that is now among the best 1/η
    of all values reported at its step (strategy.promotions), as a new trial with its parameters
    and the pruner's rung records (strategy.carried_over) from that step on (asynchronous successive
    halving's promotions), and only then starts a new one. Unlike the workflow, where it runs in a
    slot of its own, a resumed trial does not count against tuning.n_trials here: the bench caps
    n_trials far above what tuning.budget lets start.

    `history`: an earlier study's trials added first, as a warm start adds them
    (snaketune.warm_start.history_from): the sampler and pruner see them, the result counts only
    the study's own trials. The study itself is `result.study`.
    """
    if tuning.directions != ["minimize"]:
        raise ValueError("the replay minimizes one objective (the table's eval_loss)")
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), study_name=tuning.study_name,
                                directions=tuning.directions, pruner=pruner or strategy.make_pruner(tuning))
    budget = tuning.budget.amount if tuning.budget and tuning.budget.unit == "trained_steps" else math.inf
    every = tuning.report_every_steps
    max_steps = table.max_steps
    report_steps = sorted({*(range(every, max_steps + 1, every) if every else []), max_steps})
    missing = [s for s in report_steps if s not in table.steps]
    if missing:
        raise ValueError(f"report_every_steps={every}: the table has no values at steps {missing}")
    study.add_trials(history or [])
    result = StudyResult(study=study)
    events: list[tuple[float, int, Run]] = []
    running: dict[int, Run] = {}
    paused: dict[int, Run] = {}  # by trial number
    finished = 0.0  # compute of the attempts that ended
    next_slot = 0
    order = itertools.count()

    def launch(run: Run, now: float) -> None:
        running[id(run)] = run
        heapq.heappush(events, (now + run.cost(0), next(order), run))

    promote = tuning.resume_pruned

    def promotion() -> tuple[Run, FrozenTrial] | None:
        """The paused trial to resume now, if any: the workflow's rule (strategy.promotions)."""
        due = strategy.promotions(studies.own_trials(study), promote)
        return (paused[due[0].number], due[0]) if due else None

    def start(now: float) -> None:
        nonlocal next_slot
        committed = finished + sum(r.planned() for r in running.values())  # scheduler.committed_compute's rule
        if committed >= budget:
            return
        stop = tuning.stop_when_converged  # scheduler.decide_slot's rule
        if stop and strategy.convergence(studies.own_trials(study), stop.patience, stop.min_improvement,
                                         tuning.directions[0]):
            return
        due = promotion() if promote else None
        if due is not None:
            resume, frozen = due
            del paused[resume.trial.number]
            trial_id = create_trial(study, dict(resume.trial.params), tuning.space,
                                    {"slot": resume.slot, "promoted_from": resume.trial.number},
                                    strategy.carried_over(frozen))
            steps = [s for s in report_steps if s > resume.stopped_at]
            launch(Run(resume.slot, optuna.Trial(study, trial_id), resume.row, now, steps, eval_cost,
                       resumed_from=resume.stopped_at), now)
            return
        if next_slot >= tuning.n_trials:
            return
        study.sampler = strategy.make_sampler(tuning, next_slot)
        trial_id = create_trial(study, strategy.slot_params(tuning, next_slot), tuning.space,
                                {"slot": next_slot, "attempt": 1})
        trial = optuna.Trial(study, trial_id)
        params = search_space.suggest(trial, tuning.space)
        launch(Run(next_slot, trial, table.lookup(params), now, report_steps, eval_cost), now)
        next_slot += 1

    for _ in range(workers):
        start(0.0)
    while events:
        now, _, run = heapq.heappop(events)
        step = run.report_steps[run.next_report]
        run.trial.report(run.row["curve"][str(step)], step)
        if step < max_steps and run.trial.should_prune():  # as train.ReportAndPrune asks
            study.tell(run.trial, state=TrialState.PRUNED)
            run.stopped_at = step
            if promote:
                paused[run.trial.number] = run
        elif step < max_steps:
            run.next_report += 1
            heapq.heappush(events, (run.started + run.cost(run.next_report), next(order), run))
            continue
        else:
            study.tell(run.trial, run.row["final"])
            result.best = min(result.best, run.row["final"])
        del running[id(run)]
        finished += run.cost(run.next_report)
        result.best_after.append((finished + sum(now - r.started for r in running.values()), result.best))
        point = table.snap(run.trial.params) if not table.interpolate else dict(run.trial.params)
        result.trials.append({"slot": run.slot, "point": point, "final": run.row["final"],
                              "stopped_at": run.stopped_at, "steps": step, "resumed_from": run.resumed_from})
        for _ in range(workers - len(running)):
            start(now)
    result.compute = finished
    result.trials.sort(key=lambda t: (t["slot"], t["resumed_from"]))
    return result


# -- the bench --------------------------------------------------------------------------------------


def seed_of(i: int) -> int:
    # Slot s of a study seeded k samples with seed k + s: studies 1000 apart share no sampler seed.
    return 1000 * i


def one_seed(job: tuple) -> dict:
    """Baseline and every arm for one seed (runs in a worker process)."""
    i, n_trials, arms, workers, table_paths, interpolate, space, eval_cost = job
    table = Table(table_paths, interpolate)
    # The training seeds in turn: seed i trains as a study whose tuning.seed is the i-th (the
    # baseline and every arm alike, as bench/pruning.py's real arms of a seed share their tuning.seed).
    table = table.for_training_seed(table.training_seeds[i % len(table.training_seeds)])
    tuned = {name: table.grid[name] for name in table.fixed} if space == "grid" else None
    base = replay_study(study_tuning(ARMS["none"], seed_of(i), n_trials, None, tuned), table, workers,
                        eval_cost=eval_cost)
    out = {"seed": i, "training_seed": table.training_seed, "none": {"best": base.best, "compute": base.compute, "trials": len(base.trials),
                               "reach": base.compute_to_reach(base.best * (1 + WITHIN)) / base.compute}}
    target = base.best * (1 + WITHIN)
    for name in arms:
        overrides, make = arm_settings(name)
        # n_trials is only a cap here: the budget decides how many slots start.
        arm = replay_study(study_tuning(overrides, seed_of(i), 50 * n_trials, int(base.compute), tuned),
                           table, workers, make() if make else None, eval_cost)
        completed = {t["slot"] for t in arm.trials if t["stopped_at"] is None}
        out[name] = {"best": arm.best_within(base.compute), "compute": arm.compute,
                     "reach": arm.compute_to_reach(target) / base.compute,
                     "trials": len({t["slot"] for t in arm.trials}),
                     "pruned": len({t["slot"] for t in arm.trials} - completed),
                     "resumed": sum(t["resumed_from"] > 0 for t in arm.trials),
                     "stopped_best": arm.stopped_the_best()}
    return out


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% confidence interval (Student's t)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def summarise(rows: list[dict], arms: list[str]) -> list[str]:
    """The bench's table: one line per arm, over all seeds (paired with each seed's baseline)."""
    n = len(rows)

    def share(flags) -> str:
        return f"{sum(flags) / n:.0%}"

    base_reach = [r["none"]["reach"] for r in rows]
    lines = [
        "| arm | best, unpruned − pruned, at equal compute: mean [95% CI] | pruned better / worse | "
        "compute to come within 1% of the unpruned best: median | ≤ 0.5 | never | trials (resumed) | "
        "never finished | "
        "stopped the would-be best |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| none (the baseline) | 0 | – | {statistics.median(base_reach):.2f} (its own best) | "
        f"{share(x <= 0.5 for x in base_reach)} | 0% | {rows[0]['none']['trials']} | 0 | – |",
    ]
    for name in arms:
        diffs = [r["none"]["best"] - r[name]["best"] for r in rows]
        mean, low, high = mean_ci(diffs)
        reach = [r[name]["reach"] for r in rows]
        trials = statistics.fmean(r[name]["trials"] for r in rows)
        resumed = statistics.fmean(r[name]["resumed"] for r in rows)
        pruned = statistics.fmean(r[name]["pruned"] for r in rows)
        lines.append(
            f"| {name} | {mean:+.4f} [{low:+.4f}, {high:+.4f}] | {share(d > 0 for d in diffs)} / "
            f"{share(d < 0 for d in diffs)} | {statistics.median(reach):.2f} | {share(x <= 0.5 for x in reach)} | "
            f"{share(math.isinf(x) for x in reach)} | {trials:.1f}{f' ({resumed:.1f})' if resumed else ''} | "
            f"{pruned:.1f} | "
            f"{share(r[name]['stopped_best'] for r in rows)} |")
    training_seeds = sorted({r.get("training_seed") for r in rows}, key=lambda s: (s is None, s))
    if len(training_seeds) > 1:  # how much of the gain is one training seed's luck
        lines += ["", "By training seed: best, unpruned − pruned, mean [95% CI]; share never within 1%:", "",
                  "| arm | " + " | ".join(f"training seed {s}" for s in training_seeds) + " |",
                  "|---|" + "---|" * len(training_seeds)]
        for name in arms:
            cells = []
            for seed in training_seeds:
                mine = [r for r in rows if r.get("training_seed") == seed]
                mean, low, high = mean_ci([r["none"]["best"] - r[name]["best"] for r in mine])
                never = sum(math.isinf(r[name]["reach"]) for r in mine) / len(mine)
                cells.append(f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]; {never:.0%}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def bench(args) -> None:
    table = Table(args.table)
    if not table.complete(default_space=args.space != "grid"):
        what = "the whole grid" if args.space == "grid" else "the default study's space"
        sys.exit(f"{table.describe()}: {what} is not complete at every training seed: run bench/learning_curves.py "
                 "to continue it" + (" (--training-seeds tables hold the default space only: --space grid takes "
                                     "one table)" if args.space == "grid" and len(args.table) > 1 else ""))
    # An evaluation's cost in steps is a ratio of times within one trial: the first table's.
    args.eval_cost = table.data["eval_cost_steps"] if args.eval_cost == "table" else float(args.eval_cost)
    started = time.time()
    jobs = [(i, args.n_trials, args.arms, args.workers, [str(path) for path in args.table], args.interpolate,
             args.space, args.eval_cost) for i in range(args.seeds)]
    with multiprocessing.Pool(args.processes) as pool:
        rows = pool.map(one_seed, jobs, chunksize=1)
    lines = summarise(rows, args.arms)
    wall = time.time() - started
    print("\n".join(lines))
    print(f"\n{args.seeds} seeds x {1 + len(args.arms)} arms in {wall:.0f} s ({args.processes} processes)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    if args.append:
        from common import append_results

        cost = f"trained steps + {args.eval_cost:g} per evaluation" if args.eval_cost else "trained steps"
        about = (f"{args.seeds} seeds; the unpruned baseline runs {args.n_trials} trials of {table.max_steps} "
                 f"steps; each pruned arm gets the baseline's compute ({cost}) as its budget. "
                 f"Table: {table.describe()}; {args.workers} trial(s) at a time; "
                 f"{'interpolated' if args.interpolate else 'nearest grid point'}; space: {args.space}. "
                 f"Ran in {wall:.0f} s with {args.processes} processes.\n")
        append_results("Pruning, replayed on the learning-curve table", "replay.py",
                       [about, *lines, "", *[f"- `{n}`: `{json.dumps(ARMS.get(n) or CANDIDATES[n][0])}`" for n in args.arms]])


# -- validation against a real study ----------------------------------------------------------------


class ListBackend(BaseJournalBackend):
    """A journal held in a list: operations are fed in one at a time, so a JournalStorage over it
    is the study as it stood at that operation."""

    def __init__(self, logs: list[dict] | None = None):
        self.logs = list(logs or [])

    def read_logs(self, log_number_from: int):
        return self.logs[log_number_from:]

    def append_logs(self, logs: list[dict]) -> None:
        self.logs.extend(logs)


def validate(output_dir: Path, overrides: dict | None = None) -> list[str]:
    """Disagreements between the replay and the real study in `output_dir` (empty: none).

    Prune decisions: at every intermediate value the trial job reported before its last step (where
    train.ReportAndPrune asks the pruner), the replay's pruner is asked on the study as it stood right
    after that report, and must say "prune" exactly where the real trial was pruned. Sampler: every
    first attempt whose parameters the sampler chose (not enqueued, not a grid study) is proposed
    again by the slot's sampler on the study as it stood when the trial was created. Promotions
    (tuning.resume_pruned): every first attempt resumes the paused trial that the workflow's
    decision (scheduler.decide_slot) resumes on the study as it stood before it, or none. (The workflow passes
    over a paused trial whose checkpoint was deleted, and reads the study a moment before it
    creates the trial: a report landing in between, from a trial running beside it, can differ.)
    `overrides` (tuning keys) replay it with other settings than it ran with: a check of the check.
    """
    layout = StudyLayout(output_dir)
    raw = yaml.safe_load(layout.merged_config.read_text())
    raw["tuning"].update(overrides or {})
    tuning = load_tune_config(raw, base_dir=output_dir.parent, validated=True).tuning
    logs = list(JournalFileBackend(str(layout.journal)).read_logs(0))
    real = JournalStorage(ListBackend(logs))  # the study as it ended
    study_id = real.get_study_id_from_name(tuning.study_name)
    max_steps = tuning.training_args.get("max_steps")
    backend = ListBackend()
    storage = JournalStorage(backend)  # the study as it stood at each operation
    pruner = strategy.make_pruner(tuning)
    study = None
    problems, decisions, proposals, promotions, created = [], 0, 0, 0, 0
    for i, op in enumerate(logs):
        attrs = op.get("user_attrs") or {}
        if op["op_code"] == CREATE_TRIAL and study is not None and tuning.resume_pruned and attrs.get("attempt") == 1:
            # A slot's first attempt resumes the first due paused trial, as the study stood before
            # it: the workflow's decision (scheduler.decide_slot), every checkpoint taken as kept.
            state = StudyState(storage.get_all_trials(study_id, deepcopy=False), paused_checkpoint=lambda t: "kept")
            decision = decide_slot(attrs["slot"], state, SlotSettings.of(tuning, attrs["slot"]))
            expected = decision.trial.number if decision.kind == RESUME else None
            promotions += 1
            if attrs.get("promoted_from") != expected:
                problems.append(f"trial {created} (slot {attrs.get('slot')}): the replay would resume "
                                f"{'trial ' + str(expected) if expected is not None else 'no paused trial'}, "
                                f"the real slot resumed {attrs.get('promoted_from', 'none')}")
        backend.append_logs([op])
        if study is None and tuning.study_name in [s.study_name for s in storage.get_all_studies()]:
            study = optuna.load_study(study_name=tuning.study_name, storage=storage, pruner=pruner,
                                      sampler=optuna.samplers.RandomSampler())
        if op["op_code"] == CREATE_TRIAL:
            trial_id, created = created, created + 1  # the journal numbers trials in creation order
            frozen = real.get_trial(trial_id)
            sampled = (op["study_id"] == study_id and not op.get("params")
                       and frozen.user_attrs.get("attempt") == 1 and not frozen.user_attrs.get("enqueued"))
            if not sampled or tuning.sampler == "GridSampler":
                continue
            proposed = propose(logs[:i + 1], tuning, trial_id, frozen.user_attrs["slot"])
            proposals += 1
            if any(not _same(proposed.get(k), v) for k, v in frozen.params.items()):
                problems.append(f"trial {frozen.number} (slot {frozen.user_attrs['slot']}): the sampler proposed "
                                f"{proposed}, the real trial ran {frozen.params}")
        elif op["op_code"] == SET_TRIAL_INTERMEDIATE_VALUE and study is not None:
            frozen = real.get_trial(op["trial_id"])
            step = op["step"]
            if max_steps is not None and step >= max_steps:
                continue  # the last evaluation is the final value: nothing is asked
            would = pruner.prune(study, storage.get_trial(op["trial_id"]))
            did = frozen.state == TrialState.PRUNED and step == max(frozen.intermediate_values)
            decisions += 1
            if would != did:
                problems.append(f"trial {frozen.number} at step {step}: the replay would "
                                f"{'prune' if would else 'continue'}, the real trial "
                                f"{'was pruned' if did else 'continued'}")
    print(f"{output_dir}: {decisions} prune decisions, {proposals} sampler proposals, {promotions} "
          f"promotion choices replayed; {len(problems)} disagreements")
    return problems


def propose(logs: list[dict], tuning: TuningParams, trial_id: int, slot: int) -> dict:
    """What the slot's sampler proposes for trial `trial_id` on the study of journal `logs`."""
    study = optuna.load_study(study_name=tuning.study_name, storage=JournalStorage(ListBackend(logs)),
                              sampler=strategy.make_sampler(tuning, slot))
    return search_space.suggest(optuna.Trial(study, trial_id), tuning.space)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, nargs="+", default=[TABLE],
                        help="the learning-curve table, or several pooled (e.g. more training seeds)")
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--n-trials", type=int, default=24, help="the unpruned baseline's trials")
    parser.add_argument("--arms", nargs="+", choices=sorted(set(ARMS) - {"none"} | set(CANDIDATES)),
                        default=DEFAULT_ARMS)
    parser.add_argument("--interpolate", action="store_true",
                        help="interpolate curves between grid learning rates instead of taking the nearest")
    parser.add_argument("--space", choices=["default", "grid"], default="default",
                        help="default: the default study's space (learning rate, LoRA rank); grid: "
                             "also the table's other parameters (warm-up), as categorical choices")
    parser.add_argument("--eval-cost", default="0", metavar="STEPS|table",
                        help="an evaluation's cost in training steps' worth of time (0: compute is trained "
                             "steps, tuning.budget's unit; table: as measured when the table was made)")
    parser.add_argument("--workers", type=int, default=1, help="trials side by side in each study")
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path, help="also write every seed's numbers here")
    parser.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    parser.add_argument("--validate", type=Path, nargs="+", metavar="OUTPUT_DIR",
                        help="check the replay against real studies instead")
    args = parser.parse_args()
    if args.validate:
        problems = [p for output_dir in args.validate for p in validate(output_dir.resolve())]
        print("\n".join(problems) or "the replay agrees with every decision")
        sys.exit(1 if problems else 0)
    bench(args)


if __name__ == "__main__":
    main()
