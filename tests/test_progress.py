"""What a run's console shows (snaketune.progress), on a journal with a trial in every state."""

from __future__ import annotations

import io
import json

from snaketune.layout import StudyLayout
from snaketune.progress import ConsoleProgress, end_line, last_progress
from snaketune.summary import MAX_LINE
from workflow_helpers import make_journal_with_every_state


def watcher(out, stream):
    return ConsoleProgress(StudyLayout(out), "snaketune", ["eval_loss"], ["minimize"], n_trials=6,
                           stream=stream, status_every=0)


def test_each_trial_start_and_end_is_one_line_and_said_once(tmp_path):
    out = tmp_path / "out"
    study = make_journal_with_every_state(out)
    stream = io.StringIO()
    progress = watcher(out, stream)
    progress.poll()
    lines = stream.getvalue().splitlines()
    lr = {t.number: f"{t.params['learning_rate']:.4g}" for t in study.trials}
    assert lines == [
        f"snaketune: trial 0 started in trial_0/: learning_rate={lr[0]}",
        "snaketune: trial 0 COMPLETE in 0s (trial_0/): eval_loss=1.5, best so far",
        f"snaketune: trial 1 started in trial_1/: learning_rate={lr[1]}",
        "snaketune: trial 1 COMPLETE in 0s (trial_1/): eval_loss=0.9, best so far",
        f"snaketune: trial 2 started in trial_2/: learning_rate={lr[2]}",
        "snaketune: trial 2 FAIL in 0s (trial_2/logs/trial.log): RuntimeError: boom",
        f"snaketune: trial 3 started in trial_3/: learning_rate={lr[3]}",
        "snaketune: trial 3 PRUNED in 0s (trial_3/): eval_loss=3 at step 1",
    ]  # trial 4 runs, but its job has not written params.json: its parameters are not all sampled
    layout = StudyLayout(out)
    layout.trial(4).params.write_text(json.dumps({"trial_number": 4, "params": study.trials[4].params}))
    progress.poll()
    progress.poll()
    assert stream.getvalue().splitlines()[len(lines):] == [
        f"snaketune: trial 4 started in trial_4/: learning_rate={lr[4]}"]
    # The running trials' table, as `snaketune status` shows it, with the count and the best.
    status = progress.status()
    assert status.splitlines()[0] == "snaketune: 4 of 6 trial(s) done, best eval_loss=0.9; running:"
    assert status.splitlines()[3].split()[:4] == ["4", "trial_4/", "4", "0.75"]


def test_a_later_run_does_not_announce_what_had_ended_before_it(tmp_path):
    out = tmp_path / "out"
    make_journal_with_every_state(out)
    stream = io.StringIO()
    progress = watcher(out, stream)
    progress.baseline()
    progress.poll()
    assert stream.getvalue() == ""


def test_a_long_failure_reason_is_cut_to_one_short_line(tmp_path):
    out = tmp_path / "out"
    study = make_journal_with_every_state(out)
    failed = study.trials[2]
    failed.user_attrs["fail_reason"] = "ValueError: " + "x" * 2000 + "\nTraceback line"
    line = end_line(failed, StudyLayout(out), ["eval_loss"])
    assert len(line) == MAX_LINE and line.endswith("...") and "\n" not in line


def test_a_prepare_steps_progress_bar_is_its_logs_last_state(tmp_path):
    log = tmp_path / "prepare_data.log"
    log.write_text("Map:   0%|          | 0/7473 [00:00<?, ? examples/s]\rMap:  40%|####      | 3000/7473 "
                   "[00:02<00:03, 1200 examples/s]")
    assert last_progress(log) == "Map: 40%|#### | 3000/7473 [00:02<00:03, 1200 examples/s]"
    assert last_progress(tmp_path / "missing.log") is None
