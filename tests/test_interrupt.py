"""Ctrl-C of `snaketune tune` (issue 33): the whole run stops, its trials told the journal that they
were interrupted, no process of it is left, the same command continues the study."""

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
from workflow_helpers import REPO, load_study, run_cli, tiny_config, write_config, write_reverse_words

pytestmark = pytest.mark.workflow


def run_processes(session: int, workdir: Path) -> list[str]:
    """The processes still running of the run started as session `session` in `workdir`: in that
    session, or naming `workdir` on their command line or working in it (/proc; zombies, which
    have ended, left out)."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(entry / "cwd")
        except OSError:  # ended meanwhile
            continue
        state, sid = fields[0], int(fields[3])
        if state != "Z" and (sid == session or str(workdir) in cmdline or cwd.startswith(str(workdir))):
            left.append(f"{entry.name} {cmdline}")
    return left


def start_tune(workdir: Path) -> subprocess.Popen:
    """`snaketune tune` in a session of its own (as a terminal's shell starts a command: its own
    process group, the foreground one), stdout and stderr to files."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "workflow"), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "snaketune.cli", "tune", "-c", "tune.yaml", "--cores", "2"]
    with open(workdir / "run.out", "w") as out, open(workdir / "run.err", "w") as err:
        return subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=err, start_new_session=True)


def loss_lines(trial_dir: Path) -> int:
    """How many training-loss rows the trial's live loss curve holds (its attempts append to it)."""
    curve = trial_dir / "logs" / "loss_curve.jsonl"
    return sum('"loss"' in line for line in curve.read_text().splitlines()) if curve.exists() else 0


def wait_until_training(run: subprocess.Popen, trial_dir: Path, after: int = 0, timeout: float = 600) -> None:
    """Wait until the trial has logged a training loss beyond the `after` rows already there."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert run.poll() is None, (trial_dir.parent.parent / "run.err").read_text()[-5000:]
        if loss_lines(trial_dir) > after:
            return
        time.sleep(0.5)
    raise AssertionError("the trial did not start training")


def test_ctrl_c_stops_the_whole_run_and_the_same_command_continues_it(tmp_path):
    """SIGINT to the foreground process group (a terminal's Ctrl-C), then, to the same command run
    again, SIGINT to the snaketune process alone (`kill -INT`): each time the trial in training stops
    and records it; snaketune waits for the run to end, says how to continue, prints no traceback and
    ends killed by SIGINT (what a shell reports as exit status 130, and what makes a calling script
    stop too). The same command continues the study each time: the interrupted trial runs again with
    its parameters (and is interrupted again, the first time); the third run finishes it. (One study
    for both ways of sending Ctrl-C, once a parametrized test of two studies.)"""
    write_reverse_words(tmp_path / "data.jsonl")
    config = tiny_config(n_trials=1)
    config["tuning"]["fixed_training_params"].update(max_steps=150)  # seconds of training
    write_config(tmp_path, config)
    trial_dir = StudyLayout(tmp_path / "tuning_output").trial(0).dir
    attempts = []
    for to in ("group", "snaketune"):
        logged = loss_lines(trial_dir)
        run = start_tune(tmp_path)
        try:
            wait_until_training(run, trial_dir, after=logged)
            if to == "group":
                os.killpg(run.pid, signal.SIGINT)
            else:
                os.kill(run.pid, signal.SIGINT)
            status = run.wait(timeout=300)
        finally:
            left = run_processes(run.pid, tmp_path)
            for line in left:  # a failed test leaves nothing training
                os.kill(int(line.split()[0]), signal.SIGKILL)
        stderr = (tmp_path / "run.err").read_text()
        assert status == -signal.SIGINT, (to, stderr[-5000:])
        assert left == [], to
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, to
        assert "snaketune: Ctrl-C: stopping the run" in stderr, to
        assert ("the run is stopped; to continue the study, run the same command again "
                "(snaketune tune -c tune.yaml --cores 2): the interrupted trials run again with their "
                "parameters") in stderr, to
        trials = load_study(tmp_path / "tuning_output").trials
        assert [(t.number, t.state) for t in trials[:-1]] == [(t.number, t.state) for t in attempts], to
        interrupted = trials[-1]  # this run's one attempt
        assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["fail_reason"] == "interrupted", to
        if attempts:  # the same command continued the study: the interrupted trial again, its parameters
            assert interrupted.params == attempts[0].params and interrupted.user_attrs["retry_of"] == attempts[-1].number
        assert not list((tmp_path / ".snakemake" / "locks").glob("*")), to  # Snakemake ended as it does
        attempts.append(interrupted)

    run_cli(tmp_path, "tune", "-c", "tune.yaml", "--cores", "2")
    *earlier, retry = load_study(tmp_path / "tuning_output").trials
    assert [t.number for t in earlier] == [t.number for t in attempts]
    assert retry.state == TrialState.COMPLETE and retry.params == interrupted.params
    assert json.loads((trial_dir / "metrics.json").read_text())["state"] == "COMPLETE"


STUBBORN = """
import pathlib, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).touch()
time.sleep(600)
"""


def test_a_run_that_does_not_stop_is_terminated_then_killed(tmp_path):
    """A run that ignores SIGINT and SIGTERM (a process stuck in a library) is killed after the
    grace periods: run_snakemake returns, and nothing of it is left."""
    started = tmp_path / "started"
    script = ("import sys; from snaketune.cli import run_snakemake; "
              f"sys.exit(run_snakemake([sys.executable, '-c', {STUBBORN!r}, {str(started)!r}], "
              "grace_s=1, kill_after_s=1) - 128)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    run = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    deadline = time.time() + 60
    while not started.exists():
        assert run.poll() is None and time.time() < deadline, run.stderr.read()
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(timeout=60) == signal.SIGINT
    stderr = run.stderr.read()
    assert "Ctrl-C: stopping the run" in stderr
    assert "not stopped after 1s: terminating the run (SIGTERM)" in stderr
    assert "not stopped after 1s: killing the run (SIGKILL)" in stderr
    assert run_processes(run.pid, tmp_path) == []
