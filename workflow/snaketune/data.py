"""Training and validation data: check, load, recognise the row format, tokenize once per study.

The `prepare_data` rule runs this once; every trial loads the tokenized result from disk and hands
it to TRL with `skip_prepare_dataset`, so no trial tokenizes again.

Before `datasets` reads a local json/jsonl/csv/parquet file, `check_local_file` reads it once
(streaming, line by line for JSON Lines) so that bad JSON, an empty file, or a column whose JSON
type `datasets` would coerce (a later chunk's object silently cast to the string of its JSON) is
reported by file, line and column. Each row is then checked by type for its format
(`normalize_rows`): a number where text is expected becomes its text, any other wrong type
(a list, an object, null) is refused naming the split, the file, the row (counted from 0 in file
order) and the column.

Every format becomes chat turns (`messages`) plus one flag per turn (`loss_turns`):
- Alpaca (instruction, input, output) and text prompt/completion: a user turn and an assistant
  turn; the loss is on the assistant turn.
- TRL's conversational prompt/completion (both columns lists of turns): prompt turns + completion
  turns; the loss is on the completion turns, as TRL puts it.
- Chat (`messages`): the loss is on every assistant turn (as TRL's `assistant_only_loss`);
  system, user and tool turns are masked. A conversation without an assistant turn is learnt whole.
- Plain `text`: learnt whole.
`tokenize_row` makes `input_ids` and `labels` (-100 where no loss) with the tokenizer's chat
template, rendering the conversation up to each trained turn (no `{% generation %}` markers
needed); `prompt` (the conversation up to the last assistant turn, with the generation prompt) and
`completion` (that turn's content) keep the text for custom metrics.
At parse time, `resolve_entries` checks a config's dataset entries (split, local path, suffix).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from snaketune.errors import SnaketuneError
from snaketune.layout import write_json
from snaketune.records import Record, section

# The local files `datasets` reads, by suffix, and the builder that reads each.
DATA_FILE_SUFFIXES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# `train`, `validation[:10%]`, `train[90%:]`, `train[10:200]`, `train[10%:20%]`
SPLIT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+(\[(-?\d+%?)?:(-?\d+%?)?\])?$")

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


@section
class DatasetParams(Record):
    """One resolved entry of a split's `datasets:` list (Oumi's DatasetParams names)."""

    dataset_name: str  # an absolute path when `local`, else a hub id
    split: str  # `train`, `train[90%:]`, ... (spaces removed)
    subset: str | None  # the hub dataset's configuration name
    local: bool  # a local file or directory (else loaded from the hub)
    sample_count: int | None = None  # only the first N rows (after shuffling, if shuffle)
    shuffle: bool = False  # shuffle the rows (with seed) before taking sample_count
    seed: int | None = None


@section
class DataParams(Record):
    """The resolved `data:` section: each split's datasets, concatenated in this order."""

    train: list[DatasetParams]
    validation: list[DatasetParams]


def looks_like_local_path(name: str) -> bool:
    """A dataset or model name that cannot be a hub id ('org/name') is meant as a local path."""
    return (
        name.startswith((".", "/", "~"))
        or Path(name).suffix.lower() in DATA_FILE_SUFFIXES
        or name.count("/") > 1
    )


# Oumi DatasetSplitParams / DatasetParams fields with no meaning here, and why (accepted, noticed).
UNUSED_SPLIT_FIELDS = {
    "collator_kwargs": "the loss is on the answers, found with the chat template, not by templates",
    "train_target": "the loss is on the answers (every assistant turn; all of a text row)",
    "mixture_strategy": "the datasets of a split are concatenated",
    "seed": "the rows are not shuffled (give shuffle and seed per dataset)",
    "use_torchdata": "rows are tokenized once per study by the prepare_data rule",
}
UNUSED_DATASET_FIELDS = {
    "dataset_kwargs": "they configure an Oumi dataset class; the rows are read as they are",
    "shuffle_buffer_size": "datasets are not streamed",
    "transform_num_workers": "rows are tokenized once per study by the prepare_data rule",
    "trust_remote_code": "datasets runs no dataset scripts (datasets 4 and later)",
}
# Oumi's registered dataset classes whose name is no hub id (its registry, oumi/datasets), and
# what each gives Oumi: the name alone names no rows snaketune could read. Those that read a file
# named in dataset_path (text_sft, PromptResponseDataset, ...) read that file here too.
OUMI_REGISTERED_DATASETS = {
    "debug_sft": "a few generated chat rows for Oumi's own tests",
    "debug_pretraining": "generated plain-text rows for Oumi's own tests",
    "debug_dpo": "generated preference rows for Oumi's own tests",
    "debug_kto": "generated preference rows for Oumi's own tests",
    "debug_classfication": "generated classification rows for Oumi's own tests",
    "text_sft": "chat rows read from the file in dataset_path",
    "text_sft_jsonl": "chat rows read from the file in dataset_path",
    "PromptResponseDataset": "prompt/response rows read from dataset_path",
    "HuggingFaceDataset": "a hub dataset named in dataset_kwargs",
    "vision_language_jsonl": "image and text rows, which snaketune does not train on",
    "vl_sft": "image and text rows, which snaketune does not train on",
    "hf_vision": "image and text rows, which snaketune does not train on",
    "coco_captions": "image and text rows, which snaketune does not train on",
    "mnist_sft": "image rows, which snaketune does not train on",
    "vision_dpo_jsonl": "image preference rows, which snaketune does not train on",
}
# Oumi's collators: the completion-only one is what snaketune does (the loss on the answers).
SAME_AS_SNAKETUNE_COLLATORS = ("text_completions_only_with_padding",)


def resolve_section(cfg: dict, base: Path, written: dict, ask: bool) -> tuple[DataParams, list[str], list[str]]:
    """The `data:` section of a schema-filled config: (the train and validation datasets, problems,
    notices), each as 'yaml.path: what'; the shape every section resolver has (`written` and `ask`
    are unused: the rows are read later, by data_check, once every section is sound). Relative
    local paths resolve against `base`."""
    problems, notices, splits = [], [], {}
    for split in ("train", "validation"):
        splits[split], found = resolve_entries(cfg["data"][split]["datasets"], f"data.{split}.datasets", base)
        problems.extend(found)
    for split in ("train", "validation"):
        found, said = split_fields(cfg["data"][split], f"data.{split}")
        problems.extend(found)
        notices.extend(said)
    if cfg["data"].get("test"):
        notices.append("data.test: unused: trials are evaluated on data.validation")
    return DataParams(**splits), problems, notices


def split_fields(split_cfg: dict, path: str) -> tuple[list[str], list[str]]:
    """Oumi's DatasetSplitParams fields of one split (`path`, e.g. data.train): (problems, notices)."""
    problems, notices = [], []
    collator = split_cfg.get("collator_name")
    if collator and collator not in SAME_AS_SNAKETUNE_COLLATORS:
        problems.append(f"{path}.collator_name: {collator!r} is not what snaketune trains with: the loss "
                        "is on the answers only (text_completions_only_with_padding); for loss on whole "
                        "texts, write rows as {\"text\": ...}")
    for key, what in (("pack", "rows are trained unpacked (one row a sequence)"),
                      ("stream", "rows are tokenized once per study, not streamed")):
        if split_cfg.get(key):
            problems.append(f"{path}.{key}: true is not supported: {what}; remove {key}")
    target_col = split_cfg.get("target_col")
    if target_col and target_col != "text":  # deprecated in Oumi (data_params.py): used by no dataset there
        notices.append(f"{path}.target_col: unused ({target_col!r}): rows are read by their columns "
                       "(prompt/completion, Alpaca, messages, or a plain-text row's 'text' column); "
                       "Oumi deprecates target_col too")
    for key, why in UNUSED_SPLIT_FIELDS.items():
        if split_cfg.get(key) not in (None, {}, False):
            notices.append(f"{path}.{key}: unused: {why}")
    for i, entry in enumerate(split_cfg.get("datasets") or []):
        for key, why in UNUSED_DATASET_FIELDS.items():
            if isinstance(entry, dict) and entry.get(key) not in (None, False):
                notices.append(f"{path}.datasets[{i}].{key}: unused: {why}")
        if isinstance(entry, dict) and entry.get("dataset_path"):
            notices.append(f"{path}.datasets[{i}].dataset_name: {entry.get('dataset_name')!r} (an Oumi "
                           f"dataset class) is not used: the rows of dataset_path are read by their "
                           "columns (Alpaca, messages, prompt/completion or text)")
    return problems, notices


def resolve_entries(entries: list[dict], path: str, base: Path) -> tuple[list[DatasetParams], list[str]]:
    """Check and resolve one split's `datasets` list (schema-filled, so `split` is present).

    `path` is the list's YAML path (`data.train.datasets`); relative local paths resolve against
    `base`. Returns (entries with `local`, an absolute `dataset_name` when local, the split without
    spaces; problems as 'yaml.path: what is wrong'). An entry whose local file is missing is left out.
    """
    resolved, problems = [], []
    for i, entry in enumerate(entries):
        here = f"{path}[{i}]"
        if not (isinstance(entry, dict) and isinstance(entry.get("dataset_name"), str)
                and isinstance(entry.get("split"), str)):
            continue  # the schema reports the shape; the other entries are still checked
        entry = dict(entry)
        if entry.get("dataset_path"):  # Oumi: dataset_name names its dataset class, the rows are here
            entry["dataset_name"] = entry["dataset_path"]
        if entry.get("mixture_proportion"):
            problems.append(f"{here}.mixture_proportion: not supported: a split's datasets are "
                            "concatenated as they are; remove mixture_proportion")
        for key in (*UNUSED_DATASET_FIELDS, "dataset_path", "dataset_kwargs", "mixture_proportion"):
            entry.pop(key, None)
        name, split = entry["dataset_name"], entry["split"].replace(" ", "")
        if name in OUMI_REGISTERED_DATASETS and not (base / name).exists():
            problems.append(f"{here}.dataset_name: {name!r} is a dataset class registered in Oumi "
                            f"({OUMI_REGISTERED_DATASETS[name]}), not a file or a hub dataset: snaketune "
                            "reads rows from a local json, jsonl, csv or parquet file or a hub dataset id; "
                            "point dataset_name at one")
            continue
        if not SPLIT_PATTERN.match(split):
            problems.append(f"{here}.split: {entry['split']!r} is not a split; write e.g. 'train', "
                            "'train[90%:]', 'train[:10%]' or 'train[:200]'")
        local = (base / Path(name).expanduser()).resolve()
        if local.exists():
            if local.is_file() and local.suffix.lower() not in DATA_FILE_SUFFIXES:
                problems.append(f"{here}.dataset_name: {local} is not a json, jsonl, csv or parquet file")
            resolved.append(DatasetParams.from_fields({**entry, "dataset_name": str(local),
                                                       "local": True, "split": split}))
        elif looks_like_local_path(name):
            problems.append(f"{here}.dataset_name: local dataset {local} does not exist")
        else:
            resolved.append(DatasetParams.from_fields({**entry, "local": False, "split": split}))
    return resolved, problems


def load_rows(entries: list[DatasetParams], role: str):
    """Every dataset of one split (train or validation), concatenated, as a `datasets.Dataset`."""
    from datasets import concatenate_datasets

    parts = [normalize_rows(load_one(entry, role), entry, role) for entry in entries]
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def load_one(entry: DatasetParams, role: str):
    """One dataset entry's rows as `datasets` reads them; a local file is checked first
    (`check_local_file`)."""
    from datasets import concatenate_datasets, load_dataset

    name, split = entry.dataset_name, entry.split
    split_name = split.split("[", 1)[0]
    scan = None
    is_file = entry.local and Path(name).is_file()
    if is_file:
        scan = check_local_file(Path(name), role, split)
    try:
        if is_file:
            builder = DATA_FILE_SUFFIXES[Path(name).suffix.lower()]
            # Name the file's only split as the config does, so `validation[:10%]` works too.
            rows = load_dataset(builder, data_files={split_name: name}, split=split)
        else:
            rows = load_dataset(name, entry.subset, split=split)
        if entry.shuffle:  # Oumi's per-dataset shuffle and sample_count, in that order
            rows = rows.shuffle(seed=entry.seed if entry.seed is not None else 0)
        if entry.sample_count:  # as Oumi samples: the first N rows, repeated when there are fewer
            whole, rest = divmod(entry.sample_count, len(rows))
            rows = concatenate_datasets([rows] * whole + [rows.select(range(rest))])
        return rows
    except Exception as e:
        if not entry.local and _looks_offline(e):
            raise DataError(
                f"data.{role}: cannot load {name!r}: the Hugging Face hub is unreachable from this "
                "machine. Download the dataset elsewhere and point dataset_name at the local file "
                "or folder (json, jsonl, csv or parquet)."
            ) from e
        mixed = _mixed_column(scan) if scan is not None else None
        if mixed:
            raise DataError(f"data.{role}: cannot load {name}: {mixed}; `datasets` needs one type per "
                            f"column ({_error_text(e)})") from e
        raise DataError(f"data.{role}: cannot load {name!r} split {split!r}: {_error_text(e)}") from e


def _looks_offline(error: Exception) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return True
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in ("connection", "offline", "resolve", "network", "timed out",
                                         "couldn't reach", "max retries"))


def _error_text(error: BaseException) -> str:
    """`Type: message` of the error `datasets` raised, on one line, with the error it wraps
    (DatasetGenerationError only says "An error occurred while generating the dataset")."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen and len(parts) < 3:
        seen.add(id(error))
        parts.append(" ".join(f"{type(error).__name__}: {error}".split()))
        error = error.__cause__
    return "; caused by ".join(parts)


# ----------------------------------------------------------------------------------------------
# Local files, read before `datasets` does.

# A value's JSON type, as messages name it.
_KIND_WORDS = {"string": "a string", "number": "a number", "boolean": "a boolean", "list": "a list",
               "object": "an object", "null": "null (or missing)", "other": "a value of another type"}
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


def _kind(value) -> str:
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


def _describe(value) -> str:
    """What a value is, for a message: its type and, for a scalar, the value (never a whole list
    or object)."""
    kind = _kind(value)
    if kind == "string":
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if kind in ("number", "boolean"):
        return f"{_KIND_WORDS[kind]} ({json.dumps(value)})"
    if kind == "list":
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if kind == "object":
        keys = list(value)
        shown = ", ".join(repr(str(k)) for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
        return f"an object with keys {shown}" if keys else "an empty object"
    if kind == "other":
        return f"a value of type {type(value).__name__}"
    return _KIND_WORDS[kind]


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
        kind = _kind(value)
        if kind not in seen:
            seen[kind] = (row, line, _describe(value))


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
                raise DataError(f"data.{role}: {path} line {number} is {_describe(row)}; expected one "
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
        raise DataError(f"data.{role}: {path} holds {_describe(value)}; expected a list of row objects "
                        "or one JSON object per line")
    if not value:
        raise DataError(f"data.{role}: {path} has no rows: it holds an empty list")
    for index, row in enumerate(value):
        if not isinstance(row, dict):
            raise DataError(f"data.{role}: {path} row {index} (counting from 0) is {_describe(row)}; "
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
    return " or ".join(_KIND_WORDS[k] for k in sorted(allowed))


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


def _mixed_column(scan: _Scan) -> str | None:
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
        raise DataError(f"data.{role}: {path} is not a readable parquet file ({_error_text(e)})") from e
    if rows == 0:
        raise DataError(f"data.{role}: {path} has no rows")


def _line_of_row(path: Path, row: int) -> int | None:
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


# ----------------------------------------------------------------------------------------------
# Rows: format, types, chat turns.

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
    kind = _kind(value)
    if kind == "string":
        return value
    if kind == "number":
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return str(value)
    if kind == "null" and optional:
        return ""
    raise BadValue(column, f" is {_describe(value)}; expected text (a string; a number is taken as "
                            "its text)")


def _turns(value, column: str, allow_empty: bool = False) -> list[dict]:
    """A list of chat turns, each {role: one of ROLES, content: a string}."""
    if not isinstance(value, list):
        raise BadValue(column, f" is {_describe(value)}; expected a list of turns, each "
                                '{"role": ..., "content": ...}')
    if not value and not allow_empty:
        raise BadValue(column, " is an empty list; expected at least one turn")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise BadValue(column, f": turn {i} is {_describe(turn)}; expected an object "
                                    '{"role": ..., "content": ...}')
        role, content = turn.get("role"), turn.get("content")
        if not isinstance(role, str) or role not in ROLES:
            found = repr(role) if isinstance(role, str) else _describe(role)
            raise BadValue(column, f": turn {i} 'role' is {found}; expected one of "
                                    f"{', '.join(repr(r) for r in ROLES)}")
        if not isinstance(content, str):
            raise BadValue(column, f": turn {i} ({role}) 'content' is {_describe(content)}; expected "
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
                    raise BadValue(column, f" is {_describe(value)}, but column {other!r} is a list of "
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


def normalize_rows(dataset, entry: DatasetParams, role: str):
    """Rows of any supported format as `messages` (chat turns), `loss_turns` (one flag per turn:
    its tokens carry the loss) and `plain_text` (a `text` row's text, else None). A value of the
    wrong type raises DataError naming the split, the file, the row and the column."""
    from datasets import Features, Value

    try:
        fmt = detect_format(dataset.column_names)
    except DataError as e:
        raise DataError(f"data.{role}: {entry.dataset_name}: {e}") from None
    first_row = _first_row(dataset, entry.split)
    features = Features({"messages": [{"role": Value("string"), "content": Value("string")}],
                         "loss_turns": [Value("bool")], "plain_text": Value("string")})

    def to_chat(row, index):
        try:
            return row_to_chat(row, fmt)
        except BadValue as e:
            raise DataError(f"data.{role}: {_row_place(entry, index, first_row)}, {e}") from None

    return dataset.map(to_chat, with_indices=True, remove_columns=dataset.column_names,
                       features=features)


def _first_row(dataset, split: str) -> int | None:
    """The file row (0-based) of the dataset's first row: where a slice like `train[10%:]` starts;
    None when not known."""
    if "[" not in split:
        return 0
    try:
        total = dataset.info.splits[split.split("[", 1)[0]].num_examples
    except Exception:
        return None
    rows = split_rows(split, total)
    return rows.start if rows is not None else None


def _row_place(entry: DatasetParams, index: int, first_row: int | None) -> str:
    """'FILE line L (row R, counting from 0)', the row counted in the file (or the hub split) in
    file order; the line only for a JSON Lines file."""
    name = entry.dataset_name if entry.local else f"dataset {entry.dataset_name!r} split {entry.split!r}"
    if first_row is None:
        return f"{name} row {index} of split {entry.split!r} (counting from 0)"
    row = first_row + index
    line = _line_of_row(Path(entry.dataset_name), row) if entry.local and Path(entry.dataset_name).is_file() else None
    return f"{name} {where_in_file(row, line)}"


# ----------------------------------------------------------------------------------------------
# Tokens.

def tokenize_row(row, tokenizer, max_length: int) -> dict:
    """input_ids and labels for one normalised row; the loss covers the turns `loss_turns` flags
    (every assistant turn when the row has no flags), or all of a conversation without one.

    The conversation is rendered with the chat template up to each run of flagged turns (with the
    generation prompt when the run starts with an assistant turn) and up to the run's end; the
    tokens the renderings share with the whole conversation's bound each run's labels."""
    if row["plain_text"] is not None:
        ids = tokenizer(row["plain_text"], add_special_tokens=True)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        labels, prompt, completion = list(ids), "", row["plain_text"]
    else:
        turns = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        flags = row.get("loss_turns")
        if flags is None or len(flags) != len(turns):
            flags = [t["role"] == "assistant" for t in turns]
        rendered = {}

        def render(upto: int, generation: bool) -> tuple[str, list[int]]:
            """turns[:upto] as chat-template text and its tokens ('' for no turns)."""
            if (upto, generation) not in rendered:
                text = (tokenizer.apply_chat_template(turns[:upto], tokenize=False,
                                                      add_generation_prompt=generation)
                        if upto else "")
                rendered[upto, generation] = (
                    text, tokenizer(text, add_special_tokens=False)["input_ids"] if text else [])
            return rendered[upto, generation]

        ids = render(len(turns), False)[1]
        runs = _runs(flags)
        if runs:
            labels, done = [-100] * len(ids), 0
            for first, last in runs:
                start = _common_prefix(render(first, turns[first]["role"] == "assistant")[1], ids)
                end = (len(ids) if last == len(turns) - 1
                       else _common_prefix(render(last + 1, False)[1], ids))
                start = max(start, done)
                labels[start:end] = ids[start:end]
                done = max(done, end)
        else:  # a conversation without an answer: learn all of it
            labels = list(ids)
        answer = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
        prompt = render(answer, True)[0] if answer is not None else ""
        completion = turns[answer]["content"] if answer is not None else ""
    return {"input_ids": ids[:max_length], "labels": labels[:max_length], "prompt": prompt,
            "completion": completion}


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(first, last) index of each run of consecutive True flags."""
    runs = []
    for i, flag in enumerate(flags):
        if flag:
            if runs and runs[-1][1] == i - 1:
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((i, i))
    return runs


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prepare_data(data_cfg: DataParams, tokenizer, max_length: int, summary_path: str | Path) -> dict:
    """Tokenize train and validation once and save them with `save_to_disk` beside `summary_path`
    (rule prepare_data's output), then write the summary there last: {split: {rows, dropped_rows,
    tokens, max_tokens}}. Raises DataError when a split has no usable row."""
    from datasets import DatasetDict

    splits = {}
    summary = {}
    for role in ("train", "validation"):
        rows = load_rows(getattr(data_cfg, role), role)
        tokenized = rows.map(tokenize_row, fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
                             remove_columns=rows.column_names)
        before = len(tokenized)
        # A row whose answer was cut off entirely by max_length carries no loss.
        tokenized = tokenized.filter(lambda r: any(label != -100 for label in r["labels"]))
        if len(tokenized) == 0:
            raise DataError(f"data.{role}: no usable rows (every answer was empty or truncated "
                            f"away when cut to max_length={max_length} tokens: raise "
                            "model.model_max_length or fixed_training_params.max_length)")
        lengths = [len(ids) for ids in tokenized["input_ids"]]
        summary[role] = {"rows": len(tokenized), "dropped_rows": before - len(tokenized),
                         "tokens": sum(lengths), "max_tokens": max(lengths)}
        splits[role] = tokenized
    summary_path = Path(summary_path)
    DatasetDict(splits).save_to_disk(str(tokenized_dir(summary_path.parent)))
    write_json(summary_path, summary)
    return summary


def tokenized_dir(data_dir: str | Path) -> Path:
    """The tokenized train and validation sets (a DatasetDict) in the directory of prepare_data's
    summary."""
    return Path(data_dir) / "tokenized"


def load_prepared(data_dir: str | Path):
    """The DatasetDict prepare_data saved in `data_dir` (the directory of its summary)."""
    from datasets import load_from_disk

    return load_from_disk(str(tokenized_dir(data_dir)))


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
    import csv
    import json

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
    from snaketune import hub

    problems = []
    for split in ("train", "validation"):
        for i, entry in enumerate(getattr(data_cfg, split)):
            if not entry.local:
                problem = hub.problem(entry.dataset_name, "dataset")
                if problem:
                    problems.append(f"data.{split}.datasets[{i}].dataset_name: {problem}")
    return problems


def fingerprint(data_cfg: DataParams) -> dict:
    """What the prepared data depends on: each split's entries, a hub dataset by its id, a local
    file by its SHA-256 (a folder by its file names and sizes). Part of the study's definition, and the prepare_data rule's
    params, so that a changed file re-prepares the data rather than leaving it silently stale."""
    import hashlib

    def content(path: Path) -> str | None:
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()
        if path.is_dir():
            listing = sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file())
            return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
        return None

    # A local file counts by its content, not where it lies: the same rows from another folder
    # (a second working directory, a moved data folder) are the same data.
    return {split: [{"split": e.split, "subset": e.subset, "sample_count": e.sample_count,
                     "shuffle": bool(e.shuffle), "seed": e.seed,
                     **({"sha256": content(Path(e.dataset_name))} if e.local else {"dataset_name": e.dataset_name})}
                    for e in getattr(data_cfg, split)]
            for split in ("train", "validation")}
