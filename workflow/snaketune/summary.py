"""Tables a person reads in a terminal: the study's end-of-run summary and its live status.

Both read the journal only (and, for running trials, their live `logs/loss_curve.jsonl`), so they
work during a run, after it, and on a study another machine is running.
"""

from __future__ import annotations

import datetime
import math
import re
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from snaketune import study as studies
from snaketune.layout import StudyLayout, TrialFiles, read_loss_curve, read_trainer_state, trial_dir
from snaketune.study import best_trials, latest_attempts

STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL, TrialState.PRUNED,
          TrialState.WAITING)


def fmt(value) -> str:
    """A value for a person: 4 significant digits for floats, '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


_NUMBER_LIKE = re.compile(r"^(-|[-+]?[\d.]+(e[-+]?\d+)?\*?|\d+/\d+|(\d+h)?(\d+m)?(\d+s)?)$")


MAX_LINE = 300  # characters: a line a person can read in a terminal without it wrapping twice


def clip(line: str, limit: int = MAX_LINE) -> str:
    """`line` on one line (runs of whitespace, newlines too, made one space), cut to `limit`."""
    line = " ".join(line.split()) if "\n" in line else line
    return line if len(line) <= limit else line[:limit - 3] + "..."


def shown(path: Path | str) -> str:
    """A path as a person types it here: relative to the working directory when under it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def render_table(header: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    """A plain-text table: columns padded; columns of numbers (and durations) right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    numeric = [bool(rows) and all(_NUMBER_LIKE.match(r[i]) for r in rows) for i in range(len(header))]

    def line(cells):
        return indent + "  ".join(cell.rjust(w) if right else cell.ljust(w)
                                  for cell, w, right in zip(cells, widths, numeric)).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def state_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {state.name: 0 for state in STATES}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def durations(trials: list[FrozenTrial]) -> list[float]:
    return [t.duration.total_seconds() for t in trials
            if t.duration is not None and t.state == TrialState.COMPLETE]


def _trial_seconds(trial: FrozenTrial) -> float | None:
    if trial.duration is not None:
        return trial.duration.total_seconds()
    if trial.state == TrialState.RUNNING and trial.datetime_start is not None:
        return (datetime.datetime.now() - trial.datetime_start).total_seconds()
    return None


def summary_table(layout: StudyLayout, study_name: str, metrics: list[str],
                  study: optuna.Study | None = None) -> str:
    """The end-of-run summary of study `study_name` in `layout` (objectives `metrics`): counts,
    time, the best trial(s) with parameters and metrics, and one row per trial slot."""
    if study is None:
        study = studies.load_study(layout.output_dir, study_name)
    metrics = list(metrics)
    every = studies.own_trials(study)
    latest = latest_attempts(study)
    retried = len(every) - len(latest)
    resumed = sum(1 for t in latest if "promoted_from" in t.user_attrs)  # tuning.resume_pruned
    lines = [f"snaketune: study {study.study_name!r}, {len(latest)} trial(s): "
             + outcome_line(studies.outcome_counts(latest), len(studies.skipped_slots(study)))
             + (f" ({retried} earlier attempt(s) re-run)" if retried else "")
             + (f" ({resumed} resumed a paused trial from its checkpoint)" if resumed else "")]
    starts = [t.datetime_start for t in every if t.datetime_start]
    ends = [t.datetime_complete for t in every if t.datetime_complete]
    spent = durations(latest)
    if starts and ends:
        wall = (max(ends) - min(starts)).total_seconds()
        per_trial = (f"{fmt_seconds(sum(spent) / len(spent))} per completed trial "
                     f"(min {fmt_seconds(min(spent))}, max {fmt_seconds(max(spent))})") if spent else ""
        lines.append(f"  time: {fmt_seconds(wall)} from first trial start to last trial end"
                     + (f"; {per_trial}" if per_trial else ""))
    best = best_trials(study)
    best_numbers = {t.number for t in best}
    lines.append("\ntrials, best first")
    params = sorted({name for t in latest for name in t.params})
    header = ["trial", "dir", "state", *metrics, *params, "time"]
    rows = []
    for trial in ranked(study, latest):
        values = trial.values or [None] * len(metrics)
        mark = "*" if trial.number in best_numbers else ""
        state = trial.state.name + (" (infeasible)" if studies.feasible(trial) is False else "")
        rows.append([f"{trial.number}{mark}", trial_folder(trial, layout), state,
                     *(fmt(v) for v in values), *(fmt(trial.params.get(p)) for p in params),
                     fmt_seconds(_trial_seconds(trial))])
    lines.append(render_table(header, rows))
    for trial in latest:
        if trial.state == TrialState.FAIL and trial.user_attrs.get("fail_reason"):
            reason = " ".join(str(trial.user_attrs["fail_reason"]).split())[:200]
            lines.append(f"  trial {trial.number} ({trial_folder(trial, layout)}) {studies.outcome(trial)}: {reason}")
        elif studies.feasible(trial) is False:
            lines.append(f"  trial {trial.number} ({trial_folder(trial, layout)}) infeasible, never the best: "
                         f"broke {', '.join(studies.violated_constraints(trial))}")
    for trial in every:  # train.resume_point: checkpoints a resume passed over, kept aside
        for aside in trial.user_attrs.get("set_aside_checkpoints", []):
            lines.append(f"  trial {trial.number}: {aside['checkpoint']} could not be resumed ({aside['problem']}); "
                         f"set aside as {aside['moved_to']}")
    lines.append("  (* best)" if len(metrics) == 1 else "  (* on the Pareto front)")
    heading = "best trial" if len(metrics) == 1 else f"Pareto front: {len(best)} trial(s)"
    if len(best) > 1:
        lines.append(f"\n{heading}")
    for trial in best:
        title = f"best trial {trial.number}" if len(best) == 1 else f"trial {trial.number}"
        lines.append(f"\n{title} ({trial_folder(trial, layout)})" if len(best) == 1
                     else f"  {title} ({trial_folder(trial, layout)})")
        rows = [[f"objective {name}", fmt(value)] for name, value in zip(metrics, trial.values)]
        rows += [[f"param {name}", fmt(value)] for name, value in trial.params.items()]
        extra = {k: v for k, v in trial.user_attrs.get("metrics", {}).items()
                 if k not in metrics and (k.startswith("eval_") or k in ("train_loss", "train_runtime"))}
        rows += [[f"metric {name}", fmt(value)] for name, value in sorted(extra.items())]
        lines.append(render_table(["", "value"], rows, indent="    "))
    if len(metrics) == 1 and layout.best_model.exists():
        lines.append(f"  best model: {shown(layout.best_model)}")
    baseline = layout.baseline.read_metrics()  # {} without rule baseline, or before it ran
    if "error" in baseline:
        lines.append(f"  the base model could not be scored ({' '.join(str(baseline['error']).split())[:200]}); "
                     f"delete {shown(layout.baseline.dir)} to try again")
    elif baseline:
        scored = ", ".join(f"{name}={fmt(baseline[name])}" for name in metrics if name in baseline)
        rows = f", on the same {baseline['generation_rows']} rows" if "generation_rows" in baseline else ""
        answers = f" ({shown(layout.baseline.generations)})" if layout.baseline.generations.exists() else ""
        lines.append(f"  the base model, untrained{rows}: {scored}{answers}")
    lines.append(f"\nresults: {shown(layout.results_csv)}")
    lines.append(report_line(layout, study))
    return "\n".join(lines)


def report_line(layout: StudyLayout, study: optuna.Study) -> str:
    """Where the study's report is when it shows the study as it is now; else that it is out of
    date (report_out_of_date) or missing, and the command that writes it."""
    report = layout.snakemake_report
    command = f"`snaketune report {shown(layout.output_dir)}`"
    if not report.exists():
        return (f"report: plots in {shown(layout.report_dir)}/; {command} writes all of it as one page, "
                f"{shown(report)}")
    stale = report_out_of_date(layout, study)
    if stale:
        return (f"report: {shown(report)} is out of date ({stale}); {command} rewrites it "
                f"(plots: {shown(layout.report_dir)}/)")
    return f"report: {shown(report)} (plots: {shown(layout.report_dir)}/)"


def report_out_of_date(layout: StudyLayout, study: optuna.Study) -> str | None:
    """What changed after the study's `report.html` was written, in words, or None when nothing
    did (or there is no report).

    `snakemake --report` copies what it shows (trials_results.csv, the plots and pages of
    `report/`) into the page, so the page is current while it is newer than every trial's end in
    the journal (the truth about trials: a trial told since is missing from it, even before its
    run rewrites the table) and than each of those files. Modification times and the journal's
    datetimes are both this machine's clock.
    """
    try:
        written = layout.snakemake_report.stat().st_mtime
    except OSError:
        return None
    finished = sorted(t.number for t in study.get_trials(deepcopy=False)
                      if t.datetime_complete is not None and t.datetime_complete.timestamp() > written)
    if finished:
        return f"written before trial{'s' if len(finished) > 1 else ''} {', '.join(map(str, finished))} finished"

    def newer(path: Path) -> bool:
        try:
            return path.stat().st_mtime > written
        except OSError:  # not written (yet), or gone: nothing newer
            return False

    if newer(layout.results_csv):
        return f"{layout.results_csv.name} rewritten since"
    if any(newer(path) for path in layout.report_dir.glob("*")):
        return f"the plots and pages in {shown(layout.report_dir)}/ redrawn since"
    return None


# ---------------------------------------------------------------------------------------------
# Live status


def outcome_line(counts: dict[str, int], skipped: int = 0) -> str:
    """'2 completed, 1 pruned, 1 failed' and, when any, diverged, interrupted, running, skipped."""
    parts = [f"{counts['completed']} completed", f"{counts['pruned']} pruned", f"{counts['failed']} failed"]
    parts += [f"{counts[kind]} {kind}" for kind in ("diverged", "interrupted", "running") if counts[kind]]
    return ", ".join(parts + ([f"{skipped} skipped"] if skipped else []))


def running_progress(trial: FrozenTrial, layout: StudyLayout, max_steps: int | None = None) -> dict:
    """Step, loss, max_steps and ETA of a running trial of the study at `layout`, from its live
    loss curve."""
    info = {"step": None, "loss": None, "max_steps": max_steps, "eta": None}
    folder = trial_dir(trial, layout)
    if folder is None:
        return info
    files = TrialFiles(folder)
    # Every row with a loss, a NaN one included: a diverging trial shows it until it stops.
    rows = [row for row in read_loss_curve(files.loss_curve) if "loss" in row]
    try:
        updated = files.loss_curve.stat().st_mtime
    except OSError:
        updated = None
    last = rows[-1] if rows else {}
    info["step"], info["loss"] = last.get("step"), last.get("loss")
    info["max_steps"] = (last.get("max_steps") or trial.params.get("max_steps") or max_steps
                         or _max_steps_from_state(files))
    step, total = info["step"], info["max_steps"]
    if step and total and trial.datetime_start is not None and updated is not None:
        # Time per step so far (model loading included, so a slight overestimate at first).
        elapsed = updated - trial.datetime_start.timestamp()
        if elapsed > 0:
            info["eta"] = elapsed / step * max(0, total - step)
    return info


def _max_steps_from_state(files: TrialFiles) -> int | None:
    """max_steps from the newest checkpoint's trainer_state.json (written with each checkpoint)."""
    checkpoint = files.last_checkpoint()
    return read_trainer_state(checkpoint).get("max_steps") if checkpoint else None


def status_table(study: optuna.Study, layout: StudyLayout, n_trials: int | None = None,
                 max_steps: int | None = None, metrics: list[str] | None = None) -> str:
    """Counts by state, the best value so far, and each running trial's step, loss and ETA, of
    the study at `layout`."""
    latest = latest_attempts(study)
    counts = state_counts(latest)
    budget = f" of {n_trials}" if n_trials else ""
    metrics = metrics or studies.objective_names(study)
    lines = [f"study {study.study_name!r}: {len(latest)}{budget} trial(s) started",
             render_table(["done", "running", "failed", "pruned"],
                          [[str(counts["COMPLETE"]), str(counts["RUNNING"]), str(counts["FAIL"]),
                            str(counts["PRUNED"])]])]
    best = best_trials(study)
    if not best:
        lines.append("best so far: none yet (no trial has completed)")
    elif len(study.directions) == 1:
        lines.append(f"best so far: {metrics[0]}={fmt(best[0].value)} (trial {best[0].number} in "
                     f"{trial_folder(best[0], layout)}, "
                     f"{', '.join(f'{k}={fmt(v)}' for k, v in best[0].params.items())})")
    else:
        lines.append(clip(f"best so far: Pareto front of {len(best)} trial(s): "
                     + "; ".join(f"trial {t.number} ({trial_folder(t, layout)}) "
                                 + ", ".join(f"{m}={fmt(v)}" for m, v in zip(metrics, t.values))
                                 for t in best)))
    running = running_table(study, layout, max_steps)
    if running:
        lines += ["running", running]
    lines.append(report_line(layout, study))
    return "\n".join(lines)


def running_table(study: optuna.Study, layout: StudyLayout, max_steps: int | None = None) -> str | None:
    """The running trials of the study at `layout`: number, folder, step / max_steps, loss,
    elapsed time and ETA (from each one's live loss curve); None when none runs."""
    rows = []
    for trial in latest_attempts(study):
        if trial.state != TrialState.RUNNING:
            continue
        info = running_progress(trial, layout, max_steps)
        step = fmt(info["step"]) + (f"/{info['max_steps']}" if info["max_steps"] else "")
        rows.append([str(trial.number), trial_folder(trial, layout), step, fmt(info["loss"]),
                     fmt_seconds(_trial_seconds(trial)), fmt_seconds(info["eta"])])
    return render_table(["trial", "dir", "step", "loss", "elapsed", "eta"], rows) if rows else None


def trial_folder(trial: FrozenTrial, layout: StudyLayout | None = None) -> str:
    """The trial's folder as a person finds it under output_dir: `trial_2/` (without `layout`,
    as the trial recorded it)."""
    folder = trial_dir(trial, layout)
    return f"{folder.name}/" if folder is not None else "-"


_STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.RUNNING: 1, TrialState.PRUNED: 2, TrialState.FAIL: 3}


def ranked(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """`trials` of `study`, best first: the best trial (or the Pareto front, as Optuna finds it),
    then the other completed ones by their first objective in its direction (infeasible ones,
    tuning.constraints, after the feasible), then running,
    pruned (by the last value they reported) and failed ones; ties by trial number."""
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    front = {t.number for t in best_trials(study)}

    def key(trial: FrozenTrial):
        value = None
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and trial.values:
            # A pruned trial's is the value it reported last (Optuna's tell): at its last training
            # step, or, pruned while generating, its mean over the rows it answered.
            value = trial.values[0]
        finite = value is not None and math.isfinite(value)
        return (_STATE_ORDER.get(trial.state, 4), trial.number not in front, studies.feasible(trial) is False,
                sign * value if finite else math.inf, trial.number)

    return sorted(trials, key=key)


def print_summary(layout: StudyLayout, study_name: str, metrics: list[str], stored_in: str | None = None) -> None:
    """The closing lines of a run (Snakemake's onsuccess): the summary table, the best trial(s)
    and where the results and the report are. Prints nothing before rule aggregate has written
    the best record. `stored_in`: where a storage plugin stored the study's files (its
    --default-storage-prefix), as they are not in `layout` then; the table is the database's."""
    if stored_in or layout.best_record(len(metrics)).exists():
        print("\n" + summary_table(layout, study_name, metrics), flush=True)
    if stored_in:
        print(f"snaketune: the jobs' files (trials_results.csv, best_trial(s).json, best_model/, report/, "
              f"trial_*/) were stored by the storage plugin under {stored_in}, not in {shown(layout.output_dir)}",
              flush=True)


# The once-per-study steps before the first trial, in order: (what marks one done, what it does).
PREPARING_STEPS = (
    ("model_source", "prepare_model", "preparing the model (converting and saving it once for every trial)"),
    ("data_summary", "prepare_data", "preparing the data (reading and tokenizing the rows once)"),
    ("preflight_record", "preflight", "the preflight (building and stepping each edge of the search space)"),
)


def preparing_status(layout: StudyLayout, running: bool) -> str:
    """What a study without a journal yet is doing: the first of its preparing steps (PREPARING_STEPS)
    whose output is missing, and whether a run is on it (`running`: the run lock or a `snaketune
    tune`'s hold on tune.merged.yaml is held, study.run_holder / launch_alive). For
    `snaketune status` before the first trial has asked the journal for its parameters."""
    for attribute, rule, what in PREPARING_STEPS:
        if not getattr(layout, attribute).exists():
            break
    else:
        rule, what = "trial", "starting the first trial"
    log = layout.rule_log(rule) if rule != "trial" else None
    if running:
        return (f"study in {shown(layout.output_dir)}: no trial yet; {what} (rule {rule})"
                + (f"; its log: {shown(log)}" if log is not None and log.exists() else ""))
    return (f"study in {shown(layout.output_dir)}: no trial yet, and no run is on it: the last run stopped "
            f"at {what} (rule {rule})" + (f"; see {shown(log)}" if log is not None and log.exists() else "")
            + "; run `snaketune tune -c <your tune.yaml>` again to go on")


def dry_run_summary(layout: StudyLayout, n_trials: int, study_name: str) -> str:
    """What a run would do with each of the `n_trials` slots, told from the trial folders and the
    journal (read-only), for the end of `snaketune tune --dry-run`: 'of N slot(s): F finished
    (kept), R to resume from a checkpoint, A to run again with their parameters, S skipped, W new'.
    A slot's fate is decided when its job claims it (scheduler.claim_trial); this is what that claim
    will find, as of now."""
    study = studies.load_study(layout.output_dir, study_name, missing_ok=True)
    by_slot = {t.user_attrs["slot"]: t for t in latest_attempts(study) if "slot" in t.user_attrs} if study else {}
    skipped = studies.skipped_slots(study) if study else {}
    groups: dict[str, list[str]] = {"finished (kept)": [], "to resume from their last checkpoint": [],
                                    "to run again with their parameters": [], "skipped": [], "new": []}
    for slot in range(n_trials):
        files = layout.trial(slot)
        trial = by_slot.get(slot)
        checkpoint = files.last_checkpoint() if trial is not None else None
        if files.metrics.exists():
            groups["finished (kept)"].append(f"trial_{slot}")
        elif slot in skipped:
            groups["skipped"].append(f"trial_{slot} ({skipped[slot]})")
        elif checkpoint:
            groups["to resume from their last checkpoint"].append(f"trial_{slot} ({Path(checkpoint).name})")
        elif trial is not None:
            groups["to run again with their parameters"].append(f"trial_{slot} (trial {trial.number}, {trial.state.name})")
        else:
            groups["new"].append(f"trial_{slot}")
    counts = ", ".join(f"{len(slots)} {what}" for what, slots in groups.items() if slots)
    lines = [f"snaketune: of {n_trials} trial slot(s) in {shown(layout.output_dir)}: {counts}"]
    for what, slots in groups.items():
        if slots and what != "finished (kept)" and what != "new":
            lines.append(f"  {what}: {', '.join(slots)}")
    return "\n".join(lines)
