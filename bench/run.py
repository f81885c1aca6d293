"""The benchmark harness: every measurement of issue 7 in one command, each appended to RESULTS.md.

    python bench/run.py [--quick]

Runs, one after another (they must not share the CPU: the numbers are wall times):
- overhead.py on the tiny model and on SmolLM2-135M with trials of about 2 minutes (80 steps),
  each against the in-process loop of `oumi tune` in the same run;
- scaling.py: the same 8-trial study with 1, 2 and 4 trial slots;
- journal.py: ask/tell latency and study load time at 100, 1,000 and 5,000 trials.
pruning.py (an hour and more of SmolLM2 training) is run on its own.
`--quick` runs every part at a fraction of its size, to check the harness itself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent

FULL = [
    ["overhead.py", "--model", "tiny", "--n-trials", "3"],
    ["overhead.py", "--model", "smollm2", "--n-trials", "2", "--max-steps", "80"],
    ["scaling.py", "--slots", "1", "2", "4"],
    ["journal.py", "--sizes", "100", "1000", "5000", "--procs", "1", "4", "16"],
]
QUICK = [
    ["overhead.py", "--model", "tiny", "--n-trials", "2", "--max-steps", "5"],
    ["scaling.py", "--slots", "1", "2", "--n-trials", "2", "--max-steps", "5"],
    ["journal.py", "--sizes", "100", "--procs", "1", "4", "--rounds", "3"],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every part, small: checks the harness")
    args = parser.parse_args()
    for command in QUICK if args.quick else FULL:
        print(f"\n=== python bench/{' '.join(command)}", flush=True)
        subprocess.run([sys.executable, str(BENCH / command[0]), *command[1:]], check=True)


if __name__ == "__main__":
    main()
