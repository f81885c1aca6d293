"""How long a config error takes to reach the user: `snaketune tune` (the config checked in-process
before Snakemake starts) and `snaketune check`, against the baseline of `snaketune tune` as it was
before issue 33 (`--baseline-rev`, checked out beside: it started Snakemake, whose parse checked).

Four bad configs, each the tiny study of the tests with one mistake:
- typo: a top-level key misspelt (`tunning:`), found by the schema;
- range: a tunable learning rate with low > high, found by the search space;
- columns: a question/answer CSV, found by the data check (data_check);
- library: `lr_scheduler_type: nope`, which only TRL's SFTConfig refuses (its import is the cost).
Each command runs RUNS times, the three arms in turn (paired against drift); the median wall time
is reported, and the ratio tune/baseline. Goal (issue 33): a schema or search-space error in
<= 2 s on 2 cores; one the ML libraries find in about their import time (`import_seconds`).
Appends to bench/RESULTS.md.

    python bench/config_answer.py [--runs 5] [--baseline-rev 94e0544]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import REPO, append_results

sys.path.insert(0, str(REPO / "tests"))
from workflow_helpers import tiny_config, write_reverse_words  # noqa: E402  (the tests' tiny study)

OUT = REPO / "bench" / "out" / "config_answer"


def bad_configs(workdir: Path) -> dict[str, dict]:
    write_reverse_words(workdir / "data.jsonl")
    (workdir / "qa.csv").write_text("question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(40)))
    typo = tiny_config()
    typo["tunning"] = typo.pop("tuning")
    bad_range = tiny_config(tunable_training_params={"learning_rate": {"type": "loguniform", "low": 1e-2, "high": 1e-4}})
    library = tiny_config()
    library["tuning"]["fixed_training_params"]["lr_scheduler_type"] = "nope"
    return {"typo": typo, "range": bad_range, "columns": tiny_config("qa.csv"), "library": library}


def wall(command: list[str], workdir: Path, source: Path = REPO) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(source / "workflow")}
    start = time.monotonic()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    if result.returncode == 0:
        raise SystemExit(f"{' '.join(command)} accepted a bad config:\n{result.stderr[-2000:]}")
    shutil.rmtree(workdir / "tuning_output", ignore_errors=True)  # what a refused run left (before)
    return took


def import_seconds(runs: int) -> float:
    """The median time to import what the library checks need (TRL's SFTConfig, PEFT)."""
    command = [sys.executable, "-c", "import peft; from trl import SFTConfig"]
    times = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.monotonic() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-rev", default="94e0544", help="the commit before issue 33's in-process check")
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    baseline = OUT / "baseline-src"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline_rev],
                   check=True, capture_output=True)
    tune = [sys.executable, "-m", "snaketune.cli", "tune", "-c", "tune.yaml", "--cores", "2"]
    arms = {  # name: (command, the source it runs)
        "snaketune check": ([sys.executable, "-m", "snaketune.cli", "check", "-c", "tune.yaml"], REPO),
        "snaketune tune": (tune, REPO),
        "baseline": (tune, baseline),
    }
    rows = []
    try:
        for name, config in bad_configs(OUT).items():
            (OUT / "tune.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            for command, source in arms.values():  # warm-up: page cache, the fields cache of names.py
                wall(command, OUT, source)
            times = {arm: [] for arm in arms}
            for _ in range(args.runs):
                for arm, (command, source) in arms.items():
                    times[arm].append(wall(command, OUT, source))
            medians = {arm: statistics.median(t) for arm, t in times.items()}
            ratio = medians["snaketune tune"] / medians["baseline"]
            rows.append(f"| {name} | {medians['snaketune check']:.2f} | {medians['snaketune tune']:.2f} | "
                        f"{medians['baseline']:.2f} | {ratio:.3f} |")
            print(rows[-1], flush=True)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], capture_output=True)
    imports = import_seconds(args.runs)
    lines = ["| bad config | check (s) | tune (s) | tune before (s) | tune / before |", "|---|---|---|---|---|",
             *rows, "", f"Baseline: `snaketune tune` at {args.baseline_rev}. Median of {args.runs} runs each "
             "(after one warm-up), the arms in turn. Importing "
             f"TRL's SFTConfig and PEFT alone: {imports:.2f} s."]
    print(append_results("Time to a config error: in-process check against Snakemake's parse",
                         "config_answer.py", lines))


if __name__ == "__main__":
    main()
