"""Samplers, pruners, warm starts, conditional parameters and the time budget (issue 5)."""

from __future__ import annotations

import json
import sys
import textwrap
import time

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from postgres_server import assert_password_kept, assert_study_kept_in
from workflow_helpers import REPO, load_study, manual_text, run_snakemake, tiny_config, write_config, write_reverse_words

sys.path.insert(0, str(REPO / "workflow"))
from snaketune import space as search_space  # noqa: E402
from snaketune import strategy  # noqa: E402
from snaketune import scheduler  # noqa: E402
from snaketune import study as studies  # noqa: E402
from snaketune.config import ConfigError  # noqa: E402
from snaketune.validate import load_tune_config  # noqa: E402
from snaketune.layout import StudyLayout, read_loss_curve  # noqa: E402
from snaketune.results import results_table  # noqa: E402
from snaketune.scheduler import SlotSkipped, claim_trial, spent_compute  # noqa: E402
from snaketune.study import open_study, skip_slot  # noqa: E402


@pytest.fixture
def workdir(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


def resolved(workdir, **tuning) -> dict:
    return load_tune_config(tiny_config(**tuning), workdir)


def problems(workdir, config) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_tune_config(config, workdir)
    return info.value.problems


MIXED_SPACE = {
    "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
    "warmup_steps": {"type": "int", "low": 0, "high": 4, "step": 2},
    "weight_decay": {"type": "uniform", "low": 0.0, "high": 0.1},
    "optimizer": {"type": "categorical", "choices": ["adamw_torch", "sgd"]},
}
GRID_SPACE = {
    "warmup_steps": {"type": "int", "low": 0, "high": 2},
    "optimizer": {"type": "categorical", "choices": ["adamw_torch", "sgd"]},
}


def run_slots(tune: dict, n: int, order=None) -> list:
    """Claim, suggest and tell n slots in the real journal, as trial jobs do (without training)."""
    tuning = tune.tuning
    for slot in order or range(n):
        study = open_study(tuning, slot)
        trial, _ = claim_trial(study, slot, tuning)
        values = search_space.suggest(trial, tuning.space)
        score = sum(float(v) for v in values.values() if isinstance(v, (int, float)))
        study.tell(trial, [score] * len(tuning.metrics))
    return open_study(tuning).trials


@pytest.mark.parametrize("sampler", strategy.SAMPLERS)
def test_every_sampler_runs_a_three_trial_study_on_the_journal(workdir, sampler):
    space = dict(GRID_SPACE if sampler in ("GridSampler", "BruteForceSampler") else MIXED_SPACE)
    if sampler == "CmaEsSampler":
        space.pop("optimizer")
    multi = sampler in ("NSGAIISampler", "NSGAIIISampler")
    config = tiny_config(n_trials=3, tuner_sampler=sampler,
                         evaluation_metrics=["eval_loss", "eval_mean_token_accuracy"] if multi else ["eval_loss"],
                         evaluation_direction=["minimize", "maximize"] if multi else ["minimize"])
    config["tuning"]["tunable_training_params"] = space
    tune = load_tune_config(config, workdir)
    trials = run_slots(tune, 3)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for trial in trials:
        assert set(trial.params) == set(space)
        for param in tune.tuning.space:
            assert search_space.check_value(param, trial.params[param.name]) is None


@pytest.mark.workflow
def test_pruned_trials_pause_and_a_later_slot_resumes_one_from_its_checkpoints_step(workdir, storage):
    """Successive halving (η 2, asked every 2 of 8 steps) in trial jobs that share the journal:
    pruned trials keep their checkpoint, and a slot that starts when one of them is among the best
    half at its step resumes it from that checkpoint (tuning.resume_pruned, on by default for
    successive_halving) instead of asking the sampler. One job at a time, so which trial is due
    when each slot starts is fixed."""
    config = tiny_config(n_trials=5, tuner_sampler="RandomSampler", pruner="successive_halving",
                         report_every_steps=2, pruner_kwargs={"min_resource": 2, "reduction_factor": 2})
    config["tuning"]["tunable_training_params"] = {
        "learning_rate": {"type": "categorical", "choices": [1e-1, 1e-2, 1e-5]}}
    config["tuning"]["fixed_training_params"].update(max_steps=8, lr_scheduler_type="constant")
    # In start order: a fast learner, a slower one, two that barely move.
    config["tuning"]["enqueue_trials"] = [{"learning_rate": 1e-1}, {"learning_rate": 1e-2},
                                          {"learning_rate": 1e-5}, {"learning_rate": 1e-5}]
    config["tuning"]["storage"] = storage  # on the journal (None), and on PostgreSQL
    write_config(workdir, config)
    run = run_snakemake(workdir, cores=1)  # pruned trials' jobs succeed
    assert "successive_halving pauses a pruned trial" in run.stderr
    out = workdir / "tuning_output"
    study = load_study(out)
    fast, slower, slow, slow_too, resumed = study.trials  # in start order
    values = {t.number: (t.state.name, t.intermediate_values) for t in study.trials}
    assert fast.state == TrialState.COMPLETE and fast.params["learning_rate"] == 1e-1, values
    # The final evaluation, at step 8 (= max_steps), is not run a second time.
    curve = read_loss_curve(StudyLayout(out).trial(fast.user_attrs["slot"]).loss_curve, "eval_loss")
    assert [row["step"] for row in curve] == [2, 4, 6, 8]
    assert fast.value == fast.intermediate_values[8]
    for trial in (slower, slow, slow_too):  # each trails the first at step 2 (rung 0 keeps 1 of 2, 3)
        assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [2], values
        assert trial.value == trial.intermediate_values[2]
        assert (StudyLayout(out).trial(trial.user_attrs["slot"]).dir / "checkpoint-2").is_dir(), \
            "a pruned trial keeps the checkpoint of where it stopped"
    # The fifth slot: at step 2, 4 values were reported, and the slower learner's is among the best
    # 2 (the fast one's and its own), so that slot carries it on from its checkpoint-2.
    assert resumed.user_attrs["promoted_from"] == slower.number, values
    assert resumed.params == slower.params and resumed.user_attrs.get("enqueued") is None
    paused_at = StudyLayout(out).trial(slower.user_attrs["slot"]).dir / "checkpoint-2"
    assert resumed.user_attrs["resumed_from"] == str(paused_at)
    assert min(resumed.intermediate_values) == 4  # it continues at step 3: no step is trained twice
    last = max(resumed.intermediate_values)
    assert resumed.user_attrs["metrics"]["trained_steps"] == last - 2
    own = StudyLayout(out).trial(resumed.user_attrs["slot"])
    rows = read_loss_curve(own.loss_curve, "loss")
    assert rows[0]["step"] == 3 and rows[-1]["step"] == last
    assert own.last_checkpoint().endswith(f"checkpoint-{last}")
    table = pd.read_csv(StudyLayout(out).results_csv)
    assert table.set_index("number").loc[resumed.number, "promoted_from"] == slower.number
    assert "5 trial(s): " in run.stdout and "(1 resumed a paused trial from its checkpoint)" in run.stdout
    assert "PRUNED" in set(table["state"])
    again = run_snakemake(workdir)
    assert "Nothing to be done" in again.stdout + again.stderr  # pruned trials are not re-run
    assert_study_kept_in(storage, out)
    assert_password_kept(storage, workdir, run, again)
    if storage:
        return
    # The replay bench (bench/replay.py) makes the same prune decisions and the same promotion,
    # following this journal's operations; replayed without the pruner, it disagrees (the check bites).
    sys.path.insert(0, str(REPO / "bench"))
    import replay

    assert replay.validate(out) == []
    assert replay.validate(out, {"pruner": "none", "pruner_kwargs": {}, "resume_pruned": False})


def test_enqueued_trials_come_first_with_exact_values(workdir):
    tune = resolved(workdir, n_trials=3, enqueue_trials=[{"learning_rate": 0.0123}, {"learning_rate": 0.05}])
    trials = run_slots(tune, 3)
    assert [t.params["learning_rate"] for t in trials[:2]] == [0.0123, 0.05]
    assert [t.user_attrs.get("enqueued") for t in trials] == [True, True, None]


def test_enqueued_trials_go_to_the_first_slots_to_start_whichever_they_are(workdir):
    tune = resolved(workdir, n_trials=3, enqueue_trials=[{"learning_rate": 0.0123}, {"learning_rate": 0.05}])
    trials = run_slots(tune, 3, order=[2, 0, 1])  # Snakemake's order is its own
    assert [(t.user_attrs["slot"], t.params["learning_rate"]) for t in trials][:2] == [(2, 0.0123), (0, 0.05)]
    assert [t.user_attrs.get("enqueued") for t in trials] == [True, True, None]


def test_a_retry_keeps_its_enqueued_configuration_even_if_the_claim_was_cut_short(workdir):
    tune = resolved(workdir, n_trials=2, enqueue_trials=[{"learning_rate": 0.0123}])
    tuning = tune.tuning
    study = open_study(tuning, 1)
    # A first attempt killed between its creation and taking its enqueued configuration.
    scheduler.create_trial(study, {}, tuning.space, {"slot": 1, "attempt": 1})
    trial, _ = claim_trial(open_study(tuning, 1), 1, tuning)
    assert trial.params["learning_rate"] == 0.0123 and trial.user_attrs["enqueued"] is True
    assert trial.user_attrs["retry_of"] == 0


def test_conditional_parameter_appears_only_where_its_condition_holds(workdir):
    config = tiny_config(n_trials=12, tuner_sampler="RandomSampler")
    config["tuning"]["tunable_training_params"] = {
        "optimizer": {"type": "categorical", "choices": ["adamw_torch", "sgd"]},
        "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
        "adam_beta2": {"type": "uniform", "low": 0.9, "high": 0.999, "condition": {"optimizer": ["adamw_torch"]}},
    }
    config["tuning"]["tunable_peft_params"] = {
        "lora_r": {"type": "categorical", "choices": [2, 4]},
        "lora_alpha": {"type": "categorical", "choices": [1, 2], "scale_by": "lora_r"},
    }
    tune = load_tune_config(config, workdir)
    trials = run_slots(tune, 12)
    for trial in trials:
        assert ("adam_beta2" in trial.params) == (trial.params["optimizer"] == "adamw_torch")
    assert {t.params["optimizer"] for t in trials} == {"adamw_torch", "sgd"}
    training, peft = search_space.split_by_group(tune.tuning.space, trials[0].params)
    assert peft["lora_alpha"] == trials[0].params["lora_alpha"] * trials[0].params["lora_r"]


def test_time_budget_skips_slots_not_started(workdir):
    tune = resolved(workdir, n_trials=3, timeout_minutes=0.001)
    tuning = tune.tuning
    run_slots(tune, 1)
    time.sleep(0.2)
    with pytest.raises(SlotSkipped, match="time budget") as skipped:
        claim_trial(open_study(tuning, 1), 1, tuning)
    skip_slot(open_study(tuning), 1, str(skipped.value))
    table = results_table(open_study(tuning), tuning.metrics, tuning.layout)
    assert list(table["state"]) == ["COMPLETE", "SKIPPED"]
    assert "time budget" in table["fail_reason"].iloc[1]


def _claim(tuning, slot):
    study = open_study(tuning, slot)
    trial, _ = claim_trial(study, slot, tuning)
    search_space.suggest(trial, tuning.space)
    return study, trial


def test_compute_budget_counts_every_process_and_skips_the_slots_past_it(workdir):
    """tuning.budget in trained steps: a finished trial counts what it trained, a running one
    (another process) the max_steps it was started for, a failed one its loss curve."""
    tuning = resolved(workdir, n_trials=5, budget={"trained_steps": 7}).tuning
    study, trial = _claim(tuning, 0)
    trial.set_user_attr("metrics", {"trained_steps": 3, "eval_loss": 1.0})
    study.tell(trial, 1.0)
    _claim(tuning, 1)  # running elsewhere: its 3 planned steps are committed
    assert spent_compute(open_study(tuning), tuning, "trained_steps") == 6
    study, trial = _claim(tuning, 2)  # 6 < 7: it starts; it fails after one logged step
    files = tuning.layout.trial(2)
    files.logs.mkdir(parents=True, exist_ok=True)
    files.loss_curve.write_text('{"step": 1, "loss": 2.0, "num_tokens": 40}\n')
    study.tell(trial, state=TrialState.FAIL)
    assert spent_compute(open_study(tuning), tuning, "trained_steps") == 7
    with pytest.raises(SlotSkipped, match=r"compute budget \(trained_steps=7\) was spent \(7\)") as skipped:
        claim_trial(open_study(tuning, 3), 3, tuning)
    skip_slot(open_study(tuning), 3, str(skipped.value))
    table = results_table(open_study(tuning), tuning.metrics, tuning.layout)
    assert list(table["state"]) == ["COMPLETE", "RUNNING", "FAIL", "SKIPPED"]


def test_a_budget_check_and_the_trial_it_starts_are_one_step_across_processes(workdir):
    """Two jobs starting at once must not both see the last compute left: claim_trial waits for
    the study's claim lock (held here as another job would) before it checks the budget."""
    import fcntl
    import threading

    tuning = resolved(workdir, n_trials=2, budget={"trained_steps": 3}).tuning
    open_study(tuning)
    claimed = []
    with open(tuning.layout.claim_lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        job = threading.Thread(target=lambda: claimed.append(claim_trial(open_study(tuning, 0), 0, tuning)))
        job.start()
        job.join(1.0)
        assert job.is_alive() and not claimed  # waiting for the lock
    job.join(10)
    assert claimed and claimed[0][0] is not None
    with pytest.raises(SlotSkipped):  # slot 0's 3 planned steps spend the budget
        claim_trial(open_study(tuning, 1), 1, tuning)


@pytest.mark.workflow
def test_skipped_slots_across_parallel_jobs_and_a_raised_budget_runs_only_them_covering_a_grid_once(workdir, storage):
    """tuning.budget over trial jobs side by side: 3-step trials and 6 steps, so the two trials that
    start together train whichever slots they are (each sees the other's committed steps), and the
    other slots finish SKIPPED. Raising the budget runs skipped slots (no trial that ran); the same
    budget again runs nothing. The trials sample a 2 x 2 grid (GridSampler, n_trials its size): once
    the budget pays for every slot, the real run has covered its grid exactly once."""
    config = tiny_config(tuner_sampler="GridSampler", budget={"trained_steps": 6})
    del config["tuning"]["n_trials"]  # defaults to the grid's size
    config["tuning"]["tunable_training_params"] = {
        "learning_rate": {"type": "categorical", "choices": [1e-3, 1e-2]},
        "warmup_steps": {"type": "int", "low": 0, "high": 1},
    }
    config["tuning"]["storage"] = storage  # on the journal (None), and on PostgreSQL
    write_config(workdir, config)
    first = run_snakemake(workdir, "--resources", "gpu=2")
    out = workdir / "tuning_output"
    study = load_study(out)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert sum(t.user_attrs["metrics"]["trained_steps"] for t in study.trials) == 6
    skipped = sorted(studies.skipped_slots(study))
    assert len(skipped) == 2
    assert list(pd.read_csv(StudyLayout(out).results_csv)["state"]).count("SKIPPED") == 2
    ran = {t.user_attrs["slot"]: t.datetime_complete for t in study.trials}

    config["tuning"]["budget"] = {"trained_steps": 9}
    write_config(workdir, config)
    run_snakemake(workdir, "--resources", "gpu=2")
    study = load_study(out)
    assert len(study.trials) == 3 and study.trials[2].user_attrs["slot"] in skipped
    assert {t.user_attrs["slot"]: t.datetime_complete for t in study.trials[:2]} == ran
    assert len(studies.skipped_slots(study)) == 1
    assert list(pd.read_csv(StudyLayout(out).results_csv)["state"]).count("SKIPPED") == 1
    again = run_snakemake(workdir, "--resources", "gpu=2")
    assert "Nothing to be done" in again.stdout + again.stderr

    # The grid (was test_grid_covers_its_grid_exactly_once_in_a_real_run): the last slot runs.
    config["tuning"]["budget"] = {"trained_steps": 12}
    write_config(workdir, config)
    last = run_snakemake(workdir, "--resources", "gpu=2")
    trials = load_study(out).trials
    points = sorted((t.params["learning_rate"], t.params["warmup_steps"]) for t in trials)
    assert points == [(1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1)]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert_study_kept_in(storage, out)
    assert_password_kept(storage, workdir, first, again, last)


def test_compute_budget_counts_each_attempt_of_a_resumed_slot_once(workdir):
    """A slot's attempts share its loss curve: a killed attempt counts the steps it logged, and the
    attempt that resumed from its checkpoint only the steps after it (not the whole run again)."""
    config = tiny_config(n_trials=2, budget={"trained_steps": 100})
    config["tuning"]["fixed_training_params"]["max_steps"] = 40
    tuning = load_tune_config(config, workdir).tuning
    study, first = _claim(tuning, 0)
    files = tuning.layout.trial(0)
    files.logs.mkdir(parents=True, exist_ok=True)
    now = time.time()
    rows = [{"step": s, "loss": 1.0, "time": now} for s in range(1, 13)]  # killed after step 12
    study.tell(first, state=TrialState.FAIL)
    rows += [{"step": s, "loss": 0.5, "time": now + 60} for s in range(11, 41)]  # from checkpoint-10
    files.loss_curve.write_text("".join(json.dumps(r) + "\n" for r in rows))
    study, retry = _claim(tuning, 0)
    retry.set_user_attr("resumed_from", str(files.dir / "checkpoint-10"))
    assert spent_compute(open_study(tuning), tuning, "trained_steps") == 12 + 30  # running: 40 - 10
    retry.set_user_attr("metrics", {"trained_steps": 30})
    study.tell(retry, 1.0)
    assert spent_compute(open_study(tuning), tuning, "trained_steps") == 12 + 30


def test_compute_budget_in_tokens_and_device_hours(workdir):
    tuning = resolved(workdir, n_trials=3, budget={"trained_tokens": 500}).tuning
    study, trial = _claim(tuning, 0)
    trial.set_user_attr("metrics", {"trained_steps": 3, "trained_tokens": 500})
    trial.set_user_attr("wall_seconds", 1800.0)
    study.tell(trial, 1.0)
    assert spent_compute(open_study(tuning), tuning, "trained_tokens") == 500
    assert spent_compute(open_study(tuning), tuning, "gpu_hours") == pytest.approx(0.5)
    with pytest.raises(SlotSkipped, match="trained_tokens=500"):
        claim_trial(open_study(tuning, 1), 1, tuning)


@pytest.mark.parametrize("budget, fragment", [
    ({"trained_steps": 0}, "tuning.budget.trained_steps"),
    ({"trained_steps": 10, "gpu_hours": 1}, "tuning.budget"),
    ({"steps": 10}, "tuning.budget"),
    ({"trained_steps": 2.5}, "tuning.budget.trained_steps"),
])
def test_a_budget_is_one_positive_amount_in_a_known_unit(workdir, budget, fragment):
    found = problems(workdir, tiny_config(budget=budget))
    assert any(problem.startswith(fragment) for problem in found), found


@pytest.mark.parametrize("tuning, slots, said", [
    # Unpruned 40-step trials: 960 steps pay for 24 of them.
    ({"budget": {"trained_steps": 960}}, 24, "pays for at most 24 trials of 40 steps each"),
    # Paused at the first rung (step 20 of 40) or resumed there at the least: 48 slots, the budget decides.
    ({"budget": {"trained_steps": 960}, "pruner": "successive_halving"}, 48,
     "pays for at most 48 trials of 20 steps or more"),
    # Rungs at steps 10 and 20 (η 2): a trial resumed at step 20 trains 20, one stopped at 10 trains 10.
    ({"budget": {"trained_steps": 960}, "pruner": "successive_halving",
      "pruner_kwargs": {"min_resource": 10}}, 96, "pays for at most 96 trials of 10 steps or more"),
    # Rungs at steps 15 and 30 with reports every 5: stopped at 15, or resumed at 30 with 10 to go.
    ({"budget": {"trained_steps": 960}, "pruner": "successive_halving", "report_every_steps": 5,
      "pruner_kwargs": {"min_resource": 15}}, 96, "pays for at most 96 trials of 10 steps or more"),
    # min_early_stopping_rate 1 moves the rungs up one: step 20 (10 × 2), then 40, the end.
    ({"budget": {"trained_steps": 960}, "pruner": "successive_halving",
      "pruner_kwargs": {"min_resource": 10, "min_early_stopping_rate": 1}}, 48,
     "pays for at most 48 trials of 20 steps or more"),
    # Killed (percentile does not pause unless asked) at the first report, step 15, at the least.
    ({"budget": {"trained_steps": 100}, "pruner": "percentile", "report_every_steps": 15}, 7,
     "pays for at most 7 trials of 15 steps or more"),
    # Pausing too: a trial resumed after the report at step 30 trains 10 more.
    ({"budget": {"trained_steps": 100}, "pruner": "percentile", "report_every_steps": 15, "resume_pruned": True},
     10, "pays for at most 10 trials of 10 steps or more"),
    # n_trials written: a cap of the user's, whatever the budget.
    ({"budget": {"trained_steps": 960}, "n_trials": 5}, 5, None),
])
def test_a_budget_without_n_trials_gets_the_slots_it_pays_for(workdir, tuning, slots, said):
    """Not Oumi's default of 10 trials, which would leave most of a budget unspent unsaid."""
    config = tiny_config(**tuning)
    if "n_trials" not in tuning:
        del config["tuning"]["n_trials"]
    config["tuning"]["fixed_training_params"]["max_steps"] = 40
    tune = load_tune_config(config, workdir)
    assert tune.tuning.n_trials == slots
    notices = [n for n in tune.notices if n.startswith("tuning.n_trials: not given")]
    assert [said in n for n in notices] == ([True] if said else []), tune.notices


@pytest.mark.parametrize("budget, max_steps, fragment", [
    ({"trained_tokens": 500000}, 40, "how many trials a budget in trained_tokens pays for is known only as they run"),
    ({"gpu_hours": 2}, 40, "how many trials a budget in gpu_hours pays for"),
    ({"trained_steps": 960}, None, "the trials' length is not a fixed tuning.fixed_training_params.max_steps"),
    ({"trained_steps": 10 ** 6}, 40, "pays for up to 25000 trials of 40 steps each, more than the 1000 slots"),
])
def test_a_budget_whose_trials_cannot_be_counted_asks_for_n_trials(workdir, budget, max_steps, fragment):
    config = tiny_config(budget=budget)
    del config["tuning"]["n_trials"]
    del config["tuning"]["fixed_training_params"]["max_steps"]
    if max_steps:
        config["tuning"]["fixed_training_params"]["max_steps"] = max_steps
    else:  # a tuned length: how many trials the budget pays for depends on the sampler
        config["tuning"]["tunable_training_params"]["max_steps"] = {"type": "int", "low": 20, "high": 40}
    found = problems(workdir, config)
    assert any(p.startswith("tuning.n_trials: not given") and fragment in p and "set tuning.n_trials" in p
               for p in found), found


@pytest.mark.parametrize("change, path, fragment", [
    ({"tuner_sampler": "TPESampler", "sampler_kwargs": {"n_startup_trial": 3}},
     "tuning.sampler_kwargs.n_startup_trial", "did you mean 'n_startup_trials'"),
    ({"sampler_kwargs": {"seed": 3}}, "tuning.sampler_kwargs.seed", "tuning.seed"),
    ({"tuner_sampler": "NSGAIISampler", "sampler_kwargs": {"population_size": 1}}, "tuning.sampler_kwargs", "refused"),
    ({"pruner": "median", "report_every_steps": 2, "pruner_kwargs": {"n_warmup": 2}},
     "tuning.pruner_kwargs.n_warmup", "did you mean 'n_warmup_steps'"),
    ({"pruner": "percentile", "report_every_steps": 2, "pruner_kwargs": {"percentile": 150}},
     "tuning.pruner_kwargs", "refused"),
    ({"pruner": "median", "fixed_training_params": {"num_train_epochs": 1}},  # no fixed step count
     "tuning.report_every_steps", "intermediate values"),
    ({"pruner": "median", "report_every_steps": 2, "evaluation_metrics": ["eval_loss", "eval_mean_token_accuracy"],
      "evaluation_direction": ["minimize", "maximize"]}, "tuning.pruner", "multi-objective"),
    ({"pruner": "hyperbandd"}, "tuning.pruner", "hyperband"),
    ({"tuner_sampler": "GridSampler"}, "tuning.tuner_sampler", "learning_rate is continuous"),
    ({"enqueue_trials": [{"learning_rate": 5.0}]}, "tuning.enqueue_trials[0].learning_rate", "outside"),
    ({"enqueue_trials": [{"learning_rat": 0.01}]}, "tuning.enqueue_trials[0].learning_rat", "learning_rate"),
    ({"n_trials": 1, "enqueue_trials": [{"learning_rate": 0.01}, {"learning_rate": 0.02}]},
     "tuning.enqueue_trials", "2 configurations for 1 trials"),
    ({"resume_pruned": True}, "tuning.resume_pruned", "tuning.pruner is none"),
    ({"resume_pruned": 1, "pruner": "median", "report_every_steps": 1}, "tuning.resume_pruned", "minimum"),
    ({"resume_pruned": "yes", "pruner": "median", "report_every_steps": 1}, "tuning.resume_pruned", "not of type"),
])
def test_bad_search_settings_fail_at_parse_time_naming_the_field(workdir, change, path, fragment):
    found = problems(workdir, tiny_config(**change))
    assert any(p.startswith(path + ":") and fragment in p for p in found), found


def test_a_pruner_without_report_every_steps_is_asked_every_quarter_of_max_steps(workdir):
    config = tiny_config(pruner="percentile")
    config["tuning"]["fixed_training_params"]["max_steps"] = 40
    tune = load_tune_config(config, workdir)
    assert tune.tuning.report_every_steps == 10
    assert any(n.startswith("tuning.report_every_steps: not given") for n in tune.notices)
    # PercentilePruner's measured defaults fill what pruner_kwargs leave out.
    assert strategy.pruner_arguments("percentile", {"n_startup_trials": 1}) == {"percentile": 75.0,
                                                                               "n_startup_trials": 1}


@pytest.mark.parametrize("settings, eta, notice", [
    ({"pruner": "successive_halving"}, 2, True),  # ASHA's promotions, on unless turned off; η 2 (measured)
    ({"pruner": "successive_halving", "pruner_kwargs": {"reduction_factor": 3}}, 3, True),
    ({"pruner": "successive_halving", "resume_pruned": False}, None, False),
    ({"pruner": "hyperband", "resume_pruned": True}, 3, False),  # HyperbandPruner's own η
    ({"pruner": "percentile", "resume_pruned": True}, 4, False),
    ({"pruner": "median", "resume_pruned": 2}, 2, False),
    ({"pruner": "median"}, None, False),  # other pruners stop trials for good unless asked
])
def test_resume_pruned_takes_its_eta_from_the_pruner_or_the_value(workdir, settings, eta, notice):
    tune = load_tune_config(tiny_config(report_every_steps=1, **settings), workdir)
    assert tune.tuning.resume_pruned == eta
    assert any(n.startswith("tuning.resume_pruned: not given") for n in tune.notices) == notice


def test_resume_pruned_with_a_grid_is_refused_and_off_by_default(workdir):
    config = tiny_config(n_trials=2, tuner_sampler="GridSampler", pruner="successive_halving", report_every_steps=1)
    config["tuning"]["tunable_training_params"] = {"learning_rate": {"type": "categorical", "choices": [1e-3, 1e-2]}}
    assert load_tune_config(config, workdir).tuning.resume_pruned is None
    config["tuning"]["resume_pruned"] = True
    assert any(p.startswith("tuning.resume_pruned:") and "GridSampler" in p for p in problems(workdir, config))


def paused_study(curves: dict[int, dict[int, float]], direction: str = "minimize", **attrs) -> optuna.Study:
    """An in-memory study of trials with these intermediate values, told PRUNED (4 reports or more:
    COMPLETE); `attrs[number]` are user attributes of trial `number`."""
    study = optuna.create_study(direction=direction)
    for number, curve in curves.items():
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE if len(curve) >= 4 else TrialState.PRUNED,
            value=curve[max(curve)], intermediate_values=curve, user_attrs=attrs.get(f"t{number}", {})))
    return study


def test_promotions_resume_a_paused_trial_among_the_best_1_over_eta_at_its_step():
    curves = {0: {2: 5.0, 4: 4.0, 6: 3.0, 8: 2.0}, 1: {2: 6.0}, 2: {2: 9.0}, 3: {2: 8.0}}
    due = strategy.promotions(paused_study(curves).trials, 2)
    # At step 2 the best half of [5, 6, 9, 8] is 5 and 6: trial 1 is due, trials 2 and 3 are not.
    assert [t.number for t in due] == [1]
    assert strategy.promotions(paused_study(curves).trials, 4) == []  # the best quarter: only trial 0
    # Maximised, the order turns over: 9 and 8 are the best half.
    assert [t.number for t in strategy.promotions(paused_study(curves, "maximize").trials, 2, "maximize")] == [2, 3]


def test_promotions_take_later_steps_first_and_skip_resumed_or_diverged_trials():
    bad = {2: 9.0, 4: 9.0, 6: 9.0, 8: 9.0}
    curves = {0: {2: 5.0, 4: 4.0, 6: 3.0, 8: 2.0}, 1: {2: 4.1}, 2: {2: 4.0, 4: 3.5}, 3: {2: 4.15},
              4: bad, 5: {k: v + 0.5 for k, v in bad.items()}}
    # Trial 2 stopped at step 4, among the best half of [4.0, 3.5, 9.0, 9.5]: before those of step 2,
    # where the best half of [5.0, 4.1, 4.0, 4.15, 9.0, 9.5] holds trials 1 and 3, best first.
    assert [t.number for t in strategy.promotions(paused_study(curves).trials, 2)] == [2, 1, 3]
    # Trial 2 resumed already (trial 6 names it), trial 1 diverged (told PRUNED by on_divergence).
    study = paused_study({**curves, 6: {4: 3.0, 6: 2.9, 8: 2.8, 10: 2.7}},
                         t1={"fail_reason": "diverged: loss is nan at step 2"}, t6={"promoted_from": 2})
    assert [t.number for t in strategy.promotions(study.trials, 2)] == [3]


def test_a_slot_resumes_the_due_paused_trial_whose_checkpoint_is_there_and_its_retry_does_too(workdir):
    tune = resolved(workdir, n_trials=6, pruner="successive_halving", report_every_steps=2,
                    pruner_kwargs={"min_resource": 2, "reduction_factor": 2})
    tuning = tune.tuning
    study = open_study(tuning, 0)
    for slot, (state, curve) in enumerate([(TrialState.COMPLETE, {2: 1.0, 4: 0.5}),
                                           (TrialState.PRUNED, {2: 2.0}), (TrialState.PRUNED, {2: 3.0}),
                                           (TrialState.PRUNED, {2: 4.0})]):
        trial, _ = claim_trial(open_study(tuning, slot), slot, tuning)
        for step, value in curve.items():
            trial.report(value, step)
            assert trial.should_prune() == (state == TrialState.PRUNED)  # as train.ReportAndPrune asks
        study.tell(trial, curve[max(curve)] if state == TrialState.COMPLETE else None, state=state)
    for slot in (2, 3):  # their checkpoints were saved where they stopped; slot 1's is gone
        (tuning.layout.trial(slot).dir / "checkpoint-2").mkdir(parents=True)
        (tuning.layout.trial(slot).dir / "checkpoint-2" / "trainer_state.json").write_text("{}")
    # At step 2 the best half of [1, 2, 3, 4] holds trials 0 and 1; trial 1 cannot resume, so no
    # paused trial is due: slot 4 asks the sampler.
    trial, _ = claim_trial(open_study(tuning, 4), 4, tuning)
    assert "promoted_from" not in trial.user_attrs
    study.tell(trial, state=TrialState.PRUNED)  # no report: never due
    # With the checkpoint of slot 1 there, slot 5 resumes trial 1 with its parameters.
    (tuning.layout.trial(1).dir / "checkpoint-2").mkdir(parents=True)
    (tuning.layout.trial(1).dir / "checkpoint-2" / "trainer_state.json").write_text("{}")
    trial, _ = claim_trial(open_study(tuning, 5), 5, tuning)
    assert trial.user_attrs["promoted_from"] == 1 and trial.user_attrs["paused_checkpoint"] == "trial_1/checkpoint-2"
    assert trial.params == study.trials[1].params
    # It counts for the budget from its checkpoint's step: the 1 step left of max_steps 3, not 3.
    assert spent_compute(study, tuning, "trained_steps") == 1
    # It carries trial 1's rung record (its step-2 value, 2.0), so successive halving judges its
    # step-4 value at the next rung (against trial 0's 0.5 there) and leaves rung 0 as it was.
    assert study.trials[trial.number].system_attrs == {"completed_rung_0": 2.0}
    trial.report(0.8, 4)
    assert trial.should_prune()
    assert study.trials[trial.number].system_attrs == {"completed_rung_0": 2.0, "completed_rung_1": 0.8}
    # Killed: the next run re-runs slot 5 as the same resumed trial.
    retry, _ = claim_trial(open_study(tuning, 5), 5, tuning)
    assert retry.user_attrs["promoted_from"] == 1 and retry.user_attrs["retry_of"] == trial.number
    assert retry.params == trial.params


def test_enqueued_configurations_run_before_any_paused_trial_is_resumed(workdir):
    rates = [0.01, 0.02, 0.03, 0.04, 0.05]
    tune = resolved(workdir, n_trials=6, pruner="successive_halving", report_every_steps=2,
                    pruner_kwargs={"min_resource": 2, "reduction_factor": 2},
                    enqueue_trials=[{"learning_rate": rate} for rate in rates])
    tuning = tune.tuning
    study = open_study(tuning, 0)
    for slot, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        trial, _ = claim_trial(open_study(tuning, slot), slot, tuning)
        trial.report(value, 2)
        study.tell(trial, value if slot == 0 else None, state=TrialState.COMPLETE if slot == 0 else TrialState.PRUNED)
        (tuning.layout.trial(slot).dir / "checkpoint-2").mkdir(parents=True)
        (tuning.layout.trial(slot).dir / "checkpoint-2" / "trainer_state.json").write_text("{}")
    # Trial 1 is due (the best half at step 2), but the fifth configuration has not run yet.
    trial, _ = claim_trial(open_study(tuning, 4), 4, tuning)
    assert trial.params["learning_rate"] == 0.05 and "promoted_from" not in trial.user_attrs
    study.tell(trial, state=TrialState.PRUNED)
    trial, _ = claim_trial(open_study(tuning, 5), 5, tuning)
    assert trial.user_attrs["promoted_from"] == 1 and trial.params["learning_rate"] == 0.02
    # Its retry keeps trial 1's parameters: no enqueued configuration is left for it to take.
    retry, _ = claim_trial(open_study(tuning, 5), 5, tuning)
    assert retry.params["learning_rate"] == 0.02 and "enqueued" not in retry.user_attrs
    assert retry.user_attrs["promoted_from"] == 1


@pytest.mark.parametrize("kwargs, fragment", [
    ({"reduction_factor": 2.5}, "whole number"),
])
def test_pausing_needs_a_whole_reduction_factor(workdir, kwargs, fragment):
    found = problems(workdir, tiny_config(pruner="successive_halving", report_every_steps=1, pruner_kwargs=kwargs))
    assert any(p.startswith("tuning.pruner_kwargs.reduction_factor:") and fragment in p for p in found), found
    # Killing needs no η of snaketune's, but Optuna's pruner fails on it when asked (the preflight asks).
    found = problems(workdir, tiny_config(pruner="successive_halving", report_every_steps=1, pruner_kwargs=kwargs,
                                          resume_pruned=False))
    assert any(p.startswith("tuning.pruner_kwargs: the successive_halving pruner fails") for p in found), found


def test_cmaes_with_categorical_samples_it_at_random_said_in_a_notice(workdir):
    config = tiny_config(tuner_sampler="CmaEsSampler")
    config["tuning"]["tunable_training_params"]["optimizer"] = {"type": "categorical", "choices": ["sgd", "adamw_torch"]}
    notices = load_tune_config(config, workdir).notices
    assert any(n.startswith("tuning.tunable_training_params.optimizer: CmaEsSampler warns") for n in notices), notices


def test_bad_condition_names_the_field(workdir):
    config = tiny_config()
    config["tuning"]["tunable_training_params"]["weight_decay"] = {
        "type": "uniform", "low": 0, "high": 0.1, "condition": {"optimizer": ["sgd"]}}
    found = problems(workdir, config)
    assert any(p.startswith("tuning.tunable_training_params.weight_decay.condition:") for p in found), found


def test_readme_conditional_example_is_valid(workdir):
    text = manual_text()
    block = text.split("<!-- conditional-example -->")[1].split("```yaml")[1].split("```")[0]
    config = tiny_config()
    config["tuning"].update(yaml.safe_load(block)["tuning"])
    load_tune_config(config, workdir)


def readme_example_tuning(marker: str, workdir):
    """The resolved tuning of the manual's YAML example after `<!-- marker -->`, on the tiny
    study with the default study's 40 steps."""
    text = manual_text()
    block = text.split(f"<!-- {marker} -->")[1].split("```yaml")[1].split("```")[0]
    config = tiny_config()
    config["tuning"].update(yaml.safe_load(textwrap.dedent(block))["tuning"])
    config["tuning"]["fixed_training_params"]["max_steps"] = 40  # the default study's
    return load_tune_config(config, workdir).tuning


def test_readme_pause_example_pauses_on_the_default_studys_steps(workdir):
    tuning = readme_example_tuning("pause-example", workdir)
    assert (tuning.report_every_steps, tuning.resume_pruned, tuning.budget.as_dict()) == (10, 2, {"trained_steps": 960})
    assert tuning.budget.amount == 24 * 40


def test_readme_earlier_rung_example_pauses_with_its_first_rung_at_step_10(workdir):
    from snaketune.strategy import make_pruner, reduction_factor

    tuning = readme_example_tuning("earlier-rung-example", workdir)
    pruner = make_pruner(tuning)
    assert (pruner._min_resource, pruner._reduction_factor) == (10, 4)
    assert reduction_factor(tuning.pruner, tuning.pruner_kwargs, tuning.resume_pruned) == 4  # pausing, eta 4


def test_enqueued_value_must_satisfy_its_condition_and_grid_refuses_enqueue(workdir):
    config = tiny_config()
    config["tuning"]["tunable_training_params"] = {
        "optimizer": {"type": "categorical", "choices": ["adamw_torch", "sgd"]},
        "adam_beta2": {"type": "uniform", "low": 0.9, "high": 0.999, "condition": {"optimizer": ["adamw_torch"]}},
    }
    config["tuning"]["enqueue_trials"] = [{"optimizer": "sgd", "adam_beta2": 0.95}]
    found = problems(workdir, config)
    assert any(p.startswith("tuning.enqueue_trials[0].adam_beta2:") and "optimizer=" in p for p in found), found
    config["tuning"]["tuner_sampler"] = "GridSampler"
    config["tuning"]["tunable_training_params"] = {"optimizer": {"type": "categorical", "choices": ["sgd"]}}
    config["tuning"]["enqueue_trials"] = [{"optimizer": "sgd"}]
    found = problems(workdir, config)
    assert any(p.startswith("tuning.enqueue_trials:") and "GridSampler" in p for p in found), found


def test_a_diverged_trial_is_finished_for_its_slot(workdir):
    tuning = resolved(workdir, n_trials=1).tuning
    study = open_study(tuning)
    trial, _ = claim_trial(study, 0, tuning)
    search_space.suggest(trial, tuning.space)
    trial.set_user_attr("fail_reason", "diverged: loss is nan at step 3")
    study.tell(trial, state=TrialState.FAIL)
    again, finished = claim_trial(open_study(tuning), 0, tuning)
    assert again is None and finished.number == trial.number  # not retrained


def test_a_job_killed_as_it_claims_leaves_no_orphan_trial(workdir, monkeypatch):
    """The slot is written with the trial, not after it: a kill in between cannot lose the slot."""
    import optuna

    tuning = resolved(workdir, n_trials=1).tuning

    def killed(*args, **kwargs):  # the job dies at its first write after creating the trial
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(optuna.trial.Trial, "set_user_attr", killed)
        first, _ = claim_trial(open_study(tuning), 0, tuning)
        params = search_space.suggest(first, tuning.space)
    again, finished = claim_trial(open_study(tuning), 0, tuning)
    assert finished is None
    assert again.user_attrs == {"slot": 0, "attempt": 2, "retry_of": first.number}
    assert search_space.suggest(again, tuning.space) == params  # the same parameters, re-run
    states = {t.number: t.state for t in open_study(tuning).trials}
    assert states == {first.number: TrialState.FAIL, again.number: TrialState.RUNNING}


# -- a stepped range runs no further than Optuna samples (issue 14, D) ------------------------------

@pytest.mark.parametrize("name, spec, grid, high", [
    # the input: the grid reached 2.5 while the journal stored FloatDistribution(high=2.0)
    ("max_grad_norm", {"type": "uniform", "low": 0.5, "high": 2.25, "step": 0.5}, [0.5, 1.0, 1.5, 2.0], 2.0),
    ("weight_decay", {"type": "float", "low": 0.0, "high": 0.25, "step": 0.1}, [0.0, 0.1, 0.2], 0.2),
    ("gradient_accumulation_steps", {"type": "int", "low": 1, "high": 8, "step": 2}, [1, 3, 5, 7], 7),
])
def test_a_stepped_range_is_truncated_as_optuna_samples_it(workdir, name, spec, grid, high):
    config = tiny_config(tuner_sampler="GridSampler")
    del config["tuning"]["n_trials"]  # the grid's size
    config["tuning"]["tunable_training_params"] = {name: spec}
    tune = load_tune_config(config, workdir)
    param, = tune.tuning.space
    assert param.high == high == param.distribution.high
    assert strategy.grid(tune.tuning.space) == {name: grid} and tune.tuning.n_trials == len(grid)
    assert tune.notices == [f"tuning.tunable_training_params.{name}: high {spec['high']} is not low + a multiple "
                            f"of step {spec['step']}; Optuna samples up to {high}, which is the high used"]
    config["tuning"]["tuner_sampler"] = "RandomSampler"
    config["tuning"]["n_trials"] = 2
    config["tuning"]["enqueue_trials"] = [{name: spec["high"]}]  # beyond what is sampled
    assert any(p.startswith(f"tuning.enqueue_trials[0].{name}:") for p in problems(workdir, config))


def test_a_range_that_steps_exactly_to_high_is_kept_without_a_notice(workdir):
    config = tiny_config()
    config["tuning"]["tunable_training_params"] = {
        "max_grad_norm": {"type": "uniform", "low": 0.5, "high": 2.0, "step": 0.5}}
    tune = load_tune_config(config, workdir)
    assert tune.tuning.space[0].high == 2.0 and tune.notices == []


def test_successive_halving_alone_is_the_measured_asha2_r20_pause_arm(workdir):
    """`pruner: successive_halving` with nothing else on the default study's 40 steps runs what the
    replay across training seeds chose by the rule written before it ran (bench/RESULTS.md:
    bench/replay.py's asha2_r20_pause): a report every 10 steps, the first rung at step 20 (the
    first report at or after half of max_steps), η 2, pruned trials paused."""
    config = tiny_config(pruner="successive_halving")
    config["tuning"]["fixed_training_params"]["max_steps"] = 40
    tuning = load_tune_config(config, workdir).tuning
    pruner = strategy.make_pruner(tuning)
    assert (tuning.report_every_steps, tuning.resume_pruned) == (10, 2)
    assert (pruner._min_resource, pruner._reduction_factor) == (20, 2)  # noqa: SLF001: Optuna keeps no public copy
    sys.path.insert(0, str(REPO / "bench"))
    import replay

    arm = replay.ARMS["asha2_r20_pause"]
    assert arm["pruner_kwargs"] == {"min_resource": 20, "reduction_factor": 2}
    assert (arm["report_every_steps"], arm["resume_pruned"]) == (10, 2)


@pytest.mark.parametrize("pruner, kwargs, every, max_steps, pausing, least", [
    ("successive_halving", {}, 10, 40, True, 20),          # the one rung, step 20: stopped there or resumed there
    ("successive_halving", {}, 12, 50, True, 14),          # rung at 36: a resumed trial trains 14
    # Rungs off the report grid: 15, 30, 60 are judged at 20, 30, 60; paused at 20, resumed, paused at 30.
    ("successive_halving", {"min_resource": 15}, 10, 100, True, 10),
    ("successive_halving", {"min_resource": 10}, 7, 60, True, 7),   # judged at 14, 21, 42
    ("successive_halving", {"min_resource": 15}, 10, 100, False, 20),  # killed: the first judgement
    ("successive_halving", {"min_resource": "auto"}, 10, 40, True, 10),  # any report
    ("percentile", {"n_warmup_steps": 20}, 10, 40, False, 20),
    ("percentile", {}, 15, 40, True, 10),                  # resumed after step 30
    ("median", {}, 10, 40, False, 10),
    ("none", {}, 10, 40, True, 40),
    ("wilcoxon", {}, 10, 40, False, 40),
])
def test_least_steps_is_the_fewest_a_trial_can_train(pruner, kwargs, every, max_steps, pausing, least):
    assert strategy.least_steps(pruner, kwargs, every, max_steps, pausing) == least


@pytest.mark.parametrize("tuning, path", [
    ({"report_every_steps": 40}, "tuning.report_every_steps"),   # no report before the last step
    ({"report_every_steps": 50, "pruner": "percentile"}, "tuning.report_every_steps"),
    ({"pruner_kwargs": {"min_early_stopping_rate": 1}}, "tuning.pruner_kwargs"),  # rung 20 x 2 = 40: the end
    ({"pruner_kwargs": {"min_resource": 40}}, "tuning.pruner_kwargs"),
    ({"pruner": "percentile", "pruner_kwargs": {"n_warmup_steps": 40}}, "tuning.pruner_kwargs"),
])
def test_a_pruner_that_could_never_stop_a_trial_is_refused_by_path(workdir, tuning, path):
    config = tiny_config(**{"pruner": "successive_halving", **tuning})
    config["tuning"]["fixed_training_params"]["max_steps"] = 40
    found = problems(workdir, config)
    assert any(p.startswith(path + ":") and "never stops" in p for p in found), found


@pytest.mark.parametrize("tuning", [
    {"pruner_kwargs": {"min_resource": 10, "min_early_stopping_rate": 1}},  # rung 20
    {"report_every_steps": 30},  # first rung at step 30
    {"pruner": "percentile", "pruner_kwargs": {"n_warmup_steps": 30}},
])
def test_a_pruner_that_can_stop_a_trial_before_its_end_is_accepted(workdir, tuning):
    config = tiny_config(**{"pruner": "successive_halving", **tuning})
    config["tuning"]["fixed_training_params"]["max_steps"] = 40
    load_tune_config(config, workdir)  # no ConfigError


def test_successive_halvings_first_rung_follows_the_trials_max_steps(workdir):
    """max_steps 50, a report every 12: the first report from step 25 is 36 (2 x 12 would be 24)."""
    config = tiny_config(pruner="successive_halving", report_every_steps=12)
    config["tuning"]["fixed_training_params"]["max_steps"] = 50
    pruner = strategy.make_pruner(load_tune_config(config, workdir).tuning)
    assert (pruner._min_resource, pruner._reduction_factor) == (36, 2)  # noqa: SLF001: Optuna keeps no public copy


@pytest.mark.parametrize("every, max_steps, rung", [
    (10, 40, 20),   # the default study: half of 40
    (5, 40, 20),
    (15, 40, 30),   # the first report at or after step 20
    (7, 40, 21),
    (1, 9, 5),      # half of an odd max_steps rounds up to a report
    (10, -1, 20),   # epochs (max_steps -1): the second report
    (10, None, 20),
])
def test_successive_halvings_first_rung_is_the_first_report_from_half_the_trial(every, max_steps, rung):
    assert strategy.first_rung(every, max_steps) == rung
    assert strategy.pruner_arguments("successive_halving", {}, every, max_steps) == {
        "reduction_factor": 2, "min_resource": rung}
    # What the user writes wins.
    assert strategy.pruner_arguments("successive_halving", {"min_resource": 3, "reduction_factor": 4}, every,
                                     max_steps) == {"min_resource": 3, "reduction_factor": 4}


# -- tuning.stop_when_converged ---------------------------------------------------------------------


def completed_trials(values, learning_rates=None):
    """Completed trials of `values`, in that order, each at its learning rate (default: far apart)."""
    distribution = optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)
    rates = learning_rates or [1e-5 * 1.9 ** i for i in range(len(values))]
    study = optuna.create_study()
    for value, rate in zip(values, rates):
        study.add_trial(optuna.trial.create_trial(value=value, params={"learning_rate": rate},
                                                  distributions={"learning_rate": distribution}))
    return study.trials


def test_a_study_converges_once_patience_trials_in_a_row_improve_by_no_more_than_the_threshold():
    trials = completed_trials([0.50, 0.40, 0.399, 0.41, 0.45])
    assert strategy.convergence(trials, patience=3, min_improvement=0.01) == (
        "skipped: the study converged: none of the last 3 completed trials improved the best (0.399) by more "
        "than 0.01 (tuning.stop_when_converged)")
    assert strategy.convergence(trials, patience=4, min_improvement=0.01) is None
    assert strategy.convergence(trials, patience=3, min_improvement=0.0005) is None  # 0.399 counts then
    assert strategy.convergence(trials[:3], patience=3, min_improvement=0.01) is None  # not enough trials
    assert strategy.convergence(completed_trials([0.5, 0.6, 0.7, 0.8]), 3, 0.01, "maximize") is None


def test_the_noise_is_estimated_from_neighbouring_trials_and_without_neighbours_nothing_stops():
    # Pairs at the same learning rate (repeats) and 2% of the log range apart differ by noise alone.
    values = [0.30, 0.32, 0.50, 0.51, 0.40, 0.43, 0.35]
    rates = [1e-3, 1e-3, 1e-4, 1.1e-4, 1e-2, 1e-2, 3e-5]
    noise, pairs = strategy.objective_noise(completed_trials(values, rates))
    assert pairs == 3 and noise == pytest.approx(0.02 / 2 ** 0.5)
    assert strategy.objective_noise(completed_trials(values))[0] is None  # no neighbours: no estimate
    assert strategy.convergence(completed_trials(values), patience=2, min_improvement=None) is None
    said = strategy.convergence(completed_trials(values, rates), patience=2, min_improvement=None)
    assert said.endswith("the objective's noise estimated from 3 pairs of neighbouring trials)")


def test_an_infeasible_trial_is_never_an_improvement():
    study = optuna.create_study()
    distribution = optuna.distributions.FloatDistribution(0, 1)
    for i, (value, over) in enumerate([(0.5, -1.0), (0.1, 0.3), (0.495, -1.0)]):
        study.add_trial(optuna.trial.create_trial(value=value, params={"x": i / 10}, distributions={"x": distribution},
                                                  system_attrs={"constraints:memory": over}))
    assert strategy.convergence(study.trials, patience=2, min_improvement=0.01).startswith(
        "skipped: the study converged: none of the last 2 completed trials improved the best (0.495)")


def test_stop_when_converged_needs_one_objective(workdir):
    config = tiny_config(stop_when_converged={"patience": 3}, evaluation_metrics=["eval_loss", "train_runtime"])
    found = problems(workdir, config)
    assert any(p.startswith("tuning.stop_when_converged: a study of several objectives") for p in found), found


@pytest.mark.workflow
def test_a_converged_study_skips_the_slots_left_and_says_why(workdir):
    # No improvement can beat a threshold of 10: the study converges once 2 trials followed the first.
    config = tiny_config(n_trials=4, stop_when_converged={"patience": 2, "min_improvement": 10})
    write_config(workdir, config)
    result = run_snakemake(workdir, "--cores", "1")
    table = pd.read_csv(StudyLayout(workdir / "tuning_output").results_csv)
    assert sorted(table["state"]) == ["COMPLETE"] * 3 + ["SKIPPED"]
    reasons = set(table.loc[table["state"] == "SKIPPED", "fail_reason"])
    assert len(reasons) == 1 and reasons.pop().startswith(
        "skipped: the study converged: none of the last 2 completed trials improved the best")
    assert "3 completed, 0 pruned, 0 failed, 1 skipped" in " ".join((result.stdout + result.stderr).split())


# -- pruner: pareto (several objectives) -------------------------------------------------------------


def vector_study(directions, completed, trial_vector, step="10"):
    study = optuna.create_study(directions=directions)
    for vector in completed:
        study.add_trial(optuna.trial.create_trial(values=vector, user_attrs={strategy.INTERMEDIATE_VECTORS_ATTR: {step: vector}}))
    trial = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={strategy.INTERMEDIATE_VECTORS_ATTR: {step: trial_vector}})
    return study, trial


@pytest.mark.parametrize("directions, completed, mine, pruned", [
    (["minimize", "minimize"], [[1, 1], [2, 2], [0.5, 3]], [3, 3], True),   # dominated by 2 of 3
    (["minimize", "minimize"], [[1, 1], [2, 4], [0.5, 3]], [1.5, 2], False),  # by 1 of 3 only
    (["minimize", "maximize"], [[1, 5], [2, 4], [3, 3]], [2.5, 3.5], True),  # a maximized accuracy
    (["minimize", "maximize"], [[1, 5], [2, 4], [3, 3]], [0.5, 1.0], False),  # best loss: on the front
    (["minimize", "minimize"], [[1, 1], [2, 2]], [3, 3], False),  # 2 completed: under n_startup_trials
])
def test_the_pareto_pruner_stops_a_trial_most_completed_trials_dominate_at_its_step(directions, completed, mine, pruned):
    study, trial = vector_study(directions, completed, mine)
    assert strategy.ParetoPruner().prune(study, trial) is pruned
    assert strategy.ParetoPruner(n_warmup_steps=20).prune(study, trial) is False
    assert strategy.ParetoPruner().prune(*vector_study(directions, completed, mine, step="20")[:1],
                                         vector_study(directions, [], mine, step="30")[1]) is False  # no one at its step


@pytest.mark.parametrize("change, named", [
    ({"pruner": "median"}, "tuning.pruner: median judges one objective, and Optuna cannot prune a multi-objective study"),
    ({"pruner": "pareto", "evaluation_metrics": ["eval_loss", "my_score"],
      "custom_eval_metrics": [{"name": "my_score", "function": "json.dumps"}]},
     "tuning.evaluation_metrics: pruner: pareto compares every objective at each evaluation during training, and "
     "'my_score' is computed once, after training"),
    ({"pruner": "pareto", "resume_pruned": True}, "tuning.resume_pruned: a paused trial is resumed by its rank"),
    ({"pruner": "pareto", "pruner_kwargs": {"dominated_share": 2}}, "tuning.pruner_kwargs: ParetoPruner refused them"),
])
def test_a_multi_objective_pruner_that_could_not_judge_is_refused_by_its_path(workdir, change, named):
    config = tiny_config(evaluation_metrics=["eval_loss", "train_runtime"], evaluation_direction=["minimize"],
                         report_every_steps=1)
    config["tuning"].update(change)
    found = problems(workdir, config)
    assert any(p.startswith(named) for p in found), found


@pytest.mark.workflow
def test_a_two_objective_study_is_pruned_by_pareto_dominance(workdir):
    # eval_loss and the token accuracy, reported every 2 steps of 6: the learning rates too small to
    # learn anything in 6 steps are dominated by the two completed trials at their step.
    config = tiny_config(n_trials=5, evaluation_metrics=["eval_loss", "eval_mean_token_accuracy"],
                         evaluation_direction=["minimize", "maximize"],
                         pruner="pareto", report_every_steps=2, pruner_kwargs={"n_startup_trials": 2},
                         enqueue_trials=[{"learning_rate": 0.05}, {"learning_rate": 0.03}, {"learning_rate": 1e-4},
                                         {"learning_rate": 1.2e-4}, {"learning_rate": 1.1e-4}])
    config["tuning"]["fixed_training_params"]["max_steps"] = 6
    write_config(workdir, config)
    run_snakemake(workdir, "--cores", "1")
    study = load_study(workdir / "tuning_output")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.params, t.user_attrs.get(strategy.INTERMEDIATE_VECTORS_ATTR)) for t in study.trials]
    for trial in study.trials:
        vectors = trial.user_attrs[strategy.INTERMEDIATE_VECTORS_ATTR]
        assert all(len(v) == 2 for v in vectors.values())
        if trial.state == TrialState.PRUNED:
            assert trial.user_attrs["pruned_reason"].endswith("(Pareto-dominated)") and max(map(int, vectors)) < 6
    table = pd.read_csv(StudyLayout(workdir / "tuning_output").results_csv)
    assert sorted(table["state"].unique()) == ["COMPLETE", "PRUNED"]
    front = json.loads(StudyLayout(workdir / "tuning_output").best_record(2).read_text())["trials"]
    assert {t["number"] for t in front} <= {t.number for t in study.trials if t.state == TrialState.COMPLETE}


@pytest.mark.parametrize("marker", ["converged-example", "pareto-example"])
def test_the_manuals_converged_and_pareto_examples_are_accepted(workdir, marker):
    tuning = readme_example_tuning(marker, workdir)
    if marker == "converged-example":
        assert (tuning.stop_when_converged.patience, tuning.n_trials) == (12, 100)
    else:
        assert isinstance(strategy.make_pruner(tuning), strategy.ParetoPruner) and tuning.report_every_steps == 10
