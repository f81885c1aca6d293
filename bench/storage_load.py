"""Storage load test: many trial processes claiming, reporting and telling at once, on the file
journal and on PostgreSQL in the same run (issue 36).

P processes (64) start together; each runs S slots (4) the way a trial job does: open the study
(`study.open_study`) and claim its slot (`scheduler.claim_trial`: the claim lock, the sampler, a new
RUNNING trial), report R intermediate values (`trial.report`), and tell a cheap objective
(`study.tell`; no training). Timed per slot: claim (open + claim) and tell; throughput is slots
told per second of the whole run. Then checked: every slot claimed exactly once, and every tell a
process made is in the study (COMPLETE, its value). Last, the time to open a study of N (5,000)
finished trials in a fresh process (load_study + get_trials), on each storage.

The PostgreSQL server is Debian's, started by tests/postgres_server.py on this machine (fsync off,
as in the tests: a real cluster's commits are slower by its disk). Processes are forked after the
imports, so the numbers are the storage's, not Python's start-up. Appends to bench/RESULTS.md.

    python bench/storage_load.py [--processes 64] [--slots 4] [--reports 3] [--open-trials 5000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, append_results, machine

sys.path.insert(0, str(REPO / "tests"))
import postgres_server  # noqa: E402
from workflow_helpers import resolved_tuning  # noqa: E402

from snaketune import scheduler  # noqa: E402
from snaketune import space as search_space  # noqa: E402
from snaketune.study import load_study, open_study  # noqa: E402


def worker(tuning, slots: list[int], reports: int, start, queue) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start.wait()
    rows = []
    for slot in slots:
        t0 = time.perf_counter()
        study = open_study(tuning, slot)
        trial, _ = scheduler.claim_trial(study, slot, tuning)
        params = search_space.suggest(trial, tuning.space)
        claimed = time.perf_counter()
        value = float(params["learning_rate"]) * 1000 + slot
        for step in range(1, reports + 1):
            trial.report(value + 1 / step, step)
        t1 = time.perf_counter()
        study.tell(trial, value)
        rows.append({"slot": slot, "number": trial.number, "value": value, "claim": claimed - t0,
                     "tell": time.perf_counter() - t1, "done": time.time()})
    queue.put(rows)


def run(tuning, processes: int, slots: int, reports: int) -> dict:
    context = multiprocessing.get_context("fork")  # after the imports: the storage's time, not Python's
    queue, start = context.Queue(), context.Event()
    workers = [context.Process(target=worker, args=(tuning, list(range(p, processes * slots, processes)), reports,
                                                       start, queue)) for p in range(processes)]
    for w in workers:
        w.start()
    time.sleep(2)
    began = time.time()
    start.set()
    rows = [row for _ in workers for row in queue.get(timeout=1800)]
    for w in workers:
        w.join()
    wall = max(r["done"] for r in rows) - began
    study = load_study(tuning.output_dir, tuning.study_name)
    trials = study.get_trials(deepcopy=False)
    by_slot = {}
    for trial in trials:
        by_slot.setdefault(trial.user_attrs["slot"], []).append(trial)
    twice = sorted(slot for slot, found in by_slot.items() if len(found) > 1)
    told = {t.number: t for t in trials}
    lost = [r for r in rows if r["number"] not in told or told[r["number"]].state.name != "COMPLETE"
            or told[r["number"]].value != r["value"] or len(told[r["number"]].intermediate_values) != reports]
    claims, tells = [r["claim"] for r in rows], [r["tell"] for r in rows]
    return {"slots": len(rows), "claimed_twice": len(twice), "missing_slots": processes * slots - len(by_slot),
            "lost_tells": len(lost), "claim_p50": statistics.median(claims), "claim_p99": p99(claims),
            "tell_p50": statistics.median(tells), "tell_p99": p99(tells), "throughput": len(rows) / wall}


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.99 * len(values))) - 1)]


OPEN = """
import sys, time
sys.path.insert(0, {workflow!r})
from snaketune.study import load_study
t0 = time.perf_counter()
study = load_study({output_dir!r})
trials = study.get_trials(deepcopy=False)
assert len(trials) == {n}, len(trials)
print(time.perf_counter() - t0)
"""


def open_time(tuning, n: int) -> float:
    """Seconds a fresh process takes to open the study of `tuning` holding n finished trials
    (filled in bulk first), its imports aside; the median of 3."""
    import optuna

    study = open_study(tuning, 0)
    distribution = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    study.add_trials([optuna.trial.create_trial(params={"learning_rate": 1e-3}, distributions={
        "learning_rate": distribution}, value=float(i), user_attrs={"slot": i}) for i in range(n)])
    code = OPEN.format(workflow=str(REPO / "workflow"), output_dir=tuning.output_dir, n=n)
    times = [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                  text=True).stdout.split()[-1]) for _ in range(3)]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=64)
    parser.add_argument("--slots", type=int, default=4, help="slots per process")
    parser.add_argument("--reports", type=int, default=3, help="intermediate values per trial")
    parser.add_argument("--open-trials", type=int, default=5000)
    args = parser.parse_args()
    server = postgres_server.PostgresServer(max_connections=args.processes * 2 + 20)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("journal", "postgresql"):
            work = Path(tmp) / name
            work.mkdir()
            storage = server.new_database(f"load_{name}") if name == "postgresql" else None
            tuning = resolved_tuning(work, storage=storage, n_trials=args.processes * args.slots)
            results[name] = run(tuning, args.processes, args.slots, args.reports)
            opened = resolved_tuning(work, storage=server.new_database(f"open_{name}") if storage else None,
                                     n_trials=1, output_dir="open_study")
            results[name]["open_s"] = open_time(opened, args.open_trials)
            print(name, results[name], flush=True)
    server.stop()
    journal, database = results["journal"], results["postgresql"]
    lines = [f"{args.processes} processes side by side, {args.slots} slots each ({args.processes * args.slots} "
             f"trials), {args.reports} intermediate values per trial, a cheap objective (no training); claim = "
             "open_study + claim_trial (the claim lock, the sampler, the new trial), tell = study.tell. Open: a "
             f"fresh process loading a study of {args.open_trials} finished trials (imports aside), median of 3.\n",
             "| storage | claim p50 (ms) | claim p99 (ms) | tell p50 (ms) | tell p99 (ms) | trials/s | "
             "claimed twice | tells lost | open (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {1000 * r['claim_p50']:.0f} | {1000 * r['claim_p99']:.0f} | {1000 * r['tell_p50']:.0f} "
                     f"| {1000 * r['tell_p99']:.0f} | {r['throughput']:.1f} | {r['claimed_twice']} | "
                     f"{r['lost_tells'] + r['missing_slots']} | {r['open_s']:.2f} |")
    lines.append(f"\nRatios, PostgreSQL / journal: claim p99 {database['claim_p99'] / journal['claim_p99']:.2f}, "
                 f"tell p99 {database['tell_p99'] / journal['tell_p99']:.2f}, throughput "
                 f"{database['throughput'] / journal['throughput']:.2f}, open {database['open_s'] / journal['open_s']:.2f}. "
                 f"Goal: PostgreSQL claim p99 under 1 s at {args.processes} claimers: "
                 f"{database['claim_p99']:.2f} s ({database['claim_p99']:.2f}x the goal).")
    append_results("Storage load (journal and PostgreSQL)", "storage_load.py", lines)
    print(machine())


if __name__ == "__main__":
    main()
