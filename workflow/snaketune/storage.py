"""Where a study's trials are kept: the storage seam, and the file journal behind it.

`study_storage(layout)` is the one place that decides which storage a study uses. Today that is
always the file journal `<output_dir>/study.journal` (Optuna's `JournalStorage` over
`JournalFile`, this module's backend); every process of the study (trial jobs, readers, the CLI)
opens it through here. A database (PostgreSQL through Optuna's `RDBStorage`, `tuning.storage`) is
another `StudyStorage`: it says where the study is, whether anything was stored there yet, and
opens an Optuna `BaseStorage`; `study_storage` is where it would be chosen. The study's run, trial
and claim locks (snaketune.locks) are files in output_dir whatever the storage; where no file
system is shared, a database storage would have to hold them itself (e.g. advisory locks).

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

from snaketune.layout import StudyLayout

# The lock is held only while one record is appended (milliseconds), so a lock file older than
# this was left by a killed process and is broken, rather than waited on forever.
LOCK_GRACE_SECONDS = 10


class StudyStorage(abc.ABC):
    """A place a study's trials are kept, as Optuna stores them.

    One subclass per kind of storage: `JournalFileStorage` (the default); a database one implements
    the same three members. `where` names it in messages (never with a password in it).
    """

    where: str

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


def study_storage(layout: StudyLayout) -> StudyStorage:
    """The storage of the study in `layout.output_dir`: the one place that decides it (the file
    journal `layout.journal`; the seam where a database storage would be chosen)."""
    return JournalFileStorage(layout.journal)


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage `study` was opened on, for the storage calls Study has no public method for
    (creating a RUNNING trial with its attributes in one write, fixing parameters, failing a dead
    trial, telling a trial again). Optuna has no public accessor: this is the one place that reads
    Study's `_storage`."""
    return study._storage


def open_storage(path: str | Path) -> JournalStorage:
    """Optuna's JournalStorage over the journal file at `path` (created empty if missing). Says on
    stderr, once per process, when the file ends in a record cut short."""
    _say_torn_tail(Path(path))
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
        return self._reader.read_logs(log_number_from)

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
