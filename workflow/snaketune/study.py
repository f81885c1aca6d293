"""The study: one Optuna journal file every trial process shares, and trial slots on top of it.

A Snakemake job `trial_<i>` is slot i of the budget, not an Optuna trial: its first attempt asks
the sampler for a new trial; a later attempt (after a failure or a kill) creates a new trial with
the same parameters, linked to the old one, so re-running the command re-runs failed trials as
they were. The journal keeps every attempt.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import math
import os
import re
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from snaketune import space as search_space
from snaketune import strategy
from snaketune.errors import SnaketuneError
from snaketune.layout import StudyLayout, TrialFiles, checkpoint_step, is_complete_checkpoint, read_loss_curve

if TYPE_CHECKING:
    from snaketune.config import TuningParams

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyNotFound(SnaketuneError, FileNotFoundError):
    """No journal in the output directory, or no study of that name in it."""


class AmbiguousStudy(SnaketuneError, ValueError):
    """A journal holding several studies (or none yet), read without naming one."""


# What became of a trial, in the words the summaries use, from its state and fail_reason.
OUTCOMES = ("completed", "pruned", "diverged", "failed", "interrupted", "running")


def outcome(trial: FrozenTrial, run_over: bool = False) -> str:
    """One of OUTCOMES. A RUNNING trial is `interrupted` once the run is over (`run_over`: its
    process is gone, e.g. killed by SIGKILL), as is a FAIL whose reason is "interrupted"."""
    reason = str(trial.user_attrs.get("fail_reason", ""))
    if trial.state == TrialState.COMPLETE:
        return "completed"
    if trial.state == TrialState.PRUNED:
        return "diverged" if reason.startswith("diverged") else "pruned"
    if trial.state == TrialState.FAIL:
        return "diverged" if reason.startswith("diverged") else "interrupted" if reason == "interrupted" else "failed"
    return "interrupted" if run_over else "running"


def outcome_counts(trials: list[FrozenTrial], run_over: bool = False) -> dict[str, int]:
    counts = dict.fromkeys(OUTCOMES, 0)
    for trial in trials:
        counts[outcome(trial, run_over)] += 1
    return counts


def is_finished(trial: FrozenTrial) -> bool:
    """Done for good: completed, pruned, or diverged (the same parameters would diverge again)."""
    return trial.state in FINISHED or (
        trial.state == TrialState.FAIL and str(trial.user_attrs.get("fail_reason", "")).startswith("diverged"))


# The lock is held only while one record is appended (milliseconds), so a lock file older than
# this was left by a killed process and is broken, rather than waited on forever.
LOCK_GRACE_SECONDS = 10


def open_storage(path: str) -> JournalStorage:
    # JournalFileOpenLock (open(O_CREAT|O_EXCL)) works on every filesystem, NFS included.
    lock = JournalFileOpenLock(path, grace_period=LOCK_GRACE_SECONDS)
    backend = JournalFile(path, lock_obj=lock)
    _say_torn_tail(Path(path))
    return JournalStorage(backend)


class JournalFile(JournalFileBackend):
    """Optuna's journal file, safe against a last record cut short.

    A crash or a full disk in the middle of an append leaves a last line without its newline.
    Optuna's reader skips such a line, but its next append is glued onto it, and from then on the
    file no longer parses: every trial of the study is unreadable. Here, under Optuna's lock and
    before each append, a tail after the last newline is completed (a whole record that only lost
    its newline) or moved to `study.journal.torn` (StudyLayout.torn_records), never dropped.
    Optuna has no hook for this, so `append_logs` is its own few lines again with the repair first.
    """

    def append_logs(self, logs: list[dict]) -> None:
        self._lock.acquire()
        try:
            repair_torn_tail(Path(self._file_path))
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with open(self._file_path, "ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        finally:
            self._lock.release()


def torn_tail(path: Path) -> tuple[int, bytes]:
    """(offset, bytes) of what follows the journal's last newline: (size, b"") when nothing does."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        end, chunk = size, 1 << 16
        while end > 0:  # back from the end to the last newline; records are short
            start = max(0, end - chunk)
            f.seek(start)
            block = f.read(end - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                offset = start + newline + 1
                break
            end = start
        else:
            offset = 0
        f.seek(offset)
        return offset, f.read()


def _whole_record(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


def repair_torn_tail(path: Path) -> str | None:
    """Make the journal end in a newline again (call it holding the journal's lock): a whole
    record that lost only its newline gets it back; anything else after the last newline is
    appended to the side file and cut off. Returns what was done, or None if nothing was torn."""
    if not path.exists():
        return None
    offset, tail = torn_tail(path)
    if not tail:
        return None
    if _whole_record(tail):
        with open(path, "ab") as f:
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
        return f"completed the last record of {path} (it had lost its newline)"
    side = StudyLayout(path.parent).torn_records
    with open(side, "a") as f:  # first kept, then cut: a crash in between loses nothing
        f.write(json.dumps({"moved_at": datetime.datetime.now().isoformat(timespec="seconds"),
                            "journal": path.name, "offset": offset, "length": len(tail),
                            "text": tail.decode("utf-8", "surrogateescape")}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb+") as f:
        f.truncate(offset)
        os.fsync(f.fileno())
    return f"moved a record cut short ({len(tail)} bytes at offset {offset}) from {path} to {side}"


_TORN_SAID: set[Path] = set()


def _say_torn_tail(path: Path) -> None:
    """Tell a reader, once per process, that the journal ends in a record cut short."""
    if path in _TORN_SAID or not path.exists():
        return
    _, tail = torn_tail(path)
    if tail and not _whole_record(tail):
        _TORN_SAID.add(path)
        print(f"snaketune: {path} ends in a record cut short ({len(tail)} bytes: a write "
              "interrupted by a crash or a full disk); it is ignored, and the next write to the "
              f"study moves it to {StudyLayout(path.parent).torn_records}", file=sys.stderr)


class StudyInUse(SnaketuneError, RuntimeError):
    """Another run holds the study (its run lock in the output directory), or trial jobs of an
    earlier run still run."""


# A file system whose flock is not supported (some Lustre and NFS mounts) raises one of these.
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _flock(fd: int, operation: int, path: Path) -> bool:
    """flock, or False (said once) where the file system has none: the run goes on unguarded."""
    try:
        fcntl.flock(fd, operation)
        return True
    except OSError as error:
        if error.errno not in _NO_FLOCK:
            raise
        if path not in _NO_FLOCK_SAID:
            _NO_FLOCK_SAID.add(path)
            print(f"snaketune: the file system of {path.parent} has no flock ({error.strerror}); "
                  "two runs of this study at once cannot be detected there", file=sys.stderr)
        return False


_NO_FLOCK_SAID: set[Path] = set()


def run_holder(layout: StudyLayout) -> str | None:
    """Who holds the study's run lock now ('pid N on host, started T in /dir: command'), or None
    when no run does. Takes nothing (`snaketune tune` asks before it writes into the folder)."""
    return _holder_text(layout) if _lock_is_free(layout.run_lock, fcntl.LOCK_SH) is False else None


def hold_launch(layout: StudyLayout) -> int:
    """`snaketune tune`'s mark that it runs the study: a shared flock on the config it kept
    (tune.merged.yaml), from writing it to the command's end, so that `status` knows a run is on
    the study before Snakemake's `onstart` takes the run lock (Snakemake builds its DAG first: 10 s
    or more). Returns the descriptor, which must stay open; the kernel drops the lock with it."""
    fd = os.open(layout.merged_config, os.O_RDONLY)
    _flock(fd, fcntl.LOCK_SH, layout.merged_config)
    return fd


def launch_alive(layout: StudyLayout) -> bool:
    """Whether a `snaketune tune` of the study is alive (hold_launch)."""
    return _lock_is_free(layout.merged_config, fcntl.LOCK_EX) is False


def _lock_is_free(path: Path, operation: int) -> bool | None:
    """Whether `operation` (an flock) on `path` could be taken now; None where the file system has
    no flock (then nobody can tell whether a holder is alive)."""
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        return True if _flock(fd, operation | fcntl.LOCK_NB, path) else None  # dropped at close
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def trial_jobs_alive(layout: StudyLayout) -> bool | None:
    """Whether trial jobs of the study still run (each holds its trials lock shared); None where
    the file system has no flock."""
    free = _lock_is_free(layout.trials_lock, fcntl.LOCK_EX)
    return None if free is None else not free


def _snakemake_lock_files(layout: StudyLayout, workdir: Path) -> list[dict]:
    """The Snakemake lock files in `workdir` that name files of this study, each as its path and
    identity (inode, mtime): Snakemake reuses the names (0.input.lock, ...) from run to run."""
    locks = workdir / ".snakemake" / "locks"
    root = str(layout.output_dir.resolve())
    found = []
    for lock in sorted(locks.glob("*.lock")) if locks.is_dir() else []:
        try:
            paths = [line.strip() for line in lock.read_text().splitlines() if line.strip()]
            stat = lock.stat()
        except OSError:
            continue
        named = [os.path.abspath(os.path.join(workdir, path)) for path in paths]
        if any(path == root or path.startswith(root + os.sep) for path in named):
            found.append({"path": str(lock.resolve()), "inode": stat.st_ino, "mtime_ns": stat.st_mtime_ns})
    return found


def last_run(layout: StudyLayout) -> dict:
    """What the study's last run recorded in its run lock file (pid, host, cwd, command, its
    Snakemake lock files), or {} when none did."""
    try:
        return json.loads(layout.run_lock.read_text())
    except (OSError, ValueError):
        return {}


def release_stale_snakemake_locks(layout: StudyLayout) -> list[Path]:
    """Remove the Snakemake lock files a killed run of this study left behind; returns them.

    Snakemake locks a run's files in `<its working directory>/.snakemake/locks/` and refuses the
    next run there until `snakemake --unlock`, which removes every lock of that directory, also a
    live run's (of another study, or of this one still building its DAG). So only the lock files
    the last run of this study recorded as its own (`hold_study`), still the very same files
    (inode and mtime), are removed, and only when the study is certainly not in use: no run holds
    its run lock and no trial job its trials lock (flocks the kernel drops when a process dies).
    Raises StudyInUse when trial jobs of a killed run still run; a file system without flock
    releases nothing (nothing can tell a dead run from a live one there).
    """
    run_free = _lock_is_free(layout.run_lock, fcntl.LOCK_EX)
    trials = trial_jobs_alive(layout)
    if run_free is None or trials is None or not run_free:
        return []
    if trials:
        raise StudyInUse(LEFTOVER_TRIAL_JOBS.format(output_dir=layout.output_dir))
    removed = []
    for lock in last_run(layout).get("snakemake_locks", []):
        path = Path(lock["path"])
        try:
            stat = path.stat()
        except OSError:
            continue
        if (stat.st_ino, stat.st_mtime_ns) == (lock["inode"], lock["mtime_ns"]):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


LEFTOVER_TRIAL_JOBS = (
    "tuning.output_dir: trial jobs of an earlier run of the study in {output_dir} are still running "
    "(their snakemake was stopped, e.g. killed, and left them behind); wait for them to end, or stop "
    "them (ps, squeue), then run again. A new run would claim their trials.")


def _holder_text(layout: StudyLayout) -> str:
    try:
        holder = json.loads(layout.run_lock.read_text())
        return (f"pid {holder['pid']} on {holder['host']}, started {holder['started_at']} in "
                f"{holder['cwd']}: {holder['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that has not said who it is yet"


def in_use_message(layout: StudyLayout, holder: str) -> str:
    return (f"tuning.output_dir: the study in {layout.output_dir} is being run by another invocation "
            f"({holder}); wait for it to finish, or stop it, then run again. Two runs of one study "
            "would claim each other's trials.")


def hold_study(layout: StudyLayout) -> int:
    """Take the study's run lock for the rest of this process (Snakemake's main process, from
    `onstart`, so dry runs, --lint and --report take nothing); returns the lock's descriptor,
    which must stay open.

    Snakemake's own lock is per working directory, so two runs of one `output_dir` from two
    directories would otherwise claim each other's live trials. An `flock` is dropped by the kernel
    when its holder dies, even by SIGKILL, so a dead run never blocks the next one; but trial jobs
    can outlive it (a killed main process leaves them running, on SLURM as elsewhere), and each
    holds the trials lock shared (`hold_trial_share`): while one does, the study stays taken. The
    run lock's file also names its holder, and marks the folder as a study's
    (StudyLayout.unusable_because). Raises StudyInUse, naming what holds the study.
    """
    layout.output_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.run_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, layout.run_lock)
    except BlockingIOError:
        os.close(fd)
        raise StudyInUse(in_use_message(layout, _holder_text(layout))) from None
    trials = os.open(layout.trials_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(trials, fcntl.LOCK_EX | fcntl.LOCK_NB, layout.trials_lock)
    except BlockingIOError:
        os.close(fd)
        raise StudyInUse(LEFTOVER_TRIAL_JOBS.format(output_dir=layout.output_dir)) from None
    finally:
        os.close(trials)  # only a probe: no trial job of this run has started yet
    # Snakemake has locked this run's files in its working directory by now (onstart comes after):
    # they are recorded, so that `snaketune tune` can release them, and only them, after a kill.
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "cwd": os.getcwd(),
              "command": " ".join(sys.argv),
              "started_at": datetime.datetime.now().isoformat(timespec="seconds"),
              "snakemake_locks": _snakemake_lock_files(layout, Path.cwd())}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return fd


def hold_trial_share(layout: StudyLayout) -> int:
    """Hold the study's trials lock shared for the rest of this trial job (see `hold_study`);
    returns its descriptor, which must stay open."""
    fd = os.open(layout.trials_lock, os.O_RDWR | os.O_CREAT, 0o644)
    _flock(fd, fcntl.LOCK_SH, layout.trials_lock)
    return fd


@contextlib.contextmanager
def claiming(layout: StudyLayout):
    """Holds the study's claim lock: a budget check and the trial it lets start are one step, so
    jobs starting side by side never both see the same compute left (an overspent budget)."""
    fd = os.open(layout.claim_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(fd, fcntl.LOCK_EX, layout.claim_lock)
        yield
    finally:
        os.close(fd)  # drops the lock


def open_study(tuning: TuningParams, slot: int = 0, storage: JournalStorage | None = None,
               definition: dict | None = None) -> optuna.Study:
    """The study as trial slot `slot` writes to it: created on first use, with the sampler and
    pruner of `tuning` (the resolved config's section). Readers use `load_study`.

    Records the study's definition (`study_definition(tuning, definition)`; `definition` is
    `TuningConfig.definition`) when it has none yet, or while no trial has finished (a config
    fixed after its first trials failed defines the study from then on; `definition_conflicts`
    has refused a change of space or objectives before any job)."""
    os.makedirs(tuning.output_dir, exist_ok=True)
    storage = storage or open_storage(str(tuning.layout.journal))
    study = optuna.create_study(
        storage=storage,
        study_name=tuning.study_name,
        directions=tuning.directions,
        sampler=strategy.make_sampler(tuning, slot),
        pruner=strategy.make_pruner(tuning),
        load_if_exists=True,
    )
    wanted = _as_stored(study_definition(tuning, definition))
    stored = study.user_attrs.get(DEFINITION_ATTR)
    if stored is None or (stored != wanted and definition is not None
                          and not any(is_finished(t) for t in study.get_trials(deepcopy=False))):
        study.set_user_attr(DEFINITION_ATTR, wanted)
    if STARTED_ATTR not in study.user_attrs:  # the clock of tuning.timeout_minutes
        study.set_user_attr(STARTED_ATTR, time.time())
    if study.user_attrs.get(SLOTS_ATTR) != tuning.n_trials:  # what the last run created
        study.set_user_attr(SLOTS_ATTR, tuning.n_trials)
    if study.metric_names is None:  # every reader (status, plots, dashboard) names objectives so
        with warnings.catch_warnings():  # experimental since Optuna 3.2, unchanged since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(tuning.metrics))
    return study


def load_study(output_dir: str | Path, study_name: str | None = None,
               missing_ok: bool = False) -> optuna.Study | None:
    """The study in `<output_dir>/study.journal`, to read (aggregate, report, status, best, export).

    `study_name` may be left out when the journal holds one study. Nothing is created: a missing
    journal or study raises FileNotFoundError (or returns None with `missing_ok`); a journal with
    several studies and no `study_name` raises AmbiguousStudy (a ValueError); a missing journal or
    study raises StudyNotFound (a FileNotFoundError).
    """
    path = StudyLayout(output_dir).journal
    if not path.exists():
        if missing_ok:
            return None
        raise StudyNotFound(f"no journal at {path}: is {output_dir} a study's output directory?")
    storage = open_storage(str(path))
    names = optuna.get_all_study_names(storage)
    if study_name is None:
        if not names and not missing_ok:
            raise AmbiguousStudy(f"{path} holds no study yet")
        if len(names) > 1:
            raise AmbiguousStudy(f"{path} holds several studies ({', '.join(names)}); name one "
                                 "(--study-name)")
        study_name = names[0] if names else None
    if study_name not in names:
        if missing_ok:
            return None
        raise StudyNotFound(f"{path} holds no study named {study_name!r} "
                                f"(it holds: {', '.join(names) or 'none'})")
    # A reader's sampler is never asked for anything: a RandomSampler is the cheapest to build.
    return optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler())


def trial_dir(trial: FrozenTrial, layout: StudyLayout | None = None) -> Path | None:
    """The folder of `trial` in the study at `layout`, wherever the study now lives (a moved or
    copied study): its slot's folder. A trial made outside a slot: the folder it recorded
    (relative to output_dir). Without `layout`: the folder as recorded."""
    slot = trial.user_attrs.get("slot")
    if layout is not None and slot is not None:
        return layout.trial(slot).dir
    recorded = trial.user_attrs.get("trial_dir")
    if not recorded:
        return None
    return layout.output_dir / recorded if layout is not None else Path(recorded)


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (one objective) or the Pareto front (several); empty before one completes.

    With one objective, among each slot's latest attempt rather than Optuna's `study.best_trial`:
    a completed trial whose checkpoint was deleted is trained again in its slot (claim_trial), and
    the slot's folder then holds the new attempt's model. Several objectives: Optuna's front (such
    a slot is not trained again, no best model being built).
    """
    if len(study.directions) > 1:
        return study.best_trials if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else []
    completed = [t for t in latest_attempts(study) if t.state == TrialState.COMPLETE]
    if not completed:
        return []
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return [pick(completed, key=lambda t: t.value)]


# A trial's user attribute: its intermediate values are per-row scores of its generated answers,
# by validation row (generation.evaluate_generation, for the wilcoxon pruner), not a training curve.
ROW_REPORTS_ATTR = "reported_rows"


def step_reports(trial: FrozenTrial) -> dict[int, float]:
    """The objective's values the trial reported during training, by training step; {} for a
    trial whose reports are per-row scores (ROW_REPORTS_ATTR)."""
    return {} if trial.user_attrs.get(ROW_REPORTS_ATTR) else trial.intermediate_values


def objective_names(study: optuna.Study) -> list[str]:
    """The objectives' names: set on the study when it was created (older journals: from the
    study's definition), else Optuna's generic names."""
    if study.metric_names:
        return list(study.metric_names)
    definition = study.user_attrs.get(DEFINITION_ATTR) or {}
    if definition.get("metrics"):
        return list(definition["metrics"])
    return ["value"] if len(study.directions) == 1 else [f"objective_{i}" for i in range(len(study.directions))]


def latest_attempts(study: optuna.Study) -> list[FrozenTrial]:
    """One trial per slot, its latest attempt; trials made outside a slot are kept as they are."""
    by_slot, others = {}, []
    for trial in study.get_trials(deepcopy=False):
        slot = trial.user_attrs.get("slot")
        if slot is None:
            others.append(trial)
        elif slot not in by_slot or trial.number > by_slot[slot].number:
            by_slot[slot] = trial
    return sorted([*by_slot.values(), *others], key=lambda t: (t.user_attrs.get("slot", 1e9), t.number))


def _storage(study: optuna.Study):
    """The study's own storage, for the storage calls Study has no public method for (creating a
    RUNNING trial with its attributes in one write, fixing parameters, failing a dead trial).
    Optuna has no public accessor; the storage is the JournalStorage open_study gave it."""
    return study._storage


STARTED_ATTR = "snaketune_started_at"
# The run's trial slots (n_trials as resolved: written, a budget's, the grid's or the default 10),
# for `snaketune status`: the YAML alone does not say them.
SLOTS_ATTR = "snaketune_trial_slots"
RUN_STARTED_ENV = "SNAKETUNE_RUN_STARTED"


class SlotSkipped(Exception):
    """The study's time budget was spent before this slot started: it finishes as skipped."""


SKIPPED_SLOT_ATTR = "snaketune_skipped_slot_"


def skipped_slots(study: optuna.Study) -> dict[int, str]:
    """{slot: why} of the slots skipped for lack of budget (and not started since)."""
    prefix = SKIPPED_SLOT_ATTR
    return {int(k[len(prefix):]): v for k, v in study.user_attrs.items() if k.startswith(prefix) and v}


def skip_slot(study: optuna.Study, slot: int, reason: str | None) -> None:
    """Records why `slot` was skipped; None: it started after all (a study attribute cannot be
    removed, so it is emptied)."""
    study.set_user_attr(f"{SKIPPED_SLOT_ATTR}{slot}", reason)


# What a study's trials must share to be comparable: changing any of it needs a new study.
DEFINITION_ATTR = "snaketune_definition"


def study_definition(tuning: TuningParams, definition: dict | None = None) -> dict:
    """What a study's trials share, so that their results compare: the search space and the
    objectives, and (`definition`, from `TuningConfig.definition`) the model, the data, the fixed
    training and PEFT arguments. Stored in the journal by the first trial."""
    space = {p["name"]: {k: v for k, v in p.items() if k != "name"} for p in tuning.space}
    return {"space": space, "metrics": tuning.metrics, "directions": tuning.directions, **(definition or {})}


def _as_stored(definition: dict) -> dict:
    return json.loads(json.dumps(definition, default=str))  # the JSON types the journal gives back


# The YAML path and the words for each part of a study's definition, in conflict messages.
DEFINITION_PARTS = {"model": ("model", "model"), "data": ("data", "data"),
                    "training": ("tuning.fixed_training_params", "fixed training parameters"),
                    "peft": ("tuning.fixed_peft_params", "PEFT settings"),
                    "generation": ("generation", "generation settings"),
                    "lm_eval": ("lm_eval", "lm-eval settings")}


def definition_conflicts(tuning: TuningParams, definition: dict | None = None) -> list[str]:
    """Problems ('yaml.path: ...') if the config no longer matches the study already in its journal
    (`definition` as for `study_definition`). The search space and objectives never change; the
    model, data and fixed arguments may while no trial has finished (nothing to compare with yet:
    a config fixed after its first trials failed).

    Read-only: a journal that does not exist yet is not created.
    """
    path = str(tuning.layout.journal)
    if not tuning.layout.journal.exists():
        return []
    # One study per output_dir: its trial_<i>/ folders, table and best model are that study's.
    names = optuna.get_all_study_names(open_storage(path))
    if names and tuning.study_name not in names:
        return [f"tuning.study_name: {path} holds the study {names[0]!r}"
                + (f" (and {', '.join(map(repr, names[1:]))})" if names[1:] else "")
                + f", not {tuning.study_name!r}; an output_dir holds one study: set study_name back "
                f"to {names[0]!r} to continue it, or give the new study a new tuning.output_dir"]
    study = load_study(tuning.output_dir, tuning.study_name, missing_ok=True)
    stored = None if study is None else study.user_attrs.get(DEFINITION_ATTR)
    if stored is None:
        return []
    wanted = _as_stored(study_definition(tuning, definition))
    if stored == wanted:
        return []
    hint = (f"study {tuning.study_name!r} in {path} was run with other {{what}}; "
            "to tune a new one, set a new tuning.output_dir (its trial files live there too; "
            "the existing study is kept as it is)")
    problems = []
    if stored["space"] != wanted["space"]:
        changed = sorted(name for name in set(stored["space"]) | set(wanted["space"])
                         if stored["space"].get(name) != wanted["space"].get(name))
        problems.append("tuning.tunable_*_params: " + hint.format(what=f"search space (changed: {', '.join(changed)})"))
    if stored["metrics"] != wanted["metrics"] or stored["directions"] != wanted["directions"]:
        problems.append("tuning.evaluation_metrics: " + hint.format(
            what=f"objectives ({stored['metrics']} {stored['directions']})"))
    finished = any(is_finished(t) for t in study.get_trials(deepcopy=False))
    for part, (where, words) in DEFINITION_PARTS.items():
        if finished and part in stored and part in wanted and stored[part] != wanted[part]:
            old, new = stored[part], wanted[part]
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if part not in ("training", "peft"):
                problems.append(f"{where}: " + hint.format(what=f"{words} (changed: {', '.join(changed)})"))
                continue
            # A fixed argument: named by the YAML path that set it, with the value the study ran with.
            group = "training" if part == "training" else "peft"
            for key in changed:
                yaml_path = tuning.argument_paths.get((group, key), f"{where}.{key}")
                name = yaml_path.rsplit(".", 1)[-1]
                ran = f"{name}: {json.dumps(old[key])}" if key in old else f"no {name}"
                back = f"set it back to {json.dumps(old[key])}" if key in old else "remove it"
                problems.append(f"{yaml_path}: study "
                                f"{tuning.study_name!r} in {path} ran with {ran} (now {json.dumps(new.get(key))}): "
                                f"{back} to continue it, or set a new tuning.output_dir to tune a new study "
                                "(the existing one is kept as it is)")
    return problems


def restore_told_trials(tuning: TuningParams) -> list[str]:
    """Trials whose result is in their slot's metrics.json while the journal still says RUNNING
    (the record of the `tell` was cut short: see JournalFile) are told again from that file.

    Call it holding the study's run lock (`hold_study`): then no trial of the study is running, and
    a RUNNING trial is one whose process is gone. Returns a line per trial restored.
    """
    study = load_study(tuning.output_dir, tuning.study_name, missing_ok=True)
    if study is None:
        return []
    storage, said = _storage(study), []
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in latest_attempts(study):
        slot = trial.user_attrs.get("slot")
        if trial.state != TrialState.RUNNING or slot is None:
            continue
        path = tuning.layout.trial(slot).metrics
        try:
            record = json.loads(path.read_text())
            state = TrialState[record["state"]]
            values = [float(record["values"][m]) for m in tuning.metrics] if state == TrialState.COMPLETE else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.get("trial_number") != trial.number or state not in (*FINISHED, TrialState.FAIL):
            continue
        storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                                       state, values)
        said.append(f"snaketune: trial {trial.number} (trial_{slot}/) finished {state.name}, but the journal's "
                    f"record of it was cut short; told again from {path}")
    return said


def slot_attempts(study: optuna.Study, slot: int) -> list[FrozenTrial]:
    """Every trial that ran in `slot`, oldest first."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("slot") == slot]


def claim_trial(study: optuna.Study, slot: int, tuning: TuningParams) -> tuple[optuna.Trial | None, FrozenTrial | None]:
    """The trial this job runs for `slot`, as (trial, None); or (None, finished) if done already.

    A first attempt resumes a paused trial when one is due (tuning.resume_pruned:
    paused_trial_to_resume; its parameters, `promoted_from` and `paused_checkpoint` recorded), or
    runs its grid point (GridSampler) or asks the sampler, unless it is among the first
    len(tuning.enqueue_trials) trials to start (see enqueued_config). A RUNNING trial left in
    the slot was interrupted (Snakemake runs one job per slot at a time), so it is marked FAIL and
    its parameters are run again. So is a completed trial of a one-objective study whose checkpoint
    is gone (its folder deleted): the best model is built from the best trial's checkpoint.
    Raises SlotSkipped when the study's time budget is spent before the slot's first attempt.
    """
    attempts = slot_attempts(study, slot)
    latest = attempts[-1] if attempts else None
    retrain = (latest is not None and latest.state == TrialState.COMPLETE and len(tuning.metrics) == 1
               and tuning.layout.trial(slot).last_checkpoint() is None)
    if latest is not None and is_finished(latest) and not retrain:
        return None, latest
    # The slot and attempt are part of the new trial from its creation: a job killed a moment
    # later leaves a RUNNING trial that the next run finds in its slot, never an orphan.
    if latest is None:
        with claiming(tuning.layout):
            check_time_budget(study, tuning.timeout_minutes)
            check_compute_budget(study, tuning)
            attrs = {"slot": slot, "attempt": 1}
            params, carried = strategy.slot_params(tuning, slot), {}
            paused, checkpoint = paused_trial_to_resume(study, tuning)
            if paused is not None:  # pause instead of kill: this slot carries the paused trial on
                params, carried = dict(paused.params), strategy.carried_over(paused)
                attrs.update(promoted_from=paused.number, paused_checkpoint=checkpoint)
            trial_id = create_trial(study, params, tuning.space, attrs, carried)
        if slot in skipped_slots(study):  # skipped under a smaller budget: it runs now
            skip_slot(study, slot, None)
        if paused is not None:
            return optuna.Trial(study, trial_id), None
        enqueued = enqueued_config(study, _storage(study).get_trial_number_from_id(trial_id),
                                   tuning.enqueue_trials)
        if enqueued is not None:
            set_params(study, trial_id, enqueued, tuning.space, {"enqueued": True})
        return optuna.Trial(study, trial_id), None
    if latest.state == TrialState.RUNNING:
        storage = _storage(study)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), latest.number)
        storage.set_trial_user_attr(trial_id, "fail_reason", "interrupted")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    attrs = {"slot": slot, "attempt": latest.user_attrs.get("attempt", 1) + 1, "retry_of": latest.number,
             # a resumed paused trial stays one: from its own checkpoint, else from the paused one
             **{k: latest.user_attrs[k] for k in ("promoted_from", "paused_checkpoint") if k in latest.user_attrs}}
    if retrain:
        attrs["retrained"] = "its checkpoint was gone"
    # The slot's enqueued configuration again, also if its first attempt died before taking it
    # (a slot that resumed a paused trial took none: it keeps the paused trial's parameters).
    enqueued = (None if "promoted_from" in attempts[0].user_attrs
                else enqueued_config(study, attempts[0].number, tuning.enqueue_trials))
    params = {**latest.params, **(enqueued or {})}
    if enqueued is not None:
        attrs["enqueued"] = True
    return optuna.Trial(study, create_trial(study, params, tuning.space, attrs)), None


def paused_trial_to_resume(study: optuna.Study, tuning: TuningParams) -> tuple[FrozenTrial | None, str | None]:
    """The paused (pruned) trial a slot starting now resumes instead of asking the sampler, and its
    checkpoint (paused_checkpoint), or (None, None): the first of strategy.promotions
    (η = tuning.resume_pruned) whose checkpoint is still there;
    none while configurations of tuning.enqueue_trials wait to run first. Called under the claim
    lock, so two slots never resume the same trial (on a file system without flock, where
    `claiming` cannot lock, two slots starting at the same moment can)."""
    trials = study.get_trials(deepcopy=False)
    if not tuning.resume_pruned or enqueued_pending(trials, tuning.enqueue_trials):
        return None, None
    for trial in strategy.promotions(trials, tuning.resume_pruned, tuning.directions[0]):
        checkpoint = paused_checkpoint(trial, tuning.layout)
        if checkpoint is not None:
            return trial, checkpoint
    return None, None


def paused_checkpoint(trial: FrozenTrial, layout: StudyLayout) -> str | None:
    """The checkpoint a pruned `trial` saved where it stopped (train.ReportAndPrune), relative to
    the study's output_dir (a moved study still finds it), or None when it is gone."""
    folder = trial_dir(trial, layout)
    if folder is None or not trial.intermediate_values:
        return None
    checkpoint = TrialFiles(folder).checkpoint(max(trial.intermediate_values))
    return str(checkpoint.relative_to(layout.output_dir)) if is_complete_checkpoint(checkpoint) else None


def resumed_checkpoint(trial, layout: StudyLayout) -> str | None:
    """The paused checkpoint that `trial` (a trial or FrozenTrial) was created to resume, as a path,
    if it was (`paused_checkpoint`) and the checkpoint is still there."""
    relative = trial.user_attrs.get("paused_checkpoint")
    if not relative or not is_complete_checkpoint(layout.output_dir / relative):
        return None
    return str(layout.output_dir / relative)


def enqueued_pending(trials: list[FrozenTrial], enqueue_trials: list[dict]) -> bool:
    """Whether configurations of `enqueue_trials` (tuning.enqueue_trials) have not started yet:
    fewer first attempts than configurations (a slot resuming a paused trial takes none)."""
    return sum(1 for t in trials if takes_a_configuration(t)) < len(enqueue_trials)


def takes_a_configuration(trial: FrozenTrial) -> bool:
    """A slot's first attempt that did not resume a paused trial: one that the sampler, a grid
    point or an enqueued configuration gives its parameters."""
    return trial.user_attrs.get("attempt") == 1 and "promoted_from" not in trial.user_attrs


def enqueued_config(study: optuna.Study, trial_number: int, enqueue_trials: list[dict]) -> dict | None:
    """The enqueued configuration (of `enqueue_trials`, tuning.enqueue_trials) of the first
    attempt `trial_number`, if any.

    The k-th first attempt to start takes the k-th configuration, whichever slot it runs in:
    Snakemake starts slots in no fixed order, and "evaluated first" means first in time. The rank
    is read from the journal, whose order every process sees the same, so no lock is needed.
    """
    if not enqueue_trials:
        return None
    rank = sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial_number and takes_a_configuration(t))
    return enqueue_trials[rank] if rank < len(enqueue_trials) else None


class RepeatedFailure(SnaketuneError, RuntimeError):
    """Trials with different parameters failed with the same error in this run: a cause outside
    the parameters (the config, the data, the environment), which every other trial would meet."""


def repeated_failure(study: optuna.Study, single_point: bool = False) -> str | None:
    """Why no further slot should start in this run, or None: two trials of this invocation (or
    one, when the space is a `single_point`) with different parameters failed with the same
    error (their directories aside), and none completed. Divergence and interruptions are about
    the parameters or the run, not the config, and do not count."""
    started = float(os.environ.get(RUN_STARTED_ENV) or 0)
    this_run = [t for t in latest_attempts(study)
                if t.datetime_start is not None and t.datetime_start.timestamp() >= started - 1]
    if any(t.state == TrialState.COMPLETE for t in this_run):
        return None
    by_reason: dict[str, list[FrozenTrial]] = {}
    for trial in this_run:
        if outcome(trial) == "failed" and trial.user_attrs.get("fail_reason"):
            reason = re.sub(r"trial_\d+", "trial_<i>", trial.user_attrs["fail_reason"])
            by_reason.setdefault(reason, []).append(trial)
    for reason, trials in by_reason.items():
        distinct = {json.dumps(t.params, sort_keys=True, default=str) for t in trials}
        if len(distinct) >= 2 or (single_point and trials):
            numbers = ", ".join(f"trial_{t.user_attrs.get('slot')} (trial {t.number})" for t in trials)
            return (f"{numbers} failed with the same error for different parameters, so the cause is "
                    f"not the parameters but the config, data or environment, and every other trial "
                    f"would fail the same way: {reason[:1000]}")
    return None


def check_time_budget(study: optuna.Study, timeout_minutes: float | None) -> None:
    """Raises SlotSkipped when tuning.timeout_minutes have passed since this invocation started."""
    if not timeout_minutes:
        return
    # The clock of this invocation (set by the Snakefile's main process and passed to its jobs),
    # so growing n_trials later runs the new slots; the study's own start is the fallback.
    started = float(os.environ.get(RUN_STARTED_ENV) or study.user_attrs[STARTED_ATTR])
    elapsed = (time.time() - started) / 60
    if elapsed > timeout_minutes:
        raise SlotSkipped(f"skipped: the study's time budget (timeout_minutes={timeout_minutes}) "
                          f"was spent {elapsed - timeout_minutes:.1f} min before this slot started")


BUDGET_UNITS = ("trained_steps", "trained_tokens", "gpu_hours")


def spent_compute(study: optuna.Study, tuning: TuningParams, unit: str) -> float:
    """The compute the study has spent or committed, in `unit` (one of BUDGET_UNITS), counted from
    the journal across every process, every attempt included (a failed one spent it too).

    A finished trial counts what it recorded (`metrics.trained_steps`/`trained_tokens`: what that
    attempt trained, from the checkpoint it resumed from; its wall time for gpu_hours). A trial
    still running counts, for steps, the whole run it was started for (max_steps): that compute is
    committed, and a slot that starts beside it must see it; for tokens and hours, what it has spent
    so far (its live loss curve, its elapsed time). A trial that stopped without recording counts
    what its loss curve shows between its start and end (the attempts of a slot share the file).
    """
    layout = tuning.layout
    planned = tuning.training_args.get("max_steps")
    devices = max(1, tuning.gpu.gpus_per_trial)
    total = 0.0
    for trial in study.get_trials(deepcopy=False):
        recorded = trial.user_attrs.get("metrics", {})
        if unit == "gpu_hours":
            seconds = trial.user_attrs.get("wall_seconds")
            if seconds is None and trial.datetime_start is not None:
                end = trial.datetime_complete or datetime.datetime.now()
                seconds = (end - trial.datetime_start).total_seconds()
            total += (seconds or 0.0) * devices / 3600
            continue
        if unit in recorded:
            total += recorded[unit]
            continue
        resumed_from = trial.user_attrs.get("resumed_from") or trial.user_attrs.get("paused_checkpoint")
        start = checkpoint_step(resumed_from) if resumed_from else 0
        if unit == "trained_steps" and trial.state == TrialState.RUNNING:
            steps = trial.params.get("max_steps") or planned
            if isinstance(steps, int) and steps > 0:
                total += steps - start
                continue
        folder = trial_dir(trial, layout)
        rows = read_loss_curve(TrialFiles(folder).loss_curve) if folder is not None else []
        began = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
        ended = trial.datetime_complete.timestamp() if trial.datetime_complete else math.inf
        key = "step" if unit == "trained_steps" else "num_tokens"
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float))
                  and began - 1 <= row.get("time", began) <= ended + 1]
        total += max(0, max(values) - (start if key == "step" else 0)) if values else 0
    return total


def check_compute_budget(study: optuna.Study, tuning: TuningParams) -> None:
    """Raises SlotSkipped when tuning.budget is spent (or committed) before this slot starts.
    claim_trial calls it under the study's claim lock, so jobs starting side by side see each
    other's trials."""
    if not tuning.budget:
        return
    (unit, amount), = tuning.budget.items()
    spent = spent_compute(study, tuning, unit)
    if spent >= amount:
        raise SlotSkipped(f"skipped: the study's compute budget ({unit}={amount:g}) was spent "
                          f"({spent:.4g}) before this slot started")


def create_trial(study: optuna.Study, params: dict, space: list[search_space.Parameter],
                 user_attrs: dict, system_attrs: dict | None = None) -> int:
    """A new RUNNING trial with `params` fixed and `user_attrs` (and `system_attrs`: the pruner's
    records a resumed trial carries over, strategy.carried_over) set, in one journal write; its id.
    Wrap it in optuna.Trial only once its parameters are final: the sampler suggests the rest.

    Created directly as RUNNING rather than with enqueue_trial (WAITING): a WAITING trial could be
    popped by another process's ask() before this one.
    """
    distributions = search_space.distributions(space)
    params = {k: v for k, v in params.items() if k in distributions}
    template = FrozenTrial(
        number=-1, state=TrialState.RUNNING, value=None, values=None,
        datetime_start=datetime.datetime.now(), datetime_complete=None,
        params=params, distributions={k: distributions[k] for k in params},
        user_attrs=dict(user_attrs), system_attrs=dict(system_attrs or {}), intermediate_values={}, trial_id=-1,
    )
    storage = _storage(study)
    return storage.create_new_trial(storage.get_study_id_from_name(study.study_name), template_trial=template)


def set_params(study: optuna.Study, trial_id: int, params: dict, space: list[search_space.Parameter],
               user_attrs: dict) -> None:
    """Fixes `params` (and sets `user_attrs`) on a trial that has not suggested anything yet."""
    distributions = search_space.distributions(space)
    storage = _storage(study)
    for name, value in params.items():
        if name in distributions:
            storage.set_trial_param(trial_id, name, distributions[name].to_internal_repr(value),
                                    distributions[name])
    for key, value in user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
