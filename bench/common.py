"""What every benchmark shares: running the real Snakefile on a config, and the RESULTS.md rows.

Each section of bench/RESULTS.md says when, on what machine and with which library versions its
numbers were measured, and the command that measured them.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
if str(REPO / "workflow") not in sys.path:
    sys.path.insert(0, str(REPO / "workflow"))

# The tests' tiny random Llama: trials of seconds instead of a minute on 2 CPU cores.
TINY_MODEL = {"model_name": str(REPO / "tests" / "assets" / "tiny-llama"), "model_max_length": 256,
              "load_pretrained_weights": False}
PACKAGES = ("torch", "transformers", "trl", "peft", "optuna", "snakemake")


def machine() -> str:
    """e.g. 'x86_64, 2 cores, Python 3.12.3, torch 2.13.0, transformers 5.24.0, …'."""
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    return ", ".join([platform.machine(), f"{os.cpu_count()} cores", f"Python {platform.python_version()}",
                      *versions])


def run_snakemake(workdir: Path, config: dict, *extra: str, cores: int = 2, env: dict | None = None) -> None:
    """The real workflow on `config` (written to workdir/tune.yaml), run from workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tune.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "tune.yaml"]
    if any((workdir / ".snakemake" / "locks").glob("*")):
        # A benchmark killed mid-run (hours of SmolLM2 training outlive a session) leaves Snakemake's
        # lock; benchmarks run one at a time, so it is stale. The study itself resumes (--rerun-incomplete).
        subprocess.run([*base, "--unlock"], cwd=workdir, check=True, env=env, capture_output=True)
    subprocess.run([*base, "--cores", str(cores), "--quiet", "--rerun-incomplete", *extra], cwd=workdir,
                   check=True, env=env)


def job_wall_seconds(trial_dir: Path) -> float:
    """A trial job's wall time, from the benchmark file Snakemake writes for the trial rule."""
    from snaketune.layout import TrialFiles

    return float(TrialFiles(trial_dir).benchmark.read_text().splitlines()[1].split("\t")[0])


def append_results(title: str, script: str, lines: list[str]) -> str:
    """Appends a dated section (machine, versions, command) to bench/RESULTS.md; returns it."""
    command = " ".join(["python", f"bench/{script}", *sys.argv[1:]])
    section = "\n".join([f"\n### {title}, {datetime.date.today()}\n",
                         f"Machine: {machine()}\n",
                         f"Command: `{command}`\n",
                         *lines]) + "\n"
    with open(RESULTS, "a") as f:
        f.write(section)
    print(section)
    return section
