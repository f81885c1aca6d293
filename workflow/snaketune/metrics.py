"""Custom evaluation metrics and the check that every objective was produced.

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

import math
from pathlib import Path

from snaketune.config import import_function
from snaketune.errors import SnaketuneError


class MissingObjectiveError(SnaketuneError, RuntimeError):
    """Evaluation finished without a metric named in `tuning.evaluation_metrics`."""


def compute_custom_metrics(custom: list[dict], **context) -> dict[str, float]:
    results = {}
    produced = context.pop("metrics", {})
    for entry in custom:
        fn = import_function(entry["function"])
        value = fn(**context, metrics={**produced, **results})
        if isinstance(value, dict):
            results.update({str(k): _as_float(v, entry) for k, v in value.items()})
            if entry["name"] not in value and len(value) == 1:  # a one-key dict names its metric
                results[entry["name"]] = _as_float(next(iter(value.values())), entry)
        else:
            results[entry["name"]] = _as_float(value, entry)
    return results


def _as_float(value, entry: dict) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"custom metric {entry['name']!r} ({entry['function']}) returned "
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

