"""The search space: resolved parameter entries (see config.py) as Optuna distributions."""

from __future__ import annotations

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def distribution(param: dict) -> BaseDistribution:
    if param["type"] == "categorical":
        return CategoricalDistribution(param["choices"])
    if param["type"] == "int":
        return IntDistribution(param["low"], param["high"], log=param["log"], step=param["step"])
    return FloatDistribution(param["low"], param["high"], log=param["log"], step=param["step"])


def distributions(space: list[dict]) -> dict[str, BaseDistribution]:
    return {param["name"]: distribution(param) for param in space}


def ordered(space: list[dict]) -> list[dict]:
    """The space with every parameter after those its condition or scale_by refers to."""
    done, result, pending = set(), [], list(space)
    while pending:
        ready = [p for p in pending if all(parent in done or parent not in {q["name"] for q in space}
                                           for parent in parents(p))]
        if not ready:
            raise ValueError("conditions form a cycle: " + ", ".join(p["name"] for p in pending))
        for param in ready:
            result.append(param)
            done.add(param["name"])
            pending.remove(param)
    return result


def parents(param: dict) -> list[str]:
    return [*(param.get("condition") or {}), *([param["scale_by"]] if param.get("scale_by") else [])]


def is_active(param: dict, values: dict) -> bool:
    """Whether a conditional parameter is tuned, given the values sampled before it."""
    condition = param.get("condition")
    if not condition:
        return True
    (parent, allowed), = condition.items()
    return parent in values and values[parent] in allowed


def suggest(trial: optuna.Trial, space: list[dict]) -> dict:
    """Ask `trial` for every active parameter of the space; returns {name: sampled value}.

    A trial created with fixed parameters (a re-run, an enqueued or a grid trial) gets those back.
    A parameter whose condition does not hold is not sampled at all (it is absent from the trial).
    """
    values = {}
    for param in space:
        if not is_active(param, values):
            continue
        name = param["name"]
        if param["type"] == "categorical":
            values[name] = trial.suggest_categorical(name, param["choices"])
        elif param["type"] == "int":
            values[name] = trial.suggest_int(name, param["low"], param["high"],
                                             step=param["step"], log=param["log"])
        else:
            values[name] = trial.suggest_float(name, param["low"], param["high"],
                                               step=param["step"], log=param["log"])
    return values


def effective_values(space: list[dict], values: dict) -> dict:
    """The values training uses: a `scale_by` parameter multiplied by its parent's value."""
    effective = dict(values)
    for param in space:
        if param["name"] in values and param.get("scale_by") in values:
            effective[param["name"]] = values[param["name"]] * values[param["scale_by"]]
    return effective


def check_value(param: dict, value) -> str | None:
    """Why `value` is not in the parameter's distribution, or None."""
    if param["type"] == "categorical":
        return None if value in param["choices"] else f"{value!r} is not one of the choices {param['choices']}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number"
    if not param["low"] <= value <= param["high"]:
        return f"{value} is outside [{param['low']}, {param['high']}]"
    if param["type"] == "int" and not float(value).is_integer():
        return f"{value} is not an integer"
    step = param.get("step")
    if step and not param["log"] and abs(((value - param["low"]) / step) - round((value - param["low"]) / step)) > 1e-8:
        return f"{value} is not on the step grid (low {param['low']}, step {step})"
    return None


def split_by_group(space: list[dict], values: dict) -> tuple[dict, dict]:
    """Sampled values as (SFTConfig kwargs, LoraConfig/quantisation kwargs), by target name."""
    training, peft = {}, {}
    effective = effective_values(space, values)
    for param in space:
        if param["name"] in effective:  # an inactive conditional parameter keeps its default
            (training if param["group"] == "training" else peft)[param["target"]] = effective[param["name"]]
    return training, peft
