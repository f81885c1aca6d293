"""Overhead per trial: what a trial costs beyond training and evaluating, against `oumi tune`'s loop.

snaketune arm: a study of N trials through the real Snakefile (`--cores 2`); a trial's overhead is
its job's wall time (Snakemake's `benchmark:` file) minus its train_runtime + eval_runtime
(imports, Snakefile parsing, model and data load, journal ask/tell, checkpoint writes).
Baseline arm, in the same run: one Python process that trains the same N configurations one
after another with Optuna's study.optimize, TRL and the same data, as `oumi tune` does; its
overhead per trial is (wall time - training - evaluation) / N, imports and data loading included.
Appends to bench/RESULTS.md.

    python bench/overhead.py [--model tiny|smollm2] [--n-trials 3] [--max-steps 40]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, TINY_MODEL, append_results, job_wall_seconds, run_snakemake

from snaketune.validate import read_default_tune_yaml

LEARNING_RATES = [3e-4, 1e-3, 3e-3, 1e-4, 2e-3, 5e-4, 7e-4, 1.5e-3]


def study_config(model: str, n_trials: int, max_steps: int) -> dict:
    config = read_default_tune_yaml(REPO)
    tuning = config["tuning"]
    tuning.update(n_trials=n_trials, output_dir="study", tunable_peft_params={}, sampler_kwargs={},
                  enqueue_trials=[{"learning_rate": lr} for lr in LEARNING_RATES[:n_trials]])
    tuning["fixed_peft_params"]["lora_r"] = 8
    tuning["fixed_training_params"]["max_steps"] = max_steps
    if model == "tiny":
        config["model"] = dict(TINY_MODEL)
    return config


def snaketune_arm(workdir: Path, config: dict) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh study: an old journal would skip the trials
    run_snakemake(workdir, config, "--until", "prepare_data")  # and the model it reads; once, not timed
    started = time.time()
    run_snakemake(workdir, config, "--until", "trial")
    wall = time.time() - started
    per_trial = trial_costs(workdir)
    n = len(per_trial)
    return {"wall_s": wall, "work_s": sum(t["work_s"] for t in per_trial) / n,
            "overhead_s": sum(t["overhead_s"] for t in per_trial) / n,
            "scheduling_s": (wall - sum(t["job_s"] for t in per_trial)) / n}


def trial_costs(workdir: Path) -> list[dict]:
    """Per trial job: its wall time (Snakemake's benchmark file), training + evaluation, the rest."""
    per_trial = []
    from snaketune.layout import StudyLayout, TrialFiles

    for trial_dir in StudyLayout(workdir / "study").find_trial_dirs():
        job = job_wall_seconds(trial_dir)
        metrics = json.loads(TrialFiles(trial_dir).metrics.read_text())["metrics"]
        work = metrics["train_runtime"] + metrics["eval_runtime"]
        per_trial.append({"job_s": job, "work_s": work, "overhead_s": job - work})
    return per_trial


BASELINE = r'''
import json, sys, time
started = time.time()
import optuna, torch
from datasets import load_from_disk
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
torch.set_num_threads(2)
args = json.loads(sys.argv[1])
data = load_from_disk(args["data"])
work = []
def objective(trial):
    lr = trial.suggest_categorical("learning_rate", args["lrs"])
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    config = SFTConfig(output_dir=args["out"] + f"/trial_{trial.number}", learning_rate=lr, report_to="none",
                       use_cpu=True, bf16=False, dataset_kwargs={"skip_prepare_dataset": True},
                       max_length=256, save_strategy="no", **args["training"])
    trainer = SFTTrainer(model=model, args=config, train_dataset=data["train"], eval_dataset=data["validation"],
                         processing_class=tokenizer, peft_config=LoraConfig(task_type="CAUSAL_LM", **args["lora"]))
    train = trainer.train().metrics
    evaluation = trainer.evaluate()
    work.append(train["train_runtime"] + evaluation["eval_runtime"])
    return evaluation["eval_loss"]
study = optuna.create_study(sampler=optuna.samplers.BruteForceSampler())
study.optimize(objective, n_trials=len(args["lrs"]))
wall = time.time() - started
print(json.dumps({"wall_s": wall, "work_s": sum(work) / len(work), "overhead_s": (wall - sum(work)) / len(work)}))
'''


def baseline_arm(workdir: Path, config: dict, n_trials: int) -> dict:
    """The in-process loop, on the model and data the snaketune arm prepared."""
    study = workdir / "study"
    from snaketune.layout import StudyLayout
    from snaketune.model import read_source

    source = read_source(StudyLayout(study).model_source)
    training = {k: v for k, v in config["tuning"]["fixed_training_params"].items() if k != "trainer_type"}
    lora = {"r": 8, "lora_alpha": config["tuning"]["fixed_peft_params"]["lora_alpha"],
            "lora_dropout": config["tuning"]["fixed_peft_params"]["lora_dropout"],
            "target_modules": config["tuning"]["fixed_peft_params"]["lora_target_modules"]}
    args = {"data": str(study / "data" / "tokenized"), "model": source["path"], "out": str(workdir / "baseline"),
            "lrs": LEARNING_RATES[:n_trials], "training": training, "lora": lora}
    result = subprocess.run([sys.executable, "-c", BASELINE, json.dumps(args)], check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--n-trials", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "overhead")
    args = parser.parse_args()
    workdir = args.workdir / args.model
    config = study_config(args.model, args.n_trials, args.max_steps)
    ours = snaketune_arm(workdir, config)
    base = baseline_arm(workdir, config, args.n_trials)
    print(json.dumps({"snaketune": ours, "baseline": base}))
    trial_s = ours["work_s"] + ours["overhead_s"]
    append_results(f"Overhead per trial ({args.model}, {args.n_trials} trials of {args.max_steps} steps)",
                   "overhead.py", [
        "| | training + evaluation per trial (s) | overhead per trial (s) | overhead / (training + evaluation) |",
        "|---|---|---|---|",
        f"| snaketune trial job | {ours['work_s']:.1f} | {ours['overhead_s']:.1f} | {ours['overhead_s'] / ours['work_s']:.2f} |",
        f"| in-process loop (`oumi tune`'s way) | {base['work_s']:.1f} | {base['overhead_s']:.1f} | "
        f"{base['overhead_s'] / base['work_s']:.2f} |",
        f"\nRatio of overheads, snaketune / in-process: {ours['overhead_s'] / max(base['overhead_s'], 1e-9):.2f}; "
        f"Snakemake's own start-up (parsing, DAG) and scheduling add {ours['scheduling_s']:.1f} s per trial on top "
        f"(study wall time minus the trial jobs, divided by {args.n_trials} trials). "
        f"A snaketune trial job took {trial_s:.0f} s; its overhead is {ours['overhead_s'] / trial_s:.1%} of it "
        f"and {ours['overhead_s'] / 120:.1%} of a 2-minute trial (goal: at most 10%).",
    ])


if __name__ == "__main__":
    main()
