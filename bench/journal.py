"""Journal benchmark: ask and tell latency on the study journal, and the time to load a study.

For journals holding 100, 1,000 and 5,000 finished trials, P processes (1, 4, 16) each open the
study the way a trial job does (snaketune.storage.open_storage: JournalFileBackend +
JournalFileOpenLock) and time ask() and tell() pairs. Reports median and p99 of ask+tell per
process count, and the load time (a fresh process replaying the whole log). Appends to
bench/RESULTS.md.

    python bench/journal.py [--sizes 100 1000 5000] [--procs 1 4 16] [--rounds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from common import append_results

STUDY = "bench"


def fill(journal: str, n: int) -> None:
    """A journal with n completed trials of a 3-parameter space, written in bulk."""
    import optuna

    from snaketune.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY, storage=open_storage(journal), load_if_exists=True)
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
                     "r": optuna.distributions.CategoricalDistribution([4, 8, 16]),
                     "warmup": optuna.distributions.IntDistribution(0, 100)}
    study.add_trials([optuna.trial.create_trial(params={"lr": 1e-3, "r": 8, "warmup": i % 100},
                                                distributions=distributions, value=float(i))
                      for i in range(n)])


def worker(journal: str, rounds: int, start, queue) -> None:
    import optuna

    from snaketune.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    study = optuna.create_study(study_name=STUDY, storage=open_storage(journal), load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler())
    load = time.perf_counter() - t0
    start.wait()  # every process hammers the journal at the same time
    latencies = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        trial = study.ask()
        trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        study.tell(trial, 1.0)
        latencies.append(time.perf_counter() - t0)
    queue.put((load, latencies))


def measure(journal: str, procs: int, rounds: int) -> tuple[list[float], list[float]]:
    context = multiprocessing.get_context("spawn")
    queue, start = context.Queue(), context.Event()
    workers = [context.Process(target=worker, args=(journal, rounds, start, queue)) for _ in range(procs)]
    for w in workers:
        w.start()
    time.sleep(2 + 0.3 * procs)  # let every process import and load before the start signal
    start.set()
    results = [queue.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    return [r[0] for r in results], [lat for r in results for lat in r[1]]


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.99 * len(values))) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            journal = str(Path(tmp) / f"journal_{size}.log")
            fill(journal, size)
            for procs in args.procs:
                loads, latencies = measure(journal, procs, args.rounds)
                row = {"trials": size, "procs": procs, "median_ms": 1000 * statistics.median(latencies),
                       "p99_ms": 1000 * p99(latencies), "load_s": statistics.median(loads)}
                rows.append(row)
                print(row, flush=True)
    lines = ["ask()+tell() of one trial, timed in every process while all of them hammer one journal; "
             "load: opening the study in a fresh process (replays the whole log).\n",
             "| trials in journal | processes | ask+tell median (ms) | ask+tell p99 (ms) | load (s) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['trials']} | {r['procs']} | {r['median_ms']:.1f} | {r['p99_ms']:.1f} | {r['load_s']:.2f} |"
              for r in rows]
    target = [r for r in rows if r["trials"] == 1000 and r["procs"] == 16]
    if target:
        lines.append(f"\nGoal: median under 50 ms at 1,000 trials with 16 processes: "
                     f"{target[0]['median_ms']:.1f} ms ({target[0]['median_ms'] / 50:.2f}x the goal).")
    append_results("Journal latency", "journal.py", lines)


if __name__ == "__main__":
    main()
