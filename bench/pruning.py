"""Pruning benchmark: the same trial budget with and without a pruner, several seeds.

Runs the default study (config/tune.yaml: SmolLM2-135M-Instruct, LoRA, the demo task) through the
real Snakefile twice per seed, once with `pruner: none` and once with `pruner: median`
(report_every_steps 10), and reports the compute each spent (trained steps, summed over trials)
and the best eval_loss each reached, as ratios pruned / unpruned. Appends rows to bench/RESULTS.md.

    python bench/pruning.py [--seeds 1 2] [--n-trials 8] [--model tiny] [--cores 2]

`--model tiny` swaps in the tiny random Llama of the tests (minutes instead of an hour on 2 CPU
cores); the published numbers say which model they used.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow"))

from snaketune.config import read_default_tune_yaml  # noqa: E402

ARMS = {
    "unpruned": {"pruner": "none"},
    "pruned": {"pruner": "median", "report_every_steps": 10,
               "pruner_kwargs": {"n_startup_trials": 3, "n_warmup_steps": 10}},
}


def study_config(seed: int, n_trials: int, arm: str, model: str) -> dict:
    config = read_default_tune_yaml(REPO)
    tuning = config["tuning"]
    tuning.update(seed=seed, n_trials=n_trials, study_name=f"{arm}_seed{seed}", output_dir="study", **ARMS[arm])
    if model == "tiny":
        config["model"] = {"model_name": str(REPO / "tests" / "assets" / "tiny-llama"),
                           "model_max_length": 256, "load_pretrained_weights": False}
    return config


def run_study(workdir: Path, config: dict, cores: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tune.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
                    "tune.yaml", "--cores", str(cores), "--quiet", "all"], cwd=workdir, check=True)
    import optuna

    from snaketune.study import open_storage

    study = optuna.load_study(study_name=config["tuning"]["study_name"],
                              storage=open_storage(str(workdir / "study" / "study.journal")))
    steps = sum(t.user_attrs.get("metrics", {}).get("trained_steps", 0) for t in study.trials)
    states = [t.state.name for t in study.trials]
    return {"best_eval_loss": study.best_value, "trained_steps": steps,
            "pruned": states.count("PRUNED"), "trials": len(states)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "pruning")
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        result = {arm: run_study(args.workdir / f"{args.model}_{arm}_seed{seed}",
                                 study_config(seed, args.n_trials, arm, args.model), args.cores)
                  for arm in ARMS}
        base, pruned = result["unpruned"], result["pruned"]
        rows.append({"seed": seed, **{f"{arm}_{k}": v for arm, r in result.items() for k, v in r.items()},
                     "compute_ratio": pruned["trained_steps"] / base["trained_steps"],
                     "best_loss_ratio": pruned["best_eval_loss"] / base["best_eval_loss"]})
        print(json.dumps(rows[-1]))

    command = "python bench/pruning.py " + " ".join(sys.argv[1:])
    lines = [
        f"\n### Pruning, {datetime.date.today()} ({args.model}, {args.n_trials} trials per study, "
        f"{platform.processor() or platform.machine()}, {args.cores} cores)\n",
        f"Command: `{command.strip()}`\n",
        "| seed | unpruned best eval_loss | pruned best eval_loss | best-loss ratio | unpruned steps | "
        "pruned steps | compute ratio | trials pruned |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['unpruned_best_eval_loss']:.4f} | {r['pruned_best_eval_loss']:.4f} | "
                     f"{r['best_loss_ratio']:.3f} | {r['unpruned_trained_steps']} | {r['pruned_trained_steps']} | "
                     f"{r['compute_ratio']:.2f} | {r['pruned_pruned']}/{r['pruned_trials']} |")
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    lines.append(f"\nMean: best-loss ratio {mean('best_loss_ratio'):.3f} (goal ≤ 1.01), "
                 f"compute ratio {mean('compute_ratio'):.2f} (goal ≤ 0.50).\n")
    with open(REPO / "bench" / "RESULTS.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
