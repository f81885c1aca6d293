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
    and objectives; study.definition_conflicts). Reads, never writes: a refused config
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
    return resolved


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
