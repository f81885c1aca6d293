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


def suggest(trial: optuna.Trial, space: list[dict]) -> dict:
    """Ask `trial` for every parameter of the space; returns {name: value}.

    A trial created with fixed parameters (a re-run of a failed trial) gets those values back.
    """
    values = {}
    for param in space:
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


def split_by_group(space: list[dict], values: dict) -> tuple[dict, dict]:
    """Sampled values as (SFTConfig kwargs, LoraConfig/quantisation kwargs), by target name."""
    training, peft = {}, {}
    for param in space:
        (training if param["group"] == "training" else peft)[param["target"]] = values[param["name"]]
    return training, peft
