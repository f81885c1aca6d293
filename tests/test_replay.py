"""bench/replay.py: the replay bench's study simulation on hand-made curves (issue 17).

Its agreement with a real pruned study's journal is checked in test_search.py, on the study that
test runs anyway.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import optuna
import pytest

from workflow_helpers import REPO, resolved_tuning, tiny_config, write_reverse_words

sys.path.insert(0, str(REPO / "bench"))
import replay  # noqa: E402
from snaketune.validate import load_tune_config  # noqa: E402

# Four learning rates; the fastest starter (1e-1) finishes worst, the slowest (1e-4) best.
CURVES = {
    1e-4: [3.0, 2.0, 1.0, 0.5],
    1e-3: [2.5, 1.8, 1.2, 0.8],
    1e-2: [2.0, 1.5, 1.3, 1.1],
    1e-1: [1.0, 1.4, 1.6, 2.0],
}


@pytest.fixture
def table(tmp_path):
    rows = [{"params": {"learning_rate": lr}, "final": curve[-1],
             "curve": {str(2 * (i + 1)): v for i, v in enumerate(curve)}} for lr, curve in CURVES.items()]
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"max_steps": 8, "report_every_steps": 2, "grid": {"learning_rate": list(CURVES)},
                                "default_space": {}, "points": 4, "grid_points": 4, "rows": rows}))
    return replay.Table(path)


def tuning(tmp_path, **settings):
    return resolved_tuning(tmp_path, tuner_sampler="GridSampler", n_trials=4, **settings,
                           tunable_training_params={"learning_rate": {"type": "categorical",
                                                                      "choices": list(CURVES)}})


def curve_table(tmp_path, curves: dict) -> replay.Table:
    """A table of {learning_rate: eval_loss at steps 2, 4, 6, 8}, one grid point each."""
    rows = [{"params": {"learning_rate": lr}, "final": c[-1], "curve": {str(2 * (i + 1)): v for i, v in enumerate(c)}}
            for lr, c in curves.items()]
    path = tmp_path / f"curves{len(curves)}.json"
    path.write_text(json.dumps({"max_steps": 8, "grid": {"learning_rate": list(curves)}, "default_space": {},
                                "points": len(curves), "grid_points": len(curves), "rows": rows}))
    return replay.Table(path)


def shipped_tuning(tmp_path, curves: dict, **settings):
    """The resolved tuning of a grid over the curves' learning rates, 8 steps a trial, with only
    `settings` written: snaketune's defaults for the rest (report_every_steps: a quarter, 2)."""
    config = tiny_config(tuner_sampler="GridSampler", n_trials=len(curves), **settings,
                         tunable_training_params={"learning_rate": {"type": "categorical", "choices": list(curves)}})
    config["tuning"]["fixed_training_params"]["max_steps"] = 8
    write_reverse_words(tmp_path / "data.jsonl")
    tuning = load_tune_config(config, tmp_path).tuning
    assert tuning.report_every_steps == 2
    return tuning


def test_unpruned_trials_run_to_the_end_in_slot_order(tmp_path, table):
    result = replay.replay_study(tuning(tmp_path), table)
    assert [t["point"]["learning_rate"] for t in result.trials] == list(CURVES)  # the grid, slot by slot
    assert [t["stopped_at"] for t in result.trials] == [None] * 4
    assert result.compute == 4 * 8
    assert result.best == 0.5
    assert result.best_after == [(8, 0.5), (16, 0.5), (24, 0.5), (32, 0.5)]
    assert result.compute_to_reach(0.5) == 8 and result.compute_to_reach(0.1) == math.inf
    # An evaluation costing a step: each trial evaluates once, at the end.
    assert replay.replay_study(tuning(tmp_path), table, eval_cost=1.0).compute == 4 * (8 + 1)


def test_a_pruned_trial_costs_the_steps_it_trained(tmp_path, table):
    # Optuna's median rule: a trial's best value so far against the median of the completed
    # trials' values at the same step, from the second trial on (n_startup_trials 1).
    settings = {"pruner": "median", "report_every_steps": 2,
                "pruner_kwargs": {"n_startup_trials": 1, "n_warmup_steps": 0}}
    result = replay.replay_study(tuning(tmp_path, **settings), table)
    stopped = {t["point"]["learning_rate"]: t["stopped_at"] for t in result.trials}
    # 1e-3 leads 1e-4 (the one completed trial) at steps 2 and 4 (2.5 < 3.0, 1.8 < 2.0), trails it
    # at step 6 (1.2 > 1.0): pruned there; 1e-2 the same. 1e-1's best so far stays its step-2
    # value 1.0, never above 1e-4's, so it runs to the end although it rises to 2.0.
    assert stopped == {1e-4: None, 1e-3: 6, 1e-2: 6, 1e-1: None}
    assert result.compute == 8 + 6 + 6 + 8
    assert result.best_after == [(8, 0.5), (14, 0.5), (20, 0.5), (28, 0.5)]
    assert not result.stopped_the_best()
    # Every report is an evaluation: 4 for a trial trained to the end, 3 for one pruned at step 6.
    assert replay.replay_study(tuning(tmp_path, **settings), table, eval_cost=1.0).compute == 28 + 4 + 3 + 3 + 4
    strict = replay.replay_study(tuning(tmp_path, **{**settings, "pruner": "threshold",
                                                     "pruner_kwargs": {"upper": 2.9}}), table)
    assert strict.trials[0]["stopped_at"] == 2 and strict.stopped_the_best()  # 1e-4 starts at 3.0


def test_a_paused_trial_resumes_from_its_step_once_among_the_best_half_of_it(tmp_path, table):
    settings = {"pruner": "median", "report_every_steps": 2,
                "pruner_kwargs": {"n_startup_trials": 1, "n_warmup_steps": 0}}
    # η 2. The workflow refuses pausing with GridSampler (a resumed trial would take a grid point's
    # slot); in the replay, where it takes none, the grid makes each slot's point known.
    paused = dataclasses.replace(tuning(tmp_path, **settings), resume_pruned=2)
    result = replay.replay_study(paused, table)
    # As above, 1e-3 and 1e-2 pause at step 6 (1.2, 1.3 against 1e-4's 1.0). Once 1e-1 has
    # reported 1.6 there, step 6 holds 4 values and its best half (1.0, 1.2) takes in 1e-3: with
    # no slot left, it resumes from step 6 and ends at 0.8, its 2 last steps the only ones it trains.
    attempts = [(t["point"]["learning_rate"], t["resumed_from"], t["stopped_at"]) for t in result.trials]
    assert attempts == [(1e-4, 0, None), (1e-3, 0, 6), (1e-3, 6, None), (1e-2, 0, 6), (1e-1, 0, None)]
    assert result.compute == 8 + 6 + 6 + 8 + 2
    assert not result.stopped_the_best()


def test_the_budget_stops_starting_slots_and_workers_share_the_clock(tmp_path, table):
    # Two trials side by side; 16 steps: both start at 0 (committed 0, then 8), none after.
    result = replay.replay_study(tuning(tmp_path, budget={"trained_steps": 16}), table, workers=2)
    assert len(result.trials) == 2
    assert [spent for spent, _ in result.best_after] == [16, 16]  # both end at step 8 of the clock
    # 17 steps: a third slot starts once the first two have finished (committed 16 < 17).
    assert len(replay.replay_study(tuning(tmp_path, budget={"trained_steps": 17}), table, workers=2).trials) == 3


def test_pooled_tables_give_a_replayed_study_one_training_seeds_curves(tmp_path, table):
    """A table made under training seed 0 and one with a `seed` axis (learning_curves.py
    --training-seeds): a study sees one seed's curves, as a real study trains all its trials
    under its tuning.seed."""
    first = json.loads(table.path.read_text())
    (tmp_path / "seed0.json").write_text(json.dumps({**first, "training_seed": 0}))
    # Under seeds 1 and 2 the order of the finals is reversed: the fast starter 1e-1 ends best.
    rows = [{"params": {"seed": seed, "learning_rate": lr}, "final": 1.0 - curve[-1] / 4 + seed / 100,
             "curve": {"2": curve[0], "4": curve[1], "6": curve[2], "8": 1.0 - curve[-1] / 4 + seed / 100}}
            for seed in (1, 2) for lr, curve in CURVES.items()]
    (tmp_path / "seeds.json").write_text(json.dumps({
        "max_steps": 8, "grid": {"seed": [1, 2], "learning_rate": list(CURVES)}, "default_space": {},
        "points": 8, "grid_points": 8, "rows": rows}))
    pooled = replay.Table([tmp_path / "seed0.json", tmp_path / "seeds.json"])
    assert pooled.training_seeds == [0, 1, 2] and pooled.points == 12 and pooled.complete()
    assert pooled.grid == {"learning_rate": list(CURVES)}  # the seed is no searched parameter
    assert pooled.lookup({"learning_rate": 1e-4})["final"] == 0.5  # the first seed's, by default
    assert pooled.for_training_seed(2).lookup({"learning_rate": 1e-4})["final"] == pytest.approx(0.895)
    assert replay.replay_study(tuning(tmp_path), pooled).best == 0.5  # 1e-4, under seed 0
    assert replay.replay_study(tuning(tmp_path), pooled.for_training_seed(1)).best == pytest.approx(0.51)  # 1e-1
    with pytest.raises(KeyError, match="training seed 3"):
        pooled.for_training_seed(3)
    # A table that does not say its training seed cannot be pooled.
    with pytest.raises(ValueError, match="say no training seed"):
        replay.Table([table.path, tmp_path / "seeds.json"])
    # A seed whose table is partial leaves the pooled table incomplete.
    (tmp_path / "partial.json").write_text(json.dumps({
        "max_steps": 8, "grid": {"seed": [1, 2], "learning_rate": list(CURVES)}, "default_space": {},
        "points": 7, "grid_points": 8, "rows": rows[:-1]}))
    assert not replay.Table([tmp_path / "seed0.json", tmp_path / "partial.json"]).complete()


def test_the_default_percentile_pruner_stops_the_worst_quarter_and_keeps_a_slow_starter(tmp_path):
    """`pruner: percentile` with no pruner_kwargs and no report_every_steps (snaketune's measured
    defaults: the worst quarter at each quarter of max_steps, after 3 completed trials), against
    Optuna's median rule, on five hand-made curves run in this order."""
    curves = {1e-4: [3.0, 2.0, 1.0, 0.5], 1e-3: [2.5, 1.8, 1.2, 0.8], 1e-2: [2.0, 1.5, 1.3, 1.1],
              3e-2: [4.0, 3.0, 2.5, 2.2],   # worst at every step: stopped at the first report
              1e-1: [2.6, 1.9, 1.1, 0.6]}   # starts slow, finishes second best
    five = curve_table(tmp_path, curves)

    def stopped(**settings) -> dict:
        tuning = shipped_tuning(tmp_path, curves, **settings)
        return {t["point"]["learning_rate"]: t["stopped_at"] for t in replay.replay_study(tuning, five).trials}

    assert stopped(pruner="percentile") == {1e-4: None, 1e-3: None, 1e-2: None, 3e-2: 2, 1e-1: None}
    # The median of the three completed trials at step 2 is 2.5: the slow starter (2.6) is stopped.
    assert stopped(pruner="median", pruner_kwargs={"n_startup_trials": 3})[1e-1] == 2


def test_the_shipped_successive_halving_lets_a_slow_starter_through_and_resumes_a_paused_would_be_best(tmp_path):
    """`pruner: successive_halving` as shipped (no pruner_kwargs, no report_every_steps: a report
    every quarter of max_steps, the first rung at half of it, step 4 of 8; η 2; pausing), on six
    hand-made curves run in this order. At the rung a trial goes on only if it is among the best
    n // η of the values there (at least the best); a paused trial is resumed once it is among the
    best n // η of every value at its step (strategy.promotions)."""
    curves = {1e-5: [3.0, 2.0, 1.0, 0.5],   # the first: goes on
              2e-5: [2.5, 1.8, 1.2, 0.8],   # best at step 4 so far: goes on
              5e-5: [3.5, 1.7, 0.9, 0.4],   # worst at step 2, best at step 4: goes on
              1e-4: [4.0, 3.5, 3.0, 2.5],   # paused
              2e-4: [2.7, 1.95, 1.5, 0.3],  # third of five at step 4: paused, would finish best
              5e-4: [3.5, 3.2, 3.1, 3.0]}   # paused; the sixth value at step 4: the best 3 end at 1.95
    six = curve_table(tmp_path, curves)
    shipped = shipped_tuning(tmp_path, curves, pruner="successive_halving")
    assert not shipped.resume_pruned  # no pausing with a grid

    killed = replay.replay_study(shipped, six)
    stopped = {t["point"]["learning_rate"]: t["stopped_at"] for t in killed.trials}
    assert stopped == {1e-5: None, 2e-5: None, 5e-5: None, 1e-4: 4, 2e-4: 4, 5e-4: 4}
    assert killed.best == 0.4 and killed.stopped_the_best()  # 2e-4 would have finished at 0.3
    assert killed.compute == 3 * 8 + 3 * 4
    # Optuna's η 4 with the first rung at the first report (snaketune's earlier default) stops the
    # slow starter at step 2, where it was the worst of three.
    early = dataclasses.replace(shipped, pruner_kwargs={"min_resource": 2, "reduction_factor": 4})
    assert {t["point"]["learning_rate"]: t["stopped_at"] for t in replay.replay_study(early, six).trials}[5e-5] == 2

    # Pausing, as the shipped default does without a grid (η 2; the replay's grid gives a resumed
    # trial no slot of its own): after the sixth report at step 4, 2e-4 (1.95) is among the best
    # 6 // 2 = 3 there and resumes from step 4 to the end, the only steps it trains again.
    paused = replay.replay_study(dataclasses.replace(shipped, resume_pruned=2), six)
    attempts = [(t["point"]["learning_rate"], t["resumed_from"], t["stopped_at"]) for t in paused.trials]
    assert [a for a in attempts if a[1] == 0] == [(lr, 0, stopped[lr]) for lr in curves]
    assert [a for a in attempts if a[1] != 0] == [(2e-4, 4, None)]
    assert paused.best == 0.3 and not paused.stopped_the_best()
    assert paused.compute == killed.compute + 4
    assert paused.compute_to_reach(0.3) == paused.compute  # resumed last: not due before the sixth report


def test_the_shipped_hyperband_judges_a_trial_within_its_bracket_and_pausing_resumes_the_would_be_best(tmp_path):
    """`pruner: hyperband` as shipped (Optuna's defaults: min_resource 1, max_resource from the
    first completed trial, η 3), on the eight curves above, run in this order. Optuna's HyperbandPruner
    hashes each trial (study name and number) into a bracket, a successive halving of its own whose
    first rung is later the higher the bracket; here trials 1, 2, 6 and 7 fall in bracket 0 (rungs at
    steps 1 and 3: the reports at 2 and 4), 4 and 5 in bracket 1 (rung at 3), 3 in bracket 2 (no
    rung before the end), and trial 0 in none (nothing is pruned before a trial completes)."""
    curves = {1e-5: [3.0, 2.0, 1.0, 0.5], 2e-5: [2.5, 1.8, 1.2, 0.8], 5e-5: [2.6, 1.5, 0.9, 0.4],
              1e-4: [4.0, 3.5, 3.0, 2.5], 2e-4: [2.7, 2.6, 2.5, 2.4], 5e-4: [3.5, 3.2, 3.1, 3.0],
              1e-3: [3.8, 3.6, 3.4, 3.2], 2e-3: [3.9, 3.7, 3.5, 3.3]}
    eight = curve_table(tmp_path, curves)
    shipped = shipped_tuning(tmp_path, curves, pruner="hyperband")
    killed = replay.replay_study(shipped, eight)
    stopped = {t["point"]["learning_rate"]: t["stopped_at"] for t in killed.trials}
    # Until η trials have reached a rung, only the best there goes on: in bracket 0, 5e-5 (2.6 at
    # step 2, second to 2e-5's 2.5) is stopped although it would finish best (0.4), and 1e-3 and
    # 2e-3 too; in bracket 1, 5e-4 is second to 2e-4 at step 4.
    assert stopped == {1e-5: None, 2e-5: None, 5e-5: 2, 1e-4: None, 2e-4: None, 5e-4: 4, 1e-3: 2, 2e-3: 2}
    assert killed.best == 0.5 and killed.stopped_the_best()
    assert killed.compute == 4 * 8 + 3 * 2 + 4  # four to the end, three stopped at step 2, one at 4

    # The same decisions as Optuna's own pruner in a plain ask-and-tell loop.
    study = optuna.create_study(study_name=shipped.study_name, pruner=optuna.pruners.HyperbandPruner())
    for lr, curve in curves.items():
        trial = study.ask()
        for k, value in enumerate(curve):
            trial.report(value, 2 * (k + 1))
            if trial.should_prune():
                assert stopped[lr] == 2 * (k + 1)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            assert stopped[lr] is None
            study.tell(trial, curve[-1])

    # Pausing (resume_pruned: true takes hyperband's η, 3): once all eight have reported at step 2,
    # 5e-5 is among the best 8 // 3 = 2 values there (2.5, 2.6) and resumes from step 2 to 0.4.
    paused = replay.replay_study(dataclasses.replace(shipped, resume_pruned=3), eight)
    resumed = [(t["point"]["learning_rate"], t["resumed_from"], t["stopped_at"]) for t in paused.trials if t["resumed_from"]]
    assert resumed == [(5e-5, 2, None)]
    assert paused.best == 0.4 and not paused.stopped_the_best()


def test_replayed_seeds_take_the_pooled_training_seeds_in_turn(tmp_path):
    """bench/replay.py's seed i trains its baseline and arms under the i-th training seed of the
    pooled tables: here the demo task's table (training seed 0) and a made-up seed 1 under which
    every curve is 10 higher."""
    first = json.loads(replay.TABLE.read_text())
    shifted = [{**r, "params": {"seed": 1, **r["params"]}, "final": r["final"] + 10,
                "curve": {step: value + 10 for step, value in r["curve"].items()}}
               for r in first["rows"] if r["params"]["warmup_steps"] == 0]
    (tmp_path / "seeds.json").write_text(json.dumps({
        **first, "training_seed": None, "grid": {"seed": [1], **first["grid"], "warmup_steps": [0]},
        "points": len(shifted), "grid_points": len(shifted), "rows": shifted}))
    tables = [str(replay.TABLE), str(tmp_path / "seeds.json")]
    results = [replay.one_seed((i, 6, ["asha4_pause"], 1, tables, False, "default", 0.0)) for i in range(3)]
    assert [r["training_seed"] for r in results] == [0, 1, 0]
    assert [r["none"]["best"] > 10 for r in results] == [False, True, False]
    assert [r["asha4_pause"]["best"] > 10 for r in results] == [False, True, False]
    lines = replay.summarise(results, ["asha4_pause"])
    assert "| arm | training seed 0 | training seed 1 |" in lines
