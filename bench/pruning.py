"""Pruning benchmark on the real workflow: a pruned search against the unpruned one at equal compute.

Runs the default study (config/tune.yaml: SmolLM2-135M-Instruct, LoRA, the demo task) through the
real Snakefile once per seed and arm: `pruner: none` with --n-trials trials (the baseline), then
each pruned arm named in --arms (see ARMS, replay.py's settings) with the baseline's trained steps
as its `tuning.budget` and 4x the trials as a cap, as bench/replay.py compares them. Reports per
seed the best eval_loss each reached at equal compute, and the compute (trained steps, summed over
the trials in the order they finished) each needed to come within 1% of the unpruned best, as a
share of the baseline's. Appends rows to bench/RESULTS.md.

Each seed's row for an arm is kept in bench/data/pruning_confirmation.jsonl (with its date,
machine, versions and the arm's settings) as soon as that arm's study finishes, and a seed whose
every asked arm is kept there, with the same settings, is not run again: at hours a seed on 2 CPU
cores, the confirmation spans sessions, and the studies in bench/out/ may not outlive one. The
RESULTS section is built from the kept rows of the seeds asked for.

    python bench/pruning.py [--seeds 1 2 3] [--n-trials 24] [--arms asha2_r20_pause] [--model tiny] [--cores 2]
                            [--parallel 1] [--pruned-slots 1] [--extend-from 12] [--report-only]

`--extend-from 12` starts a larger baseline from copies of the 12-trial studies instead of from
nothing: a grown budget runs only the new slots, and 12 finished trials are as good a start of a
24-trial study as any (which slot starts when is Snakemake's choice, and each slot seeds its own sampler).

`--model tiny` swaps in the tiny random Llama of the tests (minutes instead of hours on 2 CPU
cores): a check of the workflow's mechanics, not of the demo task; the published numbers say which
model they used.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, TINY_MODEL, append_results, machine, run_snakemake
from replay import ARMS as REPLAY_ARMS
from replay import WITHIN, StudyResult

from snaketune.validate import read_default_tune_yaml

BASELINE = {"pruner": "none"}
# The pruned arms are replay.py's (one list of pruner settings for the replay and the real runs):
# Optuna's pruners, killing or pausing (tuning.resume_pruned), not the replay's own candidates.
ARMS = {name: arm for name, arm in REPLAY_ARMS.items() if name != "none"}


CAP = 4  # a pruned arm's n_trials, as a multiple of the baseline's: its budget decides
RECORD = REPO / "bench" / "data" / "pruning_confirmation.jsonl"
_record_lock = threading.Lock()  # seeds run side by side (--parallel) and each keeps its rows


def kept_rows(record: Path, model: str, n_trials: int) -> dict[tuple[int, str], dict]:
    """The rows already kept in `record` for this model and baseline size and the arms' present
    settings (ARMS), by (seed, arm); the newest one where a seed and arm were kept twice. A line cut
    short (a session that ended mid-write) is passed over."""
    rows = {}
    if record.exists():
        for line in record.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (row["model"], row["n_trials"]) == (model, n_trials) and row.get("arm_settings") == ARMS.get(row["arm"]):
                rows[row["seed"], row["arm"]] = row
    return rows


def kept_baseline(record: Path, model: str, n_trials: int, seed: int) -> dict | None:
    """The unpruned baseline's numbers of `seed` from any kept row of this model and baseline size
    (each row carries them), or None: a new arm on a kept seed is compared with the same baseline
    without training it again (an hour on 2 CPU cores)."""
    if not record.exists():
        return None
    for line in reversed(record.read_text().splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (row["model"], row["n_trials"], row["seed"]) == (model, n_trials, seed):
            return row
    return None


def keep_row(record: Path, row: dict) -> None:
    """Appends one finished seed-and-arm row to `record` (one JSON object per line)."""
    with _record_lock, open(record, "a") as f:
        f.write(json.dumps(row) + "\n")


def study_config(seed: int, n_trials: int, arm: str, model: str, budget_steps: int | None = None) -> dict:
    config = read_default_tune_yaml(REPO)
    tuning = config["tuning"]
    tuning.update(seed=seed, n_trials=n_trials, study_name=f"{arm}_seed{seed}", output_dir="study",
                  **ARMS.get(arm, BASELINE))
    if budget_steps is not None:
        tuning.update(n_trials=CAP * n_trials, budget={"trained_steps": budget_steps})
    if model == "tiny":
        config["model"] = dict(TINY_MODEL)
    return config


def run_study(workdir: Path, config: dict, cores: int, slots: int = 1) -> dict:
    """Runs (or continues) the study; what it reached: its best eval_loss, the trained steps of
    every trial, how many were pruned or resumed, and `progress`: the best so far against the steps
    spent as its trials finished (replay.StudyResult, as the replay records a study)."""
    # `slots` trials side by side, the cores shared among them, as `--resources gpu=N` runs them
    # (on a CPU too: snaketune tune --gpus N).
    run_snakemake(workdir, config, "all", *(["--resources", f"gpu={slots}"] if slots > 1 else []), cores=cores)
    from optuna.trial import TrialState

    from snaketune.study import load_study

    study = load_study(workdir / "study", config["tuning"]["study_name"])
    finished = sorted((t for t in study.trials if t.datetime_complete is not None), key=lambda t: t.datetime_complete)
    spent, best, best_after = 0, float("inf"), []
    for trial in finished:
        spent += trial.user_attrs.get("metrics", {}).get("trained_steps", 0)
        if trial.state == TrialState.COMPLETE:
            best = min(best, trial.value)
        best_after.append((spent, best))
    states = [t.state.name for t in study.trials]
    return {"best_eval_loss": study.best_value, "trained_steps": spent, "pruned": states.count("PRUNED"),
            "resumed": sum(1 for t in study.trials if "promoted_from" in t.user_attrs),
            "trials": len(states), "progress": StudyResult(best_after=best_after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--n-trials", type=int, default=24, help="the unpruned baseline's trials")
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["asha2_r20_pause"])
    parser.add_argument("--cores", type=int, default=2, help="per study")
    parser.add_argument("--baseline-cores", type=int, help="the unpruned baseline's cores (default: --cores), "
                        "e.g. 1 while another study shares the machine")
    parser.add_argument("--parallel", type=int, default=1, help="seeds run side by side")
    parser.add_argument("--pruned-slots", type=int, default=1,
                        help="trials a pruned arm's study runs side by side (the baseline runs one at a time)")
    parser.add_argument("--extend-from", type=int, metavar="N",
                        help="start the baseline from copies of the N-trial baselines of the same seeds")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "pruning")
    parser.add_argument("--record", type=Path, default=RECORD, help="where each finished seed's rows are kept")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: the section from the rows kept for these seeds and arms")
    args = parser.parse_args()

    kept = kept_rows(args.record, args.model, args.n_trials)

    def run_seed(seed: int) -> list[dict]:
        """The seed's baseline, then each arm at its compute: one row per arm, each kept in --record."""
        if args.report_only:
            return [kept[seed, arm] for arm in args.arms if (seed, arm) in kept]
        if all((seed, arm) in kept for arm in args.arms):
            print(f"seed {seed}: kept in {args.record} already "
                  f"({', '.join(sorted({kept[seed, arm]['date'] for arm in args.arms}))}); not run again",
                  flush=True)
            return [kept[seed, arm] for arm in args.arms]
        workdir = args.workdir / f"{args.model}_{args.n_trials}_unpruned_seed{seed}"
        smaller = args.workdir / f"{args.model}_{args.extend_from}_unpruned_seed{seed}"
        if args.extend_from and not workdir.exists() and smaller.exists():
            shutil.copytree(smaller, workdir, symlinks=True)
        kept_base = None if workdir.exists() else kept_baseline(args.record, args.model, args.n_trials, seed)
        if kept_base:
            print(f"seed {seed}: the unpruned baseline kept in {args.record} ({kept_base['date']}); not run again",
                  flush=True)
            base = {k.removeprefix("unpruned_"): v for k, v in kept_base.items() if k.startswith("unpruned_")}
        else:
            base = run_study(workdir, study_config(seed, args.n_trials, "unpruned", args.model),
                             args.baseline_cores or args.cores)
            base["reach"] = base["progress"].compute_to_reach(base["best_eval_loss"] * (1 + WITHIN))
            base["reach"] /= base["trained_steps"]
        target = base["best_eval_loss"] * (1 + WITHIN)
        seed_rows = [kept[seed, arm] for arm in args.arms if (seed, arm) in kept]
        for arm in (arm for arm in args.arms if (seed, arm) not in kept):
            config = study_config(seed, args.n_trials, arm, args.model, budget_steps=base["trained_steps"])
            pruned = run_study(args.workdir / f"{args.model}_{args.n_trials}_{arm}_seed{seed}", config, args.cores,
                               args.pruned_slots)
            seed_rows.append({"seed": seed, "arm": arm, "arm_settings": ARMS[arm], "model": args.model,
                              "n_trials": args.n_trials,
                              "date": str(datetime.date.today()), "machine": machine(),
                              "cores": args.cores, "baseline_cores": args.baseline_cores or args.cores,
                              "parallel": args.parallel, "pruned_slots": args.pruned_slots,
                              **{f"unpruned_{k}": v for k, v in base.items() if k not in ("progress", "reach")},
                              **{f"pruned_{k}": v for k, v in pruned.items() if k != "progress"},
                              "gain": base["best_eval_loss"] - pruned["best_eval_loss"],
                              "reach": pruned["progress"].compute_to_reach(target) / base["trained_steps"],
                              "unpruned_reach": base["reach"]})
            keep_row(args.record, seed_rows[-1])
            print(json.dumps(seed_rows[-1]), flush=True)
        return seed_rows

    # Seeds side by side (--parallel), each study on --cores: on 2 cores, two one-thread studies
    # train more per hour than one two-thread study (bench/scaling.py: 1.39x on the tiny model).
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:  # each study is a snakemake process
        rows = [row for seed_rows in pool.map(run_seed, args.seeds) for row in seed_rows]

    lines = [
        "| seed | arm | unpruned best eval_loss | pruned best eval_loss | unpruned − pruned | "
        "compute to within 1% of the unpruned best: pruned (unpruned) | steps: unpruned, pruned | "
        "trials: pruned / resumed / all |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['seed']} ({r['date']}) | {r['arm']} | {r['unpruned_best_eval_loss']:.4f} | "
                     f"{r['pruned_best_eval_loss']:.4f} | {r['gain']:+.4f} | {r['reach']:.2f} "
                     f"({r['unpruned_reach']:.2f}) | {r['unpruned_trained_steps']}, {r['pruned_trained_steps']} | "
                     f"{r['pruned_pruned']} / {r['pruned_resumed']} / {r['pruned_trials']} |")
    # How each row was measured (rows of several sessions and setups meet in one section).
    setups: dict[tuple, list[str]] = {}
    for r in rows:
        setup = (r["machine"], r.get("baseline_cores", r["cores"]), r["cores"], r["parallel"], r.get("pruned_slots", 1))
        setups.setdefault(setup, []).append(f"{r['seed']}/{r['arm']}")
    lines += [f"\n{', '.join(runs)}: {setup[0]}; the baseline on {setup[1]} core(s), the pruned arm on {setup[2]} "
              f"with {setup[4]} trial(s) side by side; {setup[3]} seed(s) at a time" for setup, runs in setups.items()]
    for arm in args.arms:
        arm_rows = [r for r in rows if r["arm"] == arm]
        if not arm_rows:
            continue
        gains = sorted(r["gain"] for r in arm_rows)
        reach = sorted(r["reach"] for r in arm_rows)
        lines.append(f"\n{arm} (`{json.dumps(ARMS[arm])}`, budget = the baseline's steps), over "
                     f"{len(arm_rows)} seeds: unpruned − pruned best {sum(gains) / len(gains):+.4f} on average "
                     f"(per seed {', '.join(f'{g:+.4f}' for g in gains)}); compute to within 1% of the "
                     f"unpruned best, median {statistics.median(reach):.2f} of the baseline's.")
    append_results(f"Pruning at equal compute ({args.model}, {args.n_trials}-trial baseline, "
                   f"{args.cores} cores per study, {args.parallel} at a time, "
                   f"{args.pruned_slots} pruned trial(s) side by side)", "pruning.py", lines)


if __name__ == "__main__":
    main()
