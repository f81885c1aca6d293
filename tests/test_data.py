"""snaketune.data: row types checked per format, every assistant turn trained, data file errors by
file and line. Each test calls the package directly on tiny files (seconds, no workflow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snaketune.data import DataParams, DatasetParams, load_rows, normalize_rows, prepare_data, tokenize_row
from snaketune.row_formats import DataError

TINY_MODEL = Path(__file__).resolve().parent / "assets" / "tiny-llama"
NUMBER_AS_TEXT = "expected text (a string; a number is taken as its text)"
ROLES = "expected one of 'system', 'user', 'assistant', 'tool'"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_MODEL))


def write_lines(path: Path, lines) -> Path:
    """A file of these lines: a dict is written as JSON, a str as it is."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def entry(path: Path, split: str = "train") -> DatasetParams:
    return DatasetParams(dataset_name=str(path), split=split, subset=None, local=True)


def load_error(path: Path, split: str = "train", role: str = "train") -> str:
    with pytest.raises(DataError) as info:
        load_rows([entry(path, split)], role)
    return str(info.value)


def turn(role: str, content):
    return {"role": role, "content": content}


def labelled_spans(tokenizer, row: dict) -> list[str]:
    """The text of each run of tokens whose label is not -100."""
    spans, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return [tokenizer.decode(span) for span in spans]


# --- 1. Row contents checked by type ------------------------------------------------------------

def test_conversational_prompt_completion_is_a_conversation_with_loss_on_the_completion(tmp_path, tokenizer):
    path = write_lines(tmp_path / "pc.jsonl", [{
        "prompt": [turn("system", "Be brief."), turn("user", "Capital of France?")],
        "completion": [turn("assistant", "Paris")],
    }])
    row = load_rows([entry(path)], "train")[0]
    assert row == {"messages": [turn("system", "Be brief."), turn("user", "Capital of France?"),
                                turn("assistant", "Paris")],
                   "loss_turns": [False, False, True], "plain_text": None}
    tokens = tokenize_row(row, tokenizer, 512)
    assert labelled_spans(tokenizer, tokens) == ["Paris<|im_end|>\n"]
    assert tokens["completion"] == "Paris"
    assert tokens["prompt"] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
                                "Capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert "[{" not in tokenizer.decode(tokens["input_ids"])  # no Python repr of the lists


def test_conversational_prompt_with_an_earlier_answer_trains_only_the_completion(tmp_path, tokenizer):
    path = write_lines(tmp_path / "pc.jsonl", [{
        "prompt": [turn("user", "1+1?"), turn("assistant", "2"), turn("user", "2+2?")],
        "completion": [turn("assistant", "4")],
    }])
    tokens = tokenize_row(load_rows([entry(path)], "train")[0], tokenizer, 512)
    assert labelled_spans(tokenizer, tokens) == ["4<|im_end|>\n"]


def test_plain_text_prompt_completion_and_numbers_are_text(tmp_path, tokenizer):
    plain = write_lines(tmp_path / "plain.jsonl", [{"prompt": "2+2?", "completion": 4}])
    row = load_rows([entry(plain)], "train")[0]
    assert row["messages"] == [turn("user", "2+2?"), turn("assistant", "4")]
    assert labelled_spans(tokenizer, tokenize_row(row, tokenizer, 512)) == ["4<|im_end|>\n"]
    # A column of 4 and 2.5 is read as floats: 4.0 is written back as "4". `input` may be absent.
    alpaca = write_lines(tmp_path / "math.jsonl", [{"instruction": "Half of 8?", "output": 4},
                                                   {"instruction": "Half of", "input": 5, "output": 2.5}])
    rows = load_rows([entry(alpaca)], "train")
    assert [r["messages"] for r in rows] == [[turn("user", "Half of 8?"), turn("assistant", "4")],
                                            [turn("user", "Half of\n\n5"), turn("assistant", "2.5")]]


@pytest.mark.parametrize("rows,problem", [
    # the brief's case: a conversational prompt/completion row whose completion content is a list
    ([{"prompt": [turn("user", "hi")], "completion": [turn("assistant", "yo")]},
      {"prompt": [turn("user", "hi")], "completion": [turn("assistant", ["y", "o"])]}],
     "line 2 (row 1, counting from 0), column 'completion': turn 0 (assistant) 'content' is a list of "
     "2 items; expected a string"),
    ([{"prompt": [turn("user", "hi")], "completion": "yo"}],
     "line 1 (row 0, counting from 0), column 'completion' is a string ('yo'), but column 'prompt' "
     "is a list of turns; expected both text or both lists of turns"),
    ([{"prompt": [turn("user", "hi")], "completion": [{"role": "assistant"}]}],
     "line 1 (row 0, counting from 0), column 'completion': turn 0 (assistant) 'content' is null (or "
     "missing); expected a string"),
    ([{"messages": [turn("user", "2+2?"), turn("assistant", 4)]}],
     "line 1 (row 0, counting from 0), column 'messages': turn 1 (assistant) 'content' is a number "
     "(4); expected a string"),
    ([{"messages": [turn("user", "hi")]}, {"messages": "hi there"}],
     "line 2 (row 1, counting from 0), column 'messages' is a string ('hi there'); expected a list of "
     'turns, each {"role": ..., "content": ...}'),
    ([{"messages": [turn("bot", "hi")]}],
     f"line 1 (row 0, counting from 0), column 'messages': turn 0 'role' is 'bot'; {ROLES}"),
    ([{"messages": [turn("user", "hi"), ["assistant", "yo"]]}],
     "line 1 (row 0, counting from 0), column 'messages': turn 1 is a list of 2 items; expected an "
     'object {"role": ..., "content": ...}'),
    ([{"instruction": "Sum?", "output": "3"}, {"instruction": "Sum?", "output": {"value": 3}}],
     f"line 2 (row 1, counting from 0), column 'output' is an object with keys 'value'; {NUMBER_AS_TEXT}"),
    ([{"instruction": "Sum?", "output": "3"}, {"instruction": "Sum?"}],
     f"line 2 (row 1, counting from 0), column 'output' is null (or missing); {NUMBER_AS_TEXT}"),
    ([{"instruction": "Sum?", "output": True}],
     f"line 1 (row 0, counting from 0), column 'output' is a boolean (true); {NUMBER_AS_TEXT}"),
    ([{"text": "a"}, {"text": ["a", "b"]}],
     f"line 2 (row 1, counting from 0), column 'text' is a list of 2 items; {NUMBER_AS_TEXT}"),
])
def test_a_value_of_the_wrong_type_is_refused_by_split_file_row_and_column(tmp_path, rows, problem):
    path = write_lines(tmp_path / "rows.jsonl", rows)
    assert load_error(path) == f"data.train: {path} {problem}"


def test_a_bad_row_is_counted_in_the_file_whatever_the_split_takes(tmp_path):
    rows = [{"messages": [turn("user", "hi"), turn("assistant", "yo")]}] * 3
    # A wrong JSON type (found reading the file) and a wrong role (found checking rows) on row 3.
    bad_type = write_lines(tmp_path / "type.jsonl", rows + [{"messages": [turn("user", 5)]}])
    bad_role = write_lines(tmp_path / "role.jsonl", rows + [{"messages": [turn("robot", "hi")]}])
    for split in ("train[2:]", "train[50%:]"):
        assert load_error(bad_type, split, "validation") == (
            f"data.validation: {bad_type} line 4 (row 3, counting from 0), column 'messages': turn 0 "
            "(user) 'content' is a number (5); expected a string")
        assert load_error(bad_role, split, "validation") == (
            f"data.validation: {bad_role} line 4 (row 3, counting from 0), column 'messages': turn 0 "
            f"'role' is 'robot'; {ROLES}")
    # Rows the split leaves out are not checked.
    assert len(load_rows([entry(bad_type, "train[:3]")], "train")) == 3
    assert len(load_rows([entry(bad_role, "train[:75%]")], "train")) == 3


def test_rows_without_json_lines_are_named_by_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    parquet = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": [turn("user", "hi"), turn("assistant", "yo")]},
                                         {"messages": [turn("user", "hi"), turn("assistant", None)]}]),
                   parquet)
    assert load_error(parquet) == (
        f"data.train: {parquet} row 1 (counting from 0), column 'messages': turn 1 (assistant) "
        "'content' is null (or missing); expected a string")

    document = tmp_path / "rows.json"
    document.write_text(json.dumps([{"instruction": "a", "output": "b"},
                                    {"instruction": ["a"], "output": "b"}], indent=2))
    assert load_error(document) == (
        f"data.train: {document} row 1 (counting from 0), column 'instruction' is a list of 1 item; "
        f"{NUMBER_AS_TEXT}")

    hub = DatasetParams(dataset_name="org/chat", split="train", subset=None, local=False)
    rows = Dataset.from_list([{"prompt": [turn("user", "hi")], "completion": "yo"}])
    with pytest.raises(DataError) as info:
        normalize_rows(rows, hub, "validation")
    assert str(info.value) == (
        "data.validation: dataset 'org/chat' split 'train' row 0 (counting from 0), column "
        "'completion' is a string ('yo'), but column 'prompt' is a list of turns; expected both text "
        "or both lists of turns")


PAD = "x" * 10_000  # 1,100 rows of this pass the 10 MB chunk `datasets` reads a JSON file in


def test_a_type_datasets_would_coerce_in_a_later_chunk_is_refused_by_line(tmp_path):
    # `datasets` casts the last chunk's object to the string '{"value":3}' and trains on that.
    rows = [{"instruction": "Sum?", "output": "3", "pad": PAD}] * 1100
    path = write_lines(tmp_path / "big.jsonl", rows + [{"instruction": "Sum?", "output": {"value": 3}}])
    assert load_error(path) == (f"data.train: {path} line 1101 (row 1100, counting from 0), column "
                                f"'output' is an object with keys 'value'; {NUMBER_AS_TEXT}")


def test_a_column_datasets_cannot_cast_is_named_with_its_lines(tmp_path):
    # An extra column, object then string: `datasets` fails to cast the second chunk.
    rows = [{"text": "a", "meta": {"k": 1}, "pad": PAD}] * 1100
    path = write_lines(tmp_path / "big.jsonl", rows + [{"text": "b", "meta": "s"}])
    message = load_error(path)
    assert message.startswith(
        f"data.train: cannot load {path}: column 'meta' holds an object with keys 'k' on line 1 (row 0, "
        "counting from 0) but a string ('s') on line 1101 (row 1100, counting from 0); `datasets` needs "
        "one type per column (")
    assert "Couldn't cast array of type string" in message


# --- 2. Every assistant turn carries the loss ----------------------------------------------------

def test_every_assistant_turn_carries_loss_and_user_turns_none(tokenizer):
    row = {"messages": [turn("system", "Do sums."), turn("user", "2+2?"), turn("assistant", "4"),
                        turn("user", "3+3?"), turn("assistant", "6")],
           "loss_turns": [False, False, True, False, True], "plain_text": None}
    tokens = tokenize_row(row, tokenizer, 512)
    assert labelled_spans(tokenizer, tokens) == ["4<|im_end|>\n", "6<|im_end|>\n"]
    assert len(tokens["labels"]) == len(tokens["input_ids"])
    # prompt: the conversation up to the last assistant turn, with the generation prompt.
    assert tokens["prompt"] == ("<|im_start|>system\nDo sums.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                                "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n"
                                "<|im_start|>assistant\n")
    assert tokens["completion"] == "6"


def test_messages_rows_train_each_assistant_turn_and_mask_tool_turns(tmp_path, tokenizer):
    path = write_lines(tmp_path / "chat.jsonl", [
        {"messages": [turn("user", "Weather?"), turn("assistant", "Asking the tool."),
                      turn("tool", "sunny"), turn("assistant", "It is sunny.")]},
        # a conversation ending with a user turn: the answers before it are still trained
        {"messages": [turn("user", "Hi"), turn("assistant", "Hello!"), turn("user", "Bye")]},
    ])
    rows = load_rows([entry(path)], "train")
    assert rows[0]["loss_turns"] == [False, True, False, True]
    first, second = (tokenize_row(row, tokenizer, 512) for row in rows)
    assert labelled_spans(tokenizer, first) == ["Asking the tool.<|im_end|>\n", "It is sunny.<|im_end|>\n"]
    assert labelled_spans(tokenizer, second) == ["Hello!<|im_end|>\n"]
    assert second["completion"] == "Hello!"
    assert second["prompt"].endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_truncation_keeps_the_labels_of_the_tokens_kept(tokenizer):
    row = {"messages": [turn("user", "2+2?"), turn("assistant", "four"), turn("user", "3+3?"),
                        turn("assistant", "six, as three and three make six")],
           "loss_turns": [False, True, False, True], "plain_text": None}
    whole = tokenize_row(row, tokenizer, 512)
    cut = len(whole["input_ids"]) - 5
    tokens = tokenize_row(row, tokenizer, cut)
    assert tokens["input_ids"] == whole["input_ids"][:cut] and tokens["labels"] == whole["labels"][:cut]
    spans = labelled_spans(tokenizer, tokens)
    assert spans[0] == "four<|im_end|>\n" and len(spans) == 2
    assert "six, as three and three make six".startswith(spans[1])


def test_a_conversation_without_an_answer_and_plain_text_are_learnt_whole(tokenizer):
    row = {"messages": [turn("user", "Just saying hi.")], "loss_turns": [False], "plain_text": None}
    tokens = tokenize_row(row, tokenizer, 512)
    assert tokens["labels"] == tokens["input_ids"] and tokens["prompt"] == tokens["completion"] == ""
    text = tokenize_row({"messages": [], "loss_turns": [], "plain_text": "Once upon a time"}, tokenizer, 512)
    assert text["labels"] == text["input_ids"] and text["completion"] == "Once upon a time"


# --- 3. Data file errors name the file and the line ----------------------------------------------

@pytest.mark.parametrize("name,lines,problem", [
    ("bad.jsonl", ['{"text": "a"}'] * 6 + ['{"text": "b" "c"}', '{"text": "d"}'],
     "line 7 column 14: not valid JSON: Expecting ',' delimiter"),
    # JSON Lines in a .json file (which `datasets` reads too), a blank line counted
    ("lines.json", ['{"text": "a"}', '', '{"text": "b",}'],
     "line 3 column 14: not valid JSON: Expecting property name enclosed in double quotes"),
    ("document.json", ['[', '  {"text": "a"},', '  {"text" "b"}', ']'],
     "line 3 column 11: not valid JSON: Expecting ':' delimiter"),
    ("objects.json", ['{', '  "text": "a"', '}', '{', '  "text": "b"', '}'],
     "line 4 column 1: not valid JSON: Extra data (a .json file holds one JSON document, a list of row "
     "objects, or one JSON object per line)"),
    ("list.jsonl", ['{"text": "a"}', '["text", "b"]'],
     "line 2 is a list of 2 items; expected one JSON object (a row) per line"),
])
def test_bad_json_is_named_by_file_and_line(tmp_path, name, lines, problem):
    path = write_lines(tmp_path / name, lines)
    assert load_error(path, role="validation") == f"data.validation: {path} {problem}"


def test_text_that_is_not_utf8_is_named_by_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    assert load_error(path) == (f"data.train: {path} line 2 is not UTF-8 text (invalid continuation "
                                "byte at byte 14 of the line)")


@pytest.mark.parametrize("name,text,problem", [
    ("empty.jsonl", "", "is empty: it has no rows"),
    ("blank.json", "  \n\n \n", "is empty: it has no rows"),
    ("empty.csv", "", "is empty: it has no rows"),
    ("header.csv", "instruction,output\n", "has no rows: it holds only the header line (instruction,output)"),
    ("list.json", "[]\n", "has no rows: it holds an empty list"),
])
def test_a_file_without_rows_says_so(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    assert load_error(path) == f"data.train: {path} {problem}"


def test_an_empty_parquet_file_says_so(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    assert load_error(path) == f"data.train: {path} has no rows"


# --- prepare_data, end to end -------------------------------------------------------------------

def test_prepare_data_mixes_formats_and_names_the_split_of_a_bad_file(tmp_path, tokenizer):
    from snaketune.data import load_prepared

    chat = write_lines(tmp_path / "chat.jsonl", [
        {"messages": [turn("user", "2+2?"), turn("assistant", "4"), turn("user", "and 3+3?"),
                      turn("assistant", "6")]}])
    text = write_lines(tmp_path / "text.jsonl", [{"text": "Once upon a time"}])
    alpaca = write_lines(tmp_path / "alpaca.jsonl", [{"instruction": "Half of 8?", "output": 4}])
    data = DataParams(train=[entry(chat), entry(text)], validation=[entry(alpaca)])
    summary = prepare_data(data, tokenizer, 512, tmp_path / "data" / "summary.json")
    assert summary["train"]["rows"] == 2 and summary["validation"]["rows"] == 1
    prepared = load_prepared(tmp_path / "data")
    assert labelled_spans(tokenizer, prepared["train"][0]) == ["4<|im_end|>\n", "6<|im_end|>\n"]
    assert prepared["validation"][0]["completion"] == "4"

    broken = write_lines(tmp_path / "broken.jsonl", ['{"instruction": "a", "output": "b"}'] * 6
                         + ['{"instruction": "a" "output": "b"}'])
    with pytest.raises(DataError) as info:
        prepare_data(DataParams(train=[entry(chat)], validation=[entry(broken)]), tokenizer, 512,
                     tmp_path / "data2" / "summary.json")
    assert str(info.value) == (f"data.validation: {broken} line 7 column 21: not valid JSON: "
                               "Expecting ',' delimiter")
