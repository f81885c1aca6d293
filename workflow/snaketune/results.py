"""Results from the journal: trials_results.csv, the best trial (or Pareto front) and best model.

Everything is read from the journal, not from the trials' JSON files, so the table and the study
never disagree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
from optuna.trial import TrialState

from snaketune import study as studies
from snaketune.train import last_checkpoint, write_json

OPTUNA_COLUMNS = ("number", "values", "datetime_start", "datetime_complete", "duration", "params",
                  "user_attrs", "state")


def latest_attempts(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """One trial per slot, its latest attempt; trials made outside a slot are kept as they are."""
    by_slot, others = {}, []
    for trial in study.get_trials(deepcopy=False):
        slot = trial.user_attrs.get("slot")
        if slot is None:
            others.append(trial)
        elif slot not in by_slot or trial.number > by_slot[slot].number:
            by_slot[slot] = trial
    return sorted([*by_slot.values(), *others], key=lambda t: (t.user_attrs.get("slot", 1e9), t.number))


def results_table(study: optuna.Study, metrics: list[str]):
    """The trials as a DataFrame: Optuna's columns, one column per metric (named as the metric)."""
    import pandas as pd

    attempts = {}
    for trial in study.get_trials(deepcopy=False):
        slot = trial.user_attrs.get("slot")
        attempts[slot] = attempts.get(slot, 0) + 1
    rows = []
    latest = latest_attempts(study)
    frame = study.trials_dataframe(attrs=OPTUNA_COLUMNS)
    frame = frame.set_index("number", drop=False)
    for trial in latest:
        row = frame.loc[trial.number].to_dict()
        # Objectives under their own names instead of Optuna's values_0, values_1 ...
        objective_columns = ["value"] if "value" in frame.columns else [f"values_{i}" for i in range(len(metrics))]
        for name, column in zip(metrics, objective_columns):
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
        "checkpoint": last_checkpoint(Path(trial_dir)) if trial_dir else None,
    }


def aggregate(tune: dict, model_source: dict) -> None:
    """Write the results of every trial in the journal, failed ones included; the best trial is
    chosen among the completed ones."""
    tuning = tune["tuning"]
    out = Path(tuning["output_dir"])
    study = studies.open_study(tuning)
    metrics = tuning["metrics"]
    table = results_table(study, metrics)
    table.to_csv(out / "trials_results.csv", index=False)
    completed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not completed:
        raise RuntimeError(f"no trial of study {tuning['study_name']!r} completed; see the "
                           f"fail_reason column of {out / 'trials_results.csv'}")
    if len(metrics) > 1:
        front = [trial_record(t, metrics) for t in study.best_trials]
        write_json(out / "best_trials.json", {"metrics": metrics, "directions": tuning["directions"],
                                              "trials": front})
        numbers = {t["number"] for t in front}
        table[table["number"].isin(numbers)].to_csv(out / "pareto_front.csv", index=False)
        return
    best = trial_record(study.best_trial, metrics)
    best["best_model"] = str(out / "best_model")
    save_best_model(tune, model_source, best["checkpoint"], out / "best_model", best)
    write_json(out / "best_trial.json", best)


def aggregate_after_failure(tune: dict) -> None:
    """The table of a run where some jobs failed (Snakemake's onerror): written all the same.

    Snakemake never runs `aggregate` when one of its inputs (a failed trial) is missing. This
    writes trials_results.csv from the journal, and only that: the other outputs of `aggregate`
    stay missing, so the next run still re-runs the failed trials and then `aggregate` itself.
    """
    tuning = tune["tuning"]
    out = Path(tuning["output_dir"])
    if not Path(studies.journal_path(tuning)).exists():
        return
    study = studies.open_study(tuning)
    results_table(study, tuning["metrics"]).to_csv(out / "trials_results.csv", index=False)
    latest = latest_attempts(study)
    failed = [t for t in latest if t.state == TrialState.FAIL and not studies.is_finished(t)]
    print(f"\nsnaketune: {len(failed)} trial(s) failed; the table so far is in {out / 'trials_results.csv'}")
    for trial in failed:
        print(f"  trial_{trial.user_attrs.get('slot')} (trial {trial.number}): "
              f"{trial.user_attrs.get('fail_reason', 'unknown')}")
    completed = [t for t in latest if t.state == TrialState.COMPLETE]
    if completed and len(tuning["metrics"]) == 1:
        sign = 1 if tuning["directions"][0] == "minimize" else -1
        best = min(completed, key=lambda t: sign * t.value)
        print(f"Best completed so far: trial_{best.user_attrs.get('slot')} (trial {best.number}), "
              f"{tuning['metrics'][0]}={best.value:.4g}")
    print("Run the same command again to re-run exactly the failed trials with their parameters.")


def save_best_model(tune: dict, model_source: dict, checkpoint: str | None, target: Path,
                    best: dict) -> None:
    """The best trial's final model as a plain `from_pretrained` directory (LoRA merged in)."""
    from snaketune import model as models

    if checkpoint is None:
        raise FileNotFoundError(f"best trial {best['number']} has no checkpoint in {best['trial_dir']}")
    tokenizer = models.load_tokenizer(model_source, tune["model"])
    if (Path(checkpoint) / "adapter_config.json").exists():
        from peft import PeftModel

        base = models.load_model(model_source, tune["model"])
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
        "values": best["values"], "base_model": tune["model"]["model_name"],
    })
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def print_summary(tuning: dict) -> None:
    """The closing lines of a run: where the results are and the best trial(s)."""
    out = Path(tuning["output_dir"])
    best_file = out / ("best_trials.json" if len(tuning["metrics"]) > 1 else "best_trial.json")
    if not best_file.exists():
        return
    from snaketune.summary import summary_table

    print("\n" + summary_table(tuning))
    best = json.loads(best_file.read_text())
    print(f"\nsnaketune: study {tuning['study_name']!r}, results in {out / 'trials_results.csv'}")
    for record in best.get("trials", [best]):
        values = ", ".join(f"{k}={v:.4g}" for k, v in record["values"].items())
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in record["params"].items())
        print(f"best trial {record['number']} (trial_{record['slot']}/): {values}\n  params: {params}")
    if "best_model" in best:
        print(f"  best model: {best['best_model']}")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
