"""Shared first lines of every rule script: find the package, send output to the rule's log,
and read the validated tune config."""

import os
import sys
from pathlib import Path


def start(snakemake) -> dict:
    sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parent / "workflow"))
    if snakemake.log:
        Path(snakemake.log[0]).parent.mkdir(parents=True, exist_ok=True)
        log = open(snakemake.log[0], "a", buffering=1)
        sys.stdout = sys.stderr = log
        os.dup2(log.fileno(), 1)  # native libraries (torch, tokenizers) write to fd 1/2 directly
        os.dup2(log.fileno(), 2)
    # OMP/MKL/OPENBLAS_NUM_THREADS need no setting here: Snakemake runs a `script:` through its
    # shell(), which sets them (and GOTO/VECLIB/NUMEXPR) from the rule's `threads:`
    # (snakemake/shell.py, 9.27.1), so trials side by side do not oversubscribe the cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from snaketune.config import load_tune_config

    # Jobs run in the workflow's working directory, where relative config paths resolve.
    return load_tune_config(snakemake.config, base_dir=os.getcwd(), validated=True)
