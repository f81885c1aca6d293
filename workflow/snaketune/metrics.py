"""The study's objectives and custom evaluation metrics: checked at parse time (names,
directions, importable functions), computed after training, and the check that every objective
was produced.

A custom metric is a function named in tune.yaml as `module.function`, imported from the working
directory or PYTHONPATH. It is called with keyword arguments and returns a float, or a dict of
floats (each key becomes a metric):

    def my_metric(*, model, tokenizer, eval_dataset, trial_dir, metrics, **kwargs) -> float | dict

- model: the trained model (a PEFT model when LoRA is on), in eval mode
- tokenizer: its tokenizer (with the chat template)
- eval_dataset: the validation rows: `prompt` and `completion` (text), `input_ids`, `labels`
- trial_dir: the trial's directory (pathlib.Path), for files the metric wants to keep
- metrics: the metrics evaluation produced so far (eval_loss, ...)
"""

from __future__ import annotations

import contextlib
import importlib
import math
import signal
import sys
import threading
from pathlib import Path

from snaketune.errors import SnaketuneError, closest
from snaketune.records import Record, section
from snaketune.scoring import GENERATION_METRICS

DIRECTIONS = ("minimize", "maximize")

# What a trial's training and SFT evaluation produce (transformers' Trainer: loss, runtime and
# throughputs; TRL's SFTTrainer: mean_token_accuracy, entropy, num_tokens), under the names the
# metrics dict gives them; with the custom metrics' names, the objectives a study can have.
EVALUATION_METRICS = tuple(f"eval_{name}" for name in (
    "loss", "mean_token_accuracy", "entropy", "num_tokens", "runtime", "samples_per_second",
    "steps_per_second"))
# What snaketune measures of a trial itself: its peak memory in GiB (gpu.peak_memory_gib: on a GPU,
# the memory PyTorch reserved on the trial's first device; on the CPU, the process's peak resident
# memory, imports included), for tuning.constraints above all.
PEAK_MEMORY = "peak_memory_gib"
TRAINING_METRICS = ("train_loss", "train_runtime", "train_samples_per_second",
                    "train_steps_per_second", "total_flos", "epoch", "trained_steps",
                    "trained_tokens", PEAK_MEMORY)

# What a trial has at every evaluation during training (train.ReportAndPrune): the evaluation's
# metrics, and its training so far (seconds, steps, tokens, epochs, peak memory). The objectives
# pruner: pareto can compare at each step; the others are computed once, after training.
DURING_TRAINING = (*EVALUATION_METRICS, "train_runtime", "trained_steps", "trained_tokens", "epoch", PEAK_MEMORY)


class MissingObjectiveError(SnaketuneError, RuntimeError):
    """Evaluation finished without a metric named in `tuning.evaluation_metrics`."""


@section
class CustomMetric(Record):
    """One entry of `tuning.custom_eval_metrics`."""

    name: str  # the metric's name, as evaluation_metrics names it
    function: str  # 'module.function', imported from the working directory or PYTHONPATH


@section
class Constraint(Record):
    """One entry of `tuning.constraints`: a metric a trial produces must stay at or under `max`
    and/or at or over `min` (None: no such bound), in the metric's own unit (train_runtime in
    seconds, peak_memory_gib in GiB, ...). A trial outside a bound is infeasible: Optuna's samplers
    that model constraints (TPE, GP, NSGA-II/III) steer away from it, and it is never the best."""

    metric: str
    max: float | None
    min: float | None

    def as_dict(self) -> dict:
        """The YAML's form: metric, and max and/or min."""
        return {"metric": self.metric, **{k: v for k, v in (("max", self.max), ("min", self.min)) if v is not None}}

    def bounds(self) -> list[tuple[str, float, int]]:
        """(the constraint's name in the study, its bound, the sign of a violation: +1 for max)."""
        bounds = []
        if self.max is not None:
            bounds.append((f"{self.metric} <= {self.max:g}", self.max, 1))
        if self.min is not None:
            bounds.append((f"{self.metric} >= {self.min:g}", self.min, -1))
        return bounds


# A constraint's metric that a completed trial did not produce (a custom metric's NaN) counts as
# this much over its bound: the trial cannot be shown to satisfy it.
UNMEASURED_VIOLATION = 1.0


def constraint_values(constraints: list[Constraint], measured: dict, unmeasured: float = UNMEASURED_VIOLATION
                      ) -> dict[str, float]:
    """{constraint name: value} as Optuna's Trial.set_constraint takes it (> 0: violated) for a
    trial whose finite metrics are `measured`: every constraint, always (GPSampler refuses trials
    judged by different numbers of constraints). A value is the excess over the bound relative to
    the bound (0.2: 20% over), so that constraints in different units add up comparably where a
    sampler sums them (NSGA-II's constrained domination, TPE's infeasible ranking); a bound of 0
    takes the plain excess. A metric not measured takes `unmeasured`: UNMEASURED_VIOLATION for a
    completed trial, 0.0 (not known to violate) for a pruned one, not evaluated, or an earlier
    study's trial that did not record the metric."""
    values = {}
    for constraint in constraints:
        value = measured.get(constraint.metric)
        for name, bound, sign in constraint.bounds():
            if value is None:
                values[name] = unmeasured
                continue
            excess = sign * (float(value) - bound)
            values[name] = excess / abs(bound) if bound else excess
    return values


def resolve_constraints(entries: list, custom_names: list[str] | None, objectives: list[str] = ()
                        ) -> tuple[list[Constraint], list[str]]:
    """`tuning.constraints` of a schema-filled config (metric, max, min; the schema checked the
    shape): (entries, problems). Each metric must be one a trial produces (as resolve_objectives
    checks objectives; `custom_names=None` skips that check): an answer score or an lm-eval metric
    only when it is one of the `objectives` (trials compute those only then). A min must not exceed
    its max."""
    known = (*EVALUATION_METRICS, *TRAINING_METRICS, *GENERATION_METRICS, *(custom_names or ()))
    constraints, problems = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str):
            continue  # the schema reports the shape
        path = f"tuning.constraints[{i}]"
        name = entry["metric"]
        if custom_names is not None and name not in known and not name.startswith("lm_eval:"):
            problems.append(f"{path}.metric: {name!r} is not a metric a trial produces{closest(name, known)} "
                            f"(e.g. {PEAK_MEMORY} in GiB, train_runtime in seconds, eval_loss, or a custom "
                            "metric of tuning.custom_eval_metrics)")
        elif (name in GENERATION_METRICS or name.startswith("lm_eval:")) and name not in objectives:
            problems.append(f"{path}.metric: {name!r} is computed only when it is an objective (trials answer the "
                            "validation prompts for it); add it to tuning.evaluation_metrics, or constrain a metric "
                            "every trial produces")
        if entry.get("max") is not None and entry.get("min") is not None and entry["min"] > entry["max"]:
            problems.append(f"{path}: min {entry['min']} is above max {entry['max']}: no trial could satisfy it")
        constraints.append(Constraint.from_fields(entry))
    names = [c.metric for c in constraints]
    if len(set(names)) != len(names):
        problems.append(f"tuning.constraints: names a metric twice ({names}); give one entry per metric, "
                        "with its max and min")
    return constraints, problems


# -- parse-time checks ------------------------------------------------------------------------
def resolve_objectives(metrics: list[str], directions: list[str],
                       custom_names: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """`tuning.evaluation_metrics` and `evaluation_direction` (lists, as the schema checked):
    (metrics, one direction per metric, problems). A single direction applies to every metric,
    as in Oumi. Each objective must be a metric training or SFT evaluation produces
    (EVALUATION_METRICS, TRAINING_METRICS), a generation metric (scoring.GENERATION_METRICS: the
    generation section's answers, scored) or one of `custom_names` (tuning.custom_eval_metrics);
    `custom_names=None` skips that check."""
    problems = []
    known = (*EVALUATION_METRICS, *TRAINING_METRICS, *GENERATION_METRICS, *(custom_names or ()))
    for i, name in enumerate(metrics if custom_names is not None else ()):
        if name not in known and not name.startswith("lm_eval:"):  # those: snaketune.lm_harness
            problems.append(
                f"tuning.evaluation_metrics[{i}]: {name!r} is not produced by SFT evaluation "
                f"(it produces {', '.join(EVALUATION_METRICS[:4])}, ...), is not a generation metric "
                f"({', '.join(GENERATION_METRICS)}) nor a custom metric"
                f"{closest(name, known)}; to optimise it, define it in tuning.custom_eval_metrics "
                f"(name: {name}, function: my_module.my_function)")
    if len(set(metrics)) != len(metrics):
        problems.append(f"tuning.evaluation_metrics: names a metric twice: {metrics}")
    for i, direction in enumerate(directions):
        if direction not in DIRECTIONS:
            problems.append(f"tuning.evaluation_direction[{i}]: {direction!r} is not a direction; "
                            "use minimize or maximize")
    if len(directions) == 1:
        directions = directions * len(metrics)
    elif len(directions) != len(metrics):
        problems.append(f"tuning.evaluation_direction: has {len(directions)} directions for "
                        f"{len(metrics)} evaluation_metrics; give one direction per metric, or a "
                        "single one for all")
    return list(metrics), list(directions), problems


def resolve_section(cfg: dict, base: Path, written: dict, ask: bool) -> tuple[list[CustomMetric], list[str], list[str]]:
    """`tuning.custom_eval_metrics` of a schema-filled config (name, function; the schema checked
    the shape): (entries, problems, notices), the shape every section resolver has (`written` is
    unused). Puts `base` (the working directory) on `sys.path`, where custom metric modules live,
    and imports every function when `ask` (not in a job of a validated run)."""
    entries = cfg["tuning"]["custom_eval_metrics"]
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    seen, custom, problems = set(), [], []
    for i, entry in enumerate(entries):
        path = f"tuning.custom_eval_metrics[{i}]"
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                and isinstance(entry.get("function"), str)):
            continue  # the schema reports the shape; the other entries are still checked
        if entry["name"] in seen:
            problems.append(f"{path}.name: {entry['name']!r} is defined twice")
        elif entry["name"] in GENERATION_METRICS:
            problems.append(f"{path}.name: {entry['name']!r} is a built-in generation metric (set it in "
                            "tuning.evaluation_metrics alone, with a generation: section if needed); give "
                            "your own metric another name")
        seen.add(entry["name"])
        problem = import_problem(entry["function"]) if ask else None
        if problem:
            problems.append(f"{path}.function: {problem}")
        custom.append(CustomMetric.from_fields(entry))
    return custom, problems, []


def import_problem(dotted: str) -> str | None:
    """Why 'module.attr' cannot be used as a function, or None if it can."""
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        return f"{dotted!r} is not 'module.function'"
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any import error is the user's to see
        return f"cannot import module {module_name!r}: {type(e).__name__}: {e}"
    fn = getattr(module, attr, None)
    if not callable(fn):
        return f"module {module_name!r} has no function {attr!r}"
    return None


def import_function(dotted: str):
    """The function 'module.attr' names (checked by `import_problem` at parse time)."""
    module_name, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


# -- after training ---------------------------------------------------------------------------


class EvaluationTimeout(SnaketuneError, TimeoutError):
    """An evaluation after training ran past tuning.evaluation_timeout_minutes."""


@contextlib.contextmanager
def evaluation_time_limit(minutes: float | None, what: str):
    """Raise EvaluationTimeout in this (the main) thread once the block has run `minutes`.

    A SIGALRM timer, as pytest-timeout's signal method: Python code (a metric's loop, generation's
    token loop, lm-eval) is stopped where it is; a single C call that never returns is not. The
    trial fails with the message, is told FAIL, and the run goes on. None: no limit."""
    if not minutes or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise EvaluationTimeout(f"{what} ran past tuning.evaluation_timeout_minutes ({minutes:g} min) and "
                                "was stopped; raise the limit if it needs longer, or make it faster")

    before = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, minutes * 60)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def compute_custom_metrics(custom: list[CustomMetric], timeout_minutes: float | None = None,
                           **context) -> dict[str, float]:
    """Each custom metric's value(s), in order ({name: float}); each call under
    `evaluation_time_limit(timeout_minutes)`."""
    results = {}
    produced = context.pop("metrics", {})
    for entry in custom:
        fn = import_function(entry.function)
        with evaluation_time_limit(timeout_minutes, f"custom metric {entry.name!r} ({entry.function})"):
            value = fn(**context, metrics={**produced, **results})
        if isinstance(value, dict):
            results.update({str(k): _as_float(v, entry) for k, v in value.items()})
            if entry.name not in value and len(value) == 1:  # a one-key dict names its metric
                results[entry.name] = _as_float(next(iter(value.values())), entry)
        else:
            results[entry.name] = _as_float(value, entry)
    return results


def _as_float(value, entry: CustomMetric) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"custom metric {entry.name!r} ({entry.function}) returned "
                        f"{value!r}; expected a float or a dict of floats") from None


def objective_values(metrics: dict, names: list[str]) -> list[float]:
    missing = [n for n in names if n not in metrics]
    if missing:
        raise MissingObjectiveError(
            f"evaluation did not produce the objective(s) {missing} named in "
            f"tuning.evaluation_metrics; metrics produced: {sorted(metrics)}"
        )
    values = [float(metrics[n]) for n in names]
    bad = [n for n, v in zip(names, values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"objective(s) {bad} are not finite: {[metrics[n] for n in bad]}")
    return values

