"""A tiny study on a real one-node SLURM 22.05 cluster (tests/slurm/start_cluster.sh) through the
slurm workflow profile and snakemake-executor-plugin-slurm: every trial is a SLURM job, and a trial
cancelled with scancel is run again with its parameters by the next invocation.

Skips only where SLURM cannot be installed or started here (not root, no apt-get); with CI=true it
fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from snaketune.layout import StudyLayout
from workflow_helpers import REPO, load_study, run_snakemake, tiny_config, write_config, write_reverse_words

pytestmark = pytest.mark.system

START_CLUSTER = REPO / "tests" / "slurm" / "start_cluster.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm" / "profile.yaml"


def unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"SLURM test cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster():
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        unavailable("snakemake-executor-plugin-slurm is not installed (pip install '.[test]')")
    if os.geteuid() != 0:
        unavailable("installing and starting SLURM needs root")
    if not shutil.which("sinfo") and not shutil.which("apt-get"):
        unavailable("SLURM is not installed and apt-get is not available to install it")
    started = subprocess.run([str(START_CLUSTER)], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        unavailable(f"could not start SLURM:\n{started.stdout[-2000:]}\n{started.stderr[-3000:]}")


def slurm_profile(directory):
    """The slurm profile, sized for this 2-core node (one CPU and 2 GB a job); all else as shipped."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile["default-resources"].update(mem_mb=2000, runtime=30)
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    profile["set-resources"]["trial"].update(cpus_per_gpu=1, mem_mb="2000 * attempt")
    directory.mkdir()
    (directory / "profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


def squeue_jobs() -> list[dict]:
    listing = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%k|%T"], capture_output=True,
                             text=True, check=True).stdout
    return [dict(zip(("id", "comment", "state"), line.split("|"))) for line in listing.splitlines()]


def cancel_when_training(out, slot: int, cancelled: dict, deadline: float) -> None:
    """scancel the SLURM job of trial slot `slot` once its trial has its parameters."""
    while time.time() < deadline:
        if StudyLayout(out).trial(slot).params.exists():
            for job in squeue_jobs():
                if job["comment"] == f"rule_trial_wildcards_{slot}" and job["state"] == "RUNNING":
                    subprocess.run(["scancel", job["id"]], check=True)
                    cancelled["job"] = job["id"]
                    return
        time.sleep(0.5)


def test_a_study_runs_as_slurm_jobs_and_a_cancelled_trial_is_rerun(slurm_cluster, tmp_path):
    workdir = tmp_path
    write_reverse_words(workdir / "data.jsonl")
    write_config(workdir, tiny_config(n_trials=3))
    profile = slurm_profile(workdir / "profile")
    out = workdir / "tuning_output"
    slurm_args = ("--workflow-profile", str(profile), "--slurm-status-command", "squeue",
                  "--slurm-init-seconds-before-status-checks", "2",
                  "--seconds-between-status-checks", "2", "--slurm-keep-successful-logs")

    # First invocation: slot 1 is cancelled while it trains; no retry within the run.
    cancelled = {}
    canceller = threading.Thread(target=cancel_when_training,
                                 args=(out, 1, cancelled, time.time() + 600), daemon=True)
    canceller.start()
    # As the manual writes it (docs/gpus-slurm.md): no --cores (a cluster run has none; the profile sizes each rule).
    first = run_snakemake(workdir, *slurm_args, "--retries", "0", cores=None, check=False)
    canceller.join(timeout=5)
    assert cancelled.get("job"), f"no running trial_1 job to cancel:\n{first.stderr[-4000:]}"
    assert first.returncode != 0, "the cancelled trial should fail the first invocation"
    assert not StudyLayout(out).trial(1).metrics.exists()
    assert "CANCELLED" in subprocess.run(["scontrol", "show", "job", cancelled["job"]],
                                         capture_output=True, text=True).stdout
    study = load_study(out)
    cancelled_trial = next(t for t in study.trials if t.user_attrs.get("slot") == 1)
    assert cancelled_trial.user_attrs["slurm_job_id"] == cancelled["job"]

    # Second invocation: only the cancelled slot runs again, with the same parameters.
    run_snakemake(workdir, *slurm_args, cores=None)
    study = load_study(out)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4
    rerun = next(t for t in trials if t.user_attrs.get("retry_of") == cancelled_trial.number)
    assert rerun.user_attrs["slot"] == 1 and rerun.state == TrialState.COMPLETE
    assert rerun.params == cancelled_trial.params
    assert study.get_trials(deepcopy=False)[cancelled_trial.number].state == TrialState.FAIL

    # Every trial ran as a SLURM job of its own, on the GPU SLURM allocated to it.
    job_ids = [t.user_attrs["slurm_job_id"] for t in trials]
    assert len(set(job_ids)) == 4
    for trial in trials:
        assert trial.user_attrs["cuda_visible_devices"] in ("0", "1")
        assert trial.user_attrs["gpu_lease"] is None  # the allocation decided, nothing leased
        state = subprocess.run(["scontrol", "show", "job", trial.user_attrs["slurm_job_id"]],
                               capture_output=True, text=True).stdout
        assert "Comment=rule_trial_wildcards_" in state

    table = pd.read_csv(StudyLayout(out).results_csv)
    complete = table[table["state"] == "COMPLETE"]
    assert len(complete) == 3 and complete["eval_loss"].notna().all()
    assert StudyLayout(out).best_trial.exists()
    # The study's run lock was held by Snakemake's main process, never by a trial job.
    holder = json.loads(StudyLayout(out).run_lock.read_text())
    assert "snakemake" in holder["command"] and "--target-jobs" not in holder["command"]
