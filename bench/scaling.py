"""Parallel scaling: the same 8-trial study with 1, 2 and 4 trial slots side by side, on CPU.

Every arm is a fresh study of the same 8 configurations (enqueued learning rates, see overhead.py)
run through the real Snakefile with `--resources gpu=k`: on a machine without GPUs that lets k
trials run side by side. Each trial gets one thread (`--cores k`; snaketune gives a trial
cores / k threads), so k slots could at best be min(k, physical cores) times as fast as one:
efficiency = speedup / that ideal, and what it loses is what the workflow adds when trials run
side by side (scheduling, the journal's lock, memory bandwidth). A last arm runs one trial at a
time with every core, which is what a plain `snakemake --cores N` does. Data and model are
prepared before the clock starts. Appends to bench/RESULTS.md.

    python bench/scaling.py [--slots 1 2 4] [--n-trials 8] [--model tiny|smollm2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from common import REPO, append_results, run_snakemake
from overhead import study_config, trial_costs


def run_arm(workdir: Path, config: dict, slots: int, cores: int) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh study: an old journal would skip the trials
    run_snakemake(workdir, config, "--until", "prepare_data", cores=cores)  # and the model
    started = time.time()
    run_snakemake(workdir, config, "--until", "trial", "--resources", f"gpu={slots}", cores=cores)
    wall = time.time() - started
    per_trial = trial_costs(workdir)
    return {"slots": slots, "threads": max(1, cores // slots), "wall_s": wall,
            "work_s": sum(t["work_s"] for t in per_trial) / len(per_trial)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "scaling")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    config = study_config(args.model, args.n_trials, args.max_steps)

    arms = [run_arm(args.workdir / f"{args.model}_{k}slots", config, slots=k, cores=k) for k in args.slots]
    all_cores = run_arm(args.workdir / f"{args.model}_1slot_allcores", config, slots=1, cores=cpus)
    print(json.dumps({"arms": arms, "all_cores": all_cores}))

    base = next((a for a in arms if a["slots"] == 1), arms[0])
    lines = [f"{args.n_trials} trials of {args.max_steps} steps per arm. Speedup: study wall time of one "
             "single-thread slot / this arm's; ideal: min(slots, cores); efficiency: speedup / ideal. "
             "Training + evaluation per trial shows how much slower a trial trains when it shares the CPU.\n",
             "| trial slots | threads per trial | study wall (s) | trials per hour | speedup | ideal | efficiency "
             "| training + evaluation per trial (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in [*arms, all_cores]:
        speedup = base["wall_s"] / arm["wall_s"]
        ideal = min(arm["slots"] * arm["threads"], cpus) / base["threads"]
        lines.append(f"| {arm['slots']} | {arm['threads']} | {arm['wall_s']:.0f} | "
                     f"{3600 * args.n_trials / arm['wall_s']:.0f} | {speedup:.2f} | {ideal:.0f} | "
                     f"{speedup / ideal:.2f} | {arm['work_s']:.1f} |")
    best = max(arms, key=lambda a: a["slots"] if a["slots"] <= cpus else 0)
    lines.append(f"\n{best['slots']} slots of one thread against one slot with all {cpus} cores (a plain "
                 f"`snakemake --cores {cpus}`): {all_cores['wall_s'] / best['wall_s']:.2f}x the throughput.")
    append_results(f"Parallel scaling ({args.model}, CPU)", "scaling.py", lines)


if __name__ == "__main__":
    main()
