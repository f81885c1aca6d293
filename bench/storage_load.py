"""Storage load test: many trial processes claiming, reporting and telling at once, on the file
journal and on PostgreSQL in the same run (issue 36).

P processes (8, then 64) start together; each runs S slots (4) the way a trial job does: open the study
(`study.open_study`) and claim its slot (`scheduler.claim_trial`: the claim lock, the sampler, a new
RUNNING trial), report R intermediate values (`trial.report`), and tell a cheap objective
(`study.tell`; no training). Timed per slot: claim (open + claim) and tell; throughput is slots
told per second of the whole run. Then checked: every slot claimed exactly once, and every tell a
process made is in the study (COMPLETE, its value). Last, the time to open a study of N (5,000)
finished trials in a fresh process (load_study + get_trials), on each storage.

The PostgreSQL server is Debian's, started by tests/postgres_server.py on this machine (fsync off,
as in the tests: a real cluster's commits are slower by its disk). Processes are forked after the
imports (and the database driver's, warmed up once in the parent), so the numbers are the
storage's, not Python's start-up; a trial job pays ~0.4 s more for its first database open (the
driver's import and first connection), once. Appends to bench/RESULTS.md.

    python bench/storage_load.py [--processes 8 64] [--slots 4] [--reports 3] [--open-trials 5000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, append_results

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
        opened = time.perf_counter()
        trial, _ = scheduler.claim_trial(study, slot, tuning)
        params = search_space.suggest(trial, tuning.space)
        claimed = time.perf_counter()
        value = float(params["learning_rate"]) * 1000 + slot
        for step in range(1, reports + 1):
            trial.report(value + 1 / step, step)
        t1 = time.perf_counter()
        study.tell(trial, value)
        rows.append({"slot": slot, "number": trial.number, "value": value, "claim": claimed - t0, "open": opened - t0,
                     "tell": time.perf_counter() - t1, "done": time.time()})
        backend = getattr(study._storage, "_backend", None)  # a trial job's process ends here: its connections close
        if hasattr(backend, "engine"):
            backend.engine.dispose()
    queue.put(rows)


CREATE = """
import json, sys
sys.path.insert(0, {workflow!r}); sys.path.insert(0, {tests!r})
from workflow_helpers import resolved_tuning
from snaketune.study import open_study
open_study(resolved_tuning(__import__("pathlib").Path({work!r}), storage={storage!r}, n_trials={n}))
"""


def run(tuning, processes: int, slots: int, reports: int) -> dict:
    # The study is made first, in a process of its own (its first open writes its id, definition and
    # clock: once a study, under the claim lock), so that what is timed is claims, and no database
    # connection is inherited by the workers.
    work = Path(tuning.output_dir).parent
    subprocess.run([sys.executable, "-c", CREATE.format(workflow=str(REPO / "workflow"), tests=str(REPO / "tests"),
                                                        work=str(work), storage=tuning.storage, n=tuning.n_trials)],
                   check=True, capture_output=True)
    context = multiprocessing.get_context("fork")  # after the imports: the storage's time, not Python's
    queue, start = context.Queue(), context.Event()
    client_before, server_before = _children_cpu(), server_cpu(tuning.storage)
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
    client = (_children_cpu() - client_before) / len(rows)
    server = (server_cpu(tuning.storage) - server_before) / len(rows) if tuning.storage else 0.0
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
    return {"client_cpu": client, "server_cpu": server, "open_p50": statistics.median(r["open"] for r in rows),
            "slots": len(rows), "claimed_twice": len(twice), "missing_slots": processes * slots - len(by_slot),
            "lost_tells": len(lost), "claim_p50": statistics.median(claims), "claim_p99": p99(claims),
            "tell_p50": statistics.median(tells), "tell_p99": p99(tells), "throughput": len(rows) / wall}


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's ended children: the workers, once joined."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


SERVER: dict = {}


def server_cpu(storage: str | None) -> float:
    """CPU seconds the PostgreSQL server has used so far: its postmaster's own and that of its
    ended children (a backend per connection, each ended when its client closed), from /proc."""
    if not storage:
        return 0.0
    pid = int((SERVER["server"].root / "data" / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    live = 0
    for child in Path("/proc").iterdir():  # backends still connected
        try:
            stat = (child / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if stat[1] == str(pid):
            live += int(stat[11]) + int(stat[12])
    return (ticks + live) / os.sysconf("SC_CLK_TCK")


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


def warm_up(url: str) -> None:
    """Import the driver, SQLAlchemy's dialect and alembic once, here, before the workers fork (a
    trial job pays this once too); no connection is left open for a child to inherit."""
    from snaketune.database import DatabaseStorage

    DatabaseStorage(url).open().engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--slots", type=int, default=4, help="slots per process")
    parser.add_argument("--reports", type=int, default=3, help="intermediate values per trial")
    parser.add_argument("--open-trials", type=int, default=5000)
    args = parser.parse_args()
    server = postgres_server.PostgresServer(max_connections=max(args.processes) * 2 + 20)
    SERVER["server"] = server
    rows, opened = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        warm_up(server.new_database("warm_up"))
        for processes in args.processes:
            for name in ("journal", "postgresql"):
                work = Path(tmp) / f"{name}_{processes}"
                work.mkdir()
                storage = server.new_database(f"load_{name}_{processes}") if name == "postgresql" else None
                tuning = resolved_tuning(work, storage=storage, n_trials=processes * args.slots)
                result = {"storage": name, "processes": processes, **run(tuning, processes, args.slots, args.reports)}
                rows.append(result)
                print(result, flush=True)
        for name in ("journal", "postgresql"):
            work = Path(tmp) / f"open_{name}"
            work.mkdir()
            storage = server.new_database("open_study") if name == "postgresql" else None
            opened[name] = open_time(resolved_tuning(work, storage=storage, n_trials=1), args.open_trials)
            print(name, "open", opened[name], flush=True)
    server.stop()
    lines = [f"P processes side by side, {args.slots} slots each, {args.reports} intermediate values per trial, a "
             "cheap objective (no training); claim = open_study + claim_trial (the sampler, the new trial; no "
             "budget, so no claim lock), tell = study.tell. Checked: no slot claimed twice, every tell in the study. "
             "CPU a trial: the workers' CPU time (clients) and the PostgreSQL server's (its backends'), over the trials; "
             "both share this machine's cores.\n",
             "| storage | processes | claim p50 (ms) | of which open_study | claim p99 (ms) | tell p50 (ms) | "
             "tell p99 (ms) | trials/s | CPU a trial, clients (ms) | CPU a trial, server (ms) | claimed twice | "
             "tells lost |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['storage']} | {r['processes']} | {1000 * r['claim_p50']:.0f} | {1000 * r['open_p50']:.0f} | "
                     f"{1000 * r['claim_p99']:.0f} | "
                     f"{1000 * r['tell_p50']:.0f} | {1000 * r['tell_p99']:.0f} | {r['throughput']:.1f} | "
                     f"{1000 * r['client_cpu']:.0f} | {1000 * r['server_cpu']:.0f} | "
                     f"{r['claimed_twice']} | {r['lost_tells'] + r['missing_slots']} |")
    lines.append(f"\nOpening a study of {args.open_trials} finished trials in a fresh process (load_study + "
                 f"get_trials, imports aside, median of 3): journal {opened['journal']:.2f} s, PostgreSQL "
                 f"{opened['postgresql']:.2f} s (ratio {opened['postgresql'] / opened['journal']:.2f}).")
    most = max(args.processes)
    by = {(r["storage"], r["processes"]): r for r in rows}
    journal, database = by[("journal", most)], by[("postgresql", most)]
    lines.append(f"\nRatios at {most} processes, PostgreSQL / journal: claim p99 "
                 f"{database['claim_p99'] / journal['claim_p99']:.2f}, tell p99 "
                 f"{database['tell_p99'] / journal['tell_p99']:.2f}, throughput "
                 f"{database['throughput'] / journal['throughput']:.2f}. Goal: PostgreSQL claim p99 under 1 s at "
                 f"{most} claimers: {database['claim_p99']:.2f} s ({database['claim_p99']:.2f}x the goal).")
    append_results("Storage load (journal and PostgreSQL)", "storage_load.py", lines)


if __name__ == "__main__":
    main()
