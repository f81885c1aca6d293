"""Issue 37's search features, replayed on the learning-curve table (bench/replay.py), hundreds of
seeds in minutes: warm start, the top-K baseline, the converged stop, pruning a two-objective study.

Every replayed study is the default study (config/tune.yaml: learning rate and LoRA rank, 40 steps)
asked exactly as the workflow asks it (replay.replay_study); each experiment pairs arms on the same
seed and reports the paired difference of the best eval_loss, mean and 95% interval over seeds.

- `warm`: a study warm-started from an earlier half-budget study (snaketune.warm_start.history_from:
  the trials that fit the new space, as the workflow adds them) against a cold study with the same
  remaining budget (n/2 trials each), for three earlier spaces: the same, a learning-rate range that
  grew since (the earlier one searched [1e-5, 1e-3]), and one that narrowed (the new one searches
  [1e-4, 1e-2], so the earlier trials below 1e-4 are left out). The earlier study has its own seed.
- `topk`: Egele et al. 2023's baseline: train configurations to a first rung, keep the top K, train
  those to the end, at the compute the shipped pruning default spent (`pruner: successive_halving`
  alone: replay arm asha2_r20_pause, given the unpruned study's compute as its budget).
- `converged`: tuning.stop_when_converged against running every slot: compute saved and best lost.
- `multi`: a study of eval_loss and train time (seconds: steps x the table's step_seconds) pruned
  by Pareto dominance of its intermediate vectors (strategy.ParetoPruner) against no pruning:
  hypervolume at equal compute, and how often a trial of the unpruned study's final front is stopped.

    python bench/search_features.py [warm topk converged multi] [--seeds 200] [--n-trials 24]
                                    [--processes 2] [--append]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import time

import optuna
from optuna.trial import TrialState

from common import REPO, append_results
from replay import ARMS, TABLE, Table, mean_ci, replay_study, seed_of, study_tuning

from snaketune import scheduler, strategy
from snaketune import space as search_space
from snaketune import study as studies
from snaketune import warm_start
from snaketune.validate import load_tune_config, read_default_tune_yaml

optuna.logging.set_verbosity(optuna.logging.ERROR)


def tuning_for(seed: int, n_trials: int, low: float = 1e-5, high: float = 1e-2, budget_steps: int | None = None,
               **overrides):
    """The default study's TuningParams, seeded, with its learning rate searched in [low, high]."""
    raw = read_default_tune_yaml(REPO)
    tuning = raw["tuning"]
    tuning.update({"seed": seed, "n_trials": n_trials, "study_name": "replay", "pruner": "none", **overrides})
    tuning["tunable_training_params"]["learning_rate"] = {"type": "loguniform", "low": low, "high": high}
    if budget_steps is not None:
        tuning["budget"] = {"trained_steps": budget_steps}
    return load_tune_config(raw, base_dir=REPO, validated=True).tuning


# The first table and the one of other training seeds (learning_curves.py --training-seeds): seed i
# trains under the i-th training seed in turn, as the replay across training seeds does.
TABLES = [TABLE, TABLE.with_name("learning_curves_smollm2_seeds.json")]


def interval(values: list[float], form: str = "+.4f") -> str:
    """'mean [95% CI]' of `values` (replay.mean_ci), each number in `form`."""
    mean, low, high = mean_ci(values)
    return f"{mean:{form}} [{low:{form}}, {high:{form}}]"


def shares(diffs: list[float], eps: float = 0.0) -> str:
    """'better / worse': the shares of paired differences above `eps` and below -`eps`."""
    n = len(diffs)
    return f"{sum(d > eps for d in diffs) / n:.0%} / {sum(d < -eps for d in diffs) / n:.0%}"


def table_for(i: int) -> Table:
    table = Table(TABLES)
    return table.for_training_seed(table.training_seeds[i % len(table.training_seeds)])


# -- warm start -------------------------------------------------------------------------------------

WARM_SPACES = {  # the earlier study's learning-rate range -> the new study's
    "same space": ((1e-5, 1e-2), (1e-5, 1e-2)),
    "range grew": ((1e-5, 1e-3), (1e-5, 1e-2)),
    "range narrowed": ((1e-5, 1e-2), (1e-4, 1e-2)),
}


def warm_seed(job: tuple) -> dict:
    i, n_trials = job
    table = table_for(i)
    half = n_trials // 2
    out = {"seed": i}
    cold_full = replay_study(tuning_for(seed_of(i), n_trials), table).best
    for name, (earlier_range, new_range) in WARM_SPACES.items():
        earlier = replay_study(tuning_for(seed_of(i) + 500, half, *earlier_range), table)
        new = tuning_for(seed_of(i), half, *new_range)
        finished = [t for t in studies.latest_attempts(earlier.study) if t.state in studies.FINISHED]
        history, left_out = warm_start.history_from(finished, new, "earlier", "replay")
        warm = replay_study(new, table, history=history)
        cold = replay_study(new, table)
        target = cold.best
        out[name] = {"cold": cold.best, "warm": warm.best, "earlier": earlier.best, "cold_full": cold_full,
                     "added": len(history), "left_out": sum(map(len, left_out.values())),
                     # trials the warm study ran until it matched the cold study's final best
                     "trials_to_cold_best": next((k + 1 for k, (_, best) in enumerate(warm.best_after)
                                                  if best <= target), math.inf)}
    return out


def warm_lines(rows: list[dict]) -> list[str]:
    lines = ["| earlier study's space | history added (left out) | best, cold − warm: mean [95% CI] | warm better / worse | "
             "trials the warm study took to match the cold one's best: median | one cold n-trial study − (earlier + warm): mean [95% CI] |",
             "|---|---|---|---|---|---|"]
    for name in WARM_SPACES:
        cells = [r[name] for r in rows]
        diff = [c["cold"] - c["warm"] for c in cells]
        overall = [c["cold_full"] - min(c["warm"], c["earlier"]) for c in cells]
        added = statistics.fmean(c["added"] for c in cells)
        left = statistics.fmean(c["left_out"] for c in cells)
        reach = statistics.median(c["trials_to_cold_best"] for c in cells)
        lines.append(f"| {name} | {added:.1f} ({left:.1f}) | {interval(diff)} | {shares(diff)} | {reach:g} | "
                     f"{interval(overall)} |")
    return lines


# -- the top-K baseline -----------------------------------------------------------------------------

TOPK = [(10, 2), (10, 4), (10, 8), (10, 16), (20, 4), (20, 8)]  # (first rung, K)


def replay_top_k(tuning, table: Table, rung: int, k: int, budget: float) -> tuple[float, int]:
    """Egele et al.'s baseline on the table: configurations asked one after another as the workflow
    asks them (the slot's sampler, each told PRUNED with its value at `rung`, so the sampler learns),
    as many as the budget leaves once the top `k` are trained to the end; then the k best distinct
    configurations (grid points) trained on.
    Returns (best final eval_loss, configurations tried)."""
    max_steps = table.max_steps
    n = int((budget - k * (max_steps - rung)) // rung)
    if n < k:
        return math.inf, 0
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), study_name="replay",
                                directions=tuning.directions, pruner=optuna.pruners.NopPruner())
    tried = {}
    for slot in range(n):
        study.sampler = strategy.make_sampler(tuning, slot)
        trial_id = scheduler.create_trial(study, strategy.slot_params(tuning, slot), tuning.space, {"slot": slot})
        trial = optuna.Trial(study, trial_id)
        row = table.lookup(search_space.suggest(trial, tuning.space))
        trial.report(row["curve"][str(rung)], rung)
        study.tell(trial, state=TrialState.PRUNED)
        # A configuration asked twice (the table's grid point) is kept once: K distinct ones go on.
        tried.setdefault(tuple(sorted(table.snap(trial.params).items())), (row["curve"][str(rung)], row["final"]))
    kept = sorted(tried.values())[:k]
    return min(final for _, final in kept), n


def topk_seed(job: tuple) -> dict:
    i, n_trials = job
    table = table_for(i)
    base = replay_study(tuning_for(seed_of(i), n_trials), table)
    shipped_arm = dict(ARMS["asha2_r20_pause"])
    shipped = replay_study(study_tuning(shipped_arm, seed_of(i), 50 * n_trials, int(base.compute)), table)
    shipped_best = shipped.best  # at its whole compute, which each top-K arm gets
    out = {"seed": i, "base": base.best, "shipped": shipped_best, "shipped_compute": shipped.compute,
           "base_compute": base.compute}
    for rung, k in TOPK:
        best, tried = replay_top_k(tuning_for(seed_of(i), 50 * n_trials), table, rung, k, shipped.compute)
        out[f"r{rung}_k{k}"] = {"best": best, "tried": tried}
    return out


def topk_lines(rows: list[dict]) -> list[str]:
    compute = statistics.fmean(r["shipped_compute"] / r["base_compute"] for r in rows)
    shipped = interval([r["base"] - r["shipped"] for r in rows])
    lines = [f"The shipped default (`pruner: successive_halving` alone) spent {compute:.2f} of the unpruned "
             f"study's compute on average; its best against the unpruned study's: {shipped} (unpruned − shipped). Each top-K arm gets the shipped default's "
             "compute of the same seed.", "",
             "| top-K arm (first rung, K) | configurations tried | best, shipped − top-K: mean [95% CI] | "
             "top-K better / worse | best, unpruned − top-K |",
             "|---|---|---|---|---|"]
    for rung, k in TOPK:
        name = f"r{rung}_k{k}"
        diffs = [r["shipped"] - r[name]["best"] for r in rows]
        tried = statistics.fmean(r[name]["tried"] for r in rows)
        lines.append(f"| rung {rung}, K {k} | {tried:.1f} | {interval(diffs)} | {shares(diffs)} | "
                     f"{interval([r['base'] - r[name]['best'] for r in rows])} |")
    return lines


# -- converged stop -------------------------------------------------------------------------------

CONVERGED = {  # arm -> tuning.stop_when_converged
    "patience 4, noise": {"patience": 4}, "patience 6, noise": {"patience": 6},
    "patience 8, noise": {"patience": 8}, "patience 12, noise": {"patience": 12},
    "patience 6, 0.001": {"patience": 6, "min_improvement": 0.001},
    "patience 8, 0.002": {"patience": 8, "min_improvement": 0.002},
}


def converged_seed(job: tuple) -> dict:
    i, n_trials = job
    table = table_for(i)
    slots = 2 * n_trials  # a generous budget: what a converged stop is for
    base = replay_study(tuning_for(seed_of(i), slots), table)
    # the baseline's best after each of its trials: the same seed's first k trials are the stopped study's
    out = {"seed": i, "base": base.best, "base_compute": base.compute, "slots": slots,
           "base_after": [best for _, best in base.best_after]}
    for name, stop in CONVERGED.items():
        run = replay_study(tuning_for(seed_of(i), slots, stop_when_converged=stop), table)
        # the threshold the rule stopped on: min_improvement, or the noise estimated when it stopped
        threshold = stop.get("min_improvement", strategy.objective_noise(studies.own_trials(run.study))[0])
        out[name] = {"best": run.best, "compute": run.compute, "trials": len(run.trials), "threshold": threshold}
    return out


def converged_lines(rows: list[dict]) -> list[str]:
    n = len(rows)
    lines = [f"Each study has {rows[0]['slots']} slots of 40 steps; the baseline runs them all, each arm stops "
             "once its rule says the study converged (the slots left are skipped). The table gives one value per "
             "grid point and training seed, so neighbouring trials (which snap to the same grid point) often "
             "differ by exactly 0: the 'noise' arms then stop on any strict improvement (the last column).", "",
             "| stop rule (tuning.stop_when_converged) | stopped early | compute saved: mean [95% CI] | "
             "best lost (stopped − all slots): mean [95% CI] | lost > 0.001 | trials run: mean | "
             "a fixed n_trials of that mean instead: best lost | threshold: median (share 0) |",
             "|---|---|---|---|---|---|---|---|"]
    for name in CONVERGED:
        saved = [1 - r[name]["compute"] / r["base_compute"] for r in rows]
        lost = [r[name]["best"] - r["base"] for r in rows]
        trials = statistics.fmean(r[name]["trials"] for r in rows)
        thresholds = [r[name]["threshold"] if r[name]["threshold"] is not None else math.nan for r in rows]
        # The same compute on average, spent as a fixed number of trials in every study.
        fixed = [r["base_after"][max(1, round(trials)) - 1] - r["base"] for r in rows]
        lines.append(f"| {name} | {sum(x > 0 for x in saved) / n:.0%} | {interval(saved, '.1%')} | {interval(lost)} | "
                     f"{sum(x > 0.001 for x in lost) / n:.0%} | {trials:.1f} | {interval(fixed)} | "
                     f"{statistics.median(thresholds):.2g} ({sum(t == 0 for t in thresholds) / n:.0%}) |")
    return lines


# -- pruning a study of two objectives --------------------------------------------------------------

PARETO = {  # arm -> tuning.pruner_kwargs of pruner: pareto
    "pareto (snaketune's defaults)": {},
    "pareto, dominated by 3/4": {"dominated_share": 0.75},
    "pareto, from step 20": {"n_warmup_steps": 20},
}
OBJECTIVES = {"evaluation_metrics": ["eval_loss", "train_runtime"], "evaluation_direction": ["minimize", "minimize"]}


def replay_two_objectives(tuning, table: Table, budget: float) -> dict:
    """One study of eval_loss and train time (the table's seconds per step x steps) on the table,
    trials one after another as the workflow asks them, each reporting both at every
    report_every_steps step (strategy.INTERMEDIATE_VECTORS_ATTR) and asking the study's pruner
    (strategy.make_pruner: ParetoPruner for pruner: pareto), while the trained steps are under
    `budget`. Returns the completed trials' final vectors, and each started trial's would-be final
    vector with whether it was stopped."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), study_name="replay",
                                directions=tuning.directions)
    pruner = strategy.make_pruner(tuning)
    every, max_steps = tuning.report_every_steps or table.max_steps, table.max_steps
    spent, slot, started = 0.0, 0, []
    while spent + 1e-9 < budget and slot < tuning.n_trials:
        study.sampler = strategy.make_sampler(tuning, slot)
        trial_id = scheduler.create_trial(study, strategy.slot_params(tuning, slot), tuning.space, {"slot": slot})
        trial = optuna.Trial(study, trial_id)
        params = search_space.suggest(trial, tuning.space)
        row, seconds = table.lookup(params), table.seconds_per_step(params)
        vectors, stopped = {}, None
        for step in range(every, max_steps + 1, every):
            vectors[str(step)] = [row["curve"][str(step)], step * seconds]
            trial.set_user_attr(strategy.INTERMEDIATE_VECTORS_ATTR, dict(vectors))
            if step < max_steps and pruner.prune(study, study._storage.get_trial(trial_id)):  # noqa: SLF001 (as train.ReportAndPrune reads it)
                stopped = step
                break
        final = [row["final"], max_steps * seconds]
        if stopped is None:
            study.tell(trial, final)
        else:
            study.tell(trial, state=TrialState.PRUNED)
        spent += stopped or max_steps
        started.append({"final": final, "stopped": stopped})
        slot += 1
    return {"completed": [t["final"] for t in started if t["stopped"] is None], "started": started, "spent": spent}


def _front(points: list[list[float]]) -> list[int]:
    """The indices of the non-dominated points (both minimised)."""
    return [i for i, p in enumerate(points)
            if not any(all(q[k] <= p[k] for k in range(2)) and q != p for q in points)]


def multi_seed(job: tuple) -> dict:
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    i, n_trials = job
    table = table_for(i)
    # The reference point: the worst final loss and the longest train time of the default space, 1% beyond.
    points = [{"learning_rate": lr, "lora_r": r} for lr in table.grid["learning_rate"] for r in table.grid["lora_r"]]
    reference = np.array([1.01 * max(table.lookup(p)["final"] for p in points),
                          1.01 * table.max_steps * max(table.seconds_per_step(p) for p in points)])

    def volume(points):  # as a share of the box under the reference point
        return compute_hypervolume(np.array(points) / reference, np.ones(2)) if points else 0.0

    base = replay_two_objectives(tuning_for(seed_of(i), n_trials, **OBJECTIVES, report_every_steps=10), table,
                                 n_trials * table.max_steps)
    out = {"seed": i, "none": volume(base["completed"])}
    for name, kwargs in PARETO.items():
        arm = replay_two_objectives(tuning_for(seed_of(i), 50 * n_trials, **OBJECTIVES, pruner="pareto",
                                               pruner_kwargs=kwargs, report_every_steps=10),
                                    table, base["spent"])
        finals = [t["final"] for t in arm["started"]]
        front = _front(finals)
        stopped_front = any(arm["started"][k]["stopped"] is not None
                            and not any(t["stopped"] is None and t["final"] == finals[k] for t in arm["started"])
                            for k in front)
        out[name] = {"volume": volume(arm["completed"]), "trials": len(arm["started"]),
                     "pruned": sum(t["stopped"] is not None for t in arm["started"]), "stopped_front": stopped_front}
    return out


def multi_lines(rows: list[dict]) -> list[str]:
    n = len(rows)
    lines = ["Objectives eval_loss and train time (seconds: the table's seconds per step x steps), both minimised; "
             "hypervolume of the completed trials, as a share of the box under the worst final loss and the longest "
             "train time of the space (1% beyond). The unpruned study runs n trials; each pruned arm gets its trained steps.", "",
             "| arm (pruner: pareto, pruner_kwargs) | hypervolume, pruned − unpruned: mean [95% CI] | pruned better / worse | "
             "trials started | pruned | stopped a trial of the front it would have found |",
             "|---|---|---|---|---|---|"]
    for name in PARETO:
        diffs = [r[name]["volume"] - r["none"] for r in rows]
        lines.append(f"| {name} | {interval(diffs, '+.5f')} | {shares(diffs, 1e-12)} | "
                     f"{statistics.fmean(r[name]['trials'] for r in rows):.1f} | "
                     f"{statistics.fmean(r[name]['pruned'] for r in rows):.1f} | "
                     f"{sum(r[name]['stopped_front'] for r in rows) / n:.0%} |")
    return lines


EXPERIMENTS = {"warm": (warm_seed, warm_lines, "Warm start from a half-budget study, replayed"),
               "topk": (topk_seed, topk_lines, "The top-K baseline against the shipped pruning default, replayed"),
               "converged": (converged_seed, converged_lines, "Stopping a converged study, replayed"),
               "multi": (multi_seed, multi_lines, "Pruning a study of two objectives by Pareto dominance, replayed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--n-trials", type=int, default=24)
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--append", action="store_true", help="append each table to bench/RESULTS.md")
    args = parser.parse_args()
    for name in args.experiments:
        one, lines_of, title = EXPERIMENTS[name]
        started = time.time()
        with multiprocessing.Pool(args.processes) as pool:
            rows = pool.map(one, [(i, args.n_trials) for i in range(args.seeds)], chunksize=1)
        lines = lines_of(rows)
        wall = time.time() - started
        print(f"\n## {title}\n")
        print("\n".join(lines))
        print(f"\n{args.seeds} seeds in {wall:.0f} s ({args.processes} processes)")
        if args.append:
            about = (f"{args.seeds} seeds; the default study ({args.n_trials}-trial budget of 40-step trials) on "
                     f"{Table(TABLES).describe()}; nearest grid point. Ran in {wall:.0f} s with {args.processes} "
                     "processes.\n")
            append_results(title, "search_features.py", [about, *lines])


if __name__ == "__main__":
    main()
