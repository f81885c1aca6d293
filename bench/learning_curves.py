"""The learning-curve table: every configuration of a grid on the demo task, trained to the end.

A grid study of the default study's task (config/tune.yaml: SmolLM2-135M-Instruct, LoRA, the demo
data, 40 steps), run by snaketune itself with `GridSampler` and no pruner, evaluating every 5 steps
(`report_every_steps: 5`). Every trial's eval_loss curve, final value and cost (trained steps,
trained tokens, wall time) then goes to a small JSON file that `bench/replay.py` replays samplers
and pruners against, in seconds instead of hours.

    python bench/learning_curves.py [--gpus 2] [--cores 2] [--workdir bench/out/curves]
                                    [--out bench/data/learning_curves_smollm2.json] [--export-only]
    python bench/learning_curves.py --training-seeds 1 2 [...]

The study is resumable: run the same command again and it continues (finished trials are kept, a
trial killed mid-way resumes from its checkpoint with its grid point). The table is written after
every run, also from a partial study; it says how many grid points it holds.

The grid (GRID below, 66 points): learning rate, 11 values spaced by 10^0.3 (about 2x) over the
default study's range 1e-5..1e-2; LoRA rank, the default study's choices 4, 8, 16; warm-up, 0 or 8
of the 40 steps. The default study's own search space (learning rate and rank, no warm-up) is the
33 points with warmup_steps 0. Every point trains under the study's tuning.seed, 0 (the table's
`training_seed`).

`--training-seeds 1 2` makes a second table (bench/data/learning_curves_smollm2_seeds.json, its
study in bench/out/curves_seeds): the default study's space once per training seed, the seed a
tunable SFTConfig.seed (TRL seeds the LoRA initialisation and the data order with it), each row's
`seed` parameter. bench/replay.py pools it with the first (`--table A B`), so that its studies see
how a configuration's curve moves with the training seed, as a real study's tuning.seed moves it.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml
from common import REPO, machine

from snaketune.validate import read_default_tune_yaml

# The default study's search space (config/tune.yaml), which the grid spans.
_DEFAULT_TUNING = read_default_tune_yaml(REPO)["tuning"]
DEFAULT_SPACE = {**_DEFAULT_TUNING["tunable_training_params"], **_DEFAULT_TUNING["tunable_peft_params"]}
_LOW, _HIGH = (float(DEFAULT_SPACE["learning_rate"][k]) for k in ("low", "high"))  # YAML 1.1: "1e-5"
LEARNING_RATES = [float(f"{_LOW * 10 ** (0.3 * i):.3g}") for i in range(round(math.log10(_HIGH / _LOW) / 0.3) + 1)]
# In slot order (GridSampler's grid runs warm-up first): slots 0-32 are the default study's space,
# so a partial table covers it whole before any warm-up point.
GRID = {
    "warmup_steps": [0, 8],
    "learning_rate": LEARNING_RATES,
    "lora_r": list(DEFAULT_SPACE["lora_r"]["choices"]),
}
REPORT_EVERY_STEPS = 5
DEFAULT_WORKDIR = REPO / "bench" / "out" / "curves"
DEFAULT_OUT = REPO / "bench" / "data" / "learning_curves_smollm2.json"
SEEDS_WORKDIR = REPO / "bench" / "out" / "curves_seeds"
SEEDS_OUT = REPO / "bench" / "data" / "learning_curves_smollm2_seeds.json"
STUDY_NAME = "curves"
TRAINING_SEED = "seed"  # SFTConfig.seed, tuned as a grid axis by --training-seeds
PEFT_AXES = ("lora_r",)


def grid_axes(training_seeds: list[int] | None = None) -> dict:
    """The grid's axes in slot order (strategy.grid_points: the first varies slowest): GRID, or with
    `training_seeds` the default study's space once per training seed, seed first (a partial table
    holds whole seeds)."""
    if not training_seeds:
        return GRID
    return {TRAINING_SEED: list(training_seeds), "warmup_steps": [0], "learning_rate": GRID["learning_rate"],
            "lora_r": GRID["lora_r"]}


def grid_config(axes: dict) -> dict:
    """The default study with the grid's tunable parameters, GridSampler, no pruner, every 5 steps."""
    config = read_default_tune_yaml(REPO)
    tuning = config["tuning"]
    tuning.update(
        study_name=STUDY_NAME, output_dir="study", n_trials=math.prod(len(v) for v in axes.values()), seed=0,
        tuner_sampler="GridSampler", sampler_kwargs={}, pruner="none",
        report_every_steps=REPORT_EVERY_STEPS,
        tunable_training_params={name: {"type": "categorical", "choices": values}
                                 for name, values in axes.items() if name not in PEFT_AXES},
        tunable_peft_params={name: {"type": "categorical", "choices": axes[name]} for name in PEFT_AXES},
    )
    return config


def run(workdir: Path, cores: int, gpus: int, axes: dict) -> None:
    """`snaketune tune` on the grid study in `workdir` (a re-run continues it): first the slots of
    the default study's space (warm-up 0), named as targets since Snakemake starts ready jobs in no
    fixed order, then the rest."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tune.yaml").write_text(yaml.safe_dump(grid_config(axes), sort_keys=False))
    command = ["snaketune", "tune", "-c", "tune.yaml", "--cores", str(cores), "--gpus", str(gpus)]
    points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    first = [str((workdir / "study" / f"trial_{slot}" / "metrics.json").resolve())
             for slot, point in enumerate(points) if point["warmup_steps"] == 0]
    if len(first) < len(points):
        subprocess.run([*command, "--", *first], cwd=workdir, check=True)
    subprocess.run(command, cwd=workdir, check=True)


def export(workdir: Path, out: Path, axes: dict) -> dict:
    """Writes the table (finished trials' curves) to `out`; returns it.

    Each row: params (with `seed`, its training seed, when the grid has that axis; else the table's
    `training_seed` is every row's), `curve` (eval_loss at every reported step, keys are steps as strings: JSON),
    `final` (eval_loss after the last step), `trained_steps`, `trained_tokens`, `wall_seconds`
    (the trial's start to finish, evaluations and job start-up included).
    """
    import optuna

    from snaketune.study import load_study

    config = yaml.safe_load((workdir / "tune.yaml").read_text())
    study = load_study(workdir / "study", STUDY_NAME)
    rows = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        metrics = trial.user_attrs.get("metrics", {})
        timing = evaluation_timing(workdir / "study" / f"trial_{trial.user_attrs['slot']}")
        rows.append({
            "params": trial.params,
            "curve": {str(step): value for step, value in sorted(trial.intermediate_values.items())},
            "final": trial.value,
            "trained_steps": metrics.get("trained_steps"),
            "trained_tokens": metrics.get("trained_tokens"),
            "wall_seconds": round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1),
            **timing,
        })
    rows.sort(key=lambda r: [r["params"][name] for name in axes])
    table = {
        "what": "eval_loss learning curves of a grid on the demo task (SmolLM2-135M-Instruct, LoRA), "
                "every configuration trained to the end",
        "command": command_line(),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "metric": "eval_loss",
        "direction": "minimize",
        **({} if TRAINING_SEED in axes else {"training_seed": config["tuning"]["seed"]}),
        "max_steps": config["tuning"]["fixed_training_params"]["max_steps"],
        "report_every_steps": REPORT_EVERY_STEPS,
        "grid": axes,
        "default_space": {**DEFAULT_SPACE, "learning_rate": {**DEFAULT_SPACE["learning_rate"], "low": _LOW,
                                                             "high": _HIGH},
                          "warmup_steps": {"fixed": 0}},
        # What an evaluation of the validation set costs, in training steps' worth of time (the
        # median over trials): bench/replay.py --eval-cost.
        "eval_cost_steps": round(statistics.median(r["eval_seconds"] / r["step_seconds"] for r in rows
                                                   if r.get("step_seconds")), 2) if rows else None,
        "points": len(rows),
        "grid_points": config["tuning"]["n_trials"],
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"{out}: {len(rows)} of {table['grid_points']} grid points")
    return table


def command_line() -> str:
    """The command that runs this study: this one, less --export-only and paths left at their
    defaults (so that an --export-only re-write keeps the study's own command)."""
    args, kept = sys.argv[1:], []
    seeds = "--training-seeds" in args
    defaults = {"--workdir": SEEDS_WORKDIR if seeds else DEFAULT_WORKDIR, "--out": SEEDS_OUT if seeds else DEFAULT_OUT}
    while args:
        arg = args.pop(0)
        if arg in defaults and args and Path(args[0]).resolve() == defaults[arg]:
            args.pop(0)
        elif arg != "--export-only":
            kept.append(arg)
    return " ".join(["python bench/learning_curves.py", *kept])


def evaluation_timing(trial_dir: Path) -> dict:
    """{'eval_seconds': median evaluation time, 'step_seconds': training time per step} of a trial,
    from its logs/loss_curve.jsonl (the Trainer's eval_runtime at each evaluation, and its
    train_runtime, which includes them); {} if the log lacks them."""
    from snaketune.layout import TrialFiles

    try:
        lines = TrialFiles(trial_dir).loss_curve.read_text().splitlines()
    except OSError:
        return {}
    entries = [json.loads(line) for line in lines if line.strip()]
    evals = [e["eval_runtime"] for e in entries if "eval_runtime" in e]
    trained = [e for e in entries if "train_runtime" in e]
    if not evals or not trained:
        return {}
    steps = trained[-1]["step"]
    return {"eval_seconds": round(statistics.median(evals), 2),
            "step_seconds": round((trained[-1]["train_runtime"] - sum(evals)) / steps, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--gpus", type=int, default=2, help="trials side by side (one thread each on a CPU)")
    parser.add_argument("--training-seeds", type=int, nargs="+", metavar="SEED",
                        help="the default study's space once per training seed (SFTConfig.seed), another table")
    parser.add_argument("--workdir", type=Path, help=f"default: {DEFAULT_WORKDIR} ({SEEDS_WORKDIR} with --training-seeds)")
    parser.add_argument("--out", type=Path, help=f"default: {DEFAULT_OUT} ({SEEDS_OUT} with --training-seeds)")
    parser.add_argument("--export-only", action="store_true", help="write the table from the study as it is")
    args = parser.parse_args()
    axes = grid_axes(args.training_seeds)
    workdir = args.workdir or (SEEDS_WORKDIR if args.training_seeds else DEFAULT_WORKDIR)
    out = args.out or (SEEDS_OUT if args.training_seeds else DEFAULT_OUT)
    try:
        if not args.export_only:
            run(workdir, args.cores, args.gpus, axes)
    finally:
        if (workdir / "study").exists():
            export(workdir, out, axes)


if __name__ == "__main__":
    main()
