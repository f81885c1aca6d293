"""Parse-time checks of a study's local data files, so that rows `prepare_data` would refuse are
refused before any job runs (seconds, where the rule comes after the model's preparation):

- the file itself: bad JSON by line and column, an empty file, a column of mixed JSON types
  (data_files.check_local_file, the same scan prepare_data makes);
- the rows' format, told by their columns (row_formats.detect_format); columns of no known format
  get the renames that would make one ("rename question→prompt, answer→completion");
- each row's values by the same rules prepare_data applies (row_formats.row_to_chat): an empty
  cell, a list where text is expected, a chat turn without a role, named by file, line and column.

A small file (SMALL_FILE_BYTES) is read whole, and only the rows its `split` selects are judged; of
a larger one the first FIRST_ROWS rows (prepare_data still reads every row). Hub datasets' rows are
checked when prepare_data loads them; here only that the hub or its cache has them (`hub_problems`).
Cheaper checks read each local file's first row only: whether the rows need the tokenizer's chat
template (`needs_chat_template`), and whether validation rows have answers to score
(`generation_problems`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from snaketune import hub
from snaketune.data import DataParams, DatasetParams
from snaketune.data_files import check_local_file, split_rows, where_in_file
from snaketune.row_formats import ROW_FORMATS, BadValue, DataError, detect_format, row_to_chat

SMALL_FILE_BYTES = 16 << 20
FIRST_ROWS = 1000

# Names people give the columns each format reads, for a rename hint when no format matches. By
# hand: `datasets` and TRL only say which columns they found.
SYNONYMS = {
    "prompt": ("question", "query", "input", "instruction", "source"),
    "completion": ("answer", "response", "output", "target", "reply", "solution"),
    "instruction": ("question", "query", "prompt"),
    "output": ("answer", "response", "completion", "target", "solution"),
    "messages": ("conversations", "conversation", "dialog", "dialogue", "chat", "turns"),
    "text": ("content", "body", "document", "sentence", "passage"),
}
# Tried in this order; on equal renames the first wins.
FORMAT_NAMES = {"prompt_completion": "prompt/completion rows", "alpaca": "Alpaca rows",
                "messages": "chat rows", "text": "plain-text rows"}


def file_problems(data_cfg: DataParams) -> list[str]:
    """'data.<split>.datasets[i].dataset_name: FILE ...: what is wrong; what to do' for each local
    file of either split whose file, columns or rows prepare_data would refuse (at most one problem
    per file: the first found)."""
    problems = []
    for split in ("train", "validation"):
        for i, entry in enumerate(getattr(data_cfg, split)):
            if entry.local and Path(entry.dataset_name).is_file():
                problem = _file_problem(entry, split)
                if problem:
                    problems.append(f"data.{split}.datasets[{i}].dataset_name: {problem}")
    return problems


def rename_hint(columns: list[str]) -> str | None:
    """'rename question→prompt, answer→completion (prompt/completion rows)' for the format that
    `columns` reach with the fewest renames, or None when no format is in reach."""
    best = None
    for fmt in FORMAT_NAMES:
        renames, used = [], set()
        for needed in ROW_FORMATS[fmt]:
            if needed in columns:
                continue
            found = next((c for c in SYNONYMS.get(needed, ()) if c in columns and c not in used), None)
            if found is None:
                break
            used.add(found)
            renames.append(f"{found}→{needed}")
        else:
            if renames and (best is None or len(renames) < len(best[1])):
                best = (fmt, renames)
    if best is None:
        return None
    return f"rename {', '.join(best[1])} ({FORMAT_NAMES[best[0]]})"


def _file_problem(entry: DatasetParams, split: str) -> str | None:
    path = Path(entry.dataset_name)
    whole = path.stat().st_size <= SMALL_FILE_BYTES
    try:
        if whole and path.suffix.lower() in (".json", ".jsonl"):
            try:
                check_local_file(path, split, entry.split)  # the JSON itself, as prepare_data reads it
            except DataError as error:
                message = str(error).removeprefix(f"data.{split}: ")
                if "column 'messages'" in message:  # the rows parse: ShareGPT's turns are a rename away
                    rows = _rows(path, 100)
                    message += next(filter(None, (_sharegpt_hint(row, "messages") for _, row in rows)), "")
                return message
        rows = _rows(path, None if whole else FIRST_ROWS)
    except DataError as error:
        return str(error).removeprefix(f"data.{split}: ")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return f"{path} cannot be read: {error}"
    if not rows:
        return None  # an empty file: check_local_file said so for JSON; datasets says it for the rest
    columns = list(dict.fromkeys(column for _, row in rows[:100] for column in row))
    try:
        fmt = detect_format(columns)
    except DataError:
        hint = rename_hint(columns)
        return (f"{path} has columns {', '.join(columns)}, which are no row format snaketune reads"
                + (f": {hint}" if hint else "")
                + "; the formats: prompt/completion (prompt, completion), Alpaca (instruction, "
                "optional input, output), chat (messages: a list of {role, content} turns), plain "
                "text (text)")
    selected = split_rows(entry.split, len(rows)) if whole else None
    if selected is not None and len(selected) == 0:  # `datasets`: "corresponds to no data!"
        return (f"{path} has {len(rows)} row(s), and split {entry.split!r} selects none of them: add rows, "
                "or give this split a file of its own (split: 'train')")
    for row_number, (line, row) in enumerate(rows):
        if selected is not None and row_number not in selected:
            continue
        try:
            row_to_chat(row, fmt)
        except BadValue as error:
            what = str(error)
            if path.suffix.lower() == ".csv":
                what = what.replace(" is null (or missing);", " is an empty cell;")
            return f"{path} {where_in_file(row_number, line)}, {what}{_sharegpt_hint(row, fmt)}"
    return None


# ShareGPT's turns ({"from": "human", "value": ...}) and roles, as the chat format writes them.
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def _sharegpt_hint(row: dict, fmt: str) -> str:
    """'; these are ShareGPT turns: rename ...' when a chat row's turns are written as ShareGPT
    writes them (`from`/`value`, or roles `human`/`gpt`); '' otherwise."""
    turns = row.get("messages") if fmt == "messages" else None
    if not isinstance(turns, list):
        return ""
    keys = {key for turn in turns if isinstance(turn, dict) for key in turn}
    roles = {turn.get("role", turn.get("from")) for turn in turns if isinstance(turn, dict)}
    renames = [f"{a}→{b}" for a, b in (("from", "role"), ("value", "content")) if a in keys]
    renamed_roles = [f"{a}→{b}" for a, b in SHAREGPT_ROLES.items() if a in roles and a != b]
    if renames:
        hint = "; these are ShareGPT turns: rename each turn's " + ", ".join(renames)
        return hint + (" and its role values " + ", ".join(renamed_roles) if renamed_roles else "")
    if renamed_roles:
        return "; these are ShareGPT roles: write " + ", ".join(renamed_roles)
    return ""


def _rows(path: Path, limit: int | None) -> list[tuple[int | None, dict]]:
    """The first `limit` rows (all when None) of a local file as [(line or None, row)], values as
    `datasets` reads them where it matters to the row rules (an empty csv cell is None)."""
    suffix = path.suffix.lower()
    rows: list[tuple[int | None, dict]] = []
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's byte-order mark, as pandas
            reader = csv.DictReader(f)
            while limit is None or len(rows) < limit:
                line = reader.line_num + 1
                try:
                    record = next(reader)
                except StopIteration:
                    break
                rows.append((line, {k: (None if v == "" else v) for k, v in record.items() if k is not None}))
        return rows
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=limit or 65536):
            rows.extend((None, row) for row in batch.to_pylist())
            if limit is not None:
                break
        return rows[:limit] if limit is not None else rows
    with open(path, "rb") as f:  # .json, .jsonl: JSON Lines, or one document (a list of rows)
        head = f.read(1 << 16).lstrip()
        f.seek(0)
        if head.startswith(b"{"):
            for number, raw in enumerate(f, 1):
                if raw.strip():
                    try:
                        row = json.loads(raw)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path} line {number} column {e.colno}: not valid JSON: {e.msg}") from None
                    if isinstance(row, dict):
                        rows.append((number, row))
                    if limit is not None and len(rows) >= limit:
                        break
            return rows
        if limit is not None:
            return []  # a large JSON document: parsed whole only by prepare_data
        document = json.load(f)
    return [(None, row) for row in document if isinstance(row, dict)] if isinstance(document, list) else []


# -- parse-time checks that read a little of the data ----------------------------------------------


def needs_chat_template(data_cfg: DataParams) -> bool:
    """Whether some rows are chat or instruction rows, formatted with the tokenizer's chat template.
    Reads the first row of each local file (cheap); a hub dataset's rows are not known before it is
    loaded, and count as not needing one (prepare_data says so, once, if they do)."""
    for entry in [*data_cfg.train, *data_cfg.validation]:
        columns = first_row_columns(entry)
        if columns is not None and not set(columns) >= set(ROW_FORMATS["text"]):
            return True
    return False


def first_row_columns(entry: DatasetParams) -> list[str] | None:
    """The columns of a local file's first row (json, jsonl, csv, parquet), or None when they
    cannot be read cheaply (a hub dataset, a folder, a malformed file: prepare_data reports it)."""
    path = Path(entry.dataset_name)
    if not (entry.local and path.is_file()):
        return None
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl" or suffix == ".json":
            with open(path) as f:
                head = f.read(1 << 16).lstrip()
            if head.startswith("{"):  # JSON Lines (or one object)
                row = json.loads(head.splitlines()[0])
                return list(row) if isinstance(row, dict) else None
            rows = json.loads(path.read_text()) if path.stat().st_size < (64 << 20) else None
            return list(rows[0]) if isinstance(rows, list) and rows and isinstance(rows[0], dict) else None
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark is no column's
                return next(csv.reader(f), None)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return None


def generation_problems(validation: list[DatasetParams]) -> list[str]:
    """'data.validation.datasets[i]: ...' for each local validation file of plain-text rows, which
    have no prompt to answer and no reference answer for a generation metric to score."""
    problems = []
    for i, entry in enumerate(validation):
        columns = first_row_columns(entry)
        try:
            fmt = detect_format(columns) if columns is not None else None
        except DataError:
            continue  # prepare_data reports unrecognised rows
        if fmt == "text":
            problems.append(f"data.validation.datasets[{i}]: plain-text rows ('text') have no prompt to answer "
                            "nor a reference answer, which a generation metric in tuning.evaluation_metrics "
                            "scores: give validation rows with answers (Alpaca instruction/input/output, chat "
                            "messages, or prompt/completion)")
    return problems


def hub_problems(data_cfg: DataParams) -> list[str]:
    """'data.<split>.datasets[i].dataset_name: ...' for each hub dataset that can neither be
    reached nor found in the local cache (snaketune.hub)."""

    problems = []
    for split in ("train", "validation"):
        for i, entry in enumerate(getattr(data_cfg, split)):
            if not entry.local:
                problem = hub.problem(entry.dataset_name, "dataset")
                if problem:
                    problems.append(f"data.{split}.datasets[{i}].dataset_name: {problem}")
    return problems
