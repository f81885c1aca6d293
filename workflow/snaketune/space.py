"""The search space: tunable parameters, checked at parse time and held as Optuna distributions.

A tune.yaml names a parameter's type as Oumi does (categorical, int, uniform, float, loguniform)
with bounds, step, log or choices, and optionally `condition: {other: [values]}` (tuned only when
`other` takes one of the values) and `scale_by: other` (the sampled value is multiplied by other's,
e.g. lora_alpha as a multiple of lora_r). A resolved parameter (`Parameter`) is a frozen record in
Optuna's terms (categorical, int or float) holding the Optuna distribution built from it once; its
`as_dict()` is what the journal stores as the study's definition.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from snaketune.errors import closest

PARAM_TYPES = ("categorical", "int", "uniform", "float", "loguniform")
CONDITIONAL_KEYS = {"condition", "scale_by"}
PARAM_KEYS = {
    "categorical": {"type", "choices"} | CONDITIONAL_KEYS,
    "int": {"type", "low", "high", "step", "log"} | CONDITIONAL_KEYS,
    "uniform": {"type", "low", "high", "step", "log"} | CONDITIONAL_KEYS,
    "float": {"type", "low", "high", "step", "log"} | CONDITIONAL_KEYS,
    "loguniform": {"type", "low", "high"} | CONDITIONAL_KEYS,
}


@dataclass(frozen=True)
class Parameter:
    """A resolved tunable parameter, in Optuna's terms.

    `name` as written under tunable_*_params; `group` "training" or "peft"; `target` the
    SFTConfig/LoraConfig field it sets; `type` "categorical" (with `choices`) or "int"/"float"
    (with `low`, `high`, `step` (None: continuous float), `log`); `condition` {other: [values]}
    (tuned only when `other` takes one of them) and `scale_by` (the value is multiplied by
    another's) when given. `distribution` is its Optuna distribution, built (and so checked by
    Optuna) on construction; raises Optuna's ValueError/TypeError for values it refuses.
    A stepped range whose high is not low + k*step takes Optuna's high, with a `notice` saying so.
    `as_dict()` is its JSON form, as the journal's study definition stores it.
    """

    name: str
    group: str
    target: str
    type: str
    choices: tuple | None = None
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    condition: dict | None = None
    scale_by: str | None = None
    distribution: BaseDistribution = field(init=False, repr=False, compare=False)
    notice: str | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            built = build_distribution(self)
        object.__setattr__(self, "distribution", built)
        # A stepped range whose high is not low + k*step: Optuna samples up to the last step below
        # high (and says so in a warning). The parameter takes Optuna's bounds, so the grid, the
        # enqueued-value checks and the journal's definition all see the range sampled.
        if self.type != "categorical" and built.high != self.high:
            object.__setattr__(self, "notice", f"high {self.high} is not low + a multiple of step {self.step}; "
                                               f"Optuna samples up to {built.high}, which is the high used")
            object.__setattr__(self, "high", built.high)
        for warning in said:
            if self.notice is None:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)

    def as_dict(self) -> dict:
        """The JSON form: name, group, target, type, then choices or low/high/step/log, then
        condition and scale_by when given (the journal's study definition, unchanged since the
        parameter was a dict)."""
        shape = ({"choices": list(self.choices)} if self.type == "categorical"
                 else {"low": self.low, "high": self.high, "step": self.step, "log": self.log})
        given = {k: v for k, v in (("condition", self.condition), ("scale_by", self.scale_by)) if v is not None}
        return {"name": self.name, "group": self.group, "target": self.target, "type": self.type, **shape, **given}

    @classmethod
    def from_dict(cls, entry: dict) -> Parameter:
        """The parameter `as_dict()` wrote."""
        return cls(**entry)


def build_distribution(param: Parameter) -> BaseDistribution:
    if param.type == "categorical":
        return CategoricalDistribution(param.choices)
    if param.type == "int":
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def distributions(space: list[Parameter]) -> dict[str, BaseDistribution]:
    return {param.name: param.distribution for param in space}


# -- parse-time checks ------------------------------------------------------------------------------
def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_spec(path: str, spec) -> tuple[dict | None, list[str]]:
    """One tunable parameter as written in tune.yaml (`path` is its YAML path), in Optuna's terms:
    ({"type": "categorical", "choices"} or {"type": "int"|"float", "low", "high", "step", "log"},
    []), or (None, problems as 'yaml.path: what is wrong').

    Optuna's constructors (`Parameter`) have the last word; these checks come first because Optuna
    accepts what a tune.yaml must not mean (low == high; a choice that is not a scalar, with a
    warning; 1 and true as two choices; int bounds or step of 1.5, truncated; log: "yes", taken as
    true) and because its messages do not name the field at fault (`.low`, `.step`).
    """
    if not isinstance(spec, dict) or "type" not in spec:
        return None, []  # the schema reports it ($defs/tunable: a mapping with a type)
    kind = spec["type"]
    if kind not in PARAM_TYPES:
        return None, [f"{path}.type: unknown parameter type {kind!r}{closest(str(kind), PARAM_TYPES)}; "
                      f"expected one of {', '.join(PARAM_TYPES)}"]
    problems = [f"{path}.{key}: not a field of a {kind} parameter{closest(key, PARAM_KEYS[kind])}"
                for key in sorted(set(spec) - PARAM_KEYS[kind])]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            return None, problems + [f"{path}.choices: needs a non-empty list of choices"]
        for i, choice in enumerate(choices):
            if not (choice is None or isinstance(choice, (bool, int, float, str))):
                problems.append(f"{path}.choices[{i}]: {choice!r} is not a scalar "
                                "(Optuna choices are None, bool, int, float or str)")
        # Optuna finds a choice by ==, so 1, 1.0 and true (or 0 and false) are one choice.
        if any(a == b for i, a in enumerate(choices) for b in choices[:i]):
            problems.append(f"{path}.choices: lists the same choice twice (Optuna treats equal "
                            "values such as 1, 1.0 and true as one choice)")
        return (None, problems) if problems else ({"type": "categorical", "choices": choices}, [])

    low, high = spec.get("low"), spec.get("high")
    for key, bound in (("low", low), ("high", high)):
        if bound is None:
            problems.append(f"{path}.{key}: required but missing")
        elif not _is_number(bound):
            problems.append(f"{path}.{key}: {bound!r} is not a number")
        elif kind == "int" and not float(bound).is_integer():
            problems.append(f"{path}.{key}: {bound!r} is not an integer (an int parameter needs "
                            "integer bounds)")
    if problems:
        return None, problems
    log = kind == "loguniform" or bool(spec.get("log", False))
    step = spec.get("step")
    if "log" in spec and not isinstance(spec["log"], bool):
        problems.append(f"{path}.log: {spec['log']!r} is not true or false")
    if low >= high:
        problems.append(f"{path}: low ({low}) must be less than high ({high})")
    if log and low <= 0:
        problems.append(f"{path}.low: a log-scaled parameter needs low > 0, got {low}")
    if step is not None:
        if not _is_number(step) or step <= 0 or (kind == "int" and not float(step).is_integer()):
            problems.append(f"{path}.step: {step!r} is not a positive "
                            f"{'integer' if kind == 'int' else 'number'}")
        elif log and not (kind == "int" and step == 1):
            problems.append(f"{path}.step: cannot be combined with log scale (Optuna samples log "
                            "scales without a step)")
    if problems:
        return None, problems
    if kind == "int":
        return {"type": "int", "low": int(low), "high": int(high), "step": int(step or 1), "log": log}, []
    return {"type": "float", "low": float(low), "high": float(high),
            "step": None if step is None else float(step), "log": log}, []


def parameter(path: str, name: str, group: str, target: str, spec) -> tuple[Parameter | None, list[str]]:
    """The `Parameter` for tunable `name` (`group` training or peft, `target` its SFTConfig or
    LoraConfig field) from its tune.yaml `spec`: (parameter, []) or (None, problems)."""
    fields, problems = check_spec(path, spec)
    if fields is None:
        return None, problems
    conditional = {k: spec[k] for k in CONDITIONAL_KEYS if spec.get(k) is not None}
    try:
        return Parameter(name=name, group=group, target=target, **fields, **conditional), []
    except (ValueError, TypeError) as e:  # the library's own complaint about a value
        return None, [f"{path}: Optuna refused it: {e}"]


def resolve_conditions(space: list[Parameter]) -> tuple[list[Parameter], list[str]]:
    """Check every `condition` and `scale_by` against the other parameters; returns (the space
    with every parent before its children, problems). A malformed condition is dropped; a
    condition's values become a list."""
    problems = []
    by_name = {p.name: p for p in space}
    resolved = []
    for param in space:
        path = f"tuning.tunable_{param.group}_params.{param.name}"
        condition = param.condition
        if condition is not None:
            if not (isinstance(condition, dict) and len(condition) == 1):
                problems.append(f"{path}.condition: write it as {{other_parameter: [values, ...]}}")
                param = replace(param, condition=None)
            else:
                (parent, values), = condition.items()
                values = values if isinstance(values, list) else [values]
                param = replace(param, condition={parent: values})
                if parent not in by_name or parent == param.name:
                    problems.append(f"{path}.condition: {parent!r} is not another tunable parameter")
                elif by_name[parent].type == "categorical":
                    bad = [v for v in values if v not in by_name[parent].choices]
                    if bad:
                        problems.append(f"{path}.condition: {bad} are not choices of {parent!r}")
        scale_by = param.scale_by
        if scale_by is not None:
            parent = by_name.get(scale_by)
            if parent is None or scale_by == param.name:
                problems.append(f"{path}.scale_by: {scale_by!r} is not another tunable parameter")
            elif not (_is_numeric(parent) and _is_numeric(param)):
                problems.append(f"{path}.scale_by: both {param.name!r} and {scale_by!r} must be numeric")
        resolved.append(param)
    try:
        return ordered(resolved), problems
    except ValueError as e:
        return resolved, problems + [f"tuning: {e}"]


def _is_numeric(param: Parameter) -> bool:
    return param.type != "categorical" or all(_is_number(c) for c in param.choices)


def resolve_enqueued(entries: list[Parameter], space: list[Parameter], n_trials: int, sampler: str) -> tuple[list[Parameter], list[str]]:
    """Check `tuning.enqueue_trials` (configurations evaluated first, one a slot) against the
    space: every value in its parameter's distribution, a conditional parameter only where its
    condition holds. Returns (the entries, problems)."""
    problems = []
    if entries and sampler == "GridSampler":
        problems.append("tuning.enqueue_trials: GridSampler runs every grid point once by itself; "
                        "remove enqueue_trials or use another sampler")
    if entries and len(entries) > max(n_trials, 1):
        problems.append(f"tuning.enqueue_trials: {len(entries)} configurations for {n_trials} trials; "
                        "raise tuning.n_trials or enqueue fewer")
    by_name = {p.name: p for p in space}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue  # the schema reports the shape; the other entries are still checked
        for name, value in entry.items():
            path = f"tuning.enqueue_trials[{i}].{name}"
            if name not in by_name:
                problems.append(f"{path}: not a tunable parameter{closest(name, by_name)}")
                continue
            problem = check_value(by_name[name], value)
            if problem:
                problems.append(f"{path}: {problem}")
            elif not is_active(by_name[name], entry):
                (parent, allowed), = by_name[name].condition.items()
                problems.append(f"{path}: is only tuned when {parent} is one of {allowed}; "
                                f"this configuration has {parent}={entry.get(parent)!r}")
    return [dict(entry) for entry in entries if isinstance(entry, dict)], problems


# -- ordering and sampling --------------------------------------------------------------------------


def ordered(space: list[Parameter]) -> list[Parameter]:
    """The space with every parameter after those its condition or scale_by refers to."""
    done, result, pending = set(), [], list(space)
    while pending:
        ready = [p for p in pending if all(parent in done or parent not in {q.name for q in space}
                                           for parent in parents(p))]
        if not ready:
            raise ValueError("conditions form a cycle: " + ", ".join(p.name for p in pending))
        for param in ready:
            result.append(param)
            done.add(param.name)
            pending.remove(param)
    return result


def parents(param: Parameter) -> list[str]:
    return [*(param.condition or {}), *([param.scale_by] if param.scale_by else [])]


def is_active(param: Parameter, values: dict) -> bool:
    """Whether a conditional parameter is tuned, given the values sampled before it."""
    condition = param.condition
    if not condition:
        return True
    (parent, allowed), = condition.items()
    return parent in values and values[parent] in allowed


def suggest(trial: optuna.Trial, space: list[Parameter]) -> dict:
    """Ask `trial` for every active parameter of the space; returns {name: sampled value}.

    A trial created with fixed parameters (a re-run, an enqueued or a grid trial) gets those back.
    A parameter whose condition does not hold is not sampled at all (it is absent from the trial).
    """
    values = {}
    for param in space:
        if not is_active(param, values):
            continue
        name = param.name
        if param.type == "categorical":
            values[name] = trial.suggest_categorical(name, param.choices)
        elif param.type == "int":
            values[name] = trial.suggest_int(name, param.low, param.high,
                                             step=param.step, log=param.log)
        else:
            values[name] = trial.suggest_float(name, param.low, param.high,
                                               step=param.step, log=param.log)
    return values


def corners(space: list[Parameter]) -> list[tuple[Parameter | None, object, dict]]:
    """Points of the space that reach each of its edges: every categorical choice and every bound,
    one parameter at a time, the others at their first choice or low bound; a conditional
    parameter's parent takes a value under which it is tuned. Returns (parameter varied, its value,
    {name: value} of the active parameters) triples, the first the base point (None, None, ...).
    Enough to find a value a library refuses without training at every combination."""

    def point(overrides: dict) -> dict:
        values = {}
        for param in space:
            if is_active(param, values):
                values[param.name] = overrides.get(param.name, edge_values(param)[0])
        return values

    result = [(None, None, point({}))]
    for param in space:
        for value in edge_values(param):
            overrides = {param.name: value}
            for parent, allowed in (param.condition or {}).items():
                overrides[parent] = allowed[0]
            values = point(overrides)
            if values.get(param.name) == value:
                result.append((param, value, values))
    return result


def edge_values(param: Parameter) -> list:
    """A parameter's choices, or its low and high bounds."""
    return list(param.choices) if param.type == "categorical" else [param.low, param.high]


def effective_values(space: list[Parameter], values: dict) -> dict:
    """The values training uses: a `scale_by` parameter multiplied by its parent's value."""
    effective = dict(values)
    for param in space:
        if param.name in values and param.scale_by in values:
            effective[param.name] = values[param.name] * values[param.scale_by]
    return effective


def check_value(param: Parameter, value) -> str | None:
    """Why `value` is not in the parameter's distribution, or None."""
    if param.type == "categorical":
        return None if value in param.choices else f"{value!r} is not one of the choices {list(param.choices)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number"
    if not param.low <= value <= param.high:
        return f"{value} is outside [{param.low}, {param.high}]"
    if param.type == "int" and not float(value).is_integer():
        return f"{value} is not an integer"
    step = param.step
    if step and not param.log and abs(((value - param.low) / step) - round((value - param.low) / step)) > 1e-8:
        return f"{value} is not on the step grid (low {param.low}, step {step})"
    return None


def split_by_group(space: list[Parameter], values: dict) -> tuple[dict, dict]:
    """Sampled values as (SFTConfig kwargs, LoraConfig/quantisation kwargs), by target name."""
    training, peft = {}, {}
    effective = effective_values(space, values)
    for param in space:
        if param.name in effective:  # an inactive conditional parameter keeps its default
            (training if param.group == "training" else peft)[param.target] = effective[param.name]
    return training, peft
