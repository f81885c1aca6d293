"""Where a study's trials are kept: the storage seam, and the file journal behind it.

`study_storage(layout, url)` is the one place that decides which storage a study uses: the file
journal `<output_dir>/study.journal` (Optuna's `JournalStorage` over `JournalFile`, this module's
backend) by default, or the database of `tuning.storage` (snaketune.database: PostgreSQL through
Optuna's `RDBStorage`). Every process of the study (trial jobs, readers, the CLI) opens it through
here; a reader that has only the output_dir finds a database study by the record a run leaves there
(`record_storage`: the URL as written, which holds no secret). The study's run, trial and claim
locks (snaketune.locks) are files in output_dir whatever the storage (a file system shared by the
nodes, as a SLURM cluster has).

The journal backend implements Optuna's public `BaseJournalBackend` (`read_logs`, `append_logs`):
reading is Optuna's own `JournalFileBackend`; appending is under Optuna's `JournalFileOpenLock`
(open(O_CREAT|O_EXCL): it works on every file system, NFS included), with a record cut short by a
crash repaired first (`repair_torn_tail`).
"""

from __future__ import annotations

import abc
import datetime
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalFileOpenLock
from optuna.storages.journal._storage import JournalStorageReplayResult

from snaketune.database import DatabaseStorage, same_database
from snaketune.errors import SnaketuneError
from snaketune.layout import StudyLayout, write_json

# The op_codes of the journal records that only a trial's own process writes: Optuna's
# JournalOperation values, which are the journal file's format (one Optuna version reads the
# journal of the one before).
SET_TRIAL_PARAM, SET_TRIAL_INTERMEDIATE_VALUE = 5, 7

# The lock is held only while one record is appended (milliseconds), so a lock file older than
# this was left by a killed process and is broken, rather than waited on forever.
LOCK_GRACE_SECONDS = 10


class StudyStorage(abc.ABC):
    """A place a study's trials are kept, as Optuna stores them.

    One subclass per kind of storage: `JournalFileStorage` (the default); the database one
    (database.DatabaseStorage, registered below) has the same members. `where` names it in messages
    (never with a password in it); `study_name` is the study of this output_dir where the storage
    may hold others (`shared`), None where it holds only this one.
    """

    where: str
    study_name: str | None = None
    shared = False

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether anything was stored there yet (readers refuse a missing study; nothing is created)."""

    @abc.abstractmethod
    def open(self) -> BaseStorage:
        """The Optuna storage, created where it is missing."""


class JournalFileStorage(StudyStorage):
    """The file journal at `path`: one machine's disk (or one node's), locked by files beside it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.where = str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def open(self) -> JournalStorage:
        return open_storage(self.path)


StudyStorage.register(DatabaseStorage)


def study_storage(layout: StudyLayout, url: str | None = None, check_schema: bool = True) -> StudyStorage:
    """The storage of the study in `layout.output_dir`: the database of `url` (tuning.storage as
    written), else the one its last run recorded there (`record_storage`), else the file journal
    `layout.journal`. The one place that decides it. `check_schema=False`: a database's schema
    version is not asked again (a trial job, whose run asked it: DatabaseStorage.check_schema)."""
    record = recorded_storage(layout)
    url = url or record.get("storage")
    if url:
        return DatabaseStorage(url, study_name=record.get("study_name") if record.get("storage") == url else None,
                               check_schema=check_schema)
    return JournalFileStorage(layout.journal)


def recorded_storage(layout: StudyLayout) -> dict:
    """What `record_storage` wrote in output_dir ({storage, study_name}), or {} (a journal study)."""
    try:
        record = json.loads(layout.storage_record.read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def storage_conflict(layout: StudyLayout, url: str | None, study_name: str | None = None) -> str | None:
    """Why the study in `layout` cannot be continued with tuning.storage `url` and tuning.study_name
    `study_name` ('yaml.path: ...'), or None: it is kept elsewhere (in its journal here, or in the
    database its last run recorded), or under another name there (an output_dir holds one study).
    The URLs are compared without their passwords."""
    record = recorded_storage(layout)
    recorded = record.get("storage")
    if url and not recorded and layout.journal.exists() and layout.journal.stat().st_size > 0:
        return (f"tuning.storage: the study in {layout.output_dir} is kept in its journal {layout.journal}, "
                f"not in {DatabaseStorage(url).where}: remove tuning.storage to continue it, or set a new "
                "tuning.output_dir for a study in the database")
    if recorded and not same_database(recorded, url):
        return (f"tuning.storage: the study in {layout.output_dir} is kept in {DatabaseStorage(recorded).where} "
                f"(as its {layout.storage_record.name} says), not in "
                f"{DatabaseStorage(url).where if url else 'a journal file'}: set tuning.storage to "
                f"{recorded} to continue it, or set a new tuning.output_dir for a new study")
    if recorded and study_name and record.get("study_name") not in (None, study_name):
        return (f"tuning.study_name: the study in {layout.output_dir} is {record['study_name']!r} in "
                f"{DatabaseStorage(recorded).where}, not {study_name!r}; an output_dir holds one study: set "
                f"study_name back to {record['study_name']!r} to continue it, or give the new study a new "
                "tuning.output_dir")
    return None


def record_storage(layout: StudyLayout, url: str | None, study_name: str) -> None:
    """Say in output_dir where its study is kept when that is a database (`url`: tuning.storage as
    written, holding no password), so that readers given only the folder (`snaketune status`,
    `best`, `export`, `report`) find it. A journal study writes nothing."""
    if url and recorded_storage(layout) != {"storage": url, "study_name": study_name}:
        layout.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(layout.storage_record, {"storage": url, "study_name": study_name})


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage `study` was opened on, for the storage calls Study has no public method for
    (creating a RUNNING trial with its attributes in one write, fixing parameters, failing a dead
    trial, telling a trial again). Optuna has no public accessor: this is the one place that reads
    Study's `_storage`."""
    return study._storage


def trial_id_of(study: optuna.Study, number: int) -> int:
    """The storage's id of trial `number` of `study` (what the storage calls take)."""
    storage = storage_of(study)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def open_storage(path: str | Path) -> JournalStorage:
    """Optuna's JournalStorage over the journal file at `path` (created empty if missing). Says on
    stderr, once per process, when the file ends in a record cut short."""
    _say_torn_tail(Path(path))
    # Optuna reads the whole file at once anyway; a line that is not a record is refused here,
    # named, before any reader acts on the records before it (and before an append after a bad
    # last line, which Optuna alone lets through, makes the file unreadable).
    bad = bad_records(Path(path)) if Path(path).exists() else []
    if bad:
        raise JournalDamaged(Path(path), bad)
    return JournalStorage(JournalFile(path))


class JournalFile(BaseJournalBackend):
    """Optuna's journal file, safe against a last record cut short.

    A crash or a full disk in the middle of an append leaves a last line without its newline.
    Optuna's reader skips such a line, but its next append is glued onto it, and from then on the
    file no longer parses: every trial of the study is unreadable. Here, under the journal's lock
    and before each append, a tail after the last newline is completed (a whole record that only
    lost its newline) or moved to `study.journal.torn` (StudyLayout.torn_records), never dropped.
    Reading is Optuna's JournalFileBackend's; appending writes the records as it does.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = JournalFileOpenLock(str(self.path), grace_period=LOCK_GRACE_SECONDS)
        self._reader = JournalFileBackend(str(self.path), lock_obj=self.lock)  # creates the file

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        # A line that is not a record stops Optuna's reader with a bare JSONDecodeError (or
        # UnicodeDecodeError, or a KeyError in its replay): named here instead. open_storage finds
        # one before the first read; this is for one written while the study is open.
        try:
            for log in self._reader.read_logs(log_number_from):
                if not (isinstance(log, dict) and "op_code" in log):
                    raise ValueError("not an Optuna journal operation")
                yield log
        except ValueError as error:
            bad = bad_records(self.path)
            if not bad:
                raise
            raise JournalDamaged(self.path, bad) from error

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.lock.acquire()
        try:
            repair_torn_tail(self.path)
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with open(self.path, "ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        finally:
            self.lock.release()


class JournalDamaged(SnaketuneError, ValueError):
    """The journal holds a line that is not a record, before its end (Optuna's reader stops there,
    and the whole study is unreadable). `bad` is `bad_records`' list."""

    def __init__(self, path: Path, bad: list[dict], refused: str | None = None):
        self.path, self.bad = path, bad
        first = bad[0]
        more = f" (and {len(bad) - 1} more line(s) after it)" if len(bad) > 1 else ""
        found = (f"{path}: line {first['line']} (byte offset {first['offset']}) is not a journal record "
                 f"({first['reason']}){more}")
        if refused:
            message = (f"{found}, and cannot be moved aside: without it, {refused}, so it most likely held a "
                       "record that later ones need. Nothing was changed; restore the journal from a backup, or "
                       "rebuild it from the trial folders: move it away, then `snaketune recover` "
                       f"{path.parent}.")
        else:
            message = (f"{found}, so Optuna cannot read the study past it; nothing was run or changed. "
                       f"`snaketune recover {path.parent}` moves such lines to "
                       f"{StudyLayout(path.parent).torn_records} (kept) when no record after them depends "
                       "on them; else restore the journal from a backup.")
        super().__init__(message)


def move_aside_bad_records(path: Path) -> str | None:
    """Make the journal readable again (call it holding the study's run lock: `snaketune recover`):
    each line that is not a record (`bad_records`), and a last one cut short, is moved to the side
    file `study.journal.torn` with its line, byte offset and text (kept: the journal as it was is
    the two together), when no record after it depends on what it may have been. Returns what was
    done, or None when the journal reads whole. Raises JournalDamaged, changing nothing, when a
    later record refers to a study or trial that no record before it creates: the damaged line was
    most likely that record, and dropping it would give later trials' records to the wrong trials."""
    lock = JournalFileOpenLock(str(path), grace_period=LOCK_GRACE_SECONDS)
    lock.acquire()
    try:
        torn = repair_torn_tail(path)
        bad = bad_records(path)
        if not bad:
            return torn
        numbers = {record["line"] for record in bad}
        kept = [(n, line) for n, line in enumerate(_lines(path.read_bytes()), start=1) if n not in numbers]
        orphan = _first_orphan(kept)
        if orphan:
            raise JournalDamaged(path, bad, refused=orphan)
        side = StudyLayout(path.parent).torn_records
        moved_at = datetime.datetime.now().isoformat(timespec="seconds")
        with open(side, "a") as f:  # first kept, then cut: a crash in between loses nothing
            for record in bad:
                f.write(json.dumps({"moved_at": moved_at, "journal": path.name, **record}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        replacement = path.with_name(path.name + ".recovering")
        with open(replacement, "wb") as f:
            f.write(b"".join(line for _, line in kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(replacement, path)
        lines = ", ".join(str(record["line"]) for record in bad)
        return (f"moved {len(bad)} line(s) that were not journal records (line(s) {lines}) from {path} to "
                f"{side}" + (f"; {torn}" if torn else ""))
    finally:
        lock.release()


class _ReplayAsItsWriter(JournalStorageReplayResult):
    """Optuna's own replay of a journal (its JournalStorageReplayResult, which JournalStorage
    reads with), each record applied as if by the process that wrote it: what Optuna skips in
    silence for another process's record (a trial or study that does not exist, a finished trial
    updated) raises instead. Used only to judge a journal that lines were taken out of."""

    writer = ""

    @property
    def worker_id(self) -> str:
        return self.writer


def _first_orphan(lines: list[tuple[int, bytes]]) -> str | None:
    """The first record (of numbered journal lines) that the lines taken out of them may have
    held up, as a phrase; None if there is none. The lines are replayed as Optuna replays them
    (`_ReplayAsItsWriter`): a record that refers to a study or trial no record before it creates,
    or updates one already finished, is refused. So is a parameter or intermediate value set on a
    trial by a process other than the one that created it: only a trial's own process reports
    those, so a trial that lost its creation record would pass its records to the next trial
    created (Optuna numbers trials by creation) and show so."""
    replay = _ReplayAsItsWriter("")
    creator: dict[int, str] = {}
    for number, line in lines:
        record = json.loads(line)
        replay.writer = str(record.get("worker_id", ""))
        code, trial_id = record.get("op_code"), record.get("trial_id")
        if code in (SET_TRIAL_PARAM, SET_TRIAL_INTERMEDIATE_VALUE) and creator.get(trial_id, replay.writer) != replay.writer:
            return f"line {number} sets a value of trial id {trial_id}, which another process created"
        before = len(replay._trials)  # the trial ids Optuna gave so far (one per trial created)
        try:
            replay.apply_logs([record])
        except optuna.exceptions.DuplicatedStudyError:
            pass  # create_study(load_if_exists=True) writes one each time it opens the study
        except KeyError:
            return f"line {number} refers to a trial or study that no record before it creates"
        except optuna.exceptions.UpdateFinishedTrialError:
            return f"line {number} updates a trial that the records before it finish"
        except Exception as error:  # noqa: BLE001 (whatever else Optuna's replay refuses)
            return f"line {number} is refused by Optuna's replay without them ({type(error).__name__}: {error})"
        if len(replay._trials) > before:
            creator[before] = replay.writer
    return None


def bad_records(path: Path) -> list[dict]:
    """Every line of the journal that is not a record ({line, offset, length, reason, text}), but a
    last one cut short (a torn tail, `repair_torn_tail`'s). Each line of Optuna's journal file is
    one JSON object."""
    bad = []
    offset = 0
    with open(path, "rb") as f:
        for number, line in enumerate(_lines(f.read()), start=1):
            if line.endswith(b"\n"):
                reason = _not_a_record(line)
                if reason:
                    bad.append({"line": number, "offset": offset, "length": len(line), "reason": reason,
                                "text": line.decode("utf-8", "surrogateescape")})
            offset += len(line)
    return bad


def _lines(data: bytes) -> list[bytes]:
    """The journal's lines, each with its newline, split as Optuna's reader splits them: on b"\\n"
    only (a b"\\r" inside a damaged line is not a line end). The last one may lack its newline."""
    lines = data.split(b"\n")
    return [line + b"\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def _not_a_record(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except ValueError as e:
        return f"not JSON: {e}"
    return None if isinstance(record, dict) and "op_code" in record else "JSON, but not an Optuna journal operation"


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
    if path.with_name(path.name + ".lock").exists():
        return  # a writer holds the journal's lock: its append is under way (many trials at once), not torn
    _, tail = torn_tail(path)
    if tail and not _whole_record(tail):
        _TORN_SAID.add(path)
        print(f"snaketune: {path} ends in a record cut short ({len(tail)} bytes: a write "
              "interrupted by a crash or a full disk); it is ignored, and the next write to the "
              f"study moves it to {StudyLayout(path.parent).torn_records}", file=sys.stderr)
