"""Training and validation data: load, recognise the row format, tokenize once per study.

The `prepare_data` rule runs this once; every trial loads the tokenized result from disk and hands
it to TRL with `skip_prepare_dataset`, so no trial tokenizes again.
Rows become `input_ids` and `labels` (-100 on prompt tokens, so the loss is on the answer only);
`prompt` and `completion` keep the text for custom metrics.
At parse time, `resolve_entries` checks a config's dataset entries (split, local path, suffix).
"""

from __future__ import annotations

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


class DataError(SnaketuneError, ValueError):
    """Data that cannot be loaded or used; the message names the split (`data.train`, ...)."""


@section
class DatasetParams(Record):
    """One resolved entry of a split's `datasets:` list (Oumi's DatasetParams names)."""

    dataset_name: str  # an absolute path when `local`, else a hub id
    split: str  # `train`, `train[90%:]`, ... (spaces removed)
    subset: str | None  # the hub dataset's configuration name
    local: bool  # a local file or directory (else loaded from the hub)


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
        name, split = entry["dataset_name"], entry["split"].replace(" ", "")
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
    from datasets import load_dataset

    name, split = entry.dataset_name, entry.split
    split_name = split.split("[", 1)[0]
    try:
        if entry.local and Path(name).is_file():
            builder = DATA_FILE_SUFFIXES[Path(name).suffix.lower()]
            # Name the file's only split as the config does, so `validation[:10%]` works too.
            return load_dataset(builder, data_files={split_name: name}, split=split)
        return load_dataset(name, entry.subset, split=split)
    except Exception as e:
        if not entry.local and _looks_offline(e):
            raise DataError(
                f"data.{role}: cannot load {name!r}: the Hugging Face hub is unreachable from this "
                "machine. Download the dataset elsewhere and point dataset_name at the local file "
                "or folder (json, jsonl, csv or parquet)."
            ) from e
        raise DataError(f"data.{role}: cannot load {name!r} split {split!r}: {e}") from e


def _looks_offline(error: Exception) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return True
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in ("connection", "offline", "resolve", "network", "timed out",
                                         "couldn't reach", "max retries"))


def detect_format(columns: list[str]) -> str:
    for fmt, needed in ROW_FORMATS.items():
        if all(c in columns for c in needed):
            return fmt
    raise DataError(
        f"unrecognised rows with columns {sorted(columns)}; expected Alpaca (instruction, input, "
        "output), chat (messages), prompt/completion, or plain text (text)"
    )


def normalize_rows(dataset, entry: DatasetParams, role: str):
    """Rows of any supported format as `messages` (chat turns) + `completion_from` (turn index)."""
    try:
        fmt = detect_format(dataset.column_names)
    except DataError as e:
        raise DataError(f"data.{role}: {entry.dataset_name}: {e}") from None

    def to_chat(row):
        if fmt == "alpaca":
            prompt = row["instruction"]
            if row.get("input"):
                prompt = f"{prompt}\n\n{row['input']}"
            turns = [{"role": "user", "content": prompt},
                     {"role": "assistant", "content": str(row["output"])}]
            return {"messages": turns, "plain_text": None}
        if fmt == "prompt_completion":
            return {"messages": [{"role": "user", "content": str(row["prompt"])},
                                 {"role": "assistant", "content": str(row["completion"])}],
                    "plain_text": None}
        if fmt == "messages":
            turns = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
            return {"messages": turns, "plain_text": None}
        return {"messages": [], "plain_text": str(row["text"])}

    return dataset.map(to_chat, remove_columns=dataset.column_names)


def tokenize_row(row, tokenizer, max_length: int) -> dict:
    """input_ids and labels for one normalised row; the loss covers the last assistant turn."""
    if row["plain_text"] is not None:
        ids = tokenizer(row["plain_text"], add_special_tokens=True)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        prompt_len, prompt, completion = 0, "", row["plain_text"]
    else:
        turns = row["messages"]
        if turns and turns[-1]["role"] == "assistant":
            prompt_turns, completion = turns[:-1], turns[-1]["content"]
        else:  # a conversation without a final answer: learn all of it
            prompt_turns, completion = [], ""
        full = tokenizer.apply_chat_template(turns, tokenize=False)
        prompt = (tokenizer.apply_chat_template(prompt_turns, tokenize=False, add_generation_prompt=True)
                  if prompt_turns else "")
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        prompt_len = _common_prefix(prompt_ids, ids)
    ids = ids[:max_length]
    labels = [-100] * min(prompt_len, len(ids)) + ids[prompt_len:]
    return {"input_ids": ids, "labels": labels, "prompt": prompt, "completion": completion}


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
                            f"away by model.model_max_length={max_length})")
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
