"""How long a config error takes to reach the user: `snaketune tune` (the config checked in-process
before Snakemake starts) and `snaketune check`, against the baseline of plain `snakemake
--configfile` (the check at Snakemake's parse: what `snaketune tune` did before issue 33).

Four bad configs, each the tiny study of the tests with one mistake:
- typo: a top-level key misspelt (`tunning:`), found by the schema;
- range: a tunable learning rate with low > high, found by the search space;
- columns: a question/answer CSV, found by the data check (data_check);
- library: `lr_scheduler_type: nope`, which only TRL's SFTConfig refuses (its import is the cost).
Each command runs RUNS times, the three arms in turn (paired against drift); the median wall time
is reported, and the ratio tune/snakemake. Goal (issue 33): a schema or search-space error in
<= 2 s on 2 cores; one the ML libraries find in about their import time (`import_seconds`).
Appends to bench/RESULTS.md.

    python bench/config_answer.py [--runs 5]
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


def wall(command: list[str], workdir: Path) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "workflow")}
    start = time.monotonic()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    if result.returncode == 0:
        raise SystemExit(f"{' '.join(command)} accepted a bad config:\n{result.stderr[-2000:]}")
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
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    arms = {
        "snaketune check": [sys.executable, "-m", "snaketune.cli", "check", "-c", "tune.yaml"],
        "snaketune tune": [sys.executable, "-m", "snaketune.cli", "tune", "-c", "tune.yaml"],
        "snakemake (baseline)": [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                                 "--configfile", "tune.yaml", "--cores", "2"],
    }
    rows = []
    for name, config in bad_configs(OUT).items():
        (OUT / "tune.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        for command in arms.values():  # warm-up: page cache, the fields cache of names.py
            wall(command, OUT)
        times = {arm: [] for arm in arms}
        for _ in range(args.runs):
            for arm, command in arms.items():
                times[arm].append(wall(command, OUT))
        medians = {arm: statistics.median(t) for arm, t in times.items()}
        ratio = medians["snaketune tune"] / medians["snakemake (baseline)"]
        rows.append(f"| {name} | {medians['snaketune check']:.2f} | {medians['snaketune tune']:.2f} | "
                    f"{medians['snakemake (baseline)']:.2f} | {ratio:.3f} |")
        print(rows[-1], flush=True)
    imports = import_seconds(args.runs)
    lines = ["| bad config | check (s) | tune (s) | snakemake (s) | tune / snakemake |", "|---|---|---|---|---|",
             *rows, "", f"Median of {args.runs} runs each (after one warm-up), the arms in turn. Importing "
             f"TRL's SFTConfig and PEFT alone: {imports:.2f} s."]
    print(append_results("Time to a config error: in-process check against Snakemake's parse",
                         "config_answer.py", lines))


if __name__ == "__main__":
    main()
