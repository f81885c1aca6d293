"""A study known twice: its journal, and its trial folders.

The journal is where Optuna keeps the study; each trial folder also keeps its trial's whole record
(`trial_record`: in `metrics.json` once the trial is told, its parameters and their distributions
in `params.json` from the start), and `study.json` beside them names the study they belong to (its
id, also a user attribute in the journal, its name and objectives). So a journal that is missing,
emptied, or another study's (a user's `rm`, a sync tool, a restore from the wrong backup, a copy
between clusters) is recognised before any job (`journal_problem`, asked by the config check),
rather than trusted: a run would otherwise start the study over in the same folder and overwrite
its results. `rebuild_journal` (`snaketune recover`) makes a new journal from the folders, keeping
the one it replaces.

Written by hand: Optuna keeps a study in its storage only; rebuilding one from files of our own is
what no library does.
"""

from __future__ import annotations

import datetime
import json
import os
import warnings
from pathlib import Path

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from snaketune.layout import StudyLayout
from snaketune.storage import open_storage, study_storage
from snaketune.study import (DEFINITION_ATTR, LOST_ATTR, OUTPUT_DIR_ATTR, STARTED_ATTR, STUDY_ID_ATTR, identity,
                             load_study, record_identity, skip_slot)

def trial_record(trial: FrozenTrial) -> dict:
    """All a journal holds of `trial` that the study's readers, scheduler and pruner use, as JSON:
    number, state, values, params with their distributions, intermediate values, user and system
    attributes and times. `trial_from_record` makes the trial again."""
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": trial.values,
        "params": trial.params,
        "distributions": {name: json.loads(distribution_to_json(d)) for name, d in trial.distributions.items()},
        "intermediate_values": {str(step): value for step, value in trial.intermediate_values.items()},
        "user_attrs": trial.user_attrs,
        "system_attrs": trial.system_attrs,  # the pruner's (SuccessiveHalving's completed rungs)
        "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "datetime_complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
    }


def trial_from_record(record: dict) -> FrozenTrial:
    """The trial `trial_record` wrote (its number is the one it had: Optuna numbers it anew when
    it is added to a study). An unfinished attempt's record has no times: now, for Optuna."""
    now = datetime.datetime.now()

    def when(text):
        return datetime.datetime.fromisoformat(text) if text else now

    values = record["values"]
    return FrozenTrial(
        number=record["number"], state=TrialState[record["state"]], value=None, values=values,
        datetime_start=when(record["datetime_start"]), datetime_complete=when(record["datetime_complete"]),
        params=record["params"],
        distributions={name: json_to_distribution(json.dumps(d)) for name, d in record["distributions"].items()},
        user_attrs=record["user_attrs"], system_attrs=record.get("system_attrs", {}),
        intermediate_values={int(step): value for step, value in record["intermediate_values"].items()},
        trial_id=0)


def parameter_record(trial) -> dict:
    """params.json's `distributions` (trial: an optuna Trial, its parameters suggested): with the
    parameters, what makes an unfinished attempt's trial again (`_unfinished_trial`)."""
    return {name: json.loads(distribution_to_json(d)) for name, d in trial.distributions.items()}


def folder_trials(layout: StudyLayout) -> list[tuple[int, dict]]:
    """(slot, trial record) of every trial folder that holds one: the told trial's (metrics.json),
    else an unfinished attempt's (params.json with distributions): oldest first."""
    found = []
    for folder in layout.find_trial_dirs():
        slot = int(folder.name[len("trial_"):])
        files = layout.trial(slot)
        record = files.read_metrics().get("trial") or _unfinished_trial(_read(files.params), slot)
        if record:
            found.append((slot, record))
    return sorted(found, key=lambda pair: (pair[1]["number"], pair[0]))


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _unfinished_trial(params: dict, slot: int) -> dict | None:
    # An attempt that was never told (killed, or failed with the journal lost): FAIL with its
    # parameters, so that the slot runs again with them (scheduler: a failed slot is retried).
    if "distributions" not in params or "trial_number" not in params:
        return None
    return {"number": params["trial_number"], "state": "FAIL", "values": None, "params": params["params"],
            "distributions": params["distributions"], "intermediate_values": {},
            "user_attrs": {"slot": slot, "attempt": params.get("attempt", 1), "trial_dir": f"trial_{slot}",
                           "fail_reason": "interrupted"},
            "datetime_start": None, "datetime_complete": None}


def journal_problem(layout: StudyLayout, study_name: str) -> str | None:
    """Why the journal of the study in `layout` cannot be trusted over its trial folders, or None:
    it is missing or empty, holds no study `study_name`, is another study's (its id is not
    study.json's), or lacks trials the folders hold told (restored from an older copy), while
    trial folders hold trials of the study. A config naming another study than study.json does is
    left to study.definition_conflicts (a renamed study_name). Reads, never writes."""
    known = identity(layout)
    folders = folder_trials(layout)
    if known is None and not folders:
        return None  # nothing to lose: a new study, or none of its trials has started
    if known and known.get("study_name") != study_name:
        return None
    journal = layout.journal
    what = None
    if not study_storage(layout).exists():
        what = f"{journal} is missing"
    elif journal.stat().st_size == 0:
        what = f"{journal} is empty"
    else:
        try:
            study = load_study(layout.output_dir, study_name, missing_ok=True)
        except ValueError:  # several studies and none named so: study.definition_conflicts says so
            return None
        their_id = None if study is None else study.user_attrs.get(STUDY_ID_ATTR)
        if study is None:
            what = f"{journal} holds no study {study_name!r}"
        elif known and their_id is not None and their_id != known.get("study_id"):
            what = (f"{journal} is another study's journal (its study id is {their_id}; the trials here "
                    f"are study {known.get('study_id')}'s, as {layout.identity.name} says)")
        else:  # this study's, or one with no id (from before ids, or its id's record moved aside)
            numbered = {t.number: t for t in study.get_trials(deepcopy=False)}
            lacking = [slot for slot, record in folders if record["state"] != "FAIL"
                       and (record["number"] not in numbered or numbered[record["number"]].params != record["params"])]
            if lacking:
                what = (f"{journal} lacks {len(lacking)} trial(s) that their folders hold told "
                        f"({', '.join(f'trial_{s}' for s in lacking[:5])}{', ...' if len(lacking) > 5 else ''}): "
                        "it is an older copy, or another study's")
    if what is None:
        return None
    told = [slot for slot, record in folders if record["state"] != "FAIL"]
    held = (f"{len(told)} finished trial(s) in their folders ({', '.join(f'trial_{s}' for s in told[:5])}"
            + (", ..." if len(told) > 5 else "") + ")") if told else "its trial folders"
    return (f"{what}, but {layout.output_dir} holds {held} of study "
            f"{(known or {}).get('study_name', study_name)!r}: a run would start the study over here and "
            f"overwrite its results. `snaketune recover {layout.output_dir}` rebuilds the journal from the "
            "trial folders (keeping the journal found beside it); or set a new tuning.output_dir for a new study")


def database_problem(layout: StudyLayout, study_name: str, url: str) -> str | None:
    """Why the study `study_name` in the database of `url` (tuning.storage) is not the one whose
    trials `layout` holds, or None ('yaml.path: ...'): it is missing there while the folders hold
    finished trials (a dropped or other database), or it is another study's (another output_dir
    gave it its id: a database holds many studies, one per name). Reads, never writes."""
    known = identity(layout)
    told = [slot for slot, record in folder_trials(layout) if record["state"] != "FAIL"]
    study = load_study(layout.output_dir, study_name, missing_ok=True, url=url)
    where = study_storage(layout, url).where
    if study is None:
        if not told:
            return None
        return (f"tuning.storage: {where} holds no study {study_name!r}, but {layout.output_dir} holds "
                f"{len(told)} finished trial(s) of it in their folders: a run would start the study over there "
                "and overwrite their results; point tuning.storage at the database that holds it (or restore "
                "that database from its backup), or set a new tuning.output_dir for a new study")
    their_id = study.user_attrs.get(STUDY_ID_ATTR)
    theirs = study.user_attrs.get(OUTPUT_DIR_ATTR) or "another folder"
    if their_id is not None and their_id != (known or {}).get("study_id"):
        if known is None and not told:
            return (f"tuning.study_name: {where} already holds a study named {study_name!r}, of another "
                    f"output_dir ({theirs}); a database holds many studies, one per name: give this one "
                    "its own tuning.study_name, or set tuning.output_dir to that study's folder to continue it")
        return (f"tuning.output_dir: the study {study_name!r} in {where} is another study (id {their_id}, "
                f"of {theirs}) than the one whose trials {layout.output_dir} holds (id "
                f"{(known or {}).get('study_id')}): set the tuning.storage and tuning.study_name it ran "
                "with, or a new tuning.output_dir")
    return None


def rebuild_journal(layout: StudyLayout, study_name: str, directions: list[str] | None = None,
                    metric_names: list[str] | None = None) -> str:
    """A new journal from the trial folders (`folder_trials`); call it holding the study's run
    lock. Built whole beside the journal first, then swapped in: the journal found is kept as
    `study.journal.replaced-<time>` (an empty or missing one is not kept), and a recover killed
    midway leaves the study refused as before, to be recovered again.

    The study is made again from study.json (name, objectives, id, definition; else
    `study_name`, `directions` and `metric_names`, from the config the study ran with). Each
    folder's trial is added with its number: a number no folder holds (an earlier attempt of a
    slot that ran again) becomes a FAIL trial of no slot, so that every number, and what refers to
    one (`retry_of`, `promoted_from`, metrics.json, best_trial.json), still names the same trial.
    Each keeps its parameters, values, intermediate values, user and system attributes (the
    pruner's); a slot skipped by a budget stays skipped. Returns what was done."""
    known = identity(layout) or {}
    folders = folder_trials(layout)
    journal = layout.journal
    building = journal.with_name(journal.name + ".rebuilding")
    for leftover in (building, building.with_name(building.name + ".lock")):
        leftover.unlink(missing_ok=True)
    study = optuna.create_study(storage=open_storage(building), study_name=known.get("study_name", study_name),
                                directions=known.get("directions") or directions)
    names = known.get("metric_names") or metric_names
    if names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(names))
    for attr, value in ((STUDY_ID_ATTR, known.get("study_id")), (DEFINITION_ATTR, known.get("definition"))):
        if value is not None:
            study.set_user_attr(attr, value)
    starts = [r["datetime_start"] for _, r in folders if r["datetime_start"]]
    if starts:  # the clock of tuning.timeout_minutes
        study.set_user_attr(STARTED_ATTR, datetime.datetime.fromisoformat(min(starts)).timestamp())
    # An earlier attempt a later one names (retry_of) keeps its slot and attempt.
    earlier = {r["user_attrs"]["retry_of"]: {"slot": slot, "attempt": r["user_attrs"].get("attempt", 2) - 1}
               for slot, r in folders if "retry_of" in r["user_attrs"]}
    for _, record in folders:
        while (number := len(study.get_trials(deepcopy=False))) < record["number"]:
            study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
                **earlier.get(number, {}), LOST_ATTR: "an earlier attempt that no trial folder holds (snaketune recover)"}))
        study.add_trial(trial_from_record(record))
    for folder in layout.find_trial_dirs():
        result = layout.trial(int(folder.name[len("trial_"):])).read_metrics()
        if result.get("state") == "SKIPPED":
            skip_slot(study, result["slot"], result.get("reason"))
    kept = None
    if journal.exists() and journal.stat().st_size > 0:
        kept = layout.replaced_journal(datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f"))
        os.replace(journal, kept)
    os.replace(building, journal)
    building.with_name(building.name + ".lock").unlink(missing_ok=True)
    record_identity(load_study(layout.output_dir, study.study_name), layout)
    slots = ", ".join(f"trial_{slot}" for slot, _ in folders) or "none"
    return (f"rebuilt the journal {journal} from {len(folders)} trial folder(s) ({slots})"
            + (f"; the journal found is kept as {kept}" if kept else ""))
