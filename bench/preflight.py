"""The preflight's cost: rule preflight's wall time as a share of one default trial's, in one run.

Arms, each a fresh study through the real Snakefile (`--cores 2`, the machine's CPU):
- default: the embedded default study (SmolLM2-135M-Instruct, LoRA, a tunable learning rate and
  LoRA rank: 4 configurations in its covering set), run until its preflight;
- six: the same model and data with six tunable parameters (learning rate, warmup, scheduler,
  LoRA rank, alpha and dropout) and a generation metric (exact_match) as the objective;
- trial: one trial of the default study (its job's wall time: imports, model load, 40 steps,
  evaluation), the baseline of the ratio.
Each job's wall time is Snakemake's `benchmark:` file of its rule. Goal (issue 32): the preflight
at most 10% of one default trial, once per invocation (a re-run or a grown study does not pay it).
The user's cache is a fresh folder, so each preflight steps its configurations (a record accepted
before would be read back in under a second: snaketune.preflight_cache). Appends to bench/RESULTS.md.

    python bench/preflight.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from common import REPO, append_results, job_wall_seconds, run_snakemake

from snaketune.validate import read_default_tune_yaml
from snaketune.layout import StudyLayout

OUT = REPO / "bench" / "out" / "preflight"


def default_config(n_trials: int = 1) -> dict:
    config = read_default_tune_yaml(REPO)
    config["tuning"].update(n_trials=n_trials, output_dir="study")
    return config


def six_parameter_config() -> dict:
    config = default_config()
    tuning = config["tuning"]
    tuning["tunable_training_params"].update(
        warmup_ratio={"type": "uniform", "low": 0.0, "high": 0.2},
        lr_scheduler_type={"type": "categorical", "choices": ["linear", "cosine"]})
    tuning["tunable_peft_params"].update(
        lora_alpha={"type": "categorical", "choices": [8, 16, 32]},
        lora_dropout={"type": "uniform", "low": 0.0, "high": 0.1})
    tuning["fixed_peft_params"].pop("lora_alpha")
    tuning["fixed_peft_params"].pop("lora_dropout")
    tuning.update(evaluation_metrics=["exact_match"], evaluation_direction=["maximize"])
    config["generation"] = {"max_new_tokens": 16, "num_samples": 16}
    return config


def preflight_seconds(workdir: Path, config: dict) -> tuple[float, int]:
    shutil.rmtree(workdir, ignore_errors=True)
    run_snakemake(workdir, config, "--until", "prepare_data")  # the model and data: once, not timed
    run_snakemake(workdir, config, "--until", "preflight")
    layout = StudyLayout(workdir / "study")
    wall = float(layout.rule_benchmark("preflight").read_text().splitlines()[1].split("\t")[0])
    return wall, len(json.loads(layout.preflight_record.read_text())["configurations"])


def main() -> None:
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="snaketune-bench-cache-")  # the jobs inherit it
    default_s, default_n = preflight_seconds(OUT / "default", default_config())
    six_s, six_n = preflight_seconds(OUT / "six", six_parameter_config())
    run_snakemake(OUT / "default", default_config(), "--until", "trial")
    trial_s = job_wall_seconds(StudyLayout(OUT / "default" / "study").trial(0).dir)
    append_results("Preflight cost against one default trial", "preflight.py", [
        "| study | configurations stepped | preflight job (s) | one default trial job (s) | ratio |",
        "|---|---|---|---|---|",
        f"| default (lr, lora_r) | {default_n} | {default_s:.1f} | {trial_s:.1f} | {default_s / trial_s:.3f} |",
        f"| six parameters, LoRA, exact_match | {six_n} | {six_s:.1f} | {trial_s:.1f} | {six_s / trial_s:.3f} |",
        "",
        "Paid once per study definition: a re-run or a grown study reuses preflight.json.",
    ])


if __name__ == "__main__":
    main()
