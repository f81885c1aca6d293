"""The checks a run passes before anything is written: the config, then the study it continues.

One owner for "is this config accepted?", asked in two places: `snaketune tune`/`check` ask it
in-process, in about a second for a schema or search-space error (Snakemake's own start-up takes
9-12 s), before `output_dir` is created or `tune.merged.yaml` written; and the Snakefile asks it at
parse time, for a user who runs `snakemake` directly. So that a run started by `snaketune tune`
does not pay for the same checks twice, the CLI hands Snakemake a token (`CHECKED_ENV`) naming the
exact config text and working directory it accepted; the Snakefile then skips the checks that
import the ML libraries, as its jobs already do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import textwrap
from pathlib import Path

from snaketune.config import ConfigError, TuningConfig
from snaketune.validate import load_tune_config

# Set by `snaketune tune` for the Snakemake it starts: check_token() of the config it accepted.
CHECKED_ENV = "SNAKETUNE_CHECKED"


def accepted_config(raw: dict, base_dir: str | Path | None = None, validated: bool = False) -> TuningConfig:
    """The resolved config of `raw` (a parsed tune.yaml), checked in full: every section
    (validate.load_tune_config; relative paths against `base_dir`, by default the working
    directory), then, when `output_dir` already holds a study, that it is kept where the config
    says (storage.storage_conflict) and that its journal or database is its trial folders' own
    (recovery.journal_problem, database_problem) and that the config continues it (same search space
    and objectives; study.definition_conflicts), and that a warm start's earlier study can be
    read and fits (warm_start.check: its notices say what it adds). Reads, never writes: a refused config
    leaves no trace in `output_dir`.

    `validated=True`: the config was accepted already (a job of the run, or a run `snaketune tune`
    checked): only resolve it. Raises ConfigError listing every problem.
    """
    resolved = load_tune_config(raw, base_dir=base_dir, validated=validated)
    if validated:
        return resolved
    from snaketune.recovery import database_problem, journal_problem  # imports optuna; only once the sections pass
    from snaketune.storage import storage_conflict
    from snaketune.study import definition_conflicts

    tuning = resolved.tuning
    elsewhere = storage_conflict(tuning.layout, tuning.storage, tuning.study_name)
    if elsewhere:  # the study is kept in another storage than the config says
        raise ConfigError([elsewhere])
    if tuning.storage:
        lost = database_problem(tuning.layout, tuning.study_name, tuning.storage)
    else:
        lost = journal_problem(tuning.layout, tuning.study_name)
        lost = lost and f"tuning.output_dir: {lost}"
    if lost:  # the storage's study is not this folder's trials' own: nothing else can be compared with it
        raise ConfigError([lost])
    conflicts = definition_conflicts(resolved.tuning, resolved.definition)
    if conflicts:
        raise ConfigError(conflicts)
    if tuning.warm_start is not None:  # reads the earlier study, unless this one holds its history already
        from snaketune import warm_start

        problems, notices = warm_start.check(resolved)
        if problems:
            raise ConfigError(problems)
        resolved = dataclasses.replace(resolved, notices=[*resolved.notices, *notices])
    return resolved


def file_movement_problems(tune: TuningConfig, moved_by_storage: bool, shared_fs: bool) -> list[str]:
    """Why a run of `tune` cannot run the way its jobs get their files ('yaml.path: ...' lines, or
    'snaketune: ...' for a Snakemake option): `shared_fs`, whether the jobs share the working
    directory's file system (--shared-fs-usage with input-output, the default); `moved_by_storage`,
    whether a Snakemake storage plugin moves their files (--default-storage-provider).

    Where a storage plugin moves the files, each job sees only the files its rule declares (the
    prepared model and data, a trial's whole folder, the best model: common.smk declares them so),
    on a machine of its own (the Kubernetes and cloud executors), so the study must be in a
    database every job reaches, and a pruned trial cannot be paused for a later slot to resume (that
    slot would need the paused trial's checkpoint, which no rule can declare before the pruner
    decides)."""
    tuning = tune.tuning
    if not moved_by_storage:
        if shared_fs:
            return []
        return ["snaketune: --shared-fs-usage without input-output needs a storage plugin to move each job's "
                "files (jobs that share no file system see no file but those): add --default-storage-provider "
                "(e.g. fs, s3) and --default-storage-prefix, with the study in PostgreSQL (tuning.storage); "
                "see docs/scale-out.md"]
    problems = []
    if not tuning.storage:
        problems.append("tuning.storage: a run whose files a storage plugin moves (--default-storage-provider) "
                        "runs each job where it sees only its declared files, so the study cannot be a journal "
                        "file in tuning.output_dir: set tuning.storage to a postgresql:// URL every job reaches "
                        "(docs/scale-out.md)")
    if tuning.resume_pruned:
        problems.append("tuning.resume_pruned: a paused trial is resumed by a later slot from its checkpoint, "
                        "which a run whose files a storage plugin moves (--default-storage-provider) cannot hand "
                        "to that slot: set resume_pruned: false (pruned trials then stop for good)")
    return problems


def check_token(config_text: str, base_dir: str | Path) -> str:
    """The token (hex digest) of a config's exact text as read from a `--configfile` and the
    directory its relative paths resolve against: equal tokens, the same accepted config."""
    digest = hashlib.sha256(config_text.encode())
    digest.update(b"\0" + str(Path(base_dir).resolve()).encode())
    return digest.hexdigest()


def checked_already(configfiles: list[str | Path], base_dir: str | Path) -> bool:
    """Whether `snaketune tune` accepted exactly this config (one --configfile, read from
    `base_dir`) before starting Snakemake: its token is in the environment."""
    token = os.environ.get(CHECKED_ENV)
    if not token or len(configfiles) != 1:
        return False
    try:
        text = Path(configfiles[0]).read_text()
    except OSError:
        return False
    return token == check_token(text, base_dir)


def notice_line(notice: str) -> str:
    """A notice as the console shows it: 'snaketune: notice: ...', wrapped at 140 columns so that a
    terminal shows each line whole."""
    return textwrap.fill(f"snaketune: notice: {notice}", width=140, subsequent_indent="    ",
                         break_on_hyphens=False, break_long_words=False)
