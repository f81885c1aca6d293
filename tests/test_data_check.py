"""snaketune.data_check: a local data file prepare_data would refuse is refused at parse time, by
file, line and column, with the renames that make an unknown format a known one; the same rules
as prepare_data (every wrong-type case of test_data is asked of both)."""

from __future__ import annotations


import pytest

from snaketune import data_check
from snaketune.data import DataParams
from test_data import entry, load_error, turn, write_lines
from test_data import test_a_value_of_the_wrong_type_is_refused_by_split_file_row_and_column as wrong_types
from workflow_helpers import run_cli, tiny_config, write_config

PLACE = "data.train.datasets[0].dataset_name"


def problems(path, split="train"):
    return data_check.file_problems(DataParams(train=[entry(path, split)], validation=[]))


@pytest.mark.parametrize("rows,problem", wrong_types.pytestmark[0].args[1])
def test_a_wrong_type_is_refused_at_parse_time_as_prepare_data_refuses_it(tmp_path, rows, problem):
    path = write_lines(tmp_path / "rows.jsonl", rows)
    assert problems(path) == [f"{PLACE}: {path} {problem}"]
    assert load_error(path) == f"data.train: {path} {problem}"  # the same words, later


@pytest.mark.parametrize("header,hint", [
    ("question,answer", "rename question→prompt, answer→completion (prompt/completion rows)"),
    ("instruction,input,response", "rename response→output (Alpaca rows)"),
    ("query,response", "rename query→prompt, response→completion (prompt/completion rows)"),
    ("content", "rename content→text (plain-text rows)"),
])
def test_columns_of_no_format_are_refused_with_the_renames_that_make_one(tmp_path, header, hint):
    path = tmp_path / "rows.csv"
    width = len(header.split(","))
    path.write_text(header + "\n" + ",".join(["What is 2+2?", "4", "x"][:width]) + "\n")
    (found,) = problems(path)
    assert found.startswith(f"{PLACE}: {path} has columns {header.replace(',', ', ')}, which are no row format")
    assert hint in found


def test_conversations_rows_are_told_to_be_messages(tmp_path):
    path = write_lines(tmp_path / "chat.jsonl", [{"conversations": [turn("user", "hi"), turn("assistant", "yo")]}])
    assert "rename conversations→messages (chat rows)" in problems(path)[0]


def test_an_empty_csv_cell_is_named_by_line_and_column(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('prompt,completion\nWhat is 2+2?,4\n"Capital of\nFrance?",\nx,y\n')
    assert problems(path) == [f"{PLACE}: {path} line 3 (row 1, counting from 0), column 'completion' is an "
                              "empty cell; expected text (a string; a number is taken as its text)"]


def test_only_the_rows_the_split_selects_are_judged(tmp_path):
    rows = [{"messages": [turn("user", "hi"), turn("assistant", "yo")]}] * 3
    path = write_lines(tmp_path / "role.jsonl", rows + [{"messages": [turn("robot", "hi")]}])
    assert problems(path, "train[:3]") == []
    assert "line 4 (row 3" in problems(path, "train[50%:]")[0]


def test_of_a_large_file_the_first_rows_are_judged(tmp_path, monkeypatch):
    rows = [{"prompt": "a", "completion": "b"}] * 5
    path = write_lines(tmp_path / "big.jsonl", rows + [{"prompt": "a", "completion": None}])
    monkeypatch.setattr(data_check, "SMALL_FILE_BYTES", 10)
    monkeypatch.setattr(data_check, "FIRST_ROWS", 5)
    assert problems(path) == []  # row 5 is prepare_data's to find
    monkeypatch.setattr(data_check, "FIRST_ROWS", 6)
    assert "line 6 (row 5" in problems(path)[0]


@pytest.mark.workflow
def test_the_cli_refuses_a_question_answer_csv_in_a_second_naming_the_renames(tmp_path):
    (tmp_path / "qa.csv").write_text("question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(20)))
    write_config(tmp_path, tiny_config("qa.csv"))
    result = run_cli(tmp_path, "tune", "-c", "tune.yaml", check=False)
    assert result.returncode == 1
    assert "data.train.datasets[0].dataset_name" in result.stderr
    assert "rename question→prompt, answer→completion" in result.stderr
    assert "snaketune: snakemake" not in result.stderr and not (tmp_path / "tuning_output").exists()


@pytest.mark.parametrize("turns,hint", [
    ([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
     "these are ShareGPT turns: rename each turn's from→role, value→content and its role values "
     "human→user, gpt→assistant"),
    ([{"role": "human", "content": "hi"}, {"role": "gpt", "content": "yo"}],
     "these are ShareGPT roles: write human→user, gpt→assistant"),
])
def test_sharegpt_turns_are_named_with_the_renames(tmp_path, turns, hint):
    path = write_lines(tmp_path / "chat.jsonl", [{"messages": turns}])
    (found,) = problems(path)
    assert "line 1 (row 0, counting from 0), column 'messages': turn 0 'role'" in found and hint in found


def test_a_split_that_selects_no_row_is_refused_saying_what_to_do(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("prompt,completion\nWhat is 2+2?,4\n")
    assert problems(path, "train[75%:]") == [
        f"{PLACE}: {path} has 1 row(s), and split 'train[75%:]' selects none of them: add rows, or give "
        "this split a file of its own (split: 'train')"]
    assert problems(path, "train[:75%]") == []


def test_a_spreadsheets_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffprompt,completion\r\nWhat is 2+2?,4\r\nCapital of France?,Paris\r\n".encode())
    assert problems(path) == []
    assert load_rows_count(path) == 2  # and `datasets` reads it so too


def load_rows_count(path) -> int:
    from snaketune.data import load_rows

    return len(load_rows([entry(path)], "train"))
