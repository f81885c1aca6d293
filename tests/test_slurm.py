"""Tiny studies on a real two-node SLURM 22.05 cluster (tests/slurm/start_cluster.sh) through the
slurm workflow profile and snakemake-executor-plugin-slurm: every trial is a SLURM job, and a trial
cancelled with scancel is run again with its parameters by the next invocation; a study in
PostgreSQL runs on both nodes, and a trial requeued by SLURM resumes from its checkpoint.

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


# The cluster's second node is a slurmd in a network namespace (tests/slurm/start_cluster.sh): it
# reaches this machine, and a database here, only at the veth address.
HOST_ADDR, NODE_NETWORK = "10.201.0.1", "10.201.0.0/24"


def slurm_jobs() -> dict[str, dict]:
    """SLURM's own record of every job it still lists (MinJobAge: an hour): {job id: {comment,
    state, nodes}}."""
    listing = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%k|%T|%N"], capture_output=True,
                             text=True, check=True).stdout
    return {job: {"comment": comment, "state": state, "nodes": nodes}
            for job, comment, state, nodes in (line.split("|") for line in listing.splitlines())}


def requeue_when_checkpointed(out, requeued: dict, deadline: float) -> None:
    """`scontrol requeue` the SLURM job of the first trial with a checkpoint of step 10 or later, as
    a preemption does: SLURM sends the job SIGTERM, SIGKILL after KillWait, and runs it again."""
    while time.time() < deadline:
        for slot in range(3):
            steps = [int(c.name.split("-")[1]) for c in StudyLayout(out).trial(slot).dir.glob("checkpoint-*")]
            if max(steps, default=0) >= 10:
                for job, record in slurm_jobs().items():
                    if record["comment"] == f"rule_trial_wildcards_{slot}" and record["state"] == "RUNNING":
                        subprocess.run(["scontrol", "requeue", job], check=True)
                        requeued.update(job=job, slot=slot, step=max(steps))
                        # SLURM holds a requeued job back for a while (its BeginTime); a test need not
                        for _ in range(60):
                            if slurm_jobs()[job]["state"] == "PENDING":
                                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"],
                                               capture_output=True)
                                break
                            time.sleep(0.5)
                        return
        time.sleep(0.5)


def test_a_study_in_postgresql_runs_on_both_nodes_and_a_requeued_trial_resumes_from_its_checkpoint(
        slurm_cluster, tmp_path):
    """Trials of one study on two SLURM nodes, the study in PostgreSQL (the file journal's locks are
    not for several machines): SLURM's records and the study's agree on where each trial ran, and
    both nodes ran trials. A trial job requeued while it trains (a preemption) runs again in the same
    SLURM job, and its trial resumes from its checkpoint with its parameters, within the same run."""
    import postgres_server

    if postgres_server.missing_reason():
        unavailable(postgres_server.missing_reason())
    server = postgres_server.PostgresServer(host=HOST_ADDR, networks=(NODE_NETWORK,))
    try:
        url = server.new_database("two_nodes")
        workdir = tmp_path
        write_reverse_words(workdir / "data.jsonl")
        config = tiny_config(n_trials=3, storage=url)
        config["tuning"]["fixed_training_params"].update(max_steps=30, save_steps=5, save_total_limit=3)
        write_config(workdir, config)
        profile = slurm_profile(workdir / "profile")
        out = workdir / "tuning_output"
        requeued = {}
        requeuer = threading.Thread(target=requeue_when_checkpointed, args=(out, requeued, time.time() + 900),
                                    daemon=True)
        requeuer.start()
        run = run_snakemake(workdir, "--workflow-profile", str(profile), "--slurm-status-command", "squeue",
                            "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
                            "--slurm-requeue", "--retries", "0", cores=None)
        requeuer.join(timeout=5)
        assert requeued.get("job"), f"no running trial job to requeue:\n{run.stderr[-4000:]}"

        study = load_study(out)
        assert not (out / "study.journal").exists()
        trials = study.get_trials(deepcopy=False)
        jobs = slurm_jobs()
        # Where each trial ran, as SLURM says (a requeued job: where it ran last) and as the trial
        # recorded: both nodes.
        last_in_job = {t.user_attrs["slurm_job_id"]: t for t in trials}  # trials in number order
        for job, trial in last_in_job.items():
            assert jobs[job]["nodes"] == trial.user_attrs["slurm_node"]
        assert {t.user_attrs["slurm_node"] for t in trials} == {subprocess.run(
            ["hostname", "-s"], capture_output=True, text=True).stdout.strip(), "node2"}
        # The requeued slot: its first attempt interrupted, its second in the same SLURM job, run again
        # by SLURM (its Restarts count), from a checkpoint of the first, with the same parameters.
        attempts = [t for t in trials if t.user_attrs["slot"] == requeued["slot"]]
        first, second = attempts
        assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "interrupted"
        assert second.state == TrialState.COMPLETE and second.params == first.params
        assert second.user_attrs["retry_of"] == first.number
        assert second.user_attrs["slurm_job_id"] == first.user_attrs["slurm_job_id"] == requeued["job"]
        assert "Restarts=1 " in subprocess.run(["scontrol", "show", "job", requeued["job"]], capture_output=True,
                                               text=True).stdout
        # (from checkpoint-10 or later, or from checkpoint-5 where the kill caught checkpoint-10 being
        # written: a checkpoint cut short is set aside, and the whole one before it resumed)
        resumed = int(second.user_attrs["resumed_from"].rsplit("-", 1)[1])
        assert resumed >= 5 and second.user_attrs["metrics"]["trained_steps"] == 30 - resumed
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
        # Every trial beat while it trained (Optuna's heartbeat: one silent for 3 minutes is failed
        # by the next slot that starts, tests/test_database.py), on both nodes.
        assert postgres_server.heartbeat_count(url) == len(trials)
    finally:
        server.stop()
