# Config loading and validation (at parse time, before any job), paths, and helpers for rules.
import functools
import json
import os
import sys
import time
from pathlib import Path

import yaml

REPO_DIR = Path(workflow.basedir)
# In a source checkout, import the package beside this Snakefile (whether or not one is installed),
# so the rules and the code they call are one version. The Snakefile an installed package carries
# (snaketune/_workflow/) has no workflow/snaketune beside it: the installed package is imported.
if (REPO_DIR / "workflow" / "snaketune").is_dir():
    sys.path.insert(0, str(REPO_DIR / "workflow"))

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import SharedFSUsage

from snaketune.check import accepted_config, checked_already, file_movement_problems, notice_line
from snaketune.errors import SnaketuneError
from snaketune.validate import load_yaml, read_default_tune_yaml
from snaketune.layout import write_text
from snaketune.progress import ConsoleProgress
from snaketune.locks import StudyInUse, hold_study
from snaketune.results import is_saved_model
from snaketune.storage import record_storage
from snaketune.study import open_study, restore_told_trials
from snaketune import warm_start


# Snakemake deep-merges --configfile over a `configfile:` directive's dict, so a default tune
# config there would leak its parameters into the user's. Load the default only when none is given.
if not config:
    config.update(read_default_tune_yaml(REPO_DIR))
# Jobs re-parse this file; the main process has validated the config in full already, and so has
# `snaketune tune` when it started this run (it printed the notices too).
CHECKED = not workflow.is_main_process or checked_already(workflow.configfiles, os.getcwd())
try:  # relative paths in a tune config resolve against the working directory
    if not CHECKED:  # Snakemake read them keeping the last of a key given twice
        for configfile in workflow.configfiles:
            load_yaml(configfile)
    TUNE = accepted_config(config, base_dir=os.getcwd(), validated=CHECKED)
except SnaketuneError as error:  # a bad config, or a study it cannot continue (a damaged journal)
    sys.exit(str(error))
if not CHECKED:
    for notice in TUNE.notices:
        print(notice_line(notice), file=sys.stderr)

TUNING = TUNE.tuning

# How the jobs get their files. Where a storage plugin moves them (--default-storage-provider: the
# Kubernetes and cloud executors, --shared-fs-usage none), each job sees only what its rule
# declares, on a machine of its own: the rules below then declare whole folders (the prepared model
# and data, each trial's folder, the best model) and the prepare rules run where the user's model
# and data are (local rules); what cannot work so is refused here (check.file_movement_problems).
SHARED_FS = SharedFSUsage.INPUT_OUTPUT in workflow.storage_settings.shared_fs_usage
MOVED_BY_STORAGE = workflow.storage_settings.default_storage_provider is not None
# Where the jobs' files are then, as the run's end says: the storage's prefix (and provider).
STORED_IN = (f"{workflow.storage_settings.default_storage_prefix} ({workflow.storage_settings.default_storage_provider})"
             if MOVED_BY_STORAGE else None)
if workflow.is_main_process:
    PROBLEMS = file_movement_problems(TUNE, MOVED_BY_STORAGE, SHARED_FS)
    if PROBLEMS:
        sys.exit("\n".join(PROBLEMS))

# tuning.timeout_minutes counts from the start of this invocation; its jobs inherit the clock.
if workflow.is_main_process:
    os.environ["SNAKETUNE_RUN_STARTED"] = str(time.time())


envvars:
    "SNAKETUNE_RUN_STARTED",

N_TRIALS = TUNING.n_trials
N_OBJECTIVES = len(TUNING.metrics)
# Every file of the study is named in snaketune.layout; rules take their outputs from it.
LAYOUT = TUNING.layout
TRIAL = LAYOUT.trial("{i}")


def total_cores() -> int | None:
    """`--cores N`, or None when a run has none: a cluster executor's run (SLURM) needs no
    `--cores`, and its jobs take their threads from the profile's `set-threads`."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


def all_cores(wildcards):
    """Threads of the prepare rules, which run alone (nothing else runs before them), as every core."""
    return max(1, total_cores() or 1)


def trial_threads(wildcards):
    """CPU threads per trial: the cores shared among the trials that may run at once.

    `--resources gpu=M` lets M trials run side by side; without it, one trial uses every core.
    """
    gpu = workflow.global_resources.get("gpu")
    concurrent = (gpu.value if gpu is not None else None) or 1
    return max(1, (total_cores() or 1) // max(1, int(concurrent)))


@functools.cache
def prepared_from():
    """What the prepared model and data are made from (the study's definition's model and data
    parts, the data files' content included), as the prepare rules' params: Snakemake re-runs a
    rule whose params changed, so a changed data file or model is never used stale."""
    return {part: json.dumps(TUNE.definition[part], sort_keys=True) for part in ("model", "data")}


def prepared_model_from(wildcards):
    return prepared_from()["model"]


def prepared_data_from(wildcards):
    return prepared_from()["data"]


def preflight_fingerprint(wildcards):
    """What the preflight's result depends on, as its rule's params: a changed one re-runs it."""
    from snaketune.preflight import fingerprint

    return fingerprint(TUNE)


def moved_folder(path: Path, declared: Path):
    """A job's output `declared` (a file in `path`), or, where a storage plugin moves the files
    (MOVED_BY_STORAGE), the whole folder `path`: then Snakemake moves every file in it."""
    return directory(str(path)) if MOVED_BY_STORAGE else str(declared)


def moved_input(path: Path, declared: Path) -> str:
    """What a job takes of `moved_folder(path, declared)`: the folder, or the file."""
    return str(path if MOVED_BY_STORAGE else declared)


def model_output():
    return moved_folder(LAYOUT.model_source.parent, LAYOUT.model_source)


def model_input() -> str:
    return moved_input(LAYOUT.model_source.parent, LAYOUT.model_source)


def data_output():
    return moved_folder(LAYOUT.data_summary.parent, LAYOUT.data_summary)


def data_input() -> str:
    return moved_input(LAYOUT.data_summary.parent, LAYOUT.data_summary)


def trial_output():
    """A trial's metrics.json, or its whole folder (its model and learning curve: what aggregate
    and report read) where a storage plugin moves the files."""
    return moved_folder(TRIAL.dir, TRIAL.metrics)


def preflight_input():
    """The preflight's record, as trials and the baseline take it: ancient, so that a preflight
    run again (a changed fixed argument) re-runs no trial that ran; it still comes first."""
    return ancient(str(LAYOUT.preflight_record))


def budget_settings() -> str:
    """What decides whether a slot starts or is skipped, as rule budget's params (JSON)."""
    settings = {"budget": TUNING.budget and TUNING.budget.as_dict(), "timeout_minutes": TUNING.timeout_minutes}
    if TUNING.stop_when_converged:  # only when set: the record of a study without it stays as it was
        settings["stop_when_converged"] = TUNING.stop_when_converged.as_dict()
    return json.dumps(settings, sort_keys=True)


def budget_input(wildcards):
    """The budget record for slot i: plain for a slot that was skipped (a new budget re-runs it),
    ancient for every other (a new budget is no reason to re-run a trial that ran)."""
    path = str(LAYOUT.budget_record)
    if MOVED_BY_STORAGE:  # the slots' metrics.json are in the storage, not here: the database says
        skipped = int(wildcards.i) in skipped_in_study()
    else:  # not run yet, or cut short ({}): it runs anyway
        skipped = LAYOUT.trial(wildcards.i).read_metrics().get("state") == "SKIPPED"
    return path if skipped else ancient(path)


@functools.cache
def skipped_in_study() -> frozenset[int]:
    """The slots the study recorded as skipped for lack of budget (study.skipped_slots), read once."""
    from snaketune.study import load_study, skipped_slots

    study = load_study(TUNING.output_dir, TUNING.study_name, missing_ok=True, url=TUNING.storage)
    return frozenset(skipped_slots(study)) if study is not None else frozenset()


def trial_metrics():
    """Every slot's metrics.json, or its folder (trial_output)."""
    return [moved_input(LAYOUT.trial(i).dir, LAYOUT.trial(i).metrics) for i in range(N_TRIALS)]


def trial_folders():
    """Where a storage plugin moves the files, the trial folders the report's learning curves are
    read from; else nothing (the report reads them where they are)."""
    return [str(LAYOUT.trial(i).dir) for i in range(N_TRIALS)] if MOVED_BY_STORAGE else []


def baseline_outputs():
    """The base model's metrics (the baseline rule's output, or its folder where a storage plugin
    moves the files) when its answers are scored, that is when a generation or an lm-eval metric
    is an objective."""
    return [moved_input(LAYOUT.baseline.dir, LAYOUT.baseline.metrics)] if TUNE.scores_answers else []


def results_outputs():
    return [str(path) for path in LAYOUT.results(N_OBJECTIVES)]


def aggregate_outputs():
    """Rule aggregate's named outputs: the table and best record, then the best model's record
    (one objective; the model is written in its folder) or the Pareto front's rows (several).

    Flagged `update`: Snakemake keeps them while aggregate runs again (rather than deleting them
    first) and, should it fail, puts the previous ones back from its backup. The best model's
    folder itself is not an output (Snakemake would delete it before the job, and back it up
    whole): results.save_best_model swaps it in once the new one is written. So a re-run never
    leaves the user without the best model they had.
    """
    # Where a storage plugin moves the files, Snakemake cannot back an `update` output up (it looks
    # for the local copy a fresh job never has), and removes the stored outputs before the job:
    # should aggregate then fail, running again rebuilds them from the trial folders, which stay.
    kept = update if not MOVED_BY_STORAGE else str
    outputs = {"results_csv": kept(str(LAYOUT.results_csv)),
               "best_record": kept(str(LAYOUT.best_record(N_OBJECTIVES)))}
    if N_OBJECTIVES > 1:
        outputs["pareto_front"] = kept(str(LAYOUT.pareto_front))
    elif MOVED_BY_STORAGE:  # the model itself must be declared to be moved
        outputs["best_model"] = directory(str(LAYOUT.best_model))
    else:
        outputs["best_model_record"] = update(str(LAYOUT.best_model_record))
    return outputs


def best_model_state():
    """Rule aggregate's `best_model` param: "whole", or "unsettled" where a kill between the two
    renames of a best-model swap left best_model/ without its model (only the record Snakemake put
    back). A changed param re-runs aggregate (a rerun trigger), which settles the swap first
    (results.save_best_model). Read only: a dry run shows it too."""
    whole = is_saved_model(LAYOUT.best_model) or not LAYOUT.best_model.with_name("best_model.previous").exists()
    return "whole" if whole else "unsettled"


def keep_run_config():
    """Keep the config this run runs with in the study (tune.merged.yaml), so that `snaketune
    status`, `export --as-config` and `report` find it after a plain `snakemake` run too (`snaketune
    tune` writes it before Snakemake starts, as the --configfile itself: then it is left alone)."""
    given = {str(Path(path).resolve()) for path in workflow.configfiles}
    target = LAYOUT.merged_config
    if str(target.resolve()) in given:
        return
    source = ", ".join(str(path) for path in workflow.configfiles) or "the embedded default"
    write_text(target, f"# The config of the last run ({source}), as Snakemake merged it\n"
               + yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False))


def stop_progress():
    if "watcher" in PROGRESS:
        PROGRESS.pop("watcher").stop()


# A run holds its study from start to end: a second invocation on the same output_dir (from any
# working directory; Snakemake's own lock is per directory) is refused. `onstart` runs only when
# jobs are about to run (not for a dry run, --lint or --report), in the main process (on SLURM too).
RUN_LOCK = {}
PROGRESS = {}


onstart:
    try:
        RUN_LOCK["fd"] = hold_study(LAYOUT, TUNING.storage, TUNING.study_name)
    except StudyInUse as error:
        sys.exit(str(error))
    record_storage(LAYOUT, TUNING.storage, TUNING.study_name)  # readers given only the folder find a database study
    if MOVED_BY_STORAGE:
        # The study's definition hashes the user's data files, which only this machine is sure to
        # see: recorded here, with the study's id for this folder, before any job (which leaves it).
        open_study(TUNING, definition=TUNE.definition)
    for line in restore_told_trials(TUNING):
        print(line)
    # An earlier study's trials as this one's history, before any job asks the sampler (once).
    for line in warm_start.start(TUNE) if TUNING.warm_start else ():
        print(line)
    keep_run_config()
    # One line per trial start and end, and the running trials' table, on this console.
    PROGRESS["watcher"] = ConsoleProgress(
        LAYOUT, TUNING.study_name, TUNING.metrics, TUNING.directions, n_trials=N_TRIALS
    ).start()
