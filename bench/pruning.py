"""Pruning benchmark: the same trial budget with and without a pruner, several seeds.

Runs the default study (config/tune.yaml: SmolLM2-135M-Instruct, LoRA, the demo task) through the
real Snakefile once per seed and arm: `pruner: none` (the baseline) and each pruned arm named in
--arms (see ARMS). Reports the compute each spent (trained steps, summed over trials) and the best
eval_loss each reached, as ratios pruned / unpruned of the same seed. Appends rows to
bench/RESULTS.md.

    python bench/pruning.py [--seeds 1 2 3] [--n-trials 12] [--arms percentile25] [--model tiny] [--cores 2]
                            [--extend-from 12]

`--extend-from 12` starts a larger budget from copies of the 12-trial studies instead of from
nothing: a grown budget runs only the new slots, and 12 finished trials are as good a start of a
24-trial study as any (which slot starts when is Snakemake's choice, and each slot seeds its own sampler).

`--model tiny` swaps in the tiny random Llama of the tests (minutes instead of an hour on 2 CPU
cores); the published numbers say which model they used.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from common import REPO, TINY_MODEL, append_results, run_snakemake
from replay import ARMS as REPLAY_ARMS

from snaketune.config import read_default_tune_yaml

BASELINE = {"pruner": "none"}
# The pruned arms are replay.py's (one list of pruner settings for the replay and the real runs):
# Optuna's pruners, killing or pausing (tuning.resume_pruned), not the replay's own candidates.
ARMS = {name: arm for name, arm in REPLAY_ARMS.items() if name != "none"}


def study_config(seed: int, n_trials: int, arm: str, model: str) -> dict:
    config = read_default_tune_yaml(REPO)
    tuning = config["tuning"]
    tuning.update(seed=seed, n_trials=n_trials, study_name=f"{arm}_seed{seed}", output_dir="study",
                  **ARMS.get(arm, BASELINE))
    if model == "tiny":
        config["model"] = dict(TINY_MODEL)
    return config


def run_study(workdir: Path, config: dict, cores: int) -> dict:
    run_snakemake(workdir, config, "all", cores=cores)
    from snaketune.study import load_study

    study = load_study(workdir / "study", config["tuning"]["study_name"])
    steps = sum(t.user_attrs.get("metrics", {}).get("trained_steps", 0) for t in study.trials)
    states = [t.state.name for t in study.trials]
    return {"best_eval_loss": study.best_value, "trained_steps": steps,
            "pruned": states.count("PRUNED"), "trials": len(states)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["percentile25"])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--extend-from", type=int, metavar="N",
                        help="start from copies of the N-trial studies of the same seeds and arms")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "pruning")
    args = parser.parse_args()

    def run(arm: str, seed: int) -> dict:
        workdir = args.workdir / f"{args.model}_{args.n_trials}_{arm}_seed{seed}"
        smaller = args.workdir / f"{args.model}_{args.extend_from}_{arm}_seed{seed}"
        if args.extend_from and not workdir.exists() and smaller.exists():
            shutil.copytree(smaller, workdir, symlinks=True)
        return run_study(workdir, study_config(seed, args.n_trials, arm, args.model), args.cores)

    rows = []
    for seed in args.seeds:
        base = run("unpruned", seed)
        for arm in args.arms:
            pruned = run(arm, seed)
            rows.append({"seed": seed, "arm": arm, **{f"unpruned_{k}": v for k, v in base.items()},
                         **{f"pruned_{k}": v for k, v in pruned.items()},
                         "compute_ratio": pruned["trained_steps"] / base["trained_steps"],
                         "best_loss_ratio": pruned["best_eval_loss"] / base["best_eval_loss"]})
            print(json.dumps(rows[-1]), flush=True)

    lines = [
        "| seed | pruned arm | unpruned best eval_loss | pruned best eval_loss | best-loss ratio | "
        "unpruned steps | pruned steps | compute ratio | trials pruned |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['arm']} | {r['unpruned_best_eval_loss']:.4f} | "
                     f"{r['pruned_best_eval_loss']:.4f} | {r['best_loss_ratio']:.3f} | {r['unpruned_trained_steps']} | "
                     f"{r['pruned_trained_steps']} | {r['compute_ratio']:.2f} | {r['pruned_pruned']}/{r['pruned_trials']} |")
    for arm in args.arms:
        arm_rows = [r for r in rows if r["arm"] == arm]
        mean = lambda key: sum(r[key] for r in arm_rows) / len(arm_rows)  # noqa: E731,B023
        lines.append(f"\n{arm} (`{json.dumps(ARMS[arm])}`), mean over {len(arm_rows)} seeds: best-loss ratio "
                     f"{mean('best_loss_ratio'):.3f} (goal ≤ 1.01), compute ratio {mean('compute_ratio'):.2f} "
                     "(goal ≤ 0.50).")
    append_results(f"Pruning ({args.model}, {args.n_trials} trials per study, {args.cores} cores per study)",
                   "pruning.py", lines)


if __name__ == "__main__":
    main()
