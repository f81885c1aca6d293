"""Results from the journal: trials_results.csv, the best trial (or Pareto front) and best model.

Everything is read from the journal, not from the trials' JSON files, so the table and the study
never disagree.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from snaketune import model as models
from snaketune import study as studies
from snaketune import summary
from snaketune.config import TuningParams
from snaketune.errors import describe_error
from snaketune.layout import StudyLayout, TrialFiles, write_csv, write_json
from snaketune.layout import trial_dir as folder_of
from snaketune.model import ModelParams

OPTUNA_COLUMNS = ("number", "values", "datetime_start", "datetime_complete", "duration", "params",
                  "user_attrs", "state")


def results_table(study: optuna.Study, metrics: list[str], layout: StudyLayout):
    """The trials as a DataFrame: Optuna's columns, one column per metric (named as the metric),
    and each trial's folder in `layout` (the study's, wherever it now lives)."""
    import pandas as pd

    attempts = {}
    for trial in studies.own_trials(study):
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
        missing = trial.user_attrs.get("missing_metrics", {})
        for name in missing:
            row.setdefault(name, None)  # an empty cell; missing_metrics says why
        row["missing_metrics"] = "; ".join(f"{k}: {why}" for k, why in missing.items()) or None
        row["slot"] = trial.user_attrs.get("slot")
        row["attempts"] = attempts.get(row["slot"], 1) if row["slot"] is not None else 1
        row["fail_reason"] = trial.user_attrs.get("fail_reason")
        if trial.constraints:  # tuning.constraints: Optuna's record of them, as the samplers read it
            row["feasible"] = studies.feasible(trial)
            row["constraints_violated"] = "; ".join(studies.violated_constraints(trial)) or None
        if "promoted_from" in trial.user_attrs:  # tuning.resume_pruned: the paused trial it resumed
            row["promoted_from"] = trial.user_attrs["promoted_from"]
        folder = folder_of(trial, layout)
        row["trial_dir"] = str(folder) if folder else None
        rows.append({k: v for k, v in row.items() if not k.startswith(("user_attrs_", "values_"))})
    present = {row["slot"] for row in rows}
    for slot, reason in sorted(studies.skipped_slots(study).items()):
        if slot not in present:  # the time budget ran out before this slot started
            rows.append({"slot": slot, "attempts": 0, "state": "SKIPPED", "fail_reason": reason})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values("slot", kind="stable")
    if "promoted_from" in table.columns:
        table["promoted_from"] = table["promoted_from"].astype("Int64")  # trial numbers, not 3.0
    first = ["number", "slot", "attempts", "state", *metrics]
    params = sorted(c for c in table.columns if c.startswith("params_"))
    rest = [c for c in table.columns if c not in first and c not in params and c != "trial_dir"]
    return table.reindex(columns=[*first, *params, *rest, "trial_dir"])


def trial_record(trial: optuna.trial.FrozenTrial, metrics: list[str], layout: StudyLayout) -> dict:
    """A trial as best_trial(s).json holds it; its folder and checkpoint in `layout`."""
    folder = folder_of(trial, layout)
    trial_dir = str(folder) if folder else None
    return {
        "number": trial.number,
        "slot": trial.user_attrs.get("slot"),
        "values": dict(zip(metrics, trial.values or [])),
        "params": trial.params,
        "metrics": trial.user_attrs.get("metrics", {}),
        "trial_dir": trial_dir,
        "checkpoint": TrialFiles(Path(trial_dir)).last_checkpoint() if trial_dir else None,
    }


def base_model_values(layout: StudyLayout, metrics: list[str]) -> dict:
    """The untrained model's value of each objective it was scored on (rule baseline), or {}."""
    scored = layout.baseline.read_metrics()
    return {name: scored[name] for name in metrics if name in scored}


def aggregate(tuning: TuningParams, model: ModelParams, model_source: dict, results_csv: str | Path, best_record: str | Path,
              best_model_record: str | Path | None = None, pareto_front: str | Path | None = None) -> None:
    """Write the results of every trial in the journal, failed ones included; the best trial is
    chosen among the completed ones.

    The paths are rule aggregate's outputs: `results_csv` (every trial), `best_record` (the best
    trial, or with several objectives the Pareto front as {metrics, directions, trials}), and
    either `best_model_record` (one objective: `best_model/snaketune_trial.json`, written with the
    best trial's model, LoRA merged in, in that folder) or `pareto_front` (the Pareto-optimal rows of
    the table). Raises RuntimeError when no trial completed.
    """
    study = studies.load_study(tuning.output_dir, tuning.study_name, url=tuning.storage)
    metrics = tuning.metrics
    table = results_table(study, metrics, tuning.layout)
    write_csv(table, results_csv)
    if not any(t.state == TrialState.COMPLETE for t in studies.latest_attempts(study)):
        counts = summary.outcome_line(studies.outcome_counts(studies.latest_attempts(study)))
        raise RuntimeError(f"no trial of study {tuning.study_name!r} completed ({counts}); see the "
                           f"fail_reason column of {results_csv}")
    if not studies.best_trials(study):
        raise RuntimeError(f"no completed trial of study {tuning.study_name!r} kept tuning.constraints "
                           f"({', '.join(name for c in tuning.constraints for name, _, _ in c.bounds())}); see the "
                           f"constraints_violated column of {results_csv}. Loosen the constraints or narrow the "
                           "search space, and raise n_trials to run more trials")
    baseline = base_model_values(tuning.layout, metrics)
    if len(metrics) > 1:
        front = [trial_record(t, metrics, tuning.layout) for t in studies.best_trials(study)]
        write_json(best_record, {"metrics": metrics, "directions": tuning.directions, "trials": front,
                                 **({"base_model_values": baseline} if baseline else {})})
        numbers = {t["number"] for t in front}
        write_csv(table[table["number"].isin(numbers)], pareto_front)
        return
    best = trial_record(studies.best_trials(study)[0], metrics, tuning.layout)
    target = Path(best_model_record).parent
    best["best_model"] = str(target)
    if baseline:  # rule baseline: the untrained model on the same rows
        best["base_model_values"] = baseline
    save_best_model(model, model_source, best["checkpoint"], target, best)
    write_json(best_record, best)


def aggregate_after_failure(tuning: TuningParams, stored_in: str | None = None) -> None:
    """What a run that ended in errors leaves (Snakemake's onerror): the table, and the truth.

    Snakemake never runs `aggregate` when one of its inputs (a failed trial) is missing. This
    writes trials_results.csv from the journal, and only that: the other outputs of `aggregate`
    stay as they were, so the next run still re-runs the failed trials and then `aggregate` itself.
    Then it says what became of every trial (counted from the journal's states: a trial still
    RUNNING now was interrupted), why rule aggregate failed if it did, and whether running again
    helps. It never raises: it is the last word of a failed run (a full disk, a torn journal).
    `stored_in`: where a storage plugin keeps the jobs' files (their logs, the table), which are
    not in output_dir then: the trials are told from the database, and no table is written here
    (a stale one would be read by `snaketune export` later).
    """
    try:
        _report_failure(tuning, stored_in)
    except Exception as error:  # noqa: BLE001 (the handler must not hide the run's own error)
        print(f"\nsnaketune: could not write the table of the failed run: {describe_error(error)}")


ONCE_PER_STUDY_RULES = ("prepare_model", "prepare_data", "preflight", "baseline", "aggregate", "report")


def _report_failure(tuning: TuningParams, stored_in: str | None = None) -> None:
    layout = tuning.layout
    # Its record is written only when every configuration passed (the log keeps older runs' text).
    refused = None if layout.preflight_record.exists() or stored_in else _preflight_problems(layout.rule_log("preflight"))
    if refused:  # no trial was created: nothing to tabulate, and running again as it is fails again
        print(f"\nsnaketune: {refused}\nFix these values in the config, then run the same command: the "
              "preflight runs again, then the trials.")
        return
    # The profiles keep Snakemake's job blocks (and with them its error blocks) quiet: a rule that
    # failed in this run is named here, with its error and its log.
    for rule in ONCE_PER_STUDY_RULES:
        error = _rule_error(layout.rule_log(rule))
        if error:
            # Whole, however long: an error's end says what to do about it.
            print(f"snaketune: rule {rule} failed: {error} (log: {summary.shown(layout.rule_log(rule))})")
    study = studies.load_study(layout.output_dir, tuning.study_name, missing_ok=True, url=tuning.storage)
    if study is None:
        return
    try:
        if stored_in:
            where = f"the jobs' logs and files are in the storage under {stored_in}"
        else:
            write_csv(results_table(study, tuning.metrics, layout), layout.results_csv)
            where = f"the table so far is in {layout.results_csv}"
    except OSError as error:  # the previous table, if any, is left whole (write_csv is atomic)
        where = f"the table could not be written: {describe_error(error)}"
    latest = studies.latest_attempts(study)
    counts = studies.outcome_counts(latest, run_over=True)
    skipped = len(studies.skipped_slots(study))
    print(f"\nsnaketune: the run ended with errors. {len(latest) + skipped} trial(s): "
          f"{summary.outcome_line(counts, skipped)}; {where}")
    again = [t for t in latest if studies.outcome(t, run_over=True) in ("failed", "interrupted")]
    for trial in again:
        reason = trial.user_attrs.get("fail_reason") or (
            "its job stopped without recording why (killed, or the journal could not be written); "
            f"see {layout.trial(trial.user_attrs.get('slot')).log}")
        print(f"  trial_{trial.user_attrs.get('slot')} (trial {trial.number}) "
              f"{studies.outcome(trial, run_over=True)}: {' '.join(reason[:500].split())}")
    # A trial job that failed before its trial was in the journal (an import error, say).
    told = {t.user_attrs.get("slot") for t in latest}
    for slot in range(tuning.n_trials):
        error = None if slot in told else _rule_error(layout.trial(slot).log)
        if error:
            print(f"  trial_{slot} failed before its trial started: {error} "
                  f"(log: {summary.shown(layout.trial(slot).log)})")
    if counts["completed"]:
        best = studies.best_trials(study)
        if len(tuning.metrics) == 1:
            print(f"Best completed so far: trial_{best[0].user_attrs.get('slot')} (trial {best[0].number}), "
                  f"{tuning.metrics[0]}={best[0].value:.4g}")
    elif not again:
        print(NO_COMPLETED_TRIAL.format(counts=summary.outcome_line(counts, skipped)))
    repeated = studies.repeated_failure(study, single_point=not tuning.space)
    if repeated:
        not_started = tuning.n_trials - len(latest) - skipped
        print(f"  {repeated}")
        print(f"Running again as it is would fail the same way"
              f"{f' (and {not_started} slot(s) were not started for that reason)' if not_started > 0 else ''}. "
              "Fix the cause shown above first (the config, the data or the model it names); then "
              f"the same command runs the {len(again)} failed trial(s) with their parameters, and the rest.")
    elif again:
        print(f"Run the same command again to re-run exactly the {len(again)} failed or interrupted "
              "trial(s) with their parameters.")


NO_COMPLETED_TRIAL = (
    "No trial completed ({counts}), and running again would change nothing: the same parameters "
    "stop the same way. If they diverged (loss NaN or infinite), lower the learning rate's range "
    "(tuning.tunable_training_params.learning_rate), add warmup (warmup_ratio) or clip gradients "
    "(max_grad_norm); if they were pruned, loosen tuning.pruner_kwargs. Then tune again in a new "
    "tuning.output_dir (a study's search space cannot change).")


def _preflight_problems(log: Path) -> str | None:
    """The preflight's refusal (its problem list, whole) if rule preflight failed in this run on
    values the libraries refuse (preflight.PreflightError), else None."""
    if not _written_this_run(log):
        return None
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    at = text.rfind("\nPreflight: ")
    block = text[at + 1:].strip().splitlines() if at >= 0 else []
    # The log's end, or an older run's refusal (the log is appended to) before another failure.
    if not block or not all(line.startswith("  - ") for line in block[1:]):
        return None
    return "\n".join(block)


def _written_this_run(log: Path) -> bool:
    try:
        return log.stat().st_mtime >= float(os.environ.get(studies.RUN_STARTED_ENV, 0))
    except OSError:
        return False


def _rule_error(log: Path) -> str | None:
    """The last line of a rule's log if the rule failed in this run (its traceback's message)."""
    try:
        if log.stat().st_mtime < float(os.environ.get(studies.RUN_STARTED_ENV, 0)):
            return None
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1][:1000] if lines and "Error" in lines[-1] else None


def save_best_model(model_cfg: ModelParams, model_source: dict, checkpoint: str | None, target: Path,
                    best: dict) -> None:
    """The best trial's final model as a plain `from_pretrained` directory (LoRA merged in).

    Written beside `target` first, then swapped in by two renames: until the new model is whole,
    the previous one stays where it was (the folder is not a Snakemake output, which Snakemake
    would delete before the job; its record file is, flagged `update`)."""

    if checkpoint is None:  # the previous best model stays: it is replaced only once a new one is written
        raise FileNotFoundError(
            f"best trial {best['number']} has no checkpoint in {best['trial_dir']}, so the best model "
            f"cannot be built (the previous one, if any, is kept); remove {best['trial_dir']}/metrics.json "
            "and run again to re-train that trial with its parameters")
    # A swap a kill interrupted before is settled first (its old model put back), never deleted.
    settled = finish_best_model_swap(StudyLayout(target.parent))
    if settled:
        print(f"snaketune: {settled}", file=sys.stderr)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if (Path(checkpoint) / "adapter_config.json").exists():
        from peft import PeftModel

        base = models.load_model(model_source, model_cfg)
        PeftModel.from_pretrained(base, checkpoint).merge_and_unload().save_pretrained(staging)
        models.load_tokenizer(model_source, model_cfg).save_pretrained(staging)
    else:
        _copy_saved_model(Path(checkpoint), staging)
        if not (staging / "tokenizer_config.json").exists():  # a checkpoint saved without its tokenizer
            models.load_tokenizer(model_source, model_cfg).save_pretrained(staging)
    write_json(staging / "snaketune_trial.json", {
        "trial_number": best["number"], "checkpoint": checkpoint, "params": best["params"],
        "values": best["values"], "base_model": model_cfg.model_name,
    })
    previous = target.with_name(target.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    staging.rename(target)  # a kill before this leaves best_model.previous/: finish_best_model_swap
    shutil.rmtree(previous, ignore_errors=True)


def is_saved_model(folder: Path) -> bool:
    """Whether `folder` holds a whole best model (save_best_model's)."""
    # save_pretrained writes config.json; save_best_model writes snaketune_trial.json after the model
    return (folder / "config.json").is_file() and (folder / "snaketune_trial.json").is_file()


def finish_best_model_swap(layout: StudyLayout) -> str | None:
    """Settle a best-model swap (save_best_model) a kill interrupted; returns what was done, or None.

    Killed between its two renames, `best_model/` is missing, or holds only the record file that
    Snakemake put back from its backup of aggregate's outputs (which it restores, old, when the
    job dies): the model is in `best_model.previous/` (the old one, which the restored
    best_trial.json describes) and `best_model.tmp/` (the new one). The old one is put back, so
    the best model, its record and the table agree again (the next aggregate builds the new one
    again); with no old one, a whole new one is moved in. Leftovers of a finished swap are removed.
    Call it holding the run lock (aggregate's run does; `snaketune best` through
    locks.holding_if_free): a live run's swap is not interrupted."""
    target = layout.best_model
    previous, staging = target.with_name(target.name + ".previous"), target.with_name(target.name + ".tmp")
    if not previous.exists() and not staging.exists():
        return None
    if is_saved_model(target):
        shutil.rmtree(previous, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        return None
    chosen = previous if is_saved_model(previous) else staging if is_saved_model(staging) else None
    if chosen is None:
        return None
    if target.exists():
        shutil.rmtree(target)  # at most the record file Snakemake restored: a copy of chosen's or an older one
    chosen.rename(target)
    for leftover in (previous, staging):
        shutil.rmtree(leftover, ignore_errors=True)
    what = "put back the best model it held" if chosen == previous else "moved in the new best model it had written"
    return (f"{target} was being replaced when a run stopped ({chosen.name}/ was left beside it); {what}")


# What Trainer writes into a checkpoint only to resume training (transformers.trainer's
# TRAINING_ARGS_NAME, TRAINER_STATE_NAME, OPTIMIZER_NAME(_BIN), SCHEDULER_NAME, SCALER_NAME, the
# rng states, FSDP's sharded optimizer): named here because importing them would import torch.
_RESUME_STATE = ("training_args.bin", "trainer_state.json", "optimizer.pt", "optimizer.bin", "scheduler.pt",
                 "scaler.pt", "rng_state*.pth", "optimizer_*", "pytorch_model_fsdp_*", "global_step*")


def _copy_saved_model(checkpoint: Path, staging: Path) -> None:
    """A full fine-tune's checkpoint, less its resume state, into `staging`: Trainer already saved
    the model (`save_pretrained`) and its tokenizer there, so copying them gives the same folder as
    loading and saving again, without loading the model (no torch import, no RAM the size of the
    model, the checkpoint's dtype kept)."""
    shutil.copytree(checkpoint, staging, ignore=shutil.ignore_patterns(*_RESUME_STATE))
