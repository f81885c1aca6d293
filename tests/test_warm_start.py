"""tuning.warm_start_from: an earlier study's finished trials as a new study's history, fitted to a
changed space, kept out of the new study's own accounting, refused when the objectives differ."""

from __future__ import annotations

import json
import shutil

import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from workflow_helpers import REPO, manual_text, run_snakemake, tiny_config, write_config, write_reverse_words

from snaketune import scheduler, strategy, study as studies, warm_start  # noqa: E402
from snaketune.check import accepted_config  # noqa: E402
from snaketune.config import ConfigError  # noqa: E402
from snaketune.layout import StudyLayout  # noqa: E402
from snaketune.storage import study_storage  # noqa: E402
from snaketune.validate import load_tune_config  # noqa: E402


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


def earlier_study(folder, trials, directions=("minimize",), metrics=("eval_loss",)):
    """A finished study in `folder`'s journal: `trials` are (state, value, params, distributions,
    metrics) as snaketune's trial jobs tell them."""
    folder.mkdir(parents=True, exist_ok=True)
    storage = study_storage(StudyLayout(folder)).open()
    study = optuna.create_study(storage=storage, study_name="snaketune", directions=list(directions))
    study.set_metric_names(list(metrics))
    for slot, (state, value, params, distributions, measured) in enumerate(trials):
        study.add_trial(optuna.trial.create_trial(
            state=state, values=None if value is None else value if isinstance(value, list) else [value],
            params=params, distributions=distributions, intermediate_values={10: 1.0},
            user_attrs={"slot": slot, "attempt": 1, "metrics": measured}))
    return study


LR_WIDE = FloatDistribution(1e-5, 1e-1, log=True)
TRIALS = [
    (TrialState.COMPLETE, 0.30, {"learning_rate": 2e-3}, {"learning_rate": LR_WIDE}, {"trained_steps": 3, "train_runtime": 5.0}),
    (TrialState.COMPLETE, 0.20, {"learning_rate": 5e-2}, {"learning_rate": LR_WIDE}, {"trained_steps": 3, "train_runtime": 50.0}),
    (TrialState.COMPLETE, 0.25, {"learning_rate": 2e-5}, {"learning_rate": LR_WIDE}, {"trained_steps": 3, "train_runtime": 5.0}),
    (TrialState.PRUNED, 0.90, {"learning_rate": 1e-2}, {"learning_rate": LR_WIDE}, {"trained_steps": 1}),
    (TrialState.COMPLETE, 0.10, {"learning_rate": 3e-3, "lora_r": 8},
     {"learning_rate": LR_WIDE, "lora_r": IntDistribution(4, 16)}, {"trained_steps": 3}),
]


def config(**tuning):
    # This study's range grew at the top (to 0.2) and shrank at the bottom (from 1e-4).
    base = tiny_config(warm_start_from="earlier", **tuning)
    base["tuning"]["tunable_training_params"]["learning_rate"] = {"type": "loguniform", "low": 1e-4, "high": 0.2}
    return base


def test_a_point_of_the_new_space_fits_and_each_other_kind_says_why():
    tuning = load_tune_config(tiny_config(), ".", validated=True).tuning
    assert warm_start.fit({"learning_rate": 1e-3}, tuning.space) == ({"learning_rate": 1e-3}, None)
    assert warm_start.fit({"learning_rate": 5.0}, tuning.space)[1] == "outside the new space: learning_rate 5.0 is outside [0.0001, 0.1]"
    assert warm_start.fit({}, tuning.space)[1] == "missing learning_rate, which this study tunes"
    assert warm_start.fit({"learning_rate": 1e-3, "lora_r": 8}, tuning.space)[1].startswith("tunes lora_r, which this study does not")


def test_the_history_is_the_trials_that_fit_under_the_new_distributions_with_why_the_rest_are_left_out(workdir):
    earlier_study(workdir / "earlier", TRIALS)
    tune = accepted_config(config(constraints=[{"metric": "train_runtime", "max": 10}]), workdir)
    history, problems = warm_start.read_history(tune)
    assert problems == []
    assert [t.params["learning_rate"] for t in history.trials] == [2e-3, 5e-2, 1e-2]  # 2e-5: below; lora_r: not tuned
    assert all(t.distributions["learning_rate"] == FloatDistribution(1e-4, 0.2, log=True) for t in history.trials)
    assert [t.user_attrs[studies.WARM_START_ATTR]["trial"] for t in history.trials] == [0, 1, 3]
    assert [t.state for t in history.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    # This study's constraints, judged on what the earlier trials recorded: trial 1 trained 50 s of at most 10.
    # The pruned one recorded no train_runtime: not known to break it (said in a notice).
    assert [studies.feasible(t) for t in history.trials] == [True, False, True]
    assert any(n.endswith("1 of the added trials did not record train_runtime (trials 3): not known to break "
                          "tuning.constraints, they count as feasible") for n in tune.notices), tune.notices
    notice = next(n for n in tune.notices if n.startswith("tuning.warm_start_from: 3 of 5"))
    assert notice == (f"tuning.warm_start_from: 3 of 5 finished trials of {workdir / 'earlier'} are this study's history; "
                      "left out: 1 outside the new space (trials 2); 1 tunes lora_r, which this study does not (or not "
                      "there) (trials 4)")


def test_enqueue_best_runs_the_best_fitting_feasible_configurations_first(workdir):
    earlier_study(workdir / "earlier", TRIALS)
    cfg = config(n_trials=3, constraints=[{"metric": "train_runtime", "max": 10}])
    cfg["tuning"]["warm_start_from"] = {"output_dir": "earlier", "enqueue_best": 2}
    history, problems = warm_start.read_history(accepted_config(cfg, workdir))
    assert history.enqueued == [{"learning_rate": 2e-3}]  # 5e-2 is better but infeasible; 1e-2 was pruned
    assert any("1 of 2 configurations" in n for n in history.notices)
    cfg["tuning"]["n_trials"] = 1
    cfg["tuning"]["enqueue_trials"] = [{"learning_rate": 1e-3}]
    with pytest.raises(ConfigError, match=r"tuning.warm_start_from.enqueue_best: 1 configurations and 1 of "
                                          r"tuning.enqueue_trials for 1 trials"):
        accepted_config(cfg, workdir)


@pytest.mark.parametrize("change, named", [
    ({"evaluation_metrics": ["eval_mean_token_accuracy"], "evaluation_direction": ["maximize"]},
     "tuning.warm_start_from: {earlier} optimised ['eval_loss'] (minimize), this study ['eval_mean_token_accuracy'] "
     "(maximize): their values do not compare"),
    ({"evaluation_direction": ["maximize"]}, "tuning.warm_start_from: {earlier} optimised ['eval_loss'] (minimize), "
                                             "this study ['eval_loss'] (maximize)"),
    ({"warm_start_from": "nowhere"}, "tuning.warm_start_from: cannot read the earlier study: StudyNotFound: no journal at"),
    ({"tuner_sampler": "GridSampler", "n_trials": 1, "tunable_training_params": {"learning_rate": {"type": "categorical", "choices": [1e-3]}}},
     "tuning.warm_start_from: GridSampler runs every grid point once"),
    ({"warm_start_from": {"storage": "postgresql://u@h/db"}}, "tuning.warm_start_from.study_name: a database holds many"),
    ({"warm_start_from": {"output_dir": "earlier", "storage": "postgresql://u@h/db"}},
     "tuning.warm_start_from: name the earlier study by its output_dir or by its storage"),
])
def test_a_warm_start_whose_values_would_not_compare_or_cannot_be_read_is_refused_before_any_trial(workdir, change, named):
    earlier_study(workdir / "earlier", TRIALS)
    cfg = config()
    cfg["tuning"].update(change)
    with pytest.raises(ConfigError) as refused:
        accepted_config(cfg, workdir)
    assert any(p.startswith(named.format(earlier=workdir / "earlier")) for p in refused.value.problems), refused.value.problems
    assert not (workdir / "tuning_output").exists()


def test_history_is_added_once_and_kept_out_of_the_studys_own_accounting(workdir):
    earlier_study(workdir / "earlier", TRIALS)
    cfg = config(budget={"trained_steps": 6}, resume_pruned=True, pruner="successive_halving", report_every_steps=1)
    tune = accepted_config(cfg, workdir)
    lines = warm_start.start(tune)
    assert lines[0].startswith("snaketune: warm start: tuning.warm_start_from: 3 of 5 finished trials")
    assert warm_start.start(tune) == []  # once
    study = studies.load_study(workdir / "tuning_output")
    assert len(study.trials) == 3 and studies.own_trials(study) == [] and studies.latest_attempts(study) == []
    # The earlier study may go: the study holds its history, and the config is accepted without it.
    shutil.rmtree(workdir / "earlier")
    assert not [n for n in accepted_config(cfg, workdir).notices if n.startswith("tuning.warm_start_from")]
    # The budget counts none of the history's steps; its pruned trial is not a paused one to resume.
    assert scheduler.spent_compute(study, tune.tuning, "trained_steps") == 0
    state = scheduler.study_state(study, tune.tuning, budget=True)
    decision = scheduler.decide_slot(0, state, scheduler.SlotSettings.of(tune.tuning, 0))
    assert decision.kind == scheduler.NEW
    assert strategy.promotions(study.get_trials(), 2) != [] and strategy.promotions(list(state.trials), 2) == []
    assert studies.best_trials(study) == []


def test_a_run_cut_short_while_adding_adds_only_what_is_missing(workdir):
    earlier_study(workdir / "earlier", TRIALS)
    tune = accepted_config(config(), workdir)
    history, _ = warm_start.read_history(tune)
    study = studies.open_study(tune.tuning, definition=tune.definition)
    study.add_trials(history.trials[:1])  # killed after the first, before WARM_STARTED_ATTR
    warm_start.start(tune)
    origins = [t.user_attrs[studies.WARM_START_ATTR]["trial"] for t in study.get_trials()]
    assert sorted(origins) == [0, 1, 3]


@pytest.mark.workflow
def test_a_warm_started_study_holds_the_earlier_trials_with_their_origin_and_runs_the_best_first(workdir):
    earlier = tiny_config(n_trials=3, output_dir="earlier",
                          enqueue_trials=[{"learning_rate": 2e-4}, {"learning_rate": 3e-3}, {"learning_rate": 2e-2}])
    write_config(workdir, earlier, "earlier.yaml")
    run_snakemake(workdir, "--cores", "1", configfile="earlier.yaml")
    before = pd.read_csv(StudyLayout(workdir / "earlier").results_csv)
    best_before = before.loc[before["params_learning_rate"] != 2e-4, ["number", "params_learning_rate", "eval_loss"]]
    best_before = best_before.sort_values("eval_loss").iloc[0]

    cfg = tiny_config(n_trials=1, warm_start_from={"output_dir": "earlier", "enqueue_best": 1})
    cfg["tuning"]["tunable_training_params"]["learning_rate"] = {"type": "loguniform", "low": 1e-3, "high": 0.2}
    write_config(workdir, cfg)
    result = run_snakemake(workdir, "--cores", "1")
    out = result.stdout + result.stderr
    assert (f"snaketune: warm start: tuning.warm_start_from: 2 of 3 finished trials of {workdir / 'earlier'} are this "
            "study's history; left out: 1 outside the new space (trials 0)") in " ".join(out.split())

    layout = StudyLayout(workdir / "tuning_output")
    study = studies.load_study(layout.output_dir)
    history = [t for t in study.trials if studies.is_history(t)]
    assert sorted(t.user_attrs[studies.WARM_START_ATTR]["trial"] for t in history) == [1, 2]
    assert {t.user_attrs[studies.WARM_START_ATTR]["study"] for t in history} == {str(workdir / "earlier")}
    assert {t.params["learning_rate"] for t in history} == {3e-3, 2e-2}
    # The study's own trials: its first ran the earlier best configuration, and only they are tabled.
    own = studies.own_trials(study)
    assert len(own) == 1 and own[0].params["learning_rate"] == best_before["params_learning_rate"]
    assert own[0].user_attrs.get("enqueued") is True
    table = pd.read_csv(layout.results_csv)
    assert sorted(table["number"]) == sorted(t.number for t in own)
    best = json.loads(layout.best_trial.read_text())
    assert best["number"] in {t.number for t in own}


def test_the_manuals_warm_start_example_is_valid(workdir):
    block = manual_text().split("<!-- warm-start-example -->")[1].split("```yaml")[1].split("```")[0]
    earlier_study(workdir / "tuning_output_v1", TRIALS[:2])
    cfg = tiny_config()
    cfg["tuning"].update(yaml.safe_load(block)["tuning"])
    tune = accepted_config(cfg, workdir)
    assert tune.tuning.warm_start.enqueue_best == 2
    assert any(n.startswith("tuning.warm_start_from: 1 of 2 finished trials") for n in tune.notices)


def test_the_readmes_search_further_example_is_accepted_after_the_quickstarts_study(workdir):
    block = (REPO / "README.md").read_text().split("<!-- search-further-example -->")[1].split("```yaml")[1].split("```")[0]
    earlier_study(workdir / "tuning_output", TRIALS[:3])
    cfg = tiny_config()
    cfg["tuning"].update(yaml.safe_load(block)["tuning"])
    tune = accepted_config(cfg, workdir)
    assert (tune.tuning.warm_start.output_dir, tune.tuning.stop_when_converged.patience) == (str(workdir / "tuning_output"), 12)
    assert [c.metric for c in tune.tuning.constraints] == ["peak_memory_gib"]
    assert any(n.startswith("tuning.warm_start_from: 2 of 3 finished trials") for n in tune.notices)


def test_a_study_with_trials_of_its_own_goes_on_when_its_history_record_and_the_earlier_study_are_gone(workdir):
    # A journal rebuilt from the trial folders keeps the trials, not the study's record of its
    # warm start; with the earlier folder deleted too, the run goes on, said in a notice.
    cfg = config()
    cfg["tuning"]["warm_start_from"] = "gone"
    with pytest.raises(ConfigError, match="cannot read the earlier study"):
        accepted_config(cfg, workdir)  # a new study: refused, nothing to go on with
    tuning = load_tune_config(cfg, workdir, validated=True)
    study = studies.open_study(tuning.tuning, definition=tuning.definition)
    study.add_trial(optuna.trial.create_trial(value=0.3, params={"learning_rate": 1e-3}, distributions={"learning_rate": LR_WIDE},
                                              user_attrs={"slot": 0, "attempt": 1}))
    tune = accepted_config(cfg, workdir)
    notice, = [n for n in tune.notices if n.startswith("tuning.warm_start_from")]
    assert notice.endswith("the study, which has trials of its own, goes on without that history for now")
    assert warm_start.start(tune)[0].startswith("snaketune: warm start: tuning.warm_start_from: cannot read")
    assert studies.WARM_STARTED_ATTR not in studies.load_study(workdir / "tuning_output").user_attrs  # not recorded
    # Once the earlier study can be read again, its history is added (and enqueue_best is refused:
    # the study's first trials are taken).
    earlier_study(workdir / "gone", TRIALS)
    assert warm_start.start(accepted_config(cfg, workdir))[0].startswith("snaketune: warm start: tuning.warm_start_from: 3 of 5")
    assert len([t for t in studies.load_study(workdir / "tuning_output").trials if studies.is_history(t)]) == 3


def test_enqueue_best_is_refused_once_the_study_has_trials_of_its_own(workdir):
    earlier_study(workdir / "earlier", TRIALS)
    cfg = config(n_trials=3)
    cfg["tuning"]["warm_start_from"] = {"output_dir": "earlier", "enqueue_best": 1}
    tune = load_tune_config(cfg, workdir, validated=True)
    study = studies.open_study(tune.tuning, definition=tune.definition)
    study.add_trial(optuna.trial.create_trial(value=0.3, params={"learning_rate": 1e-3},
                                              distributions={"learning_rate": FloatDistribution(1e-4, 0.2, log=True)},
                                              user_attrs={"slot": 0, "attempt": 1}))
    with pytest.raises(ConfigError, match="tuning.warm_start_from.enqueue_best: the study has trials of its own"):
        accepted_config(cfg, workdir)


def test_a_study_warm_started_once_says_that_another_warm_start_from_has_no_effect(workdir):
    earlier_study(workdir / "earlier", TRIALS)
    earlier_study(workdir / "other", TRIALS[:1])
    warm_start.start(accepted_config(config(), workdir))
    cfg = config()
    cfg["tuning"]["warm_start_from"] = "other"
    tune = accepted_config(cfg, workdir)
    assert [n for n in tune.notices if n.startswith("tuning.warm_start_from")] == [
        f"tuning.warm_start_from: the study holds the history of {workdir / 'earlier'} already, added once; "
        f"{workdir / 'other'} is not added (tune a new output_dir to start from it)"]
    assert warm_start.start(tune)[0].startswith("snaketune: warm start: tuning.warm_start_from: the study holds")
    assert len(studies.load_study(workdir / "tuning_output").trials) == 3


def test_enqueue_best_of_a_two_objective_study_takes_the_pareto_front_first(workdir):
    space = {"learning_rate": LR_WIDE}
    earlier_study(workdir / "earlier", [
        (TrialState.COMPLETE, [0.20, 0.50], {"learning_rate": 1e-3}, space, {}),  # dominated by the next
        (TrialState.COMPLETE, [0.25, 0.90], {"learning_rate": 2e-3}, space, {}),
        (TrialState.COMPLETE, [0.10, 0.60], {"learning_rate": 3e-3}, space, {}),
        (TrialState.COMPLETE, [0.30, 0.95], {"learning_rate": 4e-3}, space, {}),
    ], directions=("minimize", "maximize"), metrics=("eval_loss", "eval_mean_token_accuracy"))
    cfg = config(n_trials=3, evaluation_metrics=["eval_loss", "eval_mean_token_accuracy"],
                 evaluation_direction=["minimize", "maximize"])
    cfg["tuning"]["warm_start_from"] = {"output_dir": "earlier", "enqueue_best": 3}
    history, _ = warm_start.read_history(accepted_config(cfg, workdir))
    # the front (3e-3, 2e-3, 4e-3 by loss) before the dominated 1e-3
    assert history.enqueued == [{"learning_rate": 3e-3}, {"learning_rate": 2e-3}, {"learning_rate": 4e-3}]


def test_a_warm_start_from_the_study_itself_is_refused(workdir):
    cfg = config()
    cfg["tuning"]["warm_start_from"] = "tuning_output"
    with pytest.raises(ConfigError, match="tuning.warm_start_from: names this study itself"):
        load_tune_config(cfg, workdir)
