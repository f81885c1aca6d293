"""The user's cache of answers the libraries gave before (`$XDG_CACHE_HOME/snaketune`, else
`~/.cache/snaketune`): a library's answer that depends only on its version and on what was asked
is kept, so a re-run or a second study does not pay seconds of TRL/PEFT imports to ask again.

Each entry is one JSON file, keyed by the installed versions of the packages whose answer it is
(`versions`). Written whole or not at all (another process may read it meanwhile); an entry that
cannot be read or written is treated as absent: the library is asked, never trusted blindly.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from snaketune.layout import write_json


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "snaketune"


def versions(packages: tuple[str, ...]) -> str | None:
    """`trl0.x-transformers4.y`: the installed versions of `packages`, or None when one is not
    installed (then nothing is cached)."""
    try:
        return "-".join(f"{p}{metadata.version(p)}" for p in packages)
    except metadata.PackageNotFoundError:
        return None


def digest(value) -> str:
    """A short stable hash of a JSON-serialisable `value` (the question an entry answers)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def code_digest(modules: tuple[str, ...] | None = None) -> str:
    """A hash of snaketune's own code that an answer was given by: the package's `modules` (file
    names, e.g. "train.py"), or every module of it. In a source checkout an edit changes it where
    the package's version stays the same."""
    package = Path(__file__).parent
    files = [package / name for name in modules] if modules else sorted(package.glob("*.py"))
    code = hashlib.sha256()
    for path in files:
        code.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return code.hexdigest()


def read(name: str):
    """The JSON value of entry `name`, or None when it is absent or unreadable."""
    try:
        return json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return None


def write(name: str, value) -> None:
    """Keep `value` (JSON) as entry `name`; a cache that cannot be written is skipped."""
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, value)  # whole or absent: another process may read it meanwhile
    except OSError:
        pass
