"""What a run shows on its console while it runs, from Snakemake's main process.

One line when a trial starts (its number, slot folder and parameters) and one when it ends
(state, time, objective values), a line when a prepare step starts and ends, and every
`SNAKETUNE_STATUS_EVERY` seconds (default 60) while trials run, a table of the running trials
(step / max_steps, loss, ETA) in the manner of Ray Tune's status table. Snakemake's own job
blocks are kept quiet by the project's profiles (`quiet: [rules, host]`).

Everything is read from the journal and the trials' live loss curves, as `snaketune status`
reads them, so it is the same on a workstation and on SLURM (where the jobs' own output goes to
the cluster's log files, not to this console). Snakemake has no hook for "a job's trial has its
parameters" (the parameters are sampled inside the job), hence a watcher thread that polls.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from snaketune import study as studies
from snaketune.layout import StudyLayout, TrialFiles, trial_dir
from snaketune.summary import clip, fmt, fmt_seconds, running_table, shown, trial_folder

STATUS_EVERY_ENV = "SNAKETUNE_STATUS_EVERY"
# Once-per-study rules whose start and end the console says (their outputs in `_rules`).
WATCHED_RULES = ("prepare_model", "prepare_data", "baseline")


def params_text(params: dict) -> str:
    return ", ".join(f"{name}={fmt(value)}" for name, value in params.items())


def start_line(trial: FrozenTrial, layout: StudyLayout) -> str:
    """`trial 3 started in trial_2/: learning_rate=0.001, lora_r=8` (and which attempt a re-run is)."""
    attempt = trial.user_attrs.get("attempt", 1)
    again = (f" (attempt {attempt}, re-running trial {trial.user_attrs['retry_of']})"
             if attempt > 1 and "retry_of" in trial.user_attrs else "")
    if "promoted_from" in trial.user_attrs and attempt == 1:  # tuning.resume_pruned
        again += (f" (resuming paused trial {trial.user_attrs['promoted_from']} from "
                  f"{trial.user_attrs.get('paused_checkpoint') or 'step 0: its checkpoint is gone'})")
    elif "promoted_from" in trial.user_attrs:
        again += f" (carrying on paused trial {trial.user_attrs['promoted_from']})"
    return clip(f"snaketune: trial {trial.number} started in {trial_folder(trial, layout)}{again}: "
                f"{params_text(trial.params) or 'no tunable parameters'}")


def end_line(trial: FrozenTrial, layout: StudyLayout, metrics: list[str], best: bool = False) -> str:
    """`trial 3 COMPLETE in 1m12s (trial_2/): eval_loss=0.1438, best so far`; a pruned trial's
    last reported value and step; a failed trial's reason, cut to fit."""
    took = trial.duration.total_seconds() if trial.duration is not None else None
    # A failure names the trial's log (Snakemake's own error block is quiet: see the profiles).
    folder = trial_dir(trial, layout)
    failed = trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) and folder is not None
    where = f"{folder.name}/{TrialFiles(folder).log.relative_to(folder)}" if failed else trial_folder(trial, layout)
    head = f"snaketune: trial {trial.number} {trial.state.name} in {fmt_seconds(took)} ({where})"
    if trial.state == TrialState.COMPLETE:
        values = ", ".join(f"{name}={fmt(value)}" for name, value in zip(metrics, trial.values or []))
        return clip(f"{head}: {values}" + (", best so far" if best else ""))
    if trial.state == TrialState.PRUNED:
        steps = studies.step_reports(trial)
        last = f": {metrics[0]}={fmt(steps[max(steps)])} at step {max(steps)}" if steps else ""
        reason = trial.user_attrs.get("pruned_reason") or trial.user_attrs.get("fail_reason") or ""
        return clip(head + last + (f" ({reason})" if reason and not last else ""))
    reason = " ".join(str(trial.user_attrs.get("fail_reason") or "no reason recorded").split())
    return clip(f"{head}: {reason}")


def last_progress(log: Path, limit: int = 160) -> str | None:
    """The last progress bar (or line) a rule's log shows: tqdm rewrites its line with '\\r', so
    the text after the last '\\r' or newline is what a terminal would show now."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    for segment in reversed(tail.replace("\r", "\n").split("\n")):
        if segment.strip():
            return clip(" ".join(segment.split()), limit)
    return None


def status_seconds() -> float:
    """$SNAKETUNE_STATUS_EVERY (seconds between the running trials' tables), else 60."""
    try:
        return max(0.0, float(os.environ.get(STATUS_EVERY_ENV) or 60))
    except ValueError:
        print(f"snaketune: {STATUS_EVERY_ENV}={os.environ[STATUS_EVERY_ENV]!r} is not a number of "
              "seconds; showing the running trials every 60 s", file=sys.stderr)
        return 60.0


class ConsoleProgress:
    """Watches the study of `layout` (objectives `metrics`, `directions` 'minimize'/'maximize')
    and prints what changed to `stream` every `poll_seconds` (2 s), the running table every
    `status_every` seconds (default: $SNAKETUNE_STATUS_EVERY, else 60; 0 turns it off).

    Trials that had ended before `start()` are not announced again; a trial left RUNNING by an
    earlier, killed run is announced when its slot's job marks it failed (`interrupted`).
    """

    def __init__(self, layout: StudyLayout, study_name: str, metrics: list[str], directions: list[str],
                 n_trials: int | None = None, stream=None, poll_seconds: float = 2.0,
                 status_every: float | None = None):
        self.layout, self.study_name, self.metrics = layout, study_name, list(metrics)
        self.directions, self.n_trials = list(directions), n_trials
        self.stream = stream or sys.stdout
        self.poll_seconds = poll_seconds
        self.status_every = status_seconds() if status_every is None else status_every
        self.study = None
        self.started: set[int] = set()
        self.ended: set[int] = set()
        self.best_value: float | None = None
        self.rules_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._polling = threading.Lock()  # the thread's polls and stop()'s last one never overlap
        self._thread: threading.Thread | None = None
        self._last_table = time.monotonic()
        self._errors = 0

    def say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    # -- what has changed ---------------------------------------------------------------------

    def _load(self):
        if self.study is None:  # the first trial creates the study
            self.study = studies.load_study(self.layout.output_dir, self.study_name, missing_ok=True)
        return self.study

    def baseline(self) -> None:
        """Remember what has ended already (a re-run's finished trials are not news)."""
        study = self._load()
        if study is None:
            return
        for trial in studies.own_trials(study):
            if trial.state.is_finished():
                self.started.add(trial.number)
                self.ended.add(trial.number)
                self._note_best(trial)
            elif trial.state == TrialState.RUNNING:
                self.started.add(trial.number)  # left by a killed run: its end is news

    def _note_best(self, trial: FrozenTrial) -> bool:
        if trial.state != TrialState.COMPLETE or len(self.directions) != 1 or not trial.values:
            return False
        value = trial.values[0]
        better = self.best_value is None or (value > self.best_value if self.directions[0] == "maximize"
                                              else value < self.best_value)
        if better and math.isfinite(value):
            self.best_value = value
        return better

    def poll(self) -> None:
        """Print the trials that started or ended, and the prepare steps, since the last poll."""
        with self._polling:
            self._poll()

    def _poll(self) -> None:
        self._rules()
        study = self._load()
        if study is None:
            return
        for trial in studies.own_trials(study):
            if trial.number not in self.started and trial.state == TrialState.RUNNING and self._sampled(trial):
                self.started.add(trial.number)
                self.say(start_line(trial, self.layout))
            if trial.number not in self.ended and trial.state.is_finished():
                if trial.number not in self.started:  # started and ended between two polls
                    self.started.add(trial.number)
                    self.say(start_line(trial, self.layout))
                self.ended.add(trial.number)
                self.say(end_line(trial, self.layout, self.metrics, best=self._note_best(trial)))

    def _sampled(self, trial: FrozenTrial) -> bool:
        """A trial's parameters are all sampled once its job wrote params.json (train.run_trial)."""
        folder = trial_dir(trial, self.layout)
        if folder is None:
            return True
        try:
            return json.loads(TrialFiles(folder).params.read_text()).get("trial_number") == trial.number
        except (OSError, ValueError):
            return False

    def _rules(self) -> None:
        """A watched rule's start (its log appears) and end (its output appears)."""
        outputs = {"prepare_model": self.layout.model_source, "prepare_data": self.layout.data_summary,
                   "baseline": self.layout.baseline.metrics}
        for rule in WATCHED_RULES:
            log, output = self.layout.rule_log(rule), outputs[rule]
            state = self.rules_seen.get(rule)
            if state is None and log.exists() and not output.exists():
                self.rules_seen[rule] = time.time()
                self.say(f"snaketune: {rule} started (its progress: tail -f {shown(log)})")
            elif state not in (None, -1.0) and output.exists():
                self.rules_seen[rule] = -1.0
                self.say(f"snaketune: {rule} done in {fmt_seconds(time.time() - state)}")

    def status(self) -> str | None:
        """The running trials' table (and a prepare step's progress bar), or None when idle."""
        lines = []
        for rule, since in self.rules_seen.items():
            if since not in (None, -1.0):
                bar = last_progress(self.layout.rule_log(rule))
                lines.append(f"snaketune: {rule} running for {fmt_seconds(time.time() - since)}"
                             + (f": {bar}" if bar else ""))
        study = self._load()
        if study is not None:
            table = running_table(study, self.layout)
            if table:
                done = sum(1 for t in studies.latest_attempts(study) if t.state.is_finished())
                budget = f" of {self.n_trials}" if self.n_trials else ""
                best = f", best {self.metrics[0]}={fmt(self.best_value)}" if self.best_value is not None else ""
                lines.append(f"snaketune: {done}{budget} trial(s) done{best}; running:")
                lines.append(table)
        return "\n".join(lines) or None

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
                if self.status_every and time.monotonic() - self._last_table >= self.status_every:
                    self._last_table = time.monotonic()
                    with self._polling:
                        text = self.status()
                    if text:
                        self.say(text)
            except Exception as error:  # a console aid never stops a run (a journal being written
                self._errors += 1       # on a slow file system, say): say so once, try again later
                if self._errors == 1:
                    self.say(clip(f"snaketune: could not read the study for the progress lines "
                                  f"({type(error).__name__}: {error}); trying again"))

    def start(self) -> "ConsoleProgress":
        try:
            self.baseline()
        except Exception:  # an unreadable journal is the trials' to report, not the console's
            pass
        self._thread = threading.Thread(target=self._run, name="snaketune-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching, after printing what happened since the last poll."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():  # stuck reading the journal: its lines would come twice
                return
        try:
            self.poll()
        except Exception:  # the run's own end (its summary, its error) matters more
            pass
