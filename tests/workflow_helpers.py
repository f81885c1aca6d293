"""Helpers for tests that run the real Snakefile on a tiny random Llama and tiny data."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / "tests" / "assets" / "tiny-llama"

# The layer markers (`workflow`, `system`) of the test now running, set by conftest.py before its
# fixtures run; None outside pytest (bench/ scripts use these helpers too).
RUNNING_TEST_MARKERS: frozenset[str] | None = None


def require_a_layer(what: str) -> None:
    """Raise AssertionError where the running test is marked neither `workflow` nor `system`: a
    study started from an unmarked test would put minutes into `make check`, the unit layer."""
    if RUNNING_TEST_MARKERS is not None and not RUNNING_TEST_MARKERS:
        raise AssertionError(f"{what} from a unit test: mark the test (or its module) with "
                             "pytest.mark.workflow, or pytest.mark.system where it needs more than the package")


def manual_text() -> str:
    """The README and every page of the manual (docs/*.md), one after the other: where tests find
    the YAML examples they check (after an `<!-- example-name -->` marker)."""
    return "\n".join(path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])


def write_reverse_words(path: Path, rows: int = 40, seed: int = 0) -> Path:
    """Alpaca rows: reverse a short made-up word (short sequences, a learnable task)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            word = "".join(rng.choice("abcdefgh") for _ in range(5))
            f.write(json.dumps({"instruction": "Reverse the word.", "input": word, "output": word[::-1]}) + "\n")
    return path


def write_constant_answer(path: Path, rows: int = 40, answer: str = "yes", seed: int = 0) -> Path:
    """Alpaca rows whose answer is always `answer`: what the tiny model learns in tens of steps at a
    high learning rate and not at a low one (a task a generation metric tells apart)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            f.write(json.dumps({"instruction": f"Is {a} plus {b} a number?", "input": "", "output": answer}) + "\n")
    return path


def tiny_config(data_file: str = "data.jsonl", **tuning) -> dict:
    """A tune config for the tiny model: a few steps per trial, seconds each on a CPU."""
    config = {
        "model": {
            "model_name": str(TINY_MODEL),
            "model_max_length": 128,
            "load_pretrained_weights": False,
        },
        "data": {
            "train": {"datasets": [{"dataset_name": data_file, "split": "train[:80%]"}]},
            "validation": {"datasets": [{"dataset_name": data_file, "split": "train[80%:]"}]},
        },
        "tuning": {
            "n_trials": 3,
            "tunable_training_params": {
                "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            },
            "fixed_training_params": {
                "max_steps": 3,
                "per_device_train_batch_size": 4,
                "gradient_checkpointing": False,
            },
            "evaluation_metrics": ["eval_loss"],
            "evaluation_direction": ["minimize"],
        },
    }
    config["tuning"].update(tuning)
    return config


def resolved_tuning(workdir: Path, **tuning):
    """The resolved `tuning` section (config.TuningParams) of `tiny_config(**tuning)`, its data
    written to `workdir`, for tests that open a study without running the workflow."""
    sys.path.insert(0, str(REPO / "workflow"))
    from snaketune.validate import load_tune_config

    write_reverse_words(workdir / "data.jsonl")
    return load_tune_config(tiny_config(**tuning), workdir).tuning


def write_config(workdir: Path, config: dict, name: str = "tune.yaml") -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(workdir: Path, *args: str, configfile: str | None = "tune.yaml", cores: int | None = 2,
                  check: bool = True) -> subprocess.CompletedProcess:
    """`snakemake -s <repo>/Snakefile --configfile tune.yaml --cores N ...` in `workdir` (no
    `--cores` with cores=None, as on a cluster)."""
    require_a_layer("snakemake started")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    if cores is not None:
        command += ["--cores", str(cores)]
    if configfile:
        command += ["--configfile", configfile]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([*command, *args], cwd=workdir, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-5000:]}\n"
                             f"{result.stderr[-10000:]}")
    return result


def load_study(output_dir: Path, study_name: str = "snaketune"):
    sys.path.insert(0, str(REPO / "workflow"))
    from snaketune.study import load_study as load

    return load(output_dir, study_name)


def run_cli(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`snaketune <args>` (the package's CLI, as installed) in `workdir`."""
    require_a_layer(f"snaketune {args[0] if args else ''} started")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "workflow"), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "snaketune.cli", *args]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snaketune {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-5000:]}\n{result.stderr[-10000:]}")
    return result


def make_journal_with_every_state(output_dir: Path, study_name: str = "snaketune"):
    """A journal built directly with Optuna: 2 COMPLETE, 1 FAIL, 1 PRUNED, 1 RUNNING trial (the
    running one at step 4, loss 0.75, in its live loss curve; the pruned one reported one
    intermediate value)."""
    import optuna

    sys.path.insert(0, str(REPO / "workflow"))
    from snaketune.layout import StudyLayout
    from snaketune.storage import open_storage

    layout = StudyLayout(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(str(layout.journal))
    study = optuna.create_study(study_name=study_name, storage=storage, direction="minimize")
    distribution = optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)
    outcomes = [("complete", 1.5), ("complete", 0.9), ("fail", None), ("pruned", None), ("running", None)]
    for slot, (outcome, value) in enumerate(outcomes):
        trial = study.ask({"learning_rate": distribution})
        files = layout.trial(slot)
        trial_dir = files.dir
        files.logs.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("slot", slot)
        trial.set_user_attr("attempt", 1)
        trial.set_user_attr("trial_dir", str(trial_dir))
        if outcome == "running":
            with open(files.loss_curve, "w") as f:
                for step, loss in ((1, 2.5), (2, 1.25), (4, 0.75)):
                    f.write(json.dumps({"step": step, "loss": loss, "learning_rate": 1e-3}) + "\n")
                f.write('{"step": 5, "lo')  # a line being written
            continue
        if outcome == "complete":
            trial.set_user_attr("metrics", {"eval_loss": value})
            study.tell(trial, value)
        elif outcome == "fail":
            trial.set_user_attr("fail_reason", "RuntimeError: boom")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            trial.report(3.0, step=1)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return study
