"""Failures lose nothing: real faults injected into real runs of the Snakefile on the tiny model."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time

import pandas as pd
import pytest
from optuna.trial import TrialState

from snaketune.layout import StudyLayout
from workflow_helpers import (REPO, TINY_MODEL, load_study, resolved_tuning, run_snakemake,
                              tiny_config, write_config, write_reverse_words)

FLAKY_METRIC = """
from pathlib import Path

def flaky(*, trial_dir, **kwargs):
    if trial_dir.name == "trial_1" and not Path("fixed").exists():
        raise RuntimeError("boom in trial_1")
    return 1.0
"""


@pytest.fixture
def workdir(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


def mtimes(out, slots):
    """mtime of every file of the given trial slots (metrics, params, checkpoints, logs)."""
    return {str(p): p.stat().st_mtime_ns for slot in slots
            for p in StudyLayout(out).trial(slot).dir.rglob("*") if p.is_file()}


@pytest.mark.workflow
def test_failed_trial_keeps_others_then_reruns_with_same_params(workdir):
    (workdir / "flaky_metric.py").write_text(FLAKY_METRIC)
    write_config(workdir, tiny_config(custom_eval_metrics=[{"name": "flaky", "function": "flaky_metric.flaky"}]))
    first = run_snakemake(workdir, "--keep-going", check=False)
    assert first.returncode != 0
    out = workdir / "tuning_output"

    # The table exists after the partial run and names the failure.
    table = pd.read_csv(StudyLayout(out).results_csv)
    assert list(table["slot"]) == [0, 1, 2]
    assert list(table["state"]) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert "boom in trial_1" in table.loc[1, "fail_reason"]
    assert not StudyLayout(out).best_trial.exists()  # aggregate stays due, so the re-run reaches it
    message = first.stdout + first.stderr
    assert "boom in trial_1" in message and "re-run" in message
    assert "Best completed so far: trial_0" in message or "Best completed so far: trial_2" in message

    study = load_study(out)
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    before = mtimes(out, [0, 2])

    (workdir / "fixed").touch()
    run_snakemake(workdir)
    study = load_study(out)
    assert len(study.trials) == 4  # the journal keeps the failed attempt
    retry = study.trials[-1]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == failed.params
    assert retry.user_attrs["retry_of"] == failed.number
    assert retry.user_attrs["attempt"] == 2 and retry.user_attrs["slot"] == 1
    assert mtimes(out, [0, 2]) == before  # completed trials untouched

    table = pd.read_csv(StudyLayout(out).results_csv)
    assert list(table["state"]) == ["COMPLETE"] * 3
    assert list(table["attempts"]) == [1, 2, 1]
    assert table.loc[1, "number"] == retry.number
    best = json.loads(StudyLayout(out).best_trial.read_text())
    assert best["values"]["eval_loss"] == pytest.approx(table["eval_loss"].min())


def diverging_config(**tuning):
    """Two slots: with RandomSampler and seed 2, slot 0 draws lr 1e4 (diverges), slot 1 draws 1e-3."""
    config = tiny_config(n_trials=2, tuner_sampler="RandomSampler", seed=2, **tuning)
    config["tuning"]["tunable_training_params"] = {
        "learning_rate": {"type": "categorical", "choices": [1e4, 1e-3]}}
    config["tuning"]["fixed_training_params"].update(max_steps=8, lr_scheduler_type="constant")
    return config


@pytest.mark.workflow
def test_divergence_is_a_result_not_a_crash(workdir):
    """on_divergence: prune, beside a slot that completes. (The default, fail, is the study of
    test_nothing_lost's every-trial-diverged test: the same assertions there, on FAIL; one study
    less here, once a parametrized test of two.)"""
    state = TrialState.PRUNED
    write_config(workdir, diverging_config(on_divergence="prune"))
    run_snakemake(workdir)  # the job succeeds
    out = workdir / "tuning_output"
    trial = next(t for t in load_study(out).trials if t.user_attrs["slot"] == 0)
    assert trial.params["learning_rate"] == 1e4
    assert trial.state == state
    assert trial.user_attrs["fail_reason"].startswith("diverged")
    metrics = json.loads(StudyLayout(out).trial(0).metrics.read_text())
    assert metrics["state"] == state.name
    table = pd.read_csv(StudyLayout(out).results_csv)
    assert table.loc[0, "state"] == state.name and table.loc[0, "fail_reason"].startswith("diverged")

    again = run_snakemake(workdir)  # re-running the same parameters would diverge again: not re-run
    assert "Nothing to be done" in again.stdout + again.stderr
    assert len(load_study(out).trials) == 2
    assert json.loads(StudyLayout(out).best_trial.read_text())["slot"] == 1


def _hammer(journal: str, worker: int, rounds: int, queue) -> None:
    import optuna

    sys.path.insert(0, str(REPO / "workflow"))
    from snaketune.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="hammer", storage=open_storage(journal), load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=worker))
    told = []
    for _ in range(rounds):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        study.tell(trial, x)
        told.append((trial.number, x))
    queue.put(told)


def test_sixteen_processes_ask_and_tell_one_journal(tmp_path):
    journal = str(StudyLayout(tmp_path).journal)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_hammer, args=(journal, w, 5, queue)) for w in range(16)]
    for w in workers:
        w.start()
    told = [pair for _ in workers for pair in queue.get(timeout=300)]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    numbers = [n for n, _ in told]
    assert sorted(numbers) == list(range(80))  # no duplicated number, no lost trial
    import optuna

    sys.path.insert(0, str(REPO / "workflow"))
    from snaketune.storage import open_storage

    study = optuna.load_study(study_name="hammer", storage=open_storage(journal))
    assert len(study.trials) == 80
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert {t.number: t.value for t in study.trials} == dict(told)  # no tell lost


def test_stale_journal_lock_left_by_a_kill_is_recovered(tmp_path):
    sys.path.insert(0, str(REPO / "workflow"))
    from snaketune.storage import LOCK_GRACE_SECONDS
    from snaketune.study import open_study

    tuning = resolved_tuning(tmp_path, output_dir=str(tmp_path / "out"), study_name="s", seed=0,
                             tuner_sampler="RandomSampler")
    open_study(tuning)  # the journal exists
    lock = tmp_path / "out" / "study.journal.lock"
    lock.touch()  # what a process killed while appending leaves behind
    started = time.time()
    study = open_study(tuning)
    study.tell(study.ask(), 1.0)
    assert time.time() - started < LOCK_GRACE_SECONDS + 15  # recovered, not a hang
    assert not lock.exists()
    assert study.trials[0].value == 1.0


@pytest.mark.workflow
def test_a_changed_definition_is_refused_and_a_grown_budget_runs_only_the_new_slot(workdir):
    """One finished study, then every change that would mix two studies in one journal (each refused
    before any job, naming the field and leaving the journal as it was), then a grown n_trials with a
    changed logging cadence, which changes nothing learnt: only the new slot runs."""
    write_config(workdir, tiny_config(n_trials=1))
    run_snakemake(workdir)
    out = workdir / "tuning_output"
    journal = StudyLayout(out).journal.read_bytes()
    before = mtimes(out, [0])

    def refused(config, *args) -> str:
        write_config(workdir, config)
        result = run_snakemake(workdir, *args, check=False)
        assert result.returncode != 0
        return result.stdout + result.stderr

    # Issue input: the data file and max_steps changed and n_trials grown after a study ran; the
    # new trial trained on the old data for 6 steps against 3, and the best was picked across both.
    write_reverse_words(workdir / "data.jsonl", seed=1)  # another task's rows, same file name
    changed = tiny_config(n_trials=2)
    changed["tuning"]["fixed_training_params"]["max_steps"] = 6
    message = refused(changed, "--dry-run")
    assert "Building DAG" not in message
    assert "  - data: study 'snaketune'" in message and "other data (changed: train, validation)" in message
    assert ("  - tuning.fixed_training_params.max_steps: study 'snaketune'" in message
            and "ran with max_steps: 3 (now 6): set it back to 3 to continue it" in message)
    assert "set a new tuning.output_dir" in message
    write_reverse_words(workdir / "data.jsonl")  # the data as it was

    space = tiny_config(n_trials=2)
    space["tuning"]["tunable_training_params"]["learning_rate"]["high"] = 0.5
    message = refused(space)  # a real run, not a dry one: refused all the same
    assert "search space" in message and "learning_rate" in message and "tuning.output_dir" in message

    # The other parts of the definition, asked as the Snakefile asks (a snakemake start each is 7 s).
    from snaketune.config import ConfigError
    from snaketune.validate import load_tune_config
    from snaketune.study import definition_conflicts

    def conflicts(config) -> str:
        tune = load_tune_config(config, workdir)
        return str(ConfigError(definition_conflicts(tune.tuning, tune.definition)))

    other_tokenizer = tiny_config(n_trials=2)
    other_tokenizer["model"]["tokenizer_name"] = str(TINY_MODEL)
    message = conflicts(other_tokenizer)
    assert "  - model: study 'snaketune'" in message and "other model (changed: tokenizer_name)" in message
    message = conflicts(tiny_config(n_trials=2, fixed_peft_params={"lora_r": 4}))
    assert "tuning.fixed_peft_params.lora_r: study 'snaketune'" in message and "(now 4)" in message
    message = conflicts(tiny_config(n_trials=2, evaluation_metrics=["eval_mean_token_accuracy"],
                                    evaluation_direction=["maximize"]))
    assert "tuning.evaluation_metrics" in message
    message = conflicts(tiny_config(n_trials=2, study_name="other"))
    assert "tuning.study_name" in message and "'snaketune'" in message and "new tuning.output_dir" in message
    assert StudyLayout(out).journal.read_bytes() == journal

    # How often it logs and saves changes nothing learnt: the study grows. By mtime alone, the new
    # slot must run without Snakemake's record that the input set changed, and slot 0 is untouched.
    logged = tiny_config(n_trials=2)
    logged["tuning"]["fixed_training_params"].update(logging_steps=2, save_steps=50)
    write_config(workdir, logged)
    grown = run_snakemake(workdir, "--quiet", "rules", "--rerun-triggers", "mtime")
    lines = (grown.stdout + grown.stderr).splitlines()
    assert [line.split()[:2] for line in lines if line.startswith("trial ")] == [["trial", "1"]]
    assert mtimes(out, [0]) == before
    assert [t.user_attrs["slot"] for t in load_study(out).trials] == [0, 1]


@pytest.mark.workflow
def test_prepared_data_and_model_are_made_again_when_what_they_are_made_from_changes(workdir):
    write_config(workdir, tiny_config())
    summary = StudyLayout(workdir / "tuning_output").data_summary
    source = StudyLayout(workdir / "tuning_output").model_source
    run_snakemake(workdir, "--cores", "2", str(summary))
    first = json.loads(summary.read_text())
    model_written = source.stat().st_mtime

    write_reverse_words(workdir / "data.jsonl", rows=60)  # the same file, more rows
    run_snakemake(workdir, "--cores", "2", str(summary))
    assert json.loads(summary.read_text())["train"]["rows"] == 48 != first["train"]["rows"]
    assert source.stat().st_mtime == model_written  # the model was not made again

    seeded = tiny_config(seed=7)  # random initial weights come from the seed
    write_config(workdir, seeded)
    result = run_snakemake(workdir, "--cores", "2", str(summary))
    assert source.stat().st_mtime > model_written
    assert "localrule prepare_model" in result.stdout + result.stderr


def test_a_failed_rule_is_named_with_its_error_and_log_at_the_end(tmp_path, monkeypatch, capsys):
    """The profiles keep Snakemake's error blocks quiet: the end of a failed run names the rule
    that failed in this run (here before any trial, so the journal does not exist yet)."""
    from snaketune.results import aggregate_after_failure

    monkeypatch.chdir(tmp_path)
    tuning = resolved_tuning(tmp_path)
    monkeypatch.setenv("SNAKETUNE_RUN_STARTED", str(time.time() - 5))
    log = tuning.layout.rule_log("prepare_data")
    log.parent.mkdir(parents=True)
    log.write_text("Traceback (most recent call last):\n  ...\nValueError: data.jsonl line 3: not JSON\n")
    old = tuning.layout.rule_log("prepare_model")
    old.write_text("RuntimeError: from an earlier run\n")
    os.utime(old, (time.time() - 60, time.time() - 60))  # before this run: not this run's failure
    aggregate_after_failure(tuning)
    out = capsys.readouterr().out
    assert "snaketune: rule prepare_data failed: ValueError: data.jsonl line 3: not JSON (log: " in out
    assert "prepare_model" not in out


def test_a_failed_run_whose_files_a_storage_plugin_moves_says_where_they_are_and_writes_no_stale_table(
        tmp_path, monkeypatch, capsys):
    """Where a storage plugin moves the jobs' files (docs/scale-out.md), the trials are told from the
    study, and no table is written into output_dir (`snaketune export` would read it later)."""
    from snaketune.results import aggregate_after_failure
    from workflow_helpers import make_journal_with_every_state

    monkeypatch.chdir(tmp_path)
    tuning = resolved_tuning(tmp_path)
    make_journal_with_every_state(tuning.layout.output_dir)
    aggregate_after_failure(tuning, stored_in="/mnt/bucket/studies (fs)")
    out = capsys.readouterr().out
    assert "the jobs' logs and files are in the storage under /mnt/bucket/studies (fs)" in out
    assert "Best completed so far: trial_1" in out
    assert not tuning.layout.results_csv.exists()
