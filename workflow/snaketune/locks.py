"""The study's locks: files in its output_dir beside the journal (StudyLayout names them), or, for
a study in a database (tuning.storage), advisory locks in that database (database.AdvisoryLock),
which every job of such a study reaches whether or not its machines share a file system.

- the run lock (`hold_study`): one run of a study at a time, whatever directory it runs from; its
  file names the holder (`run_holder`, `last_run`) and the Snakemake lock files that run made;
- the trials lock (`hold_trial_share`): held shared by every running trial job, so a study whose
  main process was killed stays taken while its trial jobs run;
- the claim lock (`claiming`): a budget check and the trial it lets start are one step;
- the launch hold (`hold_launch`): `snaketune tune` runs the study, before Snakemake takes the run
  lock.

Each is an `flock`, which the kernel drops when its holder dies (even by SIGKILL), so a dead run
never blocks the next one; a database's session lock is dropped with its session the same way. A
file system without flock runs unguarded, said once. The journal's own append lock is the
storage's (snaketune.storage). Every function takes the study's folder, and tuning.storage and
study_name where the caller has them; without them a database study is found by the storage.json
its run wrote (storage.recorded_storage).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from snaketune.database import AdvisoryLock
from snaketune.errors import SnaketuneError
from snaketune.layout import StudyLayout
from snaketune.storage import recorded_storage


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


def _in_database(layout: StudyLayout, url: str | None = None, study_name: str | None = None) -> tuple[str, str] | None:
    """(tuning.storage, study_name) where the study's locks are in its database, else None (files)."""
    if url and study_name:  # the caller's config says it: storage.json need not be read
        return url, study_name
    record = recorded_storage(layout)
    url = url or record.get("storage")
    if not url:
        return None
    return url, study_name or record.get("study_name") or "snaketune"


def _purpose(what: str) -> str:
    """A lock session's application_name: what holds it, as `run_holder` and pg_stat_activity show."""
    return f"snaketune {what}: pid {os.getpid()} on {socket.gethostname()}"


def run_holder(layout: StudyLayout, url: str | None = None, study_name: str | None = None) -> str | None:
    """Who holds the study's run lock now ('pid N on host, started T in /dir: command'), or None
    when no run does. Takes nothing (`snaketune tune` asks before it writes into the folder)."""
    database = _in_database(layout, url, study_name)
    if database:
        holders = AdvisoryLock(*database, "run").holders(exclusive=True)
        return _database_holder_text(layout, holders[0]) if holders else None
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


def trial_jobs_alive(layout: StudyLayout, url: str | None = None, study_name: str | None = None) -> bool | None:
    """Whether trial jobs of the study still run (each holds its trials lock shared); None where
    the file system has no flock."""
    database = _in_database(layout, url, study_name)
    if database:
        return bool(AdvisoryLock(*database, "trials").holders())
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


def release_stale_snakemake_locks(layout: StudyLayout, url: str | None = None,
                                  study_name: str | None = None) -> list[Path]:
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
    database = _in_database(layout, url, study_name)
    run_free = (not AdvisoryLock(*database, "run").holders()) if database else _lock_is_free(layout.run_lock, fcntl.LOCK_EX)
    trials = trial_jobs_alive(layout, url, study_name)
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


def _database_holder_text(layout: StudyLayout, session: str) -> str:
    """The holder of a database study's run lock: its record in the run lock file where that is the
    holder's (the machines share the folder), else what its database session says ('snaketune run:
    pid N on host, since T')."""
    record = last_run(layout)
    if record and session.startswith(f"snaketune run: pid {record.get('pid')} on {record.get('host')},"):
        return _holder_text(layout)
    return session


def in_use_message(layout: StudyLayout, holder: str) -> str:
    return (f"tuning.output_dir: the study in {layout.output_dir} is being run by another invocation "
            f"({holder}); wait for it to finish, or stop it, then run again. Two runs of one study "
            "would claim each other's trials.")


def hold_study(layout: StudyLayout, url: str | None = None, study_name: str | None = None) -> int | AdvisoryLock:
    """Take the study's run lock for the rest of this process (Snakemake's main process, from
    `onstart`, so dry runs, --lint and --report take nothing); returns the lock's descriptor,
    which must stay open.

    Snakemake's own lock is per working directory, so two runs of one `output_dir` from two
    directories would otherwise claim each other's live trials. An `flock` is dropped by the kernel
    when its holder dies, even by SIGKILL, so a dead run never blocks the next one; but trial jobs
    can outlive it (a killed main process leaves them running, on SLURM as elsewhere), and each
    holds the trials lock shared (`hold_trial_share`): while one does, the study stays taken. The
    run lock's file also names its holder, and marks the folder as a study's
    (StudyLayout.unusable_because). Raises StudyInUse, naming what holds the study. For a study in
    a database both locks are its advisory locks, and the AdvisoryLock held is returned.
    """
    layout.output_dir.mkdir(parents=True, exist_ok=True)
    database = _in_database(layout, url, study_name)
    if database:
        return _hold_study_in_database(layout, *database)
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
    os.ftruncate(fd, 0)
    os.pwrite(fd, _holder_record(layout), 0)
    return fd


def _holder_record(layout: StudyLayout) -> bytes:
    """What the run lock file says of its holder. Snakemake has locked this run's files in its
    working directory by now (onstart comes after): they are recorded, so that `snaketune tune`
    can release them, and only them, after a kill."""
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "cwd": os.getcwd(),
              "command": " ".join(sys.argv),
              "started_at": datetime.datetime.now().isoformat(timespec="seconds"),
              "snakemake_locks": _snakemake_lock_files(layout, Path.cwd())}
    return (json.dumps(holder) + "\n").encode()


def _hold_study_in_database(layout: StudyLayout, url: str, study_name: str) -> AdvisoryLock:
    """hold_study for a study in a database: its run lock and trials lock there. The run lock file
    is still written (it names the holder for `status` on a machine that shares the folder, and
    marks the folder as a study's), but not locked: the database's lock is the one every job sees."""
    run = AdvisoryLock(url, study_name, "run", purpose=_purpose("run"))
    if not run.try_hold():
        holders = run.holders(exclusive=True)
        raise StudyInUse(in_use_message(layout, _database_holder_text(layout, holders[0]) if holders
                                        else "a run that has just ended"))
    trials = AdvisoryLock(url, study_name, "trials")
    if not trials.try_hold():
        run.release()
        raise StudyInUse(LEFTOVER_TRIAL_JOBS.format(output_dir=layout.output_dir))
    trials.release()  # only a probe: no trial job of this run has started yet
    layout.run_lock.write_bytes(_holder_record(layout))
    return run.keep()


@contextlib.contextmanager
def holding_if_free(layout: StudyLayout):
    """Hold the study's run lock for the block if no run holds it: yields whether it is held (a
    repair that must not race a live run's writes skips when it is not; see results.finish_best_model_swap)."""
    database = _in_database(layout)
    if database:
        run = AdvisoryLock(*database, "run", purpose=_purpose("repair"))
        held = run.try_hold()
        try:
            yield held
        finally:
            run.release()
        return
    if not layout.run_lock.exists():
        yield True
        return
    fd = os.open(layout.run_lock, os.O_RDONLY)
    try:
        try:
            held = _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, layout.run_lock) or True
        except BlockingIOError:
            held = False
        yield held
    finally:
        os.close(fd)  # the flock goes with it


def hold_trial_share(layout: StudyLayout, url: str | None = None, study_name: str | None = None) -> int | AdvisoryLock:
    """Hold the study's trials lock shared for the rest of this trial job (see `hold_study`);
    returns its descriptor (or, for a database study, its AdvisoryLock), which must stay open."""
    database = _in_database(layout, url, study_name)
    if database:
        return AdvisoryLock(*database, "trials", purpose=_purpose("trial job")).hold(shared=True).keep()
    fd = os.open(layout.trials_lock, os.O_RDWR | os.O_CREAT, 0o644)
    _flock(fd, fcntl.LOCK_SH, layout.trials_lock)
    return fd


@contextlib.contextmanager
def claiming(layout: StudyLayout, url: str | None = None, study_name: str | None = None):
    """Holds the study's claim lock: a budget check and the trial it lets start are one step, so
    jobs starting side by side never both see the same compute left (an overspent budget)."""
    database = _in_database(layout, url, study_name)
    if database:
        claim = AdvisoryLock(*database, "claim", purpose=_purpose("claim")).hold()
        try:
            yield
        finally:
            claim.release()
        return
    fd = os.open(layout.claim_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(fd, fcntl.LOCK_EX, layout.claim_lock)
        yield
    finally:
        os.close(fd)  # drops the lock
