"""The row formats of training and validation data, and what a value of the wrong type is called.

A split's rows are Alpaca (instruction, input, output), chat (`messages`), prompt/completion (text
or TRL's lists of turns) or plain `text` rows, told by their columns (`detect_format`); each row
becomes chat turns and one loss flag per turn (`row_to_chat`, described in snaketune.data), and a
value of the wrong type raises BadValue naming its column and what the value is (`describe`).
Read by the tokenizing pipeline (snaketune.data) and by the local-file scan before it
(snaketune.data_files).
"""

from __future__ import annotations

import json
import math

from snaketune.errors import SnaketuneError

ROW_FORMATS = {
    "alpaca": ("instruction", "output"),  # + optional "input"
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
# The roles a chat turn may have.
ROLES = ("system", "user", "assistant", "tool")


class DataError(SnaketuneError, ValueError):
    """Data that cannot be loaded or used; the message names the split (`data.train`, ...)."""


# A value's JSON type, as messages name it.
KIND_WORDS = {"string": "a string", "number": "a number", "boolean": "a boolean", "list": "a list",
              "object": "an object", "null": "null (or missing)", "other": "a value of another type"}


def kind_of(value) -> str:
    """A value's JSON type, a key of KIND_WORDS (NaN, as pandas reads an empty cell, is null)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "other"


def describe(value) -> str:
    """What a value is, for a message: its type and, for a scalar, the value (never a whole list
    or object)."""
    kind = kind_of(value)
    if kind == "string":
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if kind in ("number", "boolean"):
        return f"{KIND_WORDS[kind]} ({json.dumps(value)})"
    if kind == "list":
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if kind == "object":
        keys = list(value)
        shown = ", ".join(repr(str(k)) for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
        return f"an object with keys {shown}" if keys else "an empty object"
    if kind == "other":
        return f"a value of type {type(value).__name__}"
    return KIND_WORDS[kind]


def detect_format(columns: list[str]) -> str:
    for fmt, needed in ROW_FORMATS.items():
        if all(c in columns for c in needed):
            return fmt
    raise DataError(
        f"unrecognised rows with columns {sorted(columns)}; expected Alpaca (instruction, input, "
        "output), chat (messages), prompt/completion, or plain text (text)"
    )


class BadValue(Exception):
    """A row's value of the wrong type: the column and what is wrong with it."""

    def __init__(self, column: str, problem: str):
        super().__init__(f"column {column!r}{problem}")


def _text(row: dict, column: str, optional: bool = False) -> str:
    """A text column's value: a string, or a number as its text (math answers are often numbers;
    a whole float, which `datasets` makes of an int in a column that also holds 2.5, as an int)."""
    value = row.get(column)
    kind = kind_of(value)
    if kind == "string":
        return value
    if kind == "number":
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return str(value)
    if kind == "null" and optional:
        return ""
    raise BadValue(column, f" is {describe(value)}; expected text (a string; a number is taken as "
                            "its text)")


def _turns(value, column: str, allow_empty: bool = False) -> list[dict]:
    """A list of chat turns, each {role: one of ROLES, content: a string}."""
    if not isinstance(value, list):
        raise BadValue(column, f" is {describe(value)}; expected a list of turns, each "
                                '{"role": ..., "content": ...}')
    if not value and not allow_empty:
        raise BadValue(column, " is an empty list; expected at least one turn")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise BadValue(column, f": turn {i} is {describe(turn)}; expected an object "
                                    '{"role": ..., "content": ...}')
        role, content = turn.get("role"), turn.get("content")
        if not isinstance(role, str) or role not in ROLES:
            found = repr(role) if isinstance(role, str) else describe(role)
            raise BadValue(column, f": turn {i} 'role' is {found}; expected one of "
                                    f"{', '.join(repr(r) for r in ROLES)}")
        if not isinstance(content, str):
            raise BadValue(column, f": turn {i} ({role}) 'content' is {describe(content)}; expected "
                                    "a string")
        turns.append({"role": role, "content": content})
    return turns


def row_to_chat(row: dict, fmt: str) -> dict:
    """One row of format `fmt` as {messages, loss_turns, plain_text} (see the module docstring);
    raises BadValue for a value of the wrong type."""
    if fmt == "alpaca":
        prompt = _text(row, "instruction")
        extra = _text(row, "input", optional=True)
        if extra:
            prompt = f"{prompt}\n\n{extra}"
        return {"messages": [{"role": "user", "content": prompt},
                             {"role": "assistant", "content": _text(row, "output")}],
                "loss_turns": [False, True], "plain_text": None}
    if fmt == "prompt_completion":
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational form
            for column, value, other in (("prompt", prompt, "completion"), ("completion", completion, "prompt")):
                if not isinstance(value, list):
                    raise BadValue(column, f" is {describe(value)}, but column {other!r} is a list of "
                                            "turns; expected both text or both lists of turns")
            prompt_turns = _turns(prompt, "prompt", allow_empty=True)
            completion_turns = _turns(completion, "completion")
            return {"messages": prompt_turns + completion_turns,
                    "loss_turns": [False] * len(prompt_turns) + [True] * len(completion_turns),
                    "plain_text": None}
        return {"messages": [{"role": "user", "content": _text(row, "prompt")},
                             {"role": "assistant", "content": _text(row, "completion")}],
                "loss_turns": [False, True], "plain_text": None}
    if fmt == "messages":
        turns = _turns(row.get("messages"), "messages")
        return {"messages": turns, "loss_turns": [t["role"] == "assistant" for t in turns],
                "plain_text": None}
    return {"messages": [], "loss_turns": [], "plain_text": _text(row, "text")}
