"""A study known twice (snaketune.recovery): a journal that is missing, empty or another study's is
recognised before any job, and rebuilt from the trial folders, each of which keeps its trial's
whole record; an unfinished attempt's slot then runs again with its parameters."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from snaketune import recovery, scheduler
from snaketune import space as search_space
from snaketune import study as studies
from snaketune.check import accepted_config
from snaketune.config import ConfigError
from snaketune.layout import write_json
from snaketune.train import trial_summary
from workflow_helpers import resolved_tuning, tiny_config, write_reverse_words


def run_slot(tuning, slot: int, outcome: str):
    """What a trial job leaves for `slot`: its trial in the journal, params.json and, once told,
    metrics.json, as train.run_trial writes them (no training)."""
    study = studies.open_study(tuning, slot)
    trial, _ = scheduler.claim_trial(study, slot, tuning)
    params = search_space.suggest(trial, tuning.space)
    files = tuning.layout.trial(slot)
    files.logs.mkdir(parents=True, exist_ok=True)
    trial.set_user_attr("trial_dir", files.dir.name)
    write_json(files.params, {"trial_number": trial.number, "slot": slot, "attempt": 1, "params": params,
                              "distributions": recovery.parameter_record(trial)})
    if outcome == "unfinished":  # killed: never told
        return None
    trial.report(2.0 - slot, step=2)
    trial.report(1.5 - slot, step=4)
    trial.set_user_attr("metrics", {"eval_loss": 1.0 - slot / 10, "trained_steps": 4})
    if outcome == "complete":
        frozen = study.tell(trial, 1.0 - slot / 10)
    else:
        trial.set_user_attr("pruned_reason", "pruned at step 4")
        frozen = study.tell(trial, state=TrialState.PRUNED)
    write_json(files.metrics, trial_summary(frozen, tuning.metrics, files.dir))
    return frozen


def as_kept(trial):
    return (trial.user_attrs["slot"], trial.state, trial.params, trial.distributions, trial.values,
            trial.intermediate_values, {k: v for k, v in trial.user_attrs.items() if k != "fail_reason"})


@pytest.fixture
def ran(tmp_path):
    """A study of 4 slots: 0 and 1 complete, 2 pruned, 3 killed mid-training (RUNNING)."""
    tuning = resolved_tuning(tmp_path, n_trials=4)
    for slot, outcome in enumerate(["complete", "complete", "pruned", "unfinished"]):
        run_slot(tuning, slot, outcome)
    return tuning


def test_a_study_records_its_identity_in_the_journal_and_beside_its_trials(ran):
    known = studies.identity(ran.layout)
    study = studies.load_study(ran.output_dir)
    assert known["study_id"] == study.user_attrs[studies.STUDY_ID_ATTR] and len(known["study_id"]) == 32
    assert (known["study_name"], known["directions"], known["metric_names"]) == ("snaketune", ["minimize"], ["eval_loss"])
    assert recovery.journal_problem(ran.layout, "snaketune") is None
    record = json.loads(ran.layout.trial(0).metrics.read_text())["trial"]
    assert as_kept(recovery.trial_from_record(record)) == as_kept(study.trials[0])


@pytest.mark.parametrize("damage", ["deleted", "emptied", "swapped", "swapped, from before ids"])
def test_a_lost_journal_is_refused_before_any_job_and_rebuilt_from_the_trial_folders(ran, tmp_path, damage):
    layout = ran.layout
    original = studies.load_study(ran.output_dir)
    journal = layout.journal
    if damage == "deleted":
        journal.unlink()
    elif damage == "emptied":
        journal.write_bytes(b"")
    else:  # the journal of a study of the same name and config, run elsewhere
        (tmp_path / "elsewhere").mkdir()
        other = resolved_tuning(tmp_path / "elsewhere", output_dir=str(tmp_path / "elsewhere" / "out"), n_trials=4)
        other_study = studies.open_study(other)
        if damage.endswith("from before ids"):
            other_study.set_user_attr(studies.STUDY_ID_ATTR, None)
        journal.write_bytes(other.layout.journal.read_bytes())
    swapped = journal.read_bytes() if journal.exists() else None

    config = tiny_config(n_trials=4)
    with pytest.raises(ConfigError) as refused:
        accepted_config(config, base_dir=tmp_path)
    (problem,) = refused.value.problems
    what = {"deleted": "is missing", "emptied": "is empty", "swapped": "is another study's journal (its study id is ",
            # no id to tell it by: its trials are not the folders' ones
            "swapped, from before ids": "lacks 3 trial(s) that their folders hold told (trial_0, trial_1, trial_2): "
                                        "it is an older copy, or another study's"}
    assert problem.startswith(f"tuning.output_dir: {journal} {what[damage]}")
    assert (f"but {ran.output_dir} holds 3 finished trial(s) in their folders (trial_0, trial_1, trial_2) of study "
            f"'snaketune': a run would start the study over here") in problem
    assert f"`snaketune recover {ran.output_dir}` rebuilds the journal from the trial folders" in problem

    said = recovery.rebuild_journal(layout, "snaketune")
    assert said.startswith(f"rebuilt the journal {journal} from 4 trial folder(s) (trial_0, trial_1, trial_2, trial_3)")
    kept = sorted(ran.layout.output_dir.glob("study.journal.replaced-*"))
    assert [k.read_bytes() for k in kept] == ([swapped] if damage.startswith("swapped") else [])
    rebuilt = studies.load_study(ran.output_dir)
    assert [as_kept(t) for t in rebuilt.trials[:3]] == [as_kept(t) for t in original.trials[:3]]
    killed = rebuilt.trials[3]
    assert (killed.state, killed.params, killed.user_attrs["slot"]) == (TrialState.FAIL, original.trials[3].params, 3)
    assert rebuilt.user_attrs[studies.STUDY_ID_ATTR] == studies.identity(layout)["study_id"]
    assert rebuilt.metric_names == ["eval_loss"]
    assert accepted_config(config, base_dir=tmp_path).tuning.n_trials == 4  # accepted again

    # The killed slot runs again with its parameters; the finished ones are done.
    study = studies.open_study(ran, 3)
    trial, _ = scheduler.claim_trial(study, 3, ran)
    assert search_space.suggest(trial, ran.space) == original.trials[3].params
    assert scheduler.claim_trial(study, 2, ran)[0] is None  # pruned: finished (a complete one without its checkpoint is retrained)


def test_a_new_study_and_one_from_before_ids_are_not_refused(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    tuning = resolved_tuning(tmp_path)
    assert recovery.journal_problem(tuning.layout, "snaketune") is None  # nothing there yet
    tuning.layout.output_dir.mkdir()
    storage = studies.study_storage(tuning.layout).open()
    optuna.create_study(storage=storage, study_name="snaketune")  # a journal written before study.json
    assert recovery.journal_problem(tuning.layout, "snaketune") is None
    studies.open_study(tuning)  # given an id now, in both places
    assert studies.identity(tuning.layout)["study_id"] == studies.load_study(tuning.output_dir).user_attrs[
        studies.STUDY_ID_ATTR]


def test_an_older_copy_of_the_journal_is_refused_and_one_that_lost_only_its_id_is_taken(ran, tmp_path):
    layout = ran.layout
    journal = layout.journal
    lines = journal.read_bytes().split(b"\n")
    # The same study's journal as it was before slot 2's trial began: a backup restored over it.
    # (One that has the trial, RUNNING, is the torn-tell case: the next run tells it again.)
    created = [n for n, line in enumerate(lines) if line and json.loads(line)["op_code"] == 4]
    whole = journal.read_bytes()
    journal.write_bytes(b"\n".join(lines[:created[2]]) + b"\n")
    problem = recovery.journal_problem(layout, "snaketune")
    assert problem.startswith(f"{journal} lacks 1 trial(s) that their folders hold told (trial_2): it is an older copy")
    # The whole journal, less the record of its id (moved aside by recover, say): the same trials, so taken.
    journal.write_bytes(b"\n".join(line for line in whole.split(b"\n") if studies.STUDY_ID_ATTR.encode() not in line))
    assert recovery.journal_problem(layout, "snaketune") is None


def test_a_renamed_study_name_is_left_to_the_definition_check(ran, tmp_path):
    assert recovery.journal_problem(ran.layout, "renamed") is None
    with pytest.raises(ConfigError, match="set study_name back to 'snaketune'"):
        accepted_config(tiny_config(n_trials=4, study_name="renamed"), base_dir=tmp_path)


def test_a_rebuilt_journal_keeps_every_trial_number_and_the_definition(ran, tmp_path):
    layout = ran.layout
    original = studies.load_study(ran.output_dir)
    # Slot 1 ran again (its first attempt failed): its folder holds only the second attempt.
    study = studies.open_study(ran, 1)
    retry, _ = scheduler.claim_trial(study, 0, ran)  # slot 0 has no checkpoint: retrained
    search_space.suggest(retry, ran.space)
    retry.set_user_attr("metrics", {"eval_loss": 0.5})
    frozen = study.tell(retry, 0.5)
    write_json(layout.trial(0).metrics, trial_summary(frozen, ran.metrics, layout.trial(0).dir))
    definition = studies.load_study(ran.output_dir).user_attrs[studies.DEFINITION_ATTR]
    assert studies.identity(layout)["definition"] == definition
    layout.journal.unlink()
    recovery.rebuild_journal(layout, "snaketune")
    rebuilt = studies.load_study(ran.output_dir)
    assert [t.number for t in rebuilt.trials] == list(range(5))
    assert rebuilt.trials[0].user_attrs == {"slot": 0, "attempt": 1,  # named by its retry (retry_of)
                                            "lost": "an earlier attempt that no trial folder holds (snaketune recover)"}
    assert [t.user_attrs["slot"] for t in studies.latest_attempts(rebuilt)] == [0, 1, 2, 3]
    assert rebuilt.trials[4].user_attrs["retry_of"] == 0 and rebuilt.trials[4].values == [0.5]
    assert [t.params for t in rebuilt.trials[1:4]] == [t.params for t in original.trials[1:4]]
    assert rebuilt.user_attrs[studies.DEFINITION_ATTR] == definition
    assert recovery.journal_problem(layout, "snaketune") is None
