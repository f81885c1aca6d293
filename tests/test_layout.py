"""The study layout (snaketune.layout) and the one journal reader (snaketune.study.load_study)."""

from __future__ import annotations

import json

import optuna
import pytest

from snaketune import study as studies
from snaketune.storage import open_storage
from snaketune.layout import StudyLayout, TrialFiles, read_loss_curve, write_json
from workflow_helpers import resolved_tuning


def test_every_path_lies_under_the_output_dir(tmp_path):
    layout = StudyLayout(tmp_path / "out")
    paths = [layout.journal, layout.merged_config, layout.model_source, layout.data_summary,
             layout.results_csv, layout.best_trial, layout.best_trials, layout.pareto_front,
             layout.best_model, layout.rule_log("aggregate"), layout.plot("slice", "eval_loss"),
             layout.report_page("trials"), layout.trial(3).metrics, layout.trial(3).loss_curve]
    assert len(set(paths)) == len(paths)
    assert all(p.is_relative_to(tmp_path / "out") for p in paths)
    assert layout.trial(3).dir == tmp_path / "out" / "trial_3"
    assert layout.results(1) == [layout.results_csv, layout.best_trial]
    assert layout.results(2) == [layout.results_csv, layout.pareto_front, layout.best_trials]
    assert layout.best_record(2) == layout.best_trials


def test_wildcard_paths_for_the_trial_rule():
    trial = StudyLayout("out").trial("{i}")
    assert str(trial.metrics) == "out/trial_{i}/metrics.json"
    assert str(trial.log) == "out/trial_{i}/logs/trial.log"


def test_a_jobs_copy_of_the_output_dir_is_found_from_its_own_paths(tmp_path):
    """Where a storage plugin moves a job's files, Snakemake gives it a local copy of each path
    under its prefix (.snakemake/storage/<provider>/<storage prefix>/<path>)."""
    from snaketune.layout import local_output_dir

    out = tmp_path / "study"
    assert local_output_dir(out, out / "trial_0" / "metrics.json") == out
    copy = tmp_path / "work" / ".snakemake" / "storage" / "fs" / "remote" / str(out).lstrip("/")
    assert local_output_dir(out, copy / "trial_0") == copy
    assert local_output_dir(out, copy) == copy
    # a prefix that repeats the output_dir's own path: the copy is the last one
    repeated = tmp_path / ".snakemake" / "storage" / "fs" / str(out).lstrip("/") / str(out).lstrip("/")
    assert local_output_dir(out, repeated / "best_model") == repeated
    with pytest.raises(ValueError, match="is not a path of the study"):
        local_output_dir(out, tmp_path / "elsewhere" / "trial_0")


def test_last_checkpoint_passes_over_one_cut_short(tmp_path):
    files = TrialFiles(tmp_path / "trial_0")
    assert files.last_checkpoint() is None  # no directory yet
    for step, complete in ((5, True), (10, True), (15, False)):
        checkpoint = files.dir / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        if complete:
            (checkpoint / "trainer_state.json").write_text("{}")
    (files.dir / "checkpoint-x").mkdir()  # not a step: ignored
    # 15 was killed before trainer_state.json (written last); 10 sorts after 5 as a number
    assert files.last_checkpoint() == str(files.dir / "checkpoint-10")


def test_read_loss_curve_skips_a_line_being_written(tmp_path):
    path = tmp_path / "loss_curve.jsonl"
    assert read_loss_curve(path) == []
    path.write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": NaN}\n{"step": 3, "eval_loss": 1.0}\n'
                    '{"step": 4, "lo')
    assert [row["step"] for row in read_loss_curve(path)] == [1, 2, 3]
    assert [row["step"] for row in read_loss_curve(path, key="loss")] == [1]  # finite losses only


def test_write_json_leaves_no_partial_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def _journal_with(output_dir, *names):
    storage = open_storage(str(StudyLayout(output_dir).journal))
    for name in names:
        optuna.create_study(study_name=name, storage=storage)


def test_load_study_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no journal at"):
        studies.load_study(tmp_path)
    assert studies.load_study(tmp_path, "x", missing_ok=True) is None
    assert not StudyLayout(tmp_path).journal.exists()  # a reader creates nothing
    _journal_with(tmp_path, "a", "b")
    with pytest.raises(ValueError, match="several studies"):
        studies.load_study(tmp_path)
    with pytest.raises(FileNotFoundError, match="no study named 'c'"):
        studies.load_study(tmp_path, "c")
    assert studies.load_study(tmp_path, "c", missing_ok=True) is None
    assert studies.load_study(tmp_path, "b").study_name == "b"


def test_the_writer_names_the_objectives_on_the_study(tmp_path):
    (tmp_path / "accuracy_metric.py").write_text("def accuracy(**kwargs):\n    return 1.0\n")
    tuning = resolved_tuning(tmp_path, output_dir=str(tmp_path / "out"), study_name="s", seed=0,
                             tuner_sampler="RandomSampler", evaluation_metrics=["eval_loss", "accuracy"],
                             evaluation_direction=["minimize", "maximize"],
                             custom_eval_metrics=[{"name": "accuracy", "function": "accuracy_metric.accuracy"}])
    studies.open_study(tuning)
    study = studies.load_study(tmp_path / "out")
    assert study.metric_names == ["eval_loss", "accuracy"]
    assert studies.objective_names(study) == ["eval_loss", "accuracy"]


def test_objective_names_of_a_journal_without_names(tmp_path):
    _journal_with(tmp_path, "plain")
    assert studies.objective_names(studies.load_study(tmp_path)) == ["value"]
