"""Resuming a run that was killed outright (SIGKILL, a power cut): from the last checkpoint, with
the same parameters; `snaketune tune` releases only the Snakemake lock the dead run left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from snaketune.layout import StudyLayout
from workflow_helpers import load_study, run_cli, run_snakemake, tiny_config, write_config, write_reverse_words


@pytest.fixture
def workdir(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


@pytest.mark.workflow
def test_killed_run_resumes_from_checkpoint_with_same_params(workdir):
    """After SIGKILL of the whole run, `snaketune tune` with the same arguments resumes: it releases
    the lock the dead run left (plain snakemake needs `--unlock`, then `--rerun-incomplete`, as the
    README says: Snakemake's own behaviour, the same resume underneath). The kill is a node lost
    mid-write: the newest checkpoint's weights are cut short behind its trainer_state.json, so the
    retry sets that checkpoint aside, kept, says so, and resumes from the whole one before it. (On
    PostgreSQL, a trial killed and resumed is test_slurm's requeued one.)"""
    config = tiny_config(n_trials=1)
    # save_total_limit 3 keeps a whole checkpoint before the damaged one (snaketune's default, 1,
    # keeps one: the retry would start at step 0, as tests/test_checkpoints.py shows)
    config["tuning"]["fixed_training_params"].update(max_steps=40, save_steps=5, save_total_limit=3)
    write_config(workdir, config)
    out = workdir / "tuning_output"
    command = [sys.executable, "-m", "snaketune.cli", "tune", "-c", "tune.yaml", "--cores", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(workdir / "killed_run.log", "w") as log:
        run = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 240
    while not any(int(c.name.split("-")[1]) >= 15 for c in StudyLayout(out).trial(0).dir.glob("checkpoint-*")) \
            and time.time() < deadline:
        assert run.poll() is None, (workdir / "killed_run.log").read_text()
        time.sleep(0.5)
    time.sleep(1)
    kill_session(run.pid)  # snaketune, Snakemake and its trial job, mid-training
    run.wait()
    killed_at = time.time()
    assert not StudyLayout(out).trial(0).metrics.exists()
    study = load_study(out)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    killed = study.trials[0]
    files = StudyLayout(out).trial(0)
    newest = Path(files.last_checkpoint())  # checkpoint-15 or later: checkpoint-10 or later is whole
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 3])
    damaged = weights.read_bytes()

    assert list((workdir / ".snakemake" / "locks").glob("*.lock"))  # left by the killed run
    again = run_cli(workdir, *command[3:])  # the same command again
    assert "was killed; released the Snakemake lock it left" in again.stderr
    aside = files.dir / f"damaged-{newest.name}"
    assert (aside / "model.safetensors").read_bytes() == damaged  # kept as the kill left it
    said = (f"trial_0/{newest.name} could not be resumed (its model.safetensors is cut short or damaged "
            "(safetensors: Error while deserializing header: incomplete metadata, file not fully covered)); "
            f"set aside as trial_0/{aside.name}")
    assert said in again.stdout + again.stderr  # the end-of-run summary
    assert (f"trial_0/{newest.name} cannot be resumed: its model.safetensors is cut short"
            in files.log.read_text())
    assert not list((workdir / ".snakemake" / "locks").glob("*.lock"))
    study = load_study(out)
    first, retry = study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "interrupted"
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["retry_of"] == first.number
    resumed = retry.user_attrs["resumed_from"]
    resumed_step = int(resumed.rsplit("-", 1)[1])
    assert resumed_step >= 10 and resumed_step == int(newest.name.rsplit("-", 1)[1]) - 5
    assert [a["moved_to"] for a in retry.user_attrs["set_aside_checkpoints"]][-1] == f"trial_0/{aside.name}"
    assert retry.user_attrs["metrics"]["trained_steps"] == 40 - resumed_step  # what tuning.budget counts
    state = json.loads(next(StudyLayout(out).trial(0).dir.glob("checkpoint-40")).joinpath("trainer_state.json").read_text())
    assert state["global_step"] == 40
    # Steps before the checkpoint were not trained again: the resumed run (every row logged after
    # the kill) starts right after the checkpoint. (The killed run may have logged past it or not.)
    curve = [json.loads(line) for line in StudyLayout(out).trial(0).loss_curve.read_text().splitlines()]
    resumed_steps = [entry["step"] for entry in curve if "loss" in entry and entry["time"] > killed_at]
    assert resumed_steps == list(range(resumed_step + 1, 41))


def kill_session(session: int) -> None:
    """SIGKILL to every process of `session` at once, as a power cut ends them: each process
    group in it, `snaketune tune`'s last (Snakemake runs in a group of its own, which snaketune
    would otherwise stop with SIGINT as it dies: cli.run_snakemake)."""
    groups = set()
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # not a process, or ended meanwhile
            continue
        if int(fields[3]) == session:
            groups.add(int(fields[2]))
    for group in sorted(groups, key=lambda group: group == session):
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _fake_snakemake_lock(workdir: Path, name: str, paths: list[Path]) -> Path:
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = locks / name
    lock.write_text("".join(f"{p}\n" for p in paths))
    return lock


def test_only_the_killed_runs_own_snakemake_locks_are_released(tmp_path, monkeypatch):
    """`snaketune tune` after a kill: the lock files the dead run recorded as its own go; another
    study's lock in the same directory, and a lock file made anew since, stay."""
    import fcntl

    from snaketune.locks import StudyInUse, hold_study, release_stale_snakemake_locks

    monkeypatch.chdir(tmp_path)
    layout = StudyLayout(tmp_path / "tuning_output")
    ours = _fake_snakemake_lock(tmp_path, "0.input.lock", [layout.trial(0).metrics, layout.results_csv])
    other = _fake_snakemake_lock(tmp_path, "1.input.lock", [tmp_path / "other_study" / "trials_results.csv"])
    fd = hold_study(layout)  # the run records its own lock files...
    assert release_stale_snakemake_locks(layout) == []  # ...and while it lives, nothing is released
    os.close(fd)  # the run dies: the kernel drops its flock
    assert release_stale_snakemake_locks(layout) == [ours.resolve()]
    assert not ours.exists() and other.exists()

    # A lock file of the same name made since (a new run building its DAG) is not the dead run's.
    ours = _fake_snakemake_lock(tmp_path, "0.input.lock", [layout.results_csv])
    fd = hold_study(layout)
    os.close(fd)
    ours.unlink()
    time.sleep(0.01)
    fresh = _fake_snakemake_lock(tmp_path, "0.input.lock", [layout.results_csv])
    assert release_stale_snakemake_locks(layout) == [] and fresh.exists()

    # Trial jobs of the killed run still running: refused, nothing released.
    fd = hold_study(layout)
    os.close(fd)
    trials = os.open(layout.trials_lock, os.O_RDWR)
    fcntl.flock(trials, fcntl.LOCK_SH)
    try:
        with pytest.raises(StudyInUse, match="trial jobs of an earlier run"):
            release_stale_snakemake_locks(layout)
    finally:
        os.close(trials)
    assert fresh.exists()


# A custom metric runs after training (the final checkpoint saved) and evaluation, before the trial
# tells its result: the place to kill a trial's process outright, once, keeping what it evaluated.
KILLED_BEFORE_TELL = """
import json
import os
import signal


def once(*, trial_dir, metrics, **kwargs):
    marker = trial_dir / "killed_before_tell.json"
    if not marker.exists():
        marker.write_text(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}))
        os.kill(os.getpid(), signal.SIGKILL)
    return 0.0
"""


@pytest.mark.workflow
def test_a_trial_killed_after_its_final_checkpoint_is_evaluated_not_trained_further(workdir):
    """Issue 33: a trial killed after saving its last step's checkpoint but before telling its
    result resumed and trained one step more than its rivals (transformers' Trainer, resumed at
    global_step == max_steps part-way through an epoch, runs that epoch's next batch before it
    checks max_steps). 32 rows in batches of 4 are 8 steps an epoch: 10 steps, and 1.5 epochs
    (12 steps), both end part-way through one. The re-run evaluates the checkpoint as it is.
    (Both lengths are the two slots of one study, the grid over max_steps 10 and -1 with
    num_train_epochs 1.5; once a parametrized test of two studies.)"""
    (workdir / "killed_before_tell.py").write_text(KILLED_BEFORE_TELL)
    config = tiny_config(n_trials=2, tuner_sampler="GridSampler",
                         custom_eval_metrics=[{"name": "killed", "function": "killed_before_tell.once"}])
    config["tuning"]["tunable_training_params"] = {"max_steps": {"type": "categorical", "choices": [10, -1]}}
    fixed = config["tuning"]["fixed_training_params"]
    del fixed["max_steps"]
    fixed["num_train_epochs"] = 1.5
    write_config(workdir, config)
    layout = StudyLayout(workdir / "tuning_output")

    killed = run_snakemake(workdir, "--keep-going", check=False)  # each slot killed once
    assert killed.returncode != 0
    first_evaluations = {slot: json.loads((layout.trial(slot).dir / "killed_before_tell.json").read_text())
                         for slot in (0, 1)}
    finals = {slot: Path(layout.trial(slot).last_checkpoint()) for slot in (0, 1)}

    run_snakemake(workdir)
    trials = load_study(workdir / "tuning_output").trials
    lengths = []
    for slot in (0, 1):
        files, final, first_evaluation = layout.trial(slot), finals[slot], first_evaluations[slot]
        first, retry = [t for t in trials if t.user_attrs["slot"] == slot]
        last_step = 10 if first.params["max_steps"] == 10 else 12
        lengths.append(last_step)
        assert final.name == f"checkpoint-{last_step}"
        assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
        assert retry.params == first.params and retry.user_attrs["resumed_from"] == str(final)
        assert [p.name for p in files.dir.glob("checkpoint-*")] == [final.name]  # no checkpoint past it
        state = json.loads((final / "trainer_state.json").read_text())
        assert state["global_step"] == state["max_steps"] == last_step
        metrics = retry.user_attrs["metrics"]
        assert metrics["trained_steps"] == 0
        # The result is the evaluation of the checkpoint the killed attempt evaluated (the same weights).
        assert retry.value == pytest.approx(first_evaluation["eval_loss"], rel=1e-5)
        assert metrics["epoch"] == pytest.approx(first_evaluation["epoch"])
        assert metrics["train_loss"] == pytest.approx(first_evaluation["train_loss"], rel=1e-5)
    assert sorted(lengths) == [10, 12]  # max_steps 10, and 1.5 epochs
