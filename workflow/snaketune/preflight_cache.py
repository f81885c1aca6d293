"""The preflight's accepted records, kept in the user's cache (`user_cache`): a second study with the
same configurations on the same model and data (a fresh `output_dir`, a copy of a study, a test
suite's studies) is not stepped again.

What the preflight's answer depends on, all of it in the key, so a change is a miss, never a stale
answer: the rule's fingerprint (`preflight.fingerprint`: every argument, the search space, the
enqueued trials, the generation settings, the library versions), the versions of the libraries the
step runs through that the fingerprint leaves out, snaketune's own code (a source checkout's edits
change it without changing its version), the prepared model's files but its weights (the step
builds a random shrunken copy from its config and uses its tokenizer), and the prepared rows. A
model that is not a local folder (a hub id read through the hub's cache) is not cached. Only an
accepted record is kept: a refusal is always the libraries' own, asked again.

Written by hand because no library caches "these libraries accepted these arguments on this
data": the answer is ours to key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from snaketune import user_cache

# Weights and training state: what the preflight never reads from the prepared model's folder.
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
# Packages on the step's path beyond those the fingerprint names.
_MORE_PACKAGES = ("accelerate", "datasets", "tokenizers")


def entry(fingerprint: str, model_source: dict, data_dir: str | Path) -> str | None:
    """The cache entry name of a preflight of `fingerprint` on this model and data, or None when it
    cannot be keyed (a model or tokenizer that is not a local folder, a package not installed)."""
    folders = [Path(model_source.get("path", "")), Path(model_source.get("tokenizer_path") or model_source.get("path", ""))]
    found = user_cache.versions(_MORE_PACKAGES)
    if found is None or not all(folder.is_absolute() and folder.is_dir() for folder in folders):
        return None
    files = hashlib.sha256()
    for folder in dict.fromkeys(folders):
        _add_files(files, folder, [p for p in folder.iterdir() if p.is_file() and not p.name.endswith(_WEIGHTS)])
    data = Path(data_dir)
    # datasets' state.json holds a fingerprint of its own, new at every prepare: not the rows.
    _add_files(files, data, [p for p in data.rglob("*") if p.is_file() and p.name != "state.json"])
    return f"preflight/{found}-{user_cache.digest([fingerprint, files.hexdigest(), user_cache.code_digest()])}.json"


def _add_files(digest, root: Path, paths: list[Path]) -> None:
    """Each file's path under `root` and its bytes, in a stable order, into `digest`."""
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")


def read(name: str | None) -> dict | None:
    """The accepted record kept as `name`, or None."""
    record = user_cache.read(name) if name else None
    return record if isinstance(record, dict) and "configurations" in record else None


def write(name: str | None, record: dict) -> None:
    if name:
        user_cache.write(name, record)
