"""Where the workflow files are: the Snakefile, rules, schema, profiles, scripts and default config.

The package ships with them. A wheel carries them under `snaketune/_workflow/`, laid out as in the
repository (`Snakefile`, `workflow/rules/`, `workflow/schemas/`, `workflow/profiles/`,
`workflow/report/`, `scripts/`, `config/`, `envs/`), so the Snakefile's `include:` and the rules'
`script:`/`conda:`/caption paths resolve the same way in both; `setup.py` copies them there at
build time. A source checkout (and an editable install, which imports the package from it) reads
the repository itself.

Every name below is a path inside that root; nothing else in the project spells one.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from snaketune.errors import SnaketuneError

PACKAGE = "snaketune"
BUNDLE = "_workflow"  # setup.py writes the wheel's copy here


class WorkflowFilesMissing(SnaketuneError, FileNotFoundError):
    """The package was installed without its workflow files."""


def workflow_root() -> Path:
    """The directory holding `Snakefile`, `workflow/`, `scripts/`, `config/` and `envs/`.

    Returns the wheel's `snaketune/_workflow/` when the package was installed from one, else the
    root of the source checkout the package is imported from. Raises FileNotFoundError when
    neither holds a Snakefile (a package copied without its workflow files): WorkflowFilesMissing, a
    FileNotFoundError.
    """
    # Snakemake reads these files by path, so the package must be installed unpacked (pip does).
    package = Path(os.fspath(files(PACKAGE)))
    bundled = package / BUNDLE
    if (bundled / "Snakefile").is_file():
        return bundled
    # A source checkout or an editable install: the package is <repository>/workflow/snaketune,
    # and the workflow files are the repository's own (nothing was copied at build time).
    checkout = package.parent.parent
    if (checkout / "Snakefile").is_file():
        return checkout
    raise WorkflowFilesMissing(
        f"snaketune's workflow files are missing: no Snakefile in {bundled} (an installed wheel) "
        f"or {checkout} (a source checkout); reinstall with `pip install` from the repository")


def snakefile() -> Path:
    """The workflow's Snakefile (what `snakemake -s` takes). Raises as `workflow_root`."""
    return workflow_root() / "Snakefile"


def profiles_dir() -> Path:
    """The directory of bundled Snakemake profiles, one subdirectory each (`default`, `slurm`).
    Raises as `workflow_root`."""
    return workflow_root() / "workflow" / "profiles"


def schema_path() -> Path:
    """The JSON schema (in YAML) a tune config is validated against. Raises as `workflow_root`."""
    return workflow_root() / "workflow" / "schemas" / "tune.schema.yaml"


def default_tune_config(root: str | Path | None = None) -> Path:
    """The embedded default tune config (`config/tune.yaml`), whose relative data paths are
    relative to the workflow root.

    `root` is a workflow root to look in (a Snakefile's directory, as `workflow.basedir` gives
    it); by default the package's own. Raises as `workflow_root` when `root` is not given.
    """
    return Path(root if root is not None else workflow_root()) / "config" / "tune.yaml"
