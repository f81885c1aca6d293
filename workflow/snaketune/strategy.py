"""How a study searches: its sampler (which parameters to try) and pruner (which trials to stop).

Both are Optuna's own classes, named in tune.yaml and built with `sampler_kwargs` /
`pruner_kwargs`. Every trial process builds the same sampler and pruner with the same arguments
(only the seed differs by slot), so the hooks Optuna runs on the shared journal agree. Pruners
compare a trial with the other processes' trials through that journal.

The pruner and budget rules of a config are here too (`resolve_settings`: the default
report_every_steps, whether pruned trials pause and resume, whether a pruner can reach a trial
before its end, how many slots a budget pays for), so one module owns what a pruner and a budget
mean; the checker (snaketune.validate) calls it. That is why this module is a little over 500 lines.
"""

from __future__ import annotations

import inspect
import itertools
import math
import statistics
import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from snaketune import lm_harness, metrics, scoring
from snaketune.config import TuningParams
from snaketune.errors import closest

SAMPLERS = ("TPESampler", "RandomSampler", "GPSampler", "CmaEsSampler", "NSGAIISampler",
            "NSGAIIISampler", "QMCSampler", "GridSampler", "BruteForceSampler")
# The samplers that read a trial's constraints (Optuna 5's Trial.set_constraint) when they sample:
# Optuna's own list, in its samplers' docs (constraints_func, which set_constraint replaces).
CONSTRAINED_SAMPLERS = ("TPESampler", "GPSampler", "NSGAIISampler", "NSGAIIISampler")
PRUNERS = {
    "none": None,
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "wilcoxon": "WilcoxonPruner",
    "threshold": "ThresholdPruner",
    "pareto": "ParetoPruner",  # snaketune's (below): Optuna's pruners judge one objective
}
# Pruner arguments a user leaves out, measured on the demo task's learning curves (bench/replay.py,
# bench/RESULTS.md): Optuna's PercentilePruner has no default percentile; 75 stops only trials in
# the worst quarter at a step, and lost the eventual best in none of 200 replayed studies where 25
# (the best quarter must be kept) lost it in half.
# successive_halving halves (η 2, Optuna's default is 4), with its first rung at half the trial
# (first_rung): the rule fixed before the replay across three training seeds ran (pooled gain's
# interval above zero, no training seed's mean below zero, then the least compute) chose it of six
# successive-halving rules; it paused the would-be best for good in none of 200 replayed studies,
# where η 4 with the first rung at the first report (the earlier default) did in 20%. Each key the
# user leaves out of pruner_kwargs falls back on its own.
PRUNER_DEFAULTS = {"percentile": {"percentile": 75.0, "n_startup_trials": 3},
                   "successive_halving": {"reduction_factor": 2}}

# A trial's objectives at each evaluation during training, {str(step): [value per objective]}: what
# ParetoPruner compares (Optuna keeps intermediate values for single-objective studies only).
INTERMEDIATE_VECTORS_ATTR = "intermediate_vectors"


class ParetoPruner(optuna.pruners.BasePruner):
    """Prunes a trial of a study of several objectives whose objectives at its latest evaluation
    are Pareto-dominated by those of at least `dominated_share` of the completed trials at the same
    step (no worse in every objective, better in one), once `n_startup_trials` completed trials
    reported that step, from step `n_warmup_steps` on. The vectors are the trials'
    INTERMEDIATE_VECTORS_ATTR (train.ReportAndPrune writes them in a study of several objectives).

    Written here because Optuna's Trial.report and should_prune raise for multi-objective studies
    (optuna#3450, open since 2022). Optuna could do it natively with intermediate values of one
    value per objective (Trial.report(values, step)) and its pruners taking the study's directions:
    this rule is then its median pruner with dominance for "worse than"."""

    def __init__(self, dominated_share: float = 0.5, n_startup_trials: int = 3, n_warmup_steps: int = 0):
        if not 0.0 < dominated_share <= 1.0:
            raise ValueError(f"dominated_share must be in (0, 1], got {dominated_share}")
        if n_startup_trials < 1 or n_warmup_steps < 0:
            raise ValueError(f"n_startup_trials must be at least 1 and n_warmup_steps at least 0, got "
                             f"{n_startup_trials} and {n_warmup_steps}")
        self.dominated_share, self.n_startup_trials, self.n_warmup_steps = dominated_share, n_startup_trials, n_warmup_steps

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        vectors = trial.user_attrs.get(INTERMEDIATE_VECTORS_ATTR) or {}
        if not vectors:
            return False
        step = max(vectors, key=int)
        if int(step) < self.n_warmup_steps:
            return False
        others = [t.user_attrs[INTERMEDIATE_VECTORS_ATTR][step]
                  for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.number != trial.number and step in (t.user_attrs.get(INTERMEDIATE_VECTORS_ATTR) or {})]
        if len(others) < self.n_startup_trials:
            return False
        signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]
        mine = [sign * v for sign, v in zip(signs, vectors[step])]
        dominating = sum(_dominates([sign * v for sign, v in zip(signs, other)], mine) for other in others)
        return dominating > 0 and dominating >= self.dominated_share * len(others)


def _dominates(a: list[float], b: list[float]) -> bool:
    """Whether `a` Pareto-dominates `b`, both minimised (Optuna's rule, whose function takes trials)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pruner_class(name: str) -> type:
    """The pruner class tuning.pruner `name` (not "none") stands for: Optuna's, or ParetoPruner."""
    return ParetoPruner if name == "pareto" else getattr(optuna.pruners, PRUNERS[name])
# Arguments snaketune sets itself (from tuning.seed and the search space).
MANAGED_SAMPLER_ARGS = {"seed": "set tuning.seed", "search_space": "the grid comes from the tunable parameters"}


def sampler_defaults(name: str) -> dict:
    if name == "TPESampler":
        # multivariate: models parameters jointly; constant_liar: trials running in other
        # processes count as bad, so parallel jobs spread out instead of piling onto one point.
        return {"multivariate": True, "constant_liar": True}
    return {}


def grid(space: list[dict]) -> dict[str, list]:
    """Every value of every parameter, for GridSampler. Raises ValueError for a continuous one."""
    values = {}
    for param in space:
        if param.type == "categorical":
            values[param.name] = list(param.choices)
        elif param.type == "int" and not param.log:
            values[param.name] = list(range(param.low, param.high + 1, param.step))
        elif param.type == "float" and param.step and not param.log:
            count = int(round((param.high - param.low) / param.step)) + 1
            values[param.name] = [round(param.low + i * param.step, 12) for i in range(count)]
        else:
            raise ValueError(param.name)
    return values


def grid_points(space: list[dict]) -> list[dict]:
    """The grid in a fixed order: slot i of a grid study runs point i, so each runs exactly once."""
    axes = grid(space)
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def slot_params(tuning: TuningParams, slot: int) -> dict:
    """The parameters a slot's first attempt is created with: its grid point (GridSampler; the
    sampler itself only fills in what is fixed), else none (the sampler chooses them all)."""
    return grid_points(tuning.space)[slot] if tuning.sampler == "GridSampler" else {}


class SlotGridSampler(optuna.samplers.GridSampler):
    """GridSampler for trial slots: slot i runs grid point i (see grid_points).

    Optuna's after_trial calls study.stop() once the grid is visited, which only works inside
    study.optimize(); here the budget is Snakemake's fixed set of slots, so there is nothing to stop.
    """

    def after_trial(self, study, trial, state, values) -> None:
        pass


def _sampler_class(name: str):
    return SlotGridSampler if name == "GridSampler" else getattr(optuna.samplers, name)


def _construct(cls, kwargs: dict):
    with warnings.catch_warnings():  # several samplers are flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**kwargs)


def make_sampler(tuning: TuningParams, slot: int) -> optuna.samplers.BaseSampler:
    """The sampler of trial slot `slot`: tuning.sampler with its kwargs, seeded by slot."""
    name = tuning.sampler
    cls = _sampler_class(name)
    kwargs = {**sampler_defaults(name), **tuning.sampler_kwargs}
    if name == "GridSampler":
        kwargs["search_space"] = grid(tuning.space)
    if "seed" in inspect.signature(cls).parameters:
        # Seed by slot: a serial run is reproducible, and parallel jobs never share a seed.
        kwargs["seed"] = tuning.seed + slot
    return _construct(cls, kwargs)


def fixed_steps(max_steps) -> int | None:
    """max_steps when it is a fixed whole number of steps, else None (epochs, a tuned max_steps)."""
    return max_steps if _is_int(max_steps) and max_steps >= 1 else None


def first_rung(report_every_steps: int, max_steps=None) -> int:
    """The step of successive_halving's first rung when pruner_kwargs leave min_resource out: the
    first report at or after half of max_steps (step 20 of 40 when reporting every 10), or the
    second report when the trial's steps are not a fixed number. Measured (bench/RESULTS.md): on
    the demo task the best learning rates start slow and have caught up by half-way; a first rung
    at the first report (a quarter) paused them and lost the real seed 1's best, and Optuna's
    "auto" (1% of the first completed trial's steps) stopped the would-be best in 43% of 200
    replayed studies."""
    steps = fixed_steps(max_steps)
    if steps is None:
        return 2 * report_every_steps
    return report_every_steps * max(1, -(-steps // (2 * report_every_steps)))


def pruner_arguments(name: str, kwargs: dict, report_every_steps: int | None = None, max_steps=None) -> dict:
    """tuning.pruner_kwargs over snaketune's measured defaults (PRUNER_DEFAULTS) for pruner `name`;
    successive_halving's min_resource defaults to first_rung(report_every_steps, max_steps), the
    trial's fixed max_steps (an int) or None."""
    defaults = dict(PRUNER_DEFAULTS.get(name, {}))
    if name == "successive_halving" and report_every_steps:
        defaults["min_resource"] = first_rung(report_every_steps, max_steps)
    return {**defaults, **kwargs}


def judged_steps(pruner: str, pruner_kwargs: dict, report_every_steps: int | None, max_steps: int) -> list[int]:
    """The steps (ascending) of a trial with a fixed max_steps at which its pruner may stop it; a
    superset where Optuna's rules are not followed here (interval_steps, hyperband's brackets).
    At reports before the last step (train.ReportAndPrune); from n_warmup_steps on (median,
    percentile, threshold); successive_halving only at the first report at or after each rung step,
    min_resource × η^(min_early_stopping_rate + k). Empty for no pruner, no reports, or wilcoxon,
    which judges after training."""
    if pruner in ("none", "wilcoxon") or not report_every_steps:
        return []
    stops = list(range(report_every_steps, max_steps, report_every_steps))
    arguments = pruner_arguments(pruner, pruner_kwargs, report_every_steps, max_steps)
    warmup = arguments.get("n_warmup_steps", 0)
    if pruner in ("median", "percentile", "threshold", "pareto") and _is_int(warmup):
        stops = [s for s in stops if s >= warmup]
    if pruner == "successive_halving":
        rung, eta = arguments.get("min_resource"), arguments["reduction_factor"]  # PRUNER_DEFAULTS has η
        rate = arguments.get("min_early_stopping_rate", 0)
        if all(_is_int(v) for v in (rung, eta, rate)) and rung >= 1 and eta >= 2 and rate >= 0:
            rung *= eta ** rate
            judged = set()
            while rung < max_steps:  # Optuna judges the first report at or after each rung's step
                judged.update([s for s in stops if s >= rung][:1])
                rung *= eta
            stops = sorted(judged)
    return stops


def least_steps(pruner: str, pruner_kwargs: dict, report_every_steps: int | None, max_steps: int,
                pausing: bool) -> int:
    """The fewest steps one trial of a study with a fixed max_steps can train, a lower bound for a
    budget's slot count (_slots_for_budget): stopped at the first step its pruner judges it
    (judged_steps), or, `pausing` (tuning.resume_pruned), resumed at one such step and stopped at
    the next, or trained to the end; max_steps when nothing stops trials."""
    stops = judged_steps(pruner, pruner_kwargs, report_every_steps, max_steps)
    if not stops:
        return max_steps
    if not pausing:
        return stops[0]
    return min([stops[0], *(b - a for a, b in zip(stops, stops[1:])), max_steps - stops[-1]])


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def default_report_every_steps(max_steps) -> int | None:
    """How often a pruner is asked when report_every_steps is not given: every quarter of the
    trial's steps (the replay found later first reports lose less and earlier ones save little:
    bench/RESULTS.md); None when the steps are not a fixed number (epochs, a tuned max_steps)."""
    steps = fixed_steps(max_steps)
    return None if steps is None else max(1, steps // 4)


def reduction_factor(pruner: str, pruner_kwargs: dict, resume_pruned: bool | int) -> int | None:
    """η of tuning.resume_pruned (true, false or an integer; _pause_settings fills in its
    default): None (pruned trials stay stopped), its own value when it is an integer, or for `true`
    the pruner's reduction_factor (successive_halving's default 2, hyperband's Optuna default 3)
    and 4 for any other pruner."""
    if resume_pruned is False or pruner == "none":
        return None
    if resume_pruned is True:
        cls = pruner_class(pruner)
        default = inspect.signature(cls).parameters.get("reduction_factor")
        return int(pruner_arguments(pruner, pruner_kwargs).get("reduction_factor",
                                                               default.default if default else 4))
    return int(resume_pruned)


# Optuna's SuccessiveHalvingPruner records a trial's value at each rung it reached as the system
# attribute completed_rung_<k> (optuna/pruners/_successive_halving.py) and judges it from the rung
# after the last one recorded. A resumed trial takes the paused one's records over, so it continues
# from its next rung (asynchronous successive halving's promotion), not from rung 0 with a later
# step's value.
RUNG_ATTR_PREFIX = "completed_rung_"


def carried_over(paused: FrozenTrial) -> dict:
    """The system attributes a trial resuming `paused` starts with: its rung records."""
    return {k: v for k, v in paused.system_attrs.items() if k.startswith(RUNG_ATTR_PREFIX)}


def promotions(trials: list[FrozenTrial], reduction_factor: int, direction: str = "minimize") -> list[FrozenTrial]:
    """The paused trials a slot that starts now should resume, the one to take first first:
    asynchronous successive halving's promotion rule (Li et al. 2020, "A System for Massively
    Parallel Hyperparameter Tuning"), which Optuna's pruners do not have (they only stop trials).

    A paused trial is a PRUNED one (not a diverged one: those carry a fail_reason) that no trial
    resumes yet (`promoted_from`). It is due when its value at the step it stopped at is among the
    best 1/`reduction_factor` of every value any trial reported at that step; the latest steps
    first, then the best value. `trials` are the study's trials (FrozenTrial: state, user_attrs,
    intermediate_values); `direction` is the objective's. Shared by scheduler.decide_slot and the
    replay bench (bench/replay.py), so what was measured is what runs.
    """
    resumed = {t.user_attrs.get("promoted_from") for t in trials}
    paused = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values
              and "fail_reason" not in t.user_attrs and t.number not in resumed]
    sign = 1.0 if direction == "minimize" else -1.0
    due = []
    for step in sorted({max(t.intermediate_values) for t in paused}, reverse=True):
        reported = sorted(sign * t.intermediate_values[step] for t in trials if step in t.intermediate_values)
        bar = reported[max(1, len(reported) // reduction_factor) - 1]
        at_step = [t for t in paused if max(t.intermediate_values) == step
                   and sign * t.intermediate_values[step] <= bar]
        due += sorted(at_step, key=lambda t: (sign * t.intermediate_values[step], t.number))
    return due


def make_pruner(tuning: TuningParams) -> optuna.pruners.BasePruner:
    if PRUNERS[tuning.pruner] is None:
        return optuna.pruners.NopPruner()
    return _construct(pruner_class(tuning.pruner),
                      pruner_arguments(tuning.pruner, tuning.pruner_kwargs, tuning.report_every_steps,
                                       tuning.training_args.get("max_steps")))


def _check_kwargs(cls, kwargs: dict, path: str, managed: dict) -> list[str]:
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    problems = []
    for key in kwargs:
        if key in managed:
            problems.append(f"{path}.{key}: cannot be set here ({managed[key]})")
        elif key not in accepted:
            problems.append(f"{path}.{key}: not an argument of {cls.__name__}{closest(key, accepted)}; "
                            f"it takes {', '.join(accepted)}")
    return problems


def check(name: str, kwargs: dict, pruner: str, pruner_kwargs: dict, space: list[dict],
          n_objectives: int) -> list[str]:
    """Parse-time problems ('yaml.path: ...') with the sampler (`name`: tuning.tuner_sampler,
    `kwargs`: tuning.sampler_kwargs), the pruner (tuning.pruner, tuning.pruner_kwargs) and their
    arguments, for the resolved search `space` and `n_objectives` objectives."""
    problems = []
    if name not in SAMPLERS:
        return [f"tuning.tuner_sampler: unknown sampler {name!r}{closest(name, SAMPLERS)}; "
                f"expected one of {', '.join(SAMPLERS)}"]
    cls = _sampler_class(name)
    problems += _check_kwargs(cls, kwargs, "tuning.sampler_kwargs", MANAGED_SAMPLER_ARGS)
    if name == "GridSampler":
        try:
            grid(space)
        except ValueError as e:
            problems.append(f"tuning.tuner_sampler: GridSampler needs a finite grid, but {e} is "
                            "continuous; give it a step (int, or float with step) or make it categorical")
        if any(p.condition for p in space):
            problems.append("tuning.tuner_sampler: GridSampler cannot run conditional parameters; "
                            "use BruteForceSampler")
    if not problems:
        try:
            probe = {**sampler_defaults(name), **kwargs}
            if name == "GridSampler":
                probe["search_space"] = grid(space)
            _construct(cls, probe)
        except Exception as e:  # the library's own complaint about a value
            problems.append(f"tuning.sampler_kwargs: {name} refused them: {type(e).__name__}: {e}")

    if pruner != "none":
        pruner_cls = pruner_class(pruner)
        pruner_problems = _check_kwargs(pruner_cls, pruner_kwargs, "tuning.pruner_kwargs", {})
        if not pruner_problems:
            try:
                _construct(pruner_cls, pruner_arguments(pruner, pruner_kwargs))
            except Exception as e:
                pruner_problems.append(f"tuning.pruner_kwargs: {pruner_cls.__name__} refused them: "
                                       f"{type(e).__name__}: {e}")
        problems += pruner_problems
        if n_objectives == 1 and pruner == "pareto":
            problems.append("tuning.pruner: pareto compares the objectives of a study of several; with one objective "
                            "use median or percentile (pareto with dominated_share 0.5 is the median rule)")
        if n_objectives > 1 and pruner != "pareto":
            problems.append(f"tuning.pruner: {pruner} judges one objective, and Optuna cannot prune a "
                            "multi-objective study with it; use pruner: pareto (prunes a trial Pareto-dominated "
                            "by most completed trials at the same step), or keep one evaluation metric")
    elif pruner_kwargs:
        problems.append("tuning.pruner_kwargs: given, but tuning.pruner is none")
    return problems


# -- the study settings of a config (parse time) ---------------------------------------------------
TUNER_TYPES = ("OPTUNA",)

# The most trial slots a budget stands for when n_trials is not written: Snakemake creates a job
# for every slot before the first one runs.
MAX_BUDGET_SLOTS = 1000


@dataclass(frozen=True)
class StudySettings:
    """What the sampler, pruner and budget rules derive from a `tuning:` section, each once (the
    checker passes them on to config.TuningParams; the section itself is never rewritten)."""

    n_trials: int  # tuning.n_trials; not given: 10, the grid's size, or the slots a budget pays for
    report_every_steps: int | None  # as given, or a quarter of a fixed max_steps for a pruner
    resume_pruned: int | None  # η (reduction_factor); None: pruned trials stay stopped


def resolve_settings(tuning: dict, search_space: list, metric_names: list[str], custom_names: list[str]
                     ) -> tuple[StudySettings, list[str], list[str]]:
    """The tuner, sampler, pruner, pausing and budget of a schema-filled `tuning:` section over the
    resolved `search_space` and objectives (`metric_names`, `custom_names` the custom metrics'):
    (settings, problems, notices), each as 'yaml.path: what'. n_trials defaults to 10, the grid's
    size, or with a compute budget the slots it pays for (_slots_for_budget). A pruner without
    report_every_steps reports every quarter of a fixed max_steps (default_report_every_steps),
    said in a notice."""
    problems, notices = [], []
    if str(tuning["tuner_type"]).upper() not in TUNER_TYPES:
        problems.append(f"tuning.tuner_type: unknown tuner type {tuning['tuner_type']!r}; "
                        "snaketune supports OPTUNA")
    problems.extend(check(tuning["tuner_sampler"], tuning["sampler_kwargs"], tuning["pruner"],
                          tuning["pruner_kwargs"], search_space, len(metric_names)))
    n_trials = tuning.get("n_trials")
    grid_size = None
    if tuning["tuner_sampler"] == "GridSampler" and not any("GridSampler" in p for p in problems):
        grid_size = len(grid_points(search_space))
    if n_trials is None:
        n_trials = grid_size or 10
    elif n_trials < 1:
        problems.append(f"tuning.n_trials: must be at least 1, got {n_trials}")
    elif grid_size is not None and n_trials > grid_size:
        problems.append(f"tuning.n_trials: {n_trials} trials, but the grid has only {grid_size} "
                        "points (leave n_trials out to run the whole grid)")
    eta = _pause_settings(tuning, problems, notices)
    every = _report_every_steps(tuning, metric_names, custom_names, problems, notices)
    _pruner_reach(tuning, every, problems)
    if tuning.get("n_trials") is None and grid_size is None and tuning["budget"] \
            and not any(p.startswith("tuning.budget") for p in problems):
        n_trials = _slots_for_budget(tuning, every, eta, problems, notices) or n_trials
    return StudySettings(n_trials=n_trials, report_every_steps=every, resume_pruned=eta), problems, notices


def _report_every_steps(tuning: dict, metric_names: list[str], custom_names: list[str],
                        problems: list[str], notices: list[str]) -> int | None:
    """tuning.report_every_steps, or its default for a pruner (a quarter of a fixed max_steps);
    refuses a pruner whose first objective is computed only after training (appending to
    `problems`, saying what is done instead in `notices`)."""
    every = tuning["report_every_steps"]
    first = metric_names[0] if metric_names else None
    if tuning["pruner"] == "wilcoxon":
        # Its steps are validation rows (generation.evaluate_generation), not training steps.
        if first not in scoring.GENERATION_METRICS:
            problems.append(f"tuning.pruner: wilcoxon compares trials row by row on per-example scores, "
                            f"which only the generation metrics give ({', '.join(scoring.GENERATION_METRICS)}); "
                            f"tuning.evaluation_metrics[0] is {first!r}: make a generation metric the first "
                            "objective, or use another pruner (successive_halving, percentile)")
        elif every:
            notices.append("tuning.report_every_steps: evaluations during training go to the loss curve only; "
                           "the wilcoxon pruner is asked on the per-row scores of the generation after training")
        return every
    if tuning["pruner"] == "none" and not every:
        return every
    if tuning["pruner"] == "pareto":
        later = [name for name in metric_names if name not in metrics.DURING_TRAINING]
        if later:
            problems.append(f"tuning.evaluation_metrics: pruner: pareto compares every objective at each evaluation "
                            f"during training, and {', '.join(map(repr, later))} is computed once, after training; "
                            f"keep objectives the evaluation or the training gives at every report "
                            f"({', '.join(metrics.DURING_TRAINING[:2])}, train_runtime, {metrics.PEAK_MEMORY}, ...)")
        first = None  # every objective checked here
    kind = ("a custom metric" if first in set(custom_names)
            else "a generation metric" if first in scoring.GENERATION_METRICS
            else "an lm-eval metric" if first and lm_harness.is_lm_eval_metric(first) else None)
    if kind and tuning["pruner"] != "none":
        problems.append(f"tuning.evaluation_metrics[0]: {first!r} is {kind}, computed once after "
                        "training; a pruner needs a metric the evaluation produces at every report "
                        "(eval_loss, eval_mean_token_accuracy)"
                        + ("; or prune on its per-row scores with pruner: wilcoxon"
                           if kind == "a generation metric" else ""))
    elif kind:  # no pruner: the evaluations are learning curves, the objective is computed after
        notices.append(f"tuning.report_every_steps: the evaluations every {every} "
                       f"steps are recorded in each trial's loss curve only (eval_loss in logs/loss_curve.csv); "
                       f"the trial's value, {first!r}, is {kind}, computed once after training")
    if tuning["pruner"] != "none" and not every:
        every = default_report_every_steps(tuning["fixed_training_params"].get("max_steps"))
        if every is None:
            problems.append("tuning.report_every_steps: a pruner needs intermediate values: set "
                            "report_every_steps (e.g. a quarter of the trial's steps)")
        else:
            notices.append(f"tuning.report_every_steps: not given; the pruner is asked every {every} "
                           "steps (a quarter of max_steps)")
    return every


def _pruner_reach(tuning: dict, every: int | None, problems: list[str]) -> None:
    """Refuses a pruner that could never stop a trial of a fixed max_steps (reporting `every`
    steps): no report before the last step, or pruner_kwargs that put its first judgement at or
    after it."""
    max_steps = tuning["fixed_training_params"].get("max_steps")
    if tuning["pruner"] in ("none", "wilcoxon") or not every or fixed_steps(max_steps) is None \
            or any(p.startswith(("tuning.pruner", "tuning.report_every_steps")) for p in problems) \
            or judged_steps(tuning["pruner"], tuning["pruner_kwargs"], every, max_steps):
        return
    if every >= max_steps:
        problems.append(f"tuning.report_every_steps: {every}, but the trials train {max_steps} steps "
                        f"(tuning.fixed_training_params.max_steps), so no report comes before the end and "
                        f"the {tuning['pruner']} pruner never stops a trial: report more often (e.g. every "
                        f"{default_report_every_steps(max_steps)} steps) or set pruner: none")
    else:
        knobs = ("min_resource or min_early_stopping_rate" if tuning["pruner"] == "successive_halving"
                 else "n_warmup_steps")
        problems.append(f"tuning.pruner_kwargs: {tuning['pruner']} with these arguments first judges a trial "
                        f"at or after its last step ({max_steps}), so it never stops one: lower {knobs}, "
                        "or leave it out")


def _slots_for_budget(tuning: dict, every: int | None, eta: int | None, problems: list[str],
                      notices: list[str]) -> int | None:
    """n_trials for a study with a compute budget and no n_trials: as many slots as the budget
    pays for when every trial spends the least it can (least_steps, reporting `every` steps,
    pausing when `eta`), so the budget, not a default count, decides. None, with a problem, when
    that is not known before the trials run (tokens, device hours, steps that are not a fixed
    max_steps) or is more slots than MAX_BUDGET_SLOTS."""
    (unit, amount), = tuning["budget"].items()
    cap = "set tuning.n_trials as the cap on trial slots (e.g. n_trials: 100; the slots the budget does not reach finish as SKIPPED)"
    if unit != "trained_steps":
        problems.append(f"tuning.n_trials: not given, and how many trials a budget in {unit} pays for is "
                        f"known only as they run: {cap}")
        return None
    max_steps = tuning["fixed_training_params"].get("max_steps")
    if fixed_steps(max_steps) is None:
        problems.append("tuning.n_trials: not given, and the trials' length is not a fixed "
                        "tuning.fixed_training_params.max_steps, so how many trials the budget "
                        f"(trained_steps={amount}) pays for is unknown: {cap}")
        return None
    pausing = bool(eta)
    least = least_steps(tuning["pruner"], tuning["pruner_kwargs"], every, max_steps, pausing)
    why = f"{max_steps} steps each" if least == max_steps else (
        f"{least} steps or more (a pruned trial stopped where the pruner first judges it"
        + (", or a resumed one trained up to its next judgement or the end)" if pausing else ")"))
    slots = -(-amount // least)
    if slots > MAX_BUDGET_SLOTS:
        problems.append(f"tuning.n_trials: not given; the budget (trained_steps={amount}) pays for up to "
                        f"{slots} trials of {why}, more than the {MAX_BUDGET_SLOTS} slots snaketune creates "
                        "unasked: set tuning.n_trials as the cap")
        return None
    notices.append(f"tuning.n_trials: not given; the budget (trained_steps={amount}) pays for at most {slots} "
                   f"trials of {why}, so there are {slots} trial slots and the budget decides how many run "
                   "(the others finish as SKIPPED)")
    return slots


def _pause_settings(tuning: dict, problems: list[str], notices: list[str]) -> int | None:
    """η of tuning.resume_pruned (reduction_factor; its default: successive halving pauses unless
    each grid point has its slot), or None: pruned trials stay stopped. Appends to `problems` a
    pausing the pruner or sampler cannot do."""
    given = tuning["resume_pruned"]
    pausing = given not in (None, False)
    if pausing and tuning["pruner"] == "none":
        problems.append("tuning.resume_pruned: pauses pruned trials, but tuning.pruner is none: set a "
                        "pruner (successive_halving pauses by default) or remove resume_pruned")
    elif pausing and tuning["pruner"] == "wilcoxon":
        problems.append("tuning.resume_pruned: the wilcoxon pruner stops a trial while it generates, after "
                        "its training is done: there is nothing to resume; remove resume_pruned")
    elif pausing and tuning["pruner"] == "pareto":
        problems.append("tuning.resume_pruned: a paused trial is resumed by its rank among one objective's values "
                        "at its step, which a study of several objectives does not have; set resume_pruned: false")
    elif pausing and tuning["tuner_sampler"] == "GridSampler":
        problems.append("tuning.resume_pruned: GridSampler runs each grid point in a slot of its own, and "
                        "a resumed trial takes a slot: set resume_pruned: false, or use BruteForceSampler")
    if any(p.startswith(("tuning.pruner", "tuning.resume_pruned")) for p in problems):
        return None
    wanted = given
    if given is None:
        wanted = tuning["pruner"] == "successive_halving" and tuning["tuner_sampler"] != "GridSampler"
    factor = tuning["pruner_kwargs"].get("reduction_factor")
    if wanted is True and factor is not None and not _is_int(factor):
        problems.append(f"tuning.pruner_kwargs.reduction_factor: {factor!r}: pausing resumes the best 1/η of "
                        "a step's values, η this reduction factor: give a whole number (e.g. 4), or set "
                        "tuning.resume_pruned to one, or to false")
        return None
    eta = reduction_factor(tuning["pruner"], tuning["pruner_kwargs"], wanted)
    if given is None and eta:
        notices.append(f"tuning.resume_pruned: not given; {tuning['pruner']} pauses a pruned trial, and a "
                       f"slot that starts later resumes it from its checkpoint once its value is among the "
                       f"best 1/{eta} reported at its step. A resumed trial takes one of the n_trials slots: "
                       "give the study a budget and let n_trials be a cap (set resume_pruned: false to stop "
                       "pruned trials for good)")
    return eta or None


# -- converged stop (tuning.stop_when_converged) ------------------------------------------------------

# Two completed trials are neighbours when every parameter is within this share of its range (in
# log space for a log range) and every choice is the same: near enough that the difference of
# their values is mostly noise (the data order, the LoRA initialisation, the evaluation's rows).
NEIGHBOUR_DISTANCE = 0.05
MIN_NEIGHBOUR_PAIRS = 3  # fewer pairs: no estimate, and the study is not judged converged


def _position(distribution, value) -> float | None:
    """A value's place in its distribution's range, 0..1 (log ranges in log space); None for a choice."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return None
    low, high = float(distribution.low), float(distribution.high)
    if high <= low:
        return 0.0
    if distribution.log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def _distance(a: FrozenTrial, b: FrozenTrial) -> float:
    """The largest difference of two trials' parameters, each as a share of its range; inf when
    they tuned other parameters or chose differently."""
    if set(a.params) != set(b.params):
        return math.inf
    largest = 0.0
    for name, value in a.params.items():
        distribution = a.distributions[name]
        here, there = _position(distribution, value), _position(distribution, b.params[name])
        if here is None:
            if value != b.params[name]:
                return math.inf
            continue
        largest = max(largest, abs(here - there))
    return largest


def objective_noise(trials: list[FrozenTrial]) -> tuple[float | None, int]:
    """(The objective's noise, the pairs it was estimated from): how much one configuration's value
    varies from one training to the next, estimated from the completed `trials` (single
    objective) that are neighbours (NEIGHBOUR_DISTANCE; a configuration repeated is one at distance
    0): the median over those pairs of |difference| / sqrt(2) (the standard deviation of one value,
    were both draws of the same). (None, pairs) with fewer than MIN_NEIGHBOUR_PAIRS pairs.

    Written here because Optuna's Terminator, which estimates the noise from a GP's fit, is
    deprecated for removal in Optuna 6 (optuna PR #6668) and has no replacement yet."""
    completed = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    differences = [abs(a.values[0] - b.values[0]) / math.sqrt(2)
                   for a, b in itertools.combinations(completed, 2) if _distance(a, b) <= NEIGHBOUR_DISTANCE]
    if len(differences) < MIN_NEIGHBOUR_PAIRS:
        return None, len(differences)
    return statistics.median(differences), len(differences)


def convergence(trials: list[FrozenTrial], patience: int, min_improvement: float | None,
                direction: str = "minimize") -> str | None:
    """Why the study has converged (tuning.stop_when_converged), or None: the last `patience` of
    its completed `trials` (in the order they completed) all failed to improve the best feasible
    value by more than `min_improvement` (None: objective_noise of the trials). A trial that
    broke tuning.constraints is never an improvement. Shared by scheduler.decide_slot and the
    replay bench (bench/search_features.py)."""
    completed = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.values),
                       key=lambda t: (t.datetime_complete is None, t.datetime_complete or 0, t.number))
    if len(completed) <= patience:
        return None
    threshold, estimated = min_improvement, ""
    if threshold is None:
        threshold, pairs = objective_noise(completed)
        if threshold is None:
            return None
        estimated = f", the objective's noise estimated from {pairs} pairs of neighbouring trials"
    sign = -1.0 if direction == "maximize" else 1.0
    best, since = None, 0
    for trial in completed:
        value = sign * trial.values[0]
        feasible = all(v <= 0.0 for v in trial.constraints.values())
        if feasible and (best is None or value < best - threshold):
            best, since = value, 0
        else:
            since += 1
            if feasible:
                best = min(best, value)
    if best is None or since < patience:
        return None
    return (f"skipped: the study converged: none of the last {since} completed trials improved the best "
            f"({sign * best:.4g}) by more than {threshold:.3g} (tuning.stop_when_converged{estimated})")
