"""What every part of snaketune shares to report a problem: its base exception, "did you mean",
and an error's description that names a full disk.

Every error snaketune raises on purpose derives from `SnaketuneError`, so a caller (the CLI, the
Snakefile) can tell a problem the user can fix from a bug. Each concept keeps its own subclass
beside its code (`config.ConfigError`, `gpu.LeaseError`, `row_formats.DataError`, ...), also deriving from
the builtin it always was (ValueError, RuntimeError) so existing `except` clauses still hold.
"""

from __future__ import annotations

import difflib
import errno
import shutil
from pathlib import Path


class SnaketuneError(Exception):
    """A problem snaketune found and explains (a bad config, an impossible lease, unusable data)."""


class ProblemsError(SnaketuneError, ValueError):
    """Problems found all at once; `problems` lists each as 'yaml.path: what is wrong', under
    the subclass's `heading` ('{count}' is their number)."""

    heading = "{count} problem(s)"

    def __init__(self, problems: list[str]):
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{self.heading.format(count=len(problems))}:\n{listing}")


class MissingLocalPath(str):
    """A problem (a 'yaml.path: ...' line) that a local file or folder the config names does not
    exist here. A job of a run whose main process accepted the config takes it as said already: a
    job whose files a storage plugin moves runs on a machine without the user's files, and reads
    what was made of them (the prepared data and model) instead."""


def closest_match(name: str, candidates, cutoff: float = 0.6) -> str | None:
    """The closest of `candidates` to `name` (difflib's ratio at least `cutoff`), or None."""
    match = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=cutoff)
    return match[0] if match else None


def closest(name: str, candidates, cutoff: float = 0.6) -> str:
    """' (did you mean X?)' for the closest of `candidates` to `name`, or ''."""
    match = closest_match(name, candidates, cutoff)
    return f" (did you mean '{match}'?)" if match else ""


# Less free space than this where a failed write went means the disk is the likely cause.
NEARLY_FULL_BYTES = 64 * 2**20


def describe_error(error: BaseException, where: str | Path | None = None) -> str:
    """`Type: message`, led by "No space left on device" when a full disk is the cause: the
    error (or one it was raised from) is ENOSPC, or the disk holding `where` (a folder the
    failed code wrote to) is nearly full. Libraries often hide the errno (torch's "PytorchStreamWriter
    failed writing file")."""
    text = f"{type(error).__name__}: {error}"
    if "No space left on device" in text:
        return text
    if disk_full(error):
        return f"No space left on device: {text}"
    if where is not None:
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            return text
        if free < NEARLY_FULL_BYTES:
            return f"No space left on device ({free // 2**20} MiB free for {where}): {text}"
    return text


def disk_full(error: BaseException) -> bool:
    """Whether `error` (or one it was raised from) is a full disk (ENOSPC)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) == errno.ENOSPC:
            return True
        error = error.__cause__ or error.__context__
    return False
