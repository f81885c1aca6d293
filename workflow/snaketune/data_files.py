"""Local data files, read before `datasets` does.

`check_local_file` reads a local json/jsonl/csv/parquet file once (streaming, line by line for JSON
Lines) so that bad JSON, an empty file, or a column whose JSON type `datasets` would coerce (a later
chunk's object silently cast to the string of its JSON) is reported by file, line and column. The
parse-time data check (snaketune.data_check) and rule prepare_data (snaketune.data.load_one) both
run it; rows are counted from 0 in file order, lines from 1.
"""

from __future__ import annotations

import json
from pathlib import Path

from snaketune.row_formats import KIND_WORDS, BadValue, DataError, describe, detect_format, kind_of, row_to_chat

_TEXT = frozenset({"string", "number"})  # a number is taken as its text
_TURN_FIELDS = {"[]": frozenset({"object"}), "[].role": frozenset({"string"}),
                "[].content": frozenset({"string"})}
# The JSON types each format accepts, by column and by the fields of a column's turns.
_ALLOWED_KINDS = {
    "alpaca": {"instruction": _TEXT, "input": _TEXT | {"null"}, "output": _TEXT},
    "messages": {"messages": frozenset({"list"}),
                 **{f"messages{k}": v for k, v in _TURN_FIELDS.items()}},
    "prompt_completion": {"prompt": _TEXT | {"list"}, "completion": _TEXT | {"list"},
                          **{f"{c}{k}": v for c in ("prompt", "completion")
                             for k, v in _TURN_FIELDS.items()}},
    "text": {"text": _TEXT},
}
_TURN_COLUMNS = ("messages", "prompt", "completion")


class _Scan:
    """What reading a local JSON file found: its rows, its columns (the union of the rows' keys,
    as `datasets` makes them), and where each JSON type first appears in each column and in the
    role/content of the turns of a turn column (`messages[].content`): {path: {kind: (row, line,
    description)}}; `line` is None in a file holding one JSON document."""

    def __init__(self, json_lines: bool):
        self.json_lines = json_lines
        self.rows = 0
        self.columns: dict[str, None] = {}
        self.kinds: dict[str, dict[str, tuple]] = {}

    def add(self, row: dict, line: int | None, keep: range | None) -> None:
        index = self.rows
        self.rows += 1
        for column in row:
            if column not in self.columns:
                self.columns[column] = None
        if keep is not None and index not in keep:
            return
        for column, value in row.items():
            self._note(column, value, index, line)
            if column in _TURN_COLUMNS and isinstance(value, list):
                for turn in value:
                    self._note(f"{column}[]", turn, index, line)
                    if isinstance(turn, dict):
                        self._note(f"{column}[].role", turn.get("role"), index, line)
                        self._note(f"{column}[].content", turn.get("content"), index, line)

    def _note(self, path: str, value, row: int, line: int | None) -> None:
        seen = self.kinds.get(path)
        if seen is None:
            seen = self.kinds[path] = {}
        kind = kind_of(value)
        if kind not in seen:
            seen[kind] = (row, line, describe(value))


def check_local_file(path: Path, role: str, split: str = "train") -> _Scan | None:
    """Read a local data file before `datasets` does and raise DataError for what it would fail on
    with a vague message, or silently coerce: bad JSON (by line and column), an
    empty file, a csv without rows, an empty parquet file, and a value whose JSON type its column's
    format refuses (in the rows `split` selects). Returns the JSON file's scan (None for csv and
    parquet). JSON Lines are streamed; a file holding one JSON document is parsed whole."""
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        scan = _scan_json(path, role)
        keep = split_rows(split, scan.rows)
        problem = _kinds_problem(scan, keep)
        if problem and problem[0] is None:  # only rows `split` leaves out are wrong: look in it only
            scan = _scan_json(path, role, keep)
            problem = _kinds_problem(scan, keep)
        if problem:
            _, row, line, fmt, fallback = problem
            raise DataError(f"data.{role}: {path} {where_in_file(row, line)}, "
                            f"{_reread_problem(path, scan, row, line, fmt) or fallback}")
        return scan
    if suffix == ".csv":
        _check_csv(path, role)
    elif suffix == ".parquet":
        _check_parquet(path, role)
    return None


def _empty(path: Path, role: str) -> DataError:
    return DataError(f"data.{role}: {path} is empty: it has no rows")


def _scan_json(path: Path, role: str, keep: range | None = None) -> _Scan:
    """Parse a .json/.jsonl file: one JSON object per line (JSON Lines, which `datasets` reads in
    either suffix; streamed) or one JSON document (a list of row objects; parsed whole). The form
    is told by the first non-blank line: a line that is a JSON object on its own starts JSON Lines."""
    with open(path, "rb") as f:
        for first_line, raw in enumerate(f, 1):
            if raw.strip():
                break
        else:
            raise _empty(path, role)
        text = _decode(raw, path, role, first_line)
        try:
            json_lines = isinstance(json.loads(text), dict)
        except json.JSONDecodeError:
            json_lines = False
        if not json_lines:  # a document (or bad JSON on the first line: the document's error says where)
            f.seek(0)
            return _scan_document(f.read(), path, role, keep)
        scan = _Scan(json_lines=True)
        scan.add(json.loads(text), first_line, keep)
        for number, raw in enumerate(f, first_line + 1):
            if not raw.strip():
                continue
            text = _decode(raw, path, role, number)
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"data.{role}: {path} line {number} column {e.colno}: not valid "
                                f"JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"data.{role}: {path} line {number} is {describe(row)}; expected one "
                                "JSON object (a row) per line")
            scan.add(row, number, keep)
    return scan


def _decode(raw: bytes, path: Path, role: str, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data.{role}: {path} line {line} is not UTF-8 text ({e.reason} at byte "
                        f"{e.start + 1} of the line)") from None


def _scan_document(data: bytes, path: Path, role: str, keep: range | None) -> _Scan:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"data.{role}: {path} line {line} is not UTF-8 text ({e.reason})") from None
    del data
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        hint = (" (a .json file holds one JSON document, a list of row objects, or one JSON object "
                "per line)" if e.msg == "Extra data" else "")
        raise DataError(f"data.{role}: {path} line {e.lineno} column {e.colno}: not valid JSON: "
                        f"{e.msg}{hint}") from None
    scan = _Scan(json_lines=False)
    if isinstance(value, dict):  # `datasets` reads an object as columns or one row: leave it to it
        scan.rows = None
        return scan
    if not isinstance(value, list):
        raise DataError(f"data.{role}: {path} holds {describe(value)}; expected a list of row objects "
                        "or one JSON object per line")
    if not value:
        raise DataError(f"data.{role}: {path} has no rows: it holds an empty list")
    for index, row in enumerate(value):
        if not isinstance(row, dict):
            raise DataError(f"data.{role}: {path} row {index} (counting from 0) is {describe(row)}; "
                            "expected an object (a row)")
        scan.add(row, None, keep)
    return scan


def split_rows(split: str, total: int | None) -> range | None:
    """The rows (0-based, in file order) a split such as `train[10%:]` selects from `total`; None
    when not known."""
    if total is None:
        return None
    if "[" not in split:
        return range(total)
    from datasets import ReadInstruction

    try:
        (part,) = ReadInstruction.from_spec(split).to_absolute({split.split("[", 1)[0]: total})
    except Exception:  # `datasets` reports a bad split when it loads
        return None
    return range(part.from_, part.to)


def where_in_file(row: int, line: int | None) -> str:
    return f"line {line} (row {row}, counting from 0)" if line is not None else f"row {row} (counting from 0)"


def _expected(allowed: frozenset) -> str:
    if allowed == _TEXT or allowed == _TEXT | {"null"}:
        return "text (a string; a number is taken as its text)"
    if allowed == _TEXT | {"list"}:
        return "text (a string) or a list of turns"
    if allowed == {"list"}:
        return 'a list of turns, each {"role": ..., "content": ...}'
    if allowed == {"object"}:
        return 'an object {"role": ..., "content": ...}'
    return " or ".join(KIND_WORDS[k] for k in sorted(allowed))


def _kinds_problem(scan: _Scan, keep: range | None) -> tuple | None:
    """The first value (by row) whose JSON type its column's format refuses, as (True if it lies
    in `keep` else None, row, line, format, 'column ...: what; expected what'); None when every type
    is accepted."""
    try:
        fmt = detect_format(list(scan.columns))
    except DataError:
        return None  # normalize_rows names the columns
    found = []
    for path, allowed in _ALLOWED_KINDS[fmt].items():
        for kind, (row, line, description) in scan.kinds.get(path, {}).items():
            if kind not in allowed:
                found.append((row, line, path, description, allowed))
    if not found:
        return None
    row, line, path, description, allowed = min(found, key=lambda f: f[0])
    column, _, field = path.partition("[]")
    what = (f"column {column!r}: a turn's {field.lstrip('.')!r} is" if field
            else f"column {column!r}: a turn is" if path.endswith("[]") else f"column {column!r} is")
    inside = keep is None or row in keep or None
    return inside, row, line, fmt, f"{what} {description}; expected {_expected(allowed)}"


def _reread_problem(path: Path, scan: _Scan, row: int, line: int | None, fmt: str) -> str | None:
    """What the row check says of row `row` (read again: this runs only for a bad file), so a value
    of the wrong type reads the same whether found here or in `normalize_rows`."""
    if scan.json_lines:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if number == line:
                    value = json.loads(raw.decode("utf-8"))
                    break
            else:
                return None
    else:
        value = json.loads(path.read_bytes().decode("utf-8"))[row]
    try:
        row_to_chat({column: value.get(column) for column in scan.columns}, fmt)
    except BadValue as e:
        return str(e)
    return None


def mixed_column(scan: _Scan) -> str | None:
    """'column X holds a ... on line A and a ... on line B' for the column whose values first take
    a second JSON type (null aside); `datasets` may fail to cast one chunk of the file to another's
    column types. None when every column keeps one type."""
    found = []
    for path, kinds in scan.kinds.items():
        if "[" in path:
            continue
        firsts = sorted(where for kind, where in kinds.items() if kind != "null")
        if len(firsts) > 1:
            found.append((firsts[1][0], path, firsts[0], firsts[1]))
    if not found:
        return None
    _, column, (row_a, line_a, what_a), (row_b, line_b, what_b) = min(found)
    return (f"column {column!r} holds {what_a} on {where_in_file(row_a, line_a)} but {what_b} on "
            f"{where_in_file(row_b, line_b)}")


def _check_csv(path: Path, role: str) -> None:
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        records = (record for record in csv.reader(f) if record)  # pandas skips blank lines too
        header = next(records, None)
        if header is None:
            raise _empty(path, role)
        if next(records, None) is None:
            raise DataError(f"data.{role}: {path} has no rows: it holds only the header line "
                            f"({','.join(header)})")


def _check_parquet(path: Path, role: str) -> None:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_metadata(path).num_rows
    except Exception as e:
        if path.stat().st_size == 0:
            raise _empty(path, role) from None
        raise DataError(f"data.{role}: {path} is not a readable parquet file ({error_text(e)})") from e
    if rows == 0:
        raise DataError(f"data.{role}: {path} has no rows")


def line_of_row(path: Path, row: int) -> int | None:
    """The line of a JSON Lines file holding row `row` (counting from 0; blank lines hold none);
    None for another file."""
    if path.suffix.lower() not in (".json", ".jsonl"):
        return None
    with open(path, "rb") as f:
        count = -1
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            if count == -1 and not raw.lstrip().startswith(b"{"):
                return None  # a JSON document
            count += 1
            if count == row:
                return number
    return None


def error_text(error: BaseException) -> str:
    """`Type: message` of the error `datasets` raised, on one line, with the error it wraps
    (DatasetGenerationError only says "An error occurred while generating the dataset")."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen and len(parts) < 3:
        seen.add(id(error))
        parts.append(" ".join(f"{type(error).__name__}: {error}".split()))
        error = error.__cause__
    return "; caused by ".join(parts)
