"""Results from the journal: trials_results.csv, the best trial (or Pareto front) and best model.

Everything is read from the journal, not from the trials' JSON files, so the table and the study
never disagree.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from snaketune import study as studies
from snaketune.layout import TrialFiles, write_json

if TYPE_CHECKING:
    from snaketune.config import TuningParams
    from snaketune.model import ModelParams

OPTUNA_COLUMNS = ("number", "values", "datetime_start", "datetime_complete", "duration", "params",
                  "user_attrs", "state")


def results_table(study: optuna.Study, metrics: list[str]):
    """The trials as a DataFrame: Optuna's columns, one column per metric (named as the metric)."""
    import pandas as pd

    attempts = {}
    for trial in study.get_trials(deepcopy=False):
        slot = trial.user_attrs.get("slot")
        attempts[slot] = attempts.get(slot, 0) + 1
    rows = []
    latest = studies.latest_attempts(study)
    frame = study.trials_dataframe(attrs=OPTUNA_COLUMNS)
    frame = frame.set_index("number", drop=False)
    # Objectives under their own names: Optuna writes values_<name> for a study with metric names
    # (snaketune sets them), value or values_<i> for one without (older journals).
    objective_columns = {name: f"values_{name}" if f"values_{name}" in frame.columns
                         else "value" if "value" in frame.columns else f"values_{i}"
                         for i, name in enumerate(metrics)}
    for trial in latest:
        row = frame.loc[trial.number].to_dict()
        for name, column in objective_columns.items():
            row[name] = row.pop(column, None)
        for name, value in trial.user_attrs.get("metrics", {}).items():
            row.setdefault(name, value)
        row["slot"] = trial.user_attrs.get("slot")
        row["attempts"] = attempts.get(row["slot"], 1) if row["slot"] is not None else 1
        row["fail_reason"] = trial.user_attrs.get("fail_reason")
        row["trial_dir"] = trial.user_attrs.get("trial_dir")
        rows.append({k: v for k, v in row.items() if not k.startswith(("user_attrs_", "values_"))})
    present = {row["slot"] for row in rows}
    for slot, reason in sorted(studies.skipped_slots(study).items()):
        if slot not in present:  # the time budget ran out before this slot started
            rows.append({"slot": slot, "attempts": 0, "state": "SKIPPED", "fail_reason": reason})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values("slot", kind="stable")
    first = ["number", "slot", "attempts", "state", *metrics]
    params = sorted(c for c in table.columns if c.startswith("params_"))
    rest = [c for c in table.columns if c not in first and c not in params and c != "trial_dir"]
    return table.reindex(columns=[*first, *params, *rest, "trial_dir"])


def trial_record(trial: optuna.trial.FrozenTrial, metrics: list[str]) -> dict:
    trial_dir = trial.user_attrs.get("trial_dir")
    return {
        "number": trial.number,
        "slot": trial.user_attrs.get("slot"),
        "values": dict(zip(metrics, trial.values or [])),
        "params": trial.params,
        "metrics": trial.user_attrs.get("metrics", {}),
        "trial_dir": trial_dir,
        "checkpoint": TrialFiles(Path(trial_dir)).last_checkpoint() if trial_dir else None,
    }


def aggregate(tuning: TuningParams, model: ModelParams, model_source: dict, results_csv: str | Path, best_record: str | Path,
              best_model: str | Path | None = None, pareto_front: str | Path | None = None) -> None:
    """Write the results of every trial in the journal, failed ones included; the best trial is
    chosen among the completed ones.

    The paths are rule aggregate's outputs: `results_csv` (every trial), `best_record` (the best
    trial, or with several objectives the Pareto front as {metrics, directions, trials}), and
    either `best_model` (one objective: the best trial's model, LoRA merged in) or `pareto_front`
    (the Pareto-optimal rows of the table). Raises RuntimeError when no trial completed.
    """
    study = studies.load_study(tuning.output_dir, tuning.study_name)
    metrics = tuning.metrics
    table = results_table(study, metrics)
    table.to_csv(results_csv, index=False)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise RuntimeError(f"no trial of study {tuning.study_name!r} completed; see the "
                           f"fail_reason column of {results_csv}")
    if len(metrics) > 1:
        front = [trial_record(t, metrics) for t in study.best_trials]
        write_json(best_record, {"metrics": metrics, "directions": tuning.directions, "trials": front})
        numbers = {t["number"] for t in front}
        table[table["number"].isin(numbers)].to_csv(pareto_front, index=False)
        return
    best = trial_record(study.best_trial, metrics)
    best["best_model"] = str(best_model)
    save_best_model(model, model_source, best["checkpoint"], Path(best_model), best)
    write_json(best_record, best)


def aggregate_after_failure(tuning: TuningParams) -> None:
    """The table of a run where some jobs failed (Snakemake's onerror): written all the same.

    Snakemake never runs `aggregate` when one of its inputs (a failed trial) is missing. This
    writes trials_results.csv from the journal, and only that: the other outputs of `aggregate`
    stay missing, so the next run still re-runs the failed trials and then `aggregate` itself.
    """
    layout = tuning.layout
    study = studies.load_study(layout.output_dir, tuning.study_name, missing_ok=True)
    if study is None:
        return
    results_table(study, tuning.metrics).to_csv(layout.results_csv, index=False)
    latest = studies.latest_attempts(study)
    failed = [t for t in latest if t.state == TrialState.FAIL and not studies.is_finished(t)]
    print(f"\nsnaketune: {len(failed)} trial(s) failed; the table so far is in {layout.results_csv}")
    for trial in failed:
        print(f"  trial_{trial.user_attrs.get('slot')} (trial {trial.number}): "
              f"{trial.user_attrs.get('fail_reason', 'unknown')}")
    if len(tuning.metrics) == 1 and study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        print(f"Best completed so far: trial_{best.user_attrs.get('slot')} (trial {best.number}), "
              f"{tuning.metrics[0]}={best.value:.4g}")
    print("Run the same command again to re-run exactly the failed trials with their parameters.")


def save_best_model(model_cfg: ModelParams, model_source: dict, checkpoint: str | None, target: Path,
                    best: dict) -> None:
    """The best trial's final model as a plain `from_pretrained` directory (LoRA merged in)."""
    from snaketune import model as models

    if checkpoint is None:
        raise FileNotFoundError(f"best trial {best['number']} has no checkpoint in {best['trial_dir']}")
    tokenizer = models.load_tokenizer(model_source, model_cfg)
    if (Path(checkpoint) / "adapter_config.json").exists():
        from peft import PeftModel

        base = models.load_model(model_source, model_cfg)
        model = PeftModel.from_pretrained(base, checkpoint).merge_and_unload()
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(checkpoint)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_json(staging / "snaketune_trial.json", {
        "trial_number": best["number"], "checkpoint": checkpoint, "params": best["params"],
        "values": best["values"], "base_model": model_cfg.model_name,
    })
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
