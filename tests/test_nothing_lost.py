"""Nothing a study has is lost: a torn journal record, a second invocation on the same study, ...

Each test is the smallest reproduction of a fault a user's machine inflicts, run on the real
journal, and on the real Snakefile with the tiny model where the fault needs a run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

from snaketune import locks
from snaketune import storage
from snaketune import study as studies
from snaketune.cli import main
from snaketune.layout import StudyLayout
from snaketune.locks import hold_study
from snaketune.results import finish_best_model_swap
from workflow_helpers import (REPO, load_study, resolved_tuning, run_cli, run_snakemake, tiny_config,
                              write_config, write_reverse_words)


@pytest.fixture
def workdir(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


# -- 1. a torn last journal record --------------------------------------------------------------

def _completed(out) -> dict[int, float]:
    return {t.number: t.value for t in studies.load_study(out).trials if t.state == TrialState.COMPLETE}


def test_a_journal_cut_at_every_byte_of_its_last_record_keeps_every_trial_and_grows(tmp_path, capsys):
    tuning = resolved_tuning(tmp_path, output_dir=str(tmp_path / "out"), tuner_sampler="RandomSampler")
    for value in (3.0, 2.0):
        study = studies.open_study(tuning)
        study.tell(study.ask(), value)
    journal = tuning.layout.journal
    whole = journal.read_bytes()
    last = whole.rstrip(b"\n").rfind(b"\n") + 1  # where the last record (trial 1's tell) starts
    assert json.loads(whole[last:])["op_code"] == 6  # set_trial_state_values
    side = tuning.layout.torn_records
    for cut in range(last + 1, len(whole)):  # every partial last record, up to "lost its newline"
        journal.write_bytes(whole[:cut])
        side.unlink(missing_ok=True)
        storage._TORN_SAID.clear()
        assert _completed(tuning.output_dir) == {0: 3.0}  # a reader tolerates the tail...
        study = studies.open_study(tuning)  # ...and the next write repairs it
        study.tell(study.ask(), 1.0)
        whole_record = cut == len(whole) - 1
        assert _completed(tuning.output_dir) == {0: 3.0, **({1: 2.0} if whole_record else {}), 2: 1.0}, cut
        if not whole_record:  # a fragment is kept aside, as it was, never dropped
            kept = [json.loads(line) for line in side.read_text().splitlines()]
            assert [k["text"].encode() for k in kept] == [whole[last:cut]] and kept[0]["offset"] == last
            assert "cut short" in capsys.readouterr().err
        else:  # a whole record that lost only its newline gets it back
            assert not side.exists()


def test_a_torn_tail_is_said_once_per_process(tmp_path, capsys):
    tuning = resolved_tuning(tmp_path, output_dir=str(tmp_path / "out"))
    studies.open_study(tuning)
    with open(tuning.layout.journal, "ab") as f:
        f.write(b'{"op_code":6,"worker_id":"cut-short')
    storage._TORN_SAID.clear()
    lock = tuning.layout.journal.with_name("study.journal.lock")
    lock.touch()  # while a writer holds the journal's lock, a tail is its append under way: nothing said
    studies.load_study(tuning.output_dir)
    assert "cut short" not in capsys.readouterr().err
    lock.unlink()
    for _ in range(3):
        studies.load_study(tuning.output_dir)
    assert capsys.readouterr().err.count("cut short") == 1


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """The workdir of a finished 2-trial study of tiny_config (in tuning_output) that three tests take
    further, one after the other (one study built instead of three): a torn tell repaired as the
    study grows to 3 trials; the best model kept while it cannot be rebuilt, then its slot
    retrained; the study moved, grown and copied. Each also holds on the 2-trial study alone."""
    workdir = tmp_path_factory.mktemp("finished_study")
    write_reverse_words(workdir / "data.jsonl")
    write_config(workdir, tiny_config(n_trials=2))
    run_snakemake(workdir)
    return workdir


@pytest.mark.workflow
def test_a_run_after_a_torn_tell_restores_the_trial_and_grows(finished_study):
    workdir = finished_study
    layout = StudyLayout(workdir / "tuning_output")
    whole = layout.journal.read_bytes()
    last = whole.rstrip(b"\n").rfind(b"\n") + 1
    told = json.loads(whole[last:])
    layout.journal.write_bytes(whole[:last + 60])  # the last trial's tell, cut at its 60th byte

    status = subprocess.run([sys.executable, "-m", "snaketune.cli", "status", str(layout.output_dir)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "workflow")})
    assert status.returncode == 0, status.stderr
    assert "cut short" in status.stderr

    write_config(workdir, tiny_config(n_trials=3))
    grown = run_snakemake(workdir)
    assert "told again from" in grown.stdout + grown.stderr
    run_snakemake(workdir)  # and the run after that reads the journal too ("Nothing to be done")
    study = load_study(layout.output_dir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    restored = study.trials[told["trial_id"]]
    assert restored.values == told["values"]
    assert len(pd.read_csv(layout.results_csv)) == 3
    kept = json.loads(layout.torn_records.read_text())
    assert kept["text"].encode() == whole[last:last + 60]


# -- 2. a second invocation on the same study ----------------------------------------------------

SLOW_METRIC = """
import time
from pathlib import Path

def slow(**kwargs):
    Path("started").touch()
    waited = time.time()
    while not Path("go").exists() and time.time() - waited < 180:  # a regression fails, never hangs
        time.sleep(0.2)
    return 1.0
"""


@pytest.mark.workflow
def test_a_second_invocation_on_a_running_study_is_refused_and_the_first_finishes(tmp_path):
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    out = tmp_path / "study"
    for workdir in (first_dir, second_dir):
        workdir.mkdir()
        write_reverse_words(workdir / "data.jsonl")
        (workdir / "slow_metric.py").write_text(SLOW_METRIC)
        write_config(workdir, tiny_config(n_trials=1, output_dir=str(out), evaluation_metrics=["eval_loss", "slow"],
                                          evaluation_direction=["minimize", "minimize"],
                                          custom_eval_metrics=[{"name": "slow", "function": "slow_metric.slow"}]))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
               "--configfile", "tune.yaml"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    first = subprocess.Popen(command, cwd=first_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        deadline = time.time() + 300
        while not (first_dir / "started").exists():  # the first run's trial is training/evaluating
            assert first.poll() is None and time.time() < deadline, first.stdout.read() if first.poll() else ""
            time.sleep(0.5)
        second = run_snakemake(second_dir, check=False)
        message = second.stdout + second.stderr
        assert second.returncode != 0 and "is being run by another invocation" in message
        assert f"pid {first.pid}" in message and str(first_dir) in message
        assert not (second_dir / "started").exists()  # it trained nothing
        (first_dir / "go").touch()
        output, _ = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, output[-3000:]
    trials = load_study(out).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE]
    assert "interrupted" not in json.dumps([t.user_attrs for t in trials])
    # Once the first run is over, the study is free again.
    again = run_snakemake(second_dir)
    assert "Nothing to be done" in again.stdout + again.stderr


HOLD = ("import sys, time; sys.path.insert(0, sys.argv[1]); from snaketune import locks, layout;"
        "locks.{what}(layout.StudyLayout(sys.argv[2])); print('held', flush=True); time.sleep(60)")


def _holder(what: str, output_dir) -> subprocess.Popen:
    """A process holding the study's run lock (`hold_study`) or a trial job's share (`hold_trial_share`)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD.format(what=what), str(REPO / "workflow"),
                                str(output_dir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.workflow
def test_a_trial_job_left_running_by_a_killed_run_keeps_the_study_taken(tmp_path):
    layout = StudyLayout(tmp_path / "out")
    layout.output_dir.mkdir()
    orphan = _holder("hold_trial_share", layout.output_dir)  # its snakemake is gone, it is not
    with pytest.raises(locks.StudyInUse, match="trial jobs of an earlier run"):
        locks.hold_study(layout)
    assert locks.run_holder(layout) is None  # the run lock itself was free, and is again
    orphan.kill()
    orphan.wait()
    os.close(locks.hold_study(layout))


@pytest.mark.workflow
def test_a_refused_snaketune_tune_leaves_the_running_studys_config_alone(workdir):
    write_config(workdir, tiny_config(n_trials=3))
    layout = StudyLayout(workdir / "tuning_output")
    layout.output_dir.mkdir()
    layout.merged_config.write_text("the running study's config\n")
    running = _holder("hold_study", layout.output_dir)
    try:
        refused = subprocess.run([sys.executable, "-m", "snaketune.cli", "tune", "-c", "tune.yaml", "tuning.n_trials=9"],
                                 cwd=workdir, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO / "workflow")})
    finally:
        running.kill()
        running.wait()
    assert refused.returncode != 0 and f"pid {running.pid}" in refused.stderr
    assert layout.merged_config.read_text() == "the running study's config\n"


def test_a_file_system_without_flock_runs_unguarded_and_says_so(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    layout = StudyLayout(tmp_path / "out")
    os.close(locks.hold_study(layout))
    assert "has no flock" in capsys.readouterr().err


@pytest.mark.workflow
def test_the_run_lock_is_dropped_when_its_holder_dies(tmp_path):
    layout = StudyLayout(tmp_path / "out")
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from snaketune import locks, layout;"
            "locks.hold_study(layout.StudyLayout(sys.argv[2])); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(REPO / "workflow"), str(layout.output_dir)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(locks.StudyInUse, match=f"pid {holder.pid}"):
        locks.hold_study(layout)
    holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the flock
    holder.wait()
    fd = locks.hold_study(layout)
    assert json.loads(layout.run_lock.read_text())["pid"] == os.getpid()
    os.close(fd)
    shutil.rmtree(layout.output_dir)


# -- 3. a folder that is not a study, a system folder ------------------------------------------------

def _refusal(workdir, config) -> str:
    write_config(workdir, config)
    refused = run_snakemake(workdir, check=False)
    assert refused.returncode != 0
    return refused.stdout + refused.stderr


@pytest.mark.workflow
def test_a_folder_holding_other_files_is_refused_as_output_dir_and_left_as_it_was(workdir):
    folder = workdir / "mine"
    (folder / "best_model").mkdir(parents=True)
    (folder / "best_model" / "my_weights.bin").write_bytes(b"weights")
    (folder / "trials_results.csv").write_text("mine\n")
    message = _refusal(workdir, tiny_config(n_trials=1, output_dir="mine"))
    assert "tuning.output_dir" in message and "no snaketune study" in message and "best_model" in message
    assert (folder / "best_model" / "my_weights.bin").read_bytes() == b"weights"
    assert (folder / "trials_results.csv").read_text() == "mine\n"
    assert sorted(p.name for p in folder.iterdir()) == ["best_model", "trials_results.csv"]


@pytest.mark.parametrize("where", ["/", "/tmp", "~", "~/.."])
def test_system_folders_and_home_are_refused_as_output_dir(tmp_path, where):
    from snaketune.config import ConfigError
    from snaketune.validate import load_tune_config

    write_reverse_words(tmp_path / "data.jsonl")
    with pytest.raises(ConfigError) as refused:
        load_tune_config(tiny_config(output_dir=where), tmp_path)
    (problem,) = [p for p in refused.value.problems if p.startswith("tuning.output_dir:")]
    suggested = problem.rsplit("e.g. ", 1)[1]
    assert StudyLayout(Path(suggested)).unusable_because() is None, problem  # a suggestion that is accepted


def test_a_read_only_output_dir_is_refused_by_its_path_before_any_job(tmp_path):
    from snaketune.config import ConfigError
    from snaketune.validate import load_tune_config

    mount = tmp_path / "read_only"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if mounted.returncode != 0:  # a read-only file system needs root (CI is root)
        if os.environ.get("CI"):
            raise AssertionError(f"cannot mount a read-only tmpfs: {mounted.stderr}")
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        write_reverse_words(tmp_path / "data.jsonl")
        with pytest.raises(ConfigError) as refused:
            load_tune_config(tiny_config(output_dir=str(mount / "study")), tmp_path)
        assert (f"tuning.output_dir: {mount} cannot be written to (it is on a read-only file system); a study "
                "writes its journal, trials and results there: choose a folder you can write to") in str(refused.value)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_an_empty_folder_a_new_one_and_a_study_are_accepted(tmp_path):
    from snaketune.validate import load_tune_config

    write_reverse_words(tmp_path / "data.jsonl")
    (tmp_path / "empty").mkdir()
    (tmp_path / "configs").mkdir()  # a folder holding only its config and hidden files is fine
    (tmp_path / "configs" / "tune.yaml").write_text("model: {}\n")
    (tmp_path / "configs" / ".gitkeep").touch()
    for where in ("empty", "new/nested", "configs"):
        load_tune_config(tiny_config(output_dir=where), tmp_path)
    study = resolved_tuning(tmp_path, output_dir="study")
    studies.open_study(study)
    (study.layout.output_dir / "notes.txt").write_text("mine")  # a study's folder may hold more
    load_tune_config(tiny_config(output_dir="study"), tmp_path)


@pytest.mark.workflow
def test_snaketune_tune_refuses_a_foreign_folder_before_writing_into_it(workdir):
    (workdir / "mine").mkdir()
    (workdir / "mine" / "notes.txt").write_text("mine")
    write_config(workdir, tiny_config(n_trials=1, output_dir="mine"))
    refused = subprocess.run([sys.executable, "-m", "snaketune.cli", "tune", "-c", "tune.yaml"], cwd=workdir,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "workflow")})
    assert refused.returncode != 0 and "tuning.output_dir" in refused.stderr
    assert [p.name for p in (workdir / "mine").iterdir()] == ["notes.txt"]


# -- 5. one output_dir, one study: another study_name is refused with the other changed definitions,
# test_failures.py::test_a_changed_definition_is_refused_and_a_grown_budget_runs_only_the_new_slot --

# -- 4. the best model survives a re-run that cannot rebuild it --------------------------------------

@pytest.mark.workflow
def test_a_rerun_keeps_the_best_model_until_it_has_a_new_one(finished_study):
    # The shared study, grown to 3 trials by the torn-tell test before it (2 trials alone).
    workdir = finished_study
    layout = StudyLayout(workdir / "tuning_output")
    best = json.loads(layout.best_trial.read_text())
    weights = {p.name: p.read_bytes() for p in layout.best_model.iterdir()}

    # The best trial's checkpoint is gone but its metrics.json is not: no model can be built.
    for checkpoint in layout.trial(best["slot"]).dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    failed = run_snakemake(workdir, "--forcerun", "aggregate", check=False)
    assert failed.returncode != 0 and "re-train that trial" in failed.stdout + failed.stderr
    assert {p.name: p.read_bytes() for p in layout.best_model.iterdir()} == weights
    assert json.loads(layout.best_trial.read_text()) == best
    assert layout.results_csv.exists()

    # The best trial's whole folder gone: its slot is trained again with its parameters.
    shutil.rmtree(layout.trial(best["slot"]).dir)
    run_snakemake(workdir)
    attempts = [t for t in load_study(layout.output_dir).trials if t.user_attrs["slot"] == best["slot"]]
    assert [t.state for t in attempts] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert attempts[1].params == attempts[0].params and attempts[1].user_attrs["retry_of"] == attempts[0].number
    assert "retrained" in attempts[1].user_attrs
    rebuilt = json.loads(layout.best_trial.read_text())
    assert rebuilt["checkpoint"] and (layout.best_model / "config.json").exists()
    if rebuilt["slot"] == best["slot"]:  # the slot's new attempt, not the superseded one
        assert rebuilt["number"] == attempts[1].number
    assert list(pd.read_csv(layout.results_csv)["number"]).count(attempts[0].number) == 0

    # A kill between save_best_model's two renames: Snakemake put aggregate's old record back
    # into a best_model/ of its own; the old model is in best_model.previous/, the new in .tmp/.
    model = {p.name: p.read_bytes() for p in layout.best_model.iterdir()}
    previous, staging = (layout.output_dir / "best_model.previous", layout.output_dir / "best_model.tmp")
    layout.best_model.rename(previous)
    shutil.copytree(previous, staging)
    layout.best_model.mkdir()
    shutil.copy(previous / "snaketune_trial.json", layout.best_model)
    dry = run_snakemake(workdir, "--dry-run")  # the unsettled swap re-runs aggregate (its params)
    assert "rule aggregate:" in dry.stdout and previous.is_dir() and staging.is_dir()  # a dry run writes nothing
    run_snakemake(workdir)
    assert (f"snaketune: {layout.best_model} was being replaced when a run stopped (best_model.previous/ was "
            "left beside it); put back the best model it held") in layout.rule_log("aggregate").read_text()
    assert {p.name: p.read_bytes() for p in layout.best_model.iterdir()} == model  # the same best trial's
    assert not previous.exists() and not staging.exists()


def _saved_model(folder, trial: int):
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(bytes([trial]) * 8)
    (folder / "snaketune_trial.json").write_text(json.dumps({"trial_number": trial}))


@pytest.mark.parametrize("left", ["nothing", "the record Snakemake put back"])
def test_a_swap_killed_between_its_renames_puts_the_old_best_model_back(tmp_path, capsys, left):
    layout = StudyLayout(tmp_path)
    _saved_model(tmp_path / "best_model.previous", 1)
    _saved_model(tmp_path / "best_model.tmp", 2)
    if left != "nothing":
        layout.best_model.mkdir()
        shutil.copy(tmp_path / "best_model.previous" / "snaketune_trial.json", layout.best_model)
    (tmp_path / "best_trial.json").write_text(json.dumps({
        "number": 1, "slot": 0, "values": {"eval_loss": 0.5}, "params": {"learning_rate": 0.01},
        "best_model": str(layout.best_model)}))
    assert main(["best", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "put back the best model it held" in captured.err
    assert f"best model: {layout.best_model}\n" in captured.out  # whole: no "(not written yet)"
    assert json.loads(layout.best_model_record.read_text()) == {"trial_number": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model", "best_trial.json"]
    assert finish_best_model_swap(layout) is None  # settled


def test_a_first_best_model_killed_before_its_rename_is_moved_in_and_a_finished_swaps_leftover_removed(tmp_path):
    layout = StudyLayout(tmp_path)
    _saved_model(tmp_path / "best_model.tmp", 2)
    assert finish_best_model_swap(layout).endswith("moved in the new best model it had written")
    assert json.loads(layout.best_model_record.read_text()) == {"trial_number": 2}
    _saved_model(tmp_path / "best_model.previous", 1)  # killed after the second rename
    assert finish_best_model_swap(layout) is None
    assert not (tmp_path / "best_model.previous").exists() and layout.best_model_record.exists()


def test_a_swap_is_left_alone_while_a_run_holds_the_study(tmp_path, capsys):
    layout = StudyLayout(tmp_path)
    _saved_model(tmp_path / "best_model.previous", 1)
    (tmp_path / "best_trial.json").write_text(json.dumps({
        "number": 1, "values": {"eval_loss": 0.5}, "params": {}, "best_model": str(layout.best_model)}))
    held = hold_study(layout)
    try:
        assert main(["best", str(tmp_path)]) == 0
        assert capsys.readouterr().out.endswith("(not written yet)\n")
        assert (tmp_path / "best_model.previous").is_dir() and not layout.best_model.exists()
    finally:
        os.close(held)


# -- 6. a moved or copied study ----------------------------------------------------------------------

@pytest.mark.workflow
def test_a_moved_study_grows_and_a_copied_one_builds_its_best_model_from_its_own_trials(finished_study):
    # The shared study (study_a here), last of the three tests that take it further: it moves it.
    workdir = finished_study
    trials_a = load_study(workdir / "tuning_output").trials
    assert {t.state for t in trials_a} == {TrialState.COMPLETE}
    slots = len({t.user_attrs["slot"] for t in trials_a})
    shutil.move(workdir / "tuning_output", workdir / "study_b")
    write_config(workdir, tiny_config(n_trials=slots + 1, output_dir="study_b"))
    best_then = subprocess.run([sys.executable, "-m", "snaketune.cli", "best", "study_b"], cwd=workdir,
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "workflow")})
    assert best_then.returncode == 0 and "tuning_output" not in best_then.stdout and "study_b" in best_then.stdout
    run_snakemake(workdir)  # the new trial loads the model from study_b, not the gone study_a
    layout_b = StudyLayout(workdir / "study_b")
    assert [t.state for t in load_study(layout_b.output_dir).trials] == [TrialState.COMPLETE] * (len(trials_a) + 1)
    assert not (workdir / "tuning_output").exists()

    shutil.copytree(layout_b.output_dir, workdir / "study_c")
    shutil.rmtree(workdir / "study_c" / "best_model")
    (workdir / "study_c" / "best_trial.json").unlink()
    shutil.rmtree(layout_b.output_dir)  # the original is gone: the copy must stand on its own
    write_config(workdir, tiny_config(n_trials=slots + 1, output_dir="study_c"))
    run_snakemake(workdir)
    layout_c = StudyLayout(workdir / "study_c")
    best = json.loads(layout_c.best_trial.read_text())
    assert best["checkpoint"].startswith(str(layout_c.output_dir))
    assert json.loads((layout_c.best_model / "snaketune_trial.json").read_text())["checkpoint"] == best["checkpoint"]
    table = pd.read_csv(layout_c.results_csv)
    assert all(str(d).startswith(str(layout_c.output_dir)) for d in table["trial_dir"])


@pytest.mark.workflow
def test_a_journal_deleted_emptied_or_swapped_is_refused_and_rebuilt_from_the_trial_folders(finished_study, tmp_path):
    # The shared study, as the moved-and-copied test left it (study_c): every trial finished.
    workdir = finished_study
    layout = StudyLayout(workdir / "study_c")
    slots = len(layout.find_trial_dirs())
    before = {t.user_attrs["slot"]: (t.params, t.values, t.state, t.user_attrs["metrics"])
              for t in studies.latest_attempts(load_study(layout.output_dir))}
    table = layout.results_csv.read_bytes()
    records = {p: p.read_bytes() for p in layout.output_dir.glob("trial_*/metrics.json")}
    # Another study of the same name and config: its journal, from a run elsewhere.
    other = resolved_tuning(tmp_path, output_dir=str(tmp_path / "other"))
    studies.open_study(other)
    swapped = other.layout.journal.read_bytes()

    for damage in ("deleted", "emptied", "swapped"):
        if damage == "deleted":
            layout.journal.unlink()
        else:
            layout.journal.write_bytes(b"" if damage == "emptied" else swapped)
        refused = run_snakemake(workdir, check=False)
        said = {"deleted": f"{layout.journal} is missing", "emptied": f"{layout.journal} is empty",
                "swapped": f"{layout.journal} is another study's journal (its study id is "}[damage]
        assert refused.returncode != 0 and f"tuning.output_dir: {said}" in refused.stderr, damage
        assert (f"but {layout.output_dir} holds {slots} finished trial(s) in their folders (trial_0, "
                in refused.stderr), damage
        assert (f"`snaketune recover {layout.output_dir}` rebuilds the journal from the trial folders"
                in refused.stderr), damage
        assert layout.results_csv.read_bytes() == table and all(p.read_bytes() == b for p, b in records.items())

        recovered = run_cli(workdir, "recover", "study_c")
        assert f"rebuilt the journal study_c/study.journal from {slots} trial folder(s)" in recovered.stderr, damage
        kept = sorted(layout.output_dir.glob("study.journal.replaced-*"))
        assert [k.read_bytes() for k in kept] == ([swapped] if damage == "swapped" else []), damage
        for k in kept:
            k.rename(tmp_path / k.name)  # the next damage's recover keeps its own
        after = {t.user_attrs["slot"]: (t.params, t.values, t.state, t.user_attrs["metrics"])
                 for t in studies.latest_attempts(load_study(layout.output_dir))}
        assert after == before, damage
        again = run_snakemake(workdir)
        assert "Nothing to be done" in again.stdout + again.stderr, damage

    # Grown after the rebuild: only the new slot trains, and the table holds every trial.
    write_config(workdir, tiny_config(n_trials=slots + 1, output_dir="study_c"))
    run_snakemake(workdir)
    grown = load_study(layout.output_dir)
    assert [t.user_attrs["slot"] for t in studies.latest_attempts(grown)] == [*sorted(before), slots]
    assert grown.trials[-1].user_attrs["slot"] == slots and grown.trials[-1].user_attrs["attempt"] == 1
    assert len(pd.read_csv(layout.results_csv)) == slots + 1


# -- 7. summaries that tell the truth ------------------------------------------------------------

FAULTY_METRIC = """
import os
import shutil
import signal
from collections import namedtuple


def faulty(*, trial_dir, **kwargs):
    if trial_dir.name == "trial_1":  # the trial's process is killed outright
        os.kill(os.getpid(), signal.SIGKILL)
    if trial_dir.name == "trial_2":  # a write fails on a full disk, the way torch reports it
        usage = namedtuple("usage", "total used free")
        shutil.disk_usage = lambda path: usage(10**9, 10**9, 0)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed "
                           "writing file data/0: file write failed")
    return 1.0
"""


@pytest.mark.workflow
def test_the_end_of_a_failed_run_counts_killed_and_full_disk_trials_truly(workdir):
    (workdir / "faulty_metric.py").write_text(FAULTY_METRIC)
    write_config(workdir, tiny_config(n_trials=3, custom_eval_metrics=[{"name": "faulty", "function": "faulty_metric.faulty"}]))
    run = run_snakemake(workdir, "--keep-going", check=False)
    message = run.stdout + run.stderr
    assert run.returncode != 0
    assert "1 completed, 0 pruned, 1 failed, 1 interrupted" in message
    assert "trial_1 (trial" in message and "interrupted" in message
    assert "re-run exactly the 2 failed or interrupted trial(s)" in message
    table = pd.read_csv(StudyLayout(workdir / "tuning_output").results_csv)
    reason = table.set_index("slot").loc[2, "fail_reason"]
    assert reason.startswith("No space left on device") and "PytorchStreamWriter" in reason


def test_the_failure_handler_never_raises_and_keeps_the_previous_table(tmp_path, capsys, monkeypatch):
    import errno

    from snaketune import results

    tuning = resolved_tuning(tmp_path, output_dir=str(tmp_path / "out"))
    study = studies.open_study(tuning)
    study.tell(study.ask(), 1.0)
    tuning.layout.results_csv.write_text("the previous table\n")

    def full_disk(frame, path, *args, **kwargs):
        with open(path, "w") as f:
            f.write("number,sl")  # cut short
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    results.aggregate_after_failure(tuning)  # does not raise
    assert "No space left on device" in capsys.readouterr().out
    assert tuning.layout.results_csv.read_text() == "the previous table\n"

    monkeypatch.setattr(results, "_report_failure", lambda *arguments: 1 / 0)
    results.aggregate_after_failure(tuning)  # a bug in the handler is reported, not raised
    assert "ZeroDivisionError" in capsys.readouterr().out


# -- 8. every trial diverged ---------------------------------------------------------------------

@pytest.mark.workflow
def test_a_study_where_every_trial_diverged_keeps_its_table_and_says_what_to_change(workdir):
    config = tiny_config(n_trials=2, tuner_sampler="RandomSampler")
    config["tuning"]["tunable_training_params"] = {"learning_rate": {"type": "categorical", "choices": [1e4, 2e4]}}
    config["tuning"]["fixed_training_params"].update(max_steps=8, lr_scheduler_type="constant")
    write_config(workdir, config)
    run = run_snakemake(workdir, check=False)
    message = run.stdout + run.stderr
    assert run.returncode != 0
    assert "0 completed, 0 pruned, 0 failed, 2 diverged" in message
    assert "running again would change nothing" in message and "learning_rate" in message
    assert "Run the same command again" not in message
    table = pd.read_csv(StudyLayout(workdir / "tuning_output").results_csv)
    assert len(table) == 2 and all(table["fail_reason"].str.startswith("diverged"))
    # on_divergence: fail (the default): each trial is a result, told FAIL with its reason, in the
    # journal, its metrics.json and the table (test_failures checks on_divergence: prune).
    out = workdir / "tuning_output"
    for trial in load_study(out).trials:
        assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"].startswith("diverged")
        assert json.loads(StudyLayout(out).trial(trial.user_attrs["slot"]).metrics.read_text())["state"] == "FAIL"
    assert set(table["state"]) == {"FAIL"}
    # Re-running the same parameters would diverge again: unlike a failed trial, not re-run.
    again = run_snakemake(workdir, check=False)
    assert len(load_study(out).trials) == 2, again.stdout + again.stderr
    assert "running again would change nothing" in again.stdout + again.stderr
