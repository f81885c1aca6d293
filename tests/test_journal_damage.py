"""A line in the journal that is not a record, anywhere in it: every reader names it by line and
byte offset and says what to do, with no traceback; `snaketune recover` moves it aside (kept) when
no later record depends on it, and refuses, changing nothing, when one does."""

from __future__ import annotations

import json

import pytest

from snaketune.cli import main
from snaketune.layout import StudyLayout
from snaketune.storage import JournalDamaged, bad_records
from snaketune.study import load_study
from workflow_helpers import make_journal_with_every_state

GARBAGE = {
    "text": b"this line was written by something else\n",
    "bytes": bytes(range(128, 256)) + b"\n",  # not UTF-8
    "json": b'{"neither": "an Optuna operation"}\n',
}


def trials_of(out):
    return [(t.number, t.state, t.params, t.values, t.intermediate_values, t.user_attrs)
            for t in load_study(out).trials]


@pytest.fixture
def study(tmp_path):
    out = tmp_path / "out"
    make_journal_with_every_state(out)
    return out


def insert(journal, at: str, garbage: bytes) -> tuple[int, int]:
    """Insert `garbage` at the start, in the middle or before the last record: (its line, its offset)."""
    lines = journal.read_bytes().splitlines(keepends=True)
    index = {"start": 0, "middle": len(lines) // 2, "before the last": len(lines) - 1}[at]
    journal.write_bytes(b"".join(lines[:index] + [garbage] + lines[index:]))
    return index + 1, sum(len(line) for line in lines[:index])


@pytest.mark.parametrize("kind", GARBAGE)
@pytest.mark.parametrize("at", ["start", "middle", "before the last"])
def test_a_bad_line_anywhere_is_named_by_every_reader_and_recover_moves_it_aside(study, capsys, at, kind):
    journal = StudyLayout(study).journal
    before = trials_of(study)
    line, offset = insert(journal, at, GARBAGE[kind])
    damaged = journal.read_bytes()

    with pytest.raises(JournalDamaged) as raised:
        load_study(study)
    message = str(raised.value)
    assert message.startswith(f"{journal}: line {line} (byte offset {offset}) is not a journal record (")
    assert f"`snaketune recover {study}` moves such lines to {study / 'study.journal.torn'} (kept)" in message
    for command in (["status", str(study)], ["best", str(study)], ["export", str(study)]):
        assert main(command) == 1, command
        err = capsys.readouterr().err
        assert err.startswith(f"snaketune: {journal}: line {line} (byte offset {offset})") and "Traceback" not in err
    assert journal.read_bytes() == damaged  # readers change nothing

    assert main(["recover", str(study)]) == 0
    assert f"moved 1 line(s) that were not journal records (line(s) {line})" in capsys.readouterr().err
    assert trials_of(study) == before
    kept = [json.loads(row) for row in (study / "study.journal.torn").read_text().splitlines()]
    assert [(k["line"], k["offset"], k["text"].encode("utf-8", "surrogateescape")) for k in kept] == [
        (line, offset, GARBAGE[kind])]
    assert main(["recover", str(study)]) == 0
    assert "reads whole and is its trial folders' own: nothing to recover" in capsys.readouterr().err


def test_a_bad_last_line_optuna_alone_would_let_through_is_refused_before_a_write(study):
    journal = StudyLayout(study).journal
    lines, size = len(journal.read_bytes().splitlines()), journal.stat().st_size
    with open(journal, "ab") as f:
        f.write(GARBAGE["text"])  # Optuna's reader skips a bad last line; an append after it would not be
    with pytest.raises(JournalDamaged, match=rf"line {lines + 1} \(byte offset {size}\) is not a journal record \(not JSON"):
        load_study(study)


def test_a_damaged_record_later_records_depend_on_is_refused_not_skipped(study, capsys):
    journal = StudyLayout(study).journal
    lines = journal.read_bytes().splitlines(keepends=True)
    creations = [n for n, line in enumerate(lines) if json.loads(line)["op_code"] == 4]  # CREATE_TRIAL
    lines[creations[2]] = b"\x00" * 40 + b"\n"  # trial 2's creation, lost to a bad disk block
    journal.write_bytes(b"".join(lines))
    damaged = journal.read_bytes()
    assert main(["recover", str(study)]) == 1
    err = capsys.readouterr().err
    assert f"line {creations[2] + 1} (byte offset" in err and "and cannot be moved aside: without it, line " in err
    assert "refers to a trial or study that no record before it creates, so it most likely held a record" in err
    assert "restore the journal from a backup, or rebuild it from the trial folders" in err
    assert journal.read_bytes() == damaged and not (study / "study.journal.torn").exists()


def test_a_journal_of_random_bytes_is_named_at_its_first_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    journal = StudyLayout(out).journal
    journal.write_bytes(bytes(range(256)) * 40)  # holds newlines (byte 10), so several lines
    assert bad_records(journal)[0]["line"] == 1
    assert main(["status", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"snaketune: {journal}: line 1 (byte offset 0) is not a journal record (" in err
    assert "Traceback" not in err


def test_recover_is_refused_while_a_run_holds_the_study(study, capsys):
    from snaketune.locks import hold_study

    held = hold_study(StudyLayout(study))
    try:
        assert main(["recover", str(study)]) == 1
        assert "is being run by another invocation" in capsys.readouterr().err
    finally:
        import os

        os.close(held)


@pytest.mark.workflow
def test_a_run_on_a_damaged_journal_is_refused_before_any_job_naming_the_line(tmp_path):
    from workflow_helpers import run_snakemake, tiny_config, write_config, write_reverse_words

    write_reverse_words(tmp_path / "data.jsonl")
    write_config(tmp_path, tiny_config())
    out = tmp_path / "tuning_output"
    make_journal_with_every_state(out)
    journal = StudyLayout(out).journal
    line, offset = insert(journal, "middle", GARBAGE["bytes"])
    refused = run_snakemake(tmp_path, check=False)
    assert refused.returncode == 1
    assert f"{journal}: line {line} (byte offset {offset}) is not a journal record (not UTF-8 text)" in refused.stderr
    assert f"`snaketune recover {out}`" in refused.stderr and "Traceback" not in refused.stderr
    assert not (out / "prepared_model").exists()  # no job ran


def test_a_lost_trial_creation_in_a_journal_two_processes_wrote_is_refused(tmp_path, capsys):
    # Two trial processes side by side (two storages: two Optuna workers). Without the first
    # trial's creation, Optuna would number the second trial 0 and give it the first's records.
    import optuna

    from snaketune.storage import open_storage

    out = tmp_path / "out"
    out.mkdir()
    journal = StudyLayout(out).journal
    optuna.create_study(study_name="s", storage=open_storage(journal))
    first = optuna.load_study(study_name="s", storage=open_storage(journal))  # a storage: a worker
    second = optuna.load_study(study_name="s", storage=open_storage(journal))
    a, b = first.ask(), second.ask()
    a.suggest_float("x", 0, 1)
    b.suggest_float("x", 0, 1)
    a.report(0.5, step=1)
    first.tell(a, 0.5)
    second.tell(b, 0.25)
    lines = journal.read_bytes().split(b"\n")
    created = [n for n, line in enumerate(lines) if line and json.loads(line)["op_code"] == 4]
    lines[created[0]] = b"garbage where the first trial's creation was"
    journal.write_bytes(b"\n".join(lines))
    damaged = journal.read_bytes()
    assert main(["recover", str(out)]) == 1
    assert "sets a value of trial id 0, which another process created" in capsys.readouterr().err
    assert journal.read_bytes() == damaged


def test_a_carriage_return_in_a_bad_line_does_not_shift_the_lines_recover_keeps(study, capsys):
    # Optuna's reader splits lines on \n only; so does recover, or it would drop a good record.
    journal = StudyLayout(study).journal
    before = trials_of(study)
    insert(journal, "middle", b"half\rof a line\n")
    insert(journal, "before the last", b'{"x": 1}\n')
    assert main(["recover", str(study)]) == 0
    assert "moved 2 line(s)" in capsys.readouterr().err
    assert trials_of(study) == before
