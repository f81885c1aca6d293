"""tuning.constraints: limits a trial must keep (peak memory, train time, any metric), recorded with
Optuna's Trial.set_constraint; an infeasible trial is marked in the CSV, the report and the
summary, steers the constrained samplers away, and is never the best."""

from __future__ import annotations

import json
import textwrap

import optuna
import pandas as pd
import pytest
import yaml

from workflow_helpers import manual_text, run_snakemake, tiny_config, write_config, write_reverse_words

from snaketune import metrics, study as studies  # noqa: E402
from snaketune.config import ConfigError  # noqa: E402
from snaketune.layout import StudyLayout  # noqa: E402
from snaketune.results import results_table  # noqa: E402
from snaketune.summary import summary_table  # noqa: E402
from snaketune.validate import load_tune_config  # noqa: E402


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


def problems(workdir, constraints, **tuning) -> list[str]:
    try:
        load_tune_config(tiny_config(constraints=constraints, **tuning), workdir)
    except ConfigError as error:
        return error.problems
    return []


# -- the values recorded ------------------------------------------------------------------------


def test_a_value_is_the_excess_over_its_bound_relative_to_the_bound():
    memory = metrics.Constraint(metric="peak_memory_gib", max=20.0, min=None)
    accuracy = metrics.Constraint(metric="eval_mean_token_accuracy", max=None, min=0.5)
    both = metrics.Constraint(metric="train_runtime", max=60.0, min=0.0)
    values = metrics.constraint_values([memory, accuracy, both], {
        "peak_memory_gib": 23.0, "eval_mean_token_accuracy": 0.6, "train_runtime": 30.0})
    assert values == pytest.approx({"peak_memory_gib <= 20": 0.15, "eval_mean_token_accuracy >= 0.5": -0.2,
                                    "train_runtime <= 60": -0.5, "train_runtime >= 0": -30.0})


def test_a_metric_not_measured_breaks_a_completed_trials_constraint_and_leaves_a_stopped_ones_unknown():
    memory = metrics.Constraint(metric="my_metric", max=1.0, min=None)
    assert metrics.constraint_values([memory], {}) == {"my_metric <= 1": metrics.UNMEASURED_VIOLATION}
    assert metrics.constraint_values([memory], {}, unmeasured=0.0) == {"my_metric <= 1": 0.0}  # every constraint, always
    study = optuna.create_study()
    trial = study.ask()
    studies.record_constraints(trial, [memory], {}, completed=True)
    study.tell(trial, 0.1)
    assert studies.violated_constraints(study.trials[0]) == ["my_metric <= 1 (not measured)"]


# -- parse-time checks ------------------------------------------------------------------------


@pytest.mark.parametrize("constraints, named", [
    ([{"metric": "peak_memory_gb", "max": 20}], "tuning.constraints[0].metric: 'peak_memory_gb' is not a metric "
                                                "a trial produces (did you mean 'peak_memory_gib'?)"),
    ([{"metric": "train_runtime"}], "tuning.constraints[0]: {'metric': 'train_runtime'} is not valid under any "
                                    "of the given schemas (it is: a metric and its max, its min or both"),
    ([{"metric": "eval_loss", "min": 2, "max": 1}], "tuning.constraints[0]: min 2 is above max 1"),
    ([{"metric": "train_runtime", "max": 60}, {"metric": "train_runtime", "min": 1}],
     "tuning.constraints: names a metric twice"),
    ([{"metric": "train_runtime", "max": "1h"}], "tuning.constraints[0].max: '1h' is not of type 'number'"),
    ([{"metric": "exact_match", "min": 0.5}], "tuning.constraints[0].metric: 'exact_match' is computed only when it "
                                             "is an objective"),
    ([{"metric": "lm_eval:hellaswag/acc", "min": 0.3}], "tuning.constraints[0].metric: 'lm_eval:hellaswag/acc' is "
                                                        "computed only when it is an objective"),
])
def test_a_constraint_no_trial_could_be_judged_by_is_refused_by_its_path(workdir, constraints, named):
    found = problems(workdir, constraints)
    assert any(p.startswith(named) for p in found), found


def test_a_custom_metric_may_be_constrained_and_a_sampler_that_ignores_constraints_is_named(workdir):
    config = tiny_config(constraints=[{"metric": "answer_length", "max": 40}], tuner_sampler="RandomSampler",
                         custom_eval_metrics=[{"name": "answer_length", "function": "json.dumps"}])
    tune = load_tune_config(config, workdir)
    assert tune.tuning.constraints == [metrics.Constraint(metric="answer_length", max=40, min=None)]
    assert any(n.startswith("tuning.constraints: RandomSampler samples without them") for n in tune.notices)
    assert not [n for n in load_tune_config(tiny_config(constraints=[{"metric": "train_runtime", "max": 9}]),
                                            workdir).notices if n.startswith("tuning.constraints")]


# -- the best trial, the front, the table -----------------------------------------------------


def told(study, value, constraint: float | None, slot: int, values=None):
    trial = study.ask()
    trial.set_user_attr("slot", slot)
    if constraint is not None:  # as record_constraints records it: 20 GiB (1 + constraint) measured
        trial.set_user_attr("metrics", {"peak_memory_gib": 20 * (1 + constraint)})
        trial.set_constraint("peak_memory_gib <= 20", constraint)
    study.tell(trial, values or value)
    return trial.number


def test_an_infeasible_trial_is_never_the_best_however_good_its_value():
    study = optuna.create_study()
    told(study, 0.1, 0.5, slot=0)  # the lowest loss, 50% over the memory limit
    feasible = told(study, 0.3, -0.1, slot=1)
    told(study, 0.5, -0.2, slot=2)
    assert [t.number for t in studies.best_trials(study)] == [feasible]
    none_feasible = optuna.create_study()
    told(none_feasible, 0.1, 0.5, slot=0)
    assert studies.best_trials(none_feasible) == []


def test_the_pareto_front_leaves_infeasible_trials_out():
    study = optuna.create_study(directions=["minimize", "maximize"])
    dominant = told(study, None, 0.1, slot=0, values=[0.1, 0.9])  # would dominate, but infeasible
    kept = [told(study, None, -0.1, slot=1, values=[0.3, 0.5]), told(study, None, -0.1, slot=2, values=[0.5, 0.7])]
    assert sorted(t.number for t in studies.best_trials(study)) == kept
    assert dominant not in kept


def test_the_table_and_the_summary_mark_an_infeasible_trial(tmp_path):
    study = optuna.create_study(study_name="constrained")
    told(study, 0.1, 0.5, slot=0)
    told(study, 0.3, -0.1, slot=1)
    table = results_table(study, ["eval_loss"], StudyLayout(tmp_path))
    assert table["feasible"].tolist() == [False, True]
    assert table["constraints_violated"].fillna("").tolist() == ["peak_memory_gib <= 20 (+50%)", ""]
    text = summary_table(StudyLayout(tmp_path), "constrained", ["eval_loss"], study=study)
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("0", "1*"))]
    assert rows[0][:2] == ["1*", "trial_1/"] and rows[1][2:4] == ["COMPLETE", "(infeasible)"], text
    assert "trial 0 (trial_0/) infeasible, never the best: broke peak_memory_gib <= 20 (+50%)" in text


@pytest.mark.parametrize("change", [[{"metric": "peak_memory_gib", "max": 20}], [{"metric": "peak_memory_gib", "max": 24}], []])
def test_constraints_changed_after_trials_finished_are_refused(workdir, change):
    from snaketune.check import accepted_config

    tune = load_tune_config(tiny_config(constraints=[{"metric": "peak_memory_gib", "max": 16}]), workdir)
    study = studies.open_study(tune.tuning, definition=tune.definition)
    trial = study.ask()
    studies.record_constraints(trial, tune.tuning.constraints, {"peak_memory_gib": 3.0}, completed=True)
    study.tell(trial, 0.5)
    accepted_config(tiny_config(constraints=[{"metric": "peak_memory_gib", "max": 16}]), workdir)  # unchanged: accepted
    with pytest.raises(ConfigError, match=r"tuning.constraints: study 'snaketune' in .* judged its trials by other "
                                          r"constraints \(peak_memory_gib <= 16\)"):
        accepted_config(tiny_config(constraints=change), workdir)


# -- a study ------------------------------------------------------------------------------------

# A custom metric the test's constraint bounds: the trial's learning rate, read from its params.json.
LEARNING_RATE_METRIC = textwrap.dedent("""\
    import json

    def learning_rate(*, trial_dir, **kwargs):
        return json.loads((trial_dir / "params.json").read_text())["params"]["learning_rate"]
    """)


@pytest.mark.workflow
def test_an_infeasible_trial_is_marked_everywhere_and_the_best_is_the_best_feasible_one(workdir):
    (workdir / "lr_metric.py").write_text(LEARNING_RATE_METRIC)
    config = tiny_config(n_trials=3, custom_eval_metrics=[{"name": "lr", "function": "lr_metric.learning_rate"}],
                         enqueue_trials=[{"learning_rate": 0.01}, {"learning_rate": 0.0001}, {"learning_rate": 0.0002}],
                         constraints=[{"metric": "lr", "max": 0.001}, {"metric": "peak_memory_gib", "max": 64}])
    write_config(workdir, config)
    result = run_snakemake(workdir, "--cores", "1")
    layout = StudyLayout(workdir / "tuning_output")
    table = pd.read_csv(layout.results_csv).set_index("params_learning_rate")
    # What makes the test mean something: the trial the constraint rules out has the lowest loss.
    assert table["eval_loss"].idxmin() == pytest.approx(0.01), table["eval_loss"]
    assert (table["peak_memory_gib"] > 0.1).all() and (table["peak_memory_gib"] < 64).all()
    assert table.loc[0.01, "feasible"] == False  # noqa: E712 (a CSV cell)
    assert table.loc[0.01, "constraints_violated"] == "lr <= 0.001 (+900%)"
    assert table.drop(index=0.01)["feasible"].all()
    best = json.loads(layout.best_trial.read_text())
    assert best["params"]["learning_rate"] == table.drop(index=0.01)["eval_loss"].idxmin()
    assert json.loads((layout.best_model / "snaketune_trial.json").read_text())["trial_number"] == best["number"]
    out = result.stdout + result.stderr
    assert "infeasible, never the best: broke lr <= 0.001 (+900%)" in out
    trials_page = (layout.report_dir / "trials.html").read_text()
    assert trials_page.count("<tr class='infeasible'>") == 1 and "1 trial(s) broke tuning.constraints" in trials_page


def test_the_manuals_constraints_example_is_valid(workdir):
    block = manual_text().split("<!-- constraints-example -->")[1].split("```yaml")[1].split("```")[0]
    config = tiny_config()
    config["tuning"].update(yaml.safe_load(textwrap.dedent(block))["tuning"])
    tuning = load_tune_config(config, workdir).tuning
    assert [c.metric for c in tuning.constraints] == ["peak_memory_gib", "train_runtime"]
