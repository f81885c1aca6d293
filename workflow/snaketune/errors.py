"""What every part of snaketune shares to report a problem: its base exception and "did you mean".

Every error snaketune raises on purpose derives from `SnaketuneError`, so a caller (the CLI, the
Snakefile) can tell a problem the user can fix from a bug. Each concept keeps its own subclass
beside its code (`config.ConfigError`, `gpu.LeaseError`, `data.DataError`, ...), also deriving from
the builtin it always was (ValueError, RuntimeError) so existing `except` clauses still hold.
"""

from __future__ import annotations

import difflib


class SnaketuneError(Exception):
    """A problem snaketune found and explains (a bad config, an impossible lease, unusable data)."""


def closest(name: str, candidates) -> str:
    """' (did you mean X?)' for the closest of `candidates` to `name`, or ''."""
    match = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
