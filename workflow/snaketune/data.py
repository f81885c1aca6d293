"""Training and validation data: check, load, recognise the row format, tokenize once per study.

The `prepare_data` rule runs this once; every trial loads the tokenized result from disk and hands
it to TRL with `skip_prepare_dataset`, so no trial tokenizes again.

Before `datasets` reads a local json/jsonl/csv/parquet file, `data_files.check_local_file` reads
it once, so that bad JSON, an empty file or a column of mixed JSON types is reported by file, line
and column. Each row is then checked by type for its format (`normalize_rows`, with
snaketune.row_formats): a number where text is expected becomes its text, any other wrong type
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
import os
import re
from pathlib import Path

from snaketune.data_files import check_local_file, error_text, line_of_row, mixed_column, split_rows, where_in_file
from snaketune.errors import MissingLocalPath
from snaketune.layout import write_json
from snaketune.records import Record, section
from snaketune.row_formats import BadValue, DataError, detect_format, row_to_chat

# The local files `datasets` reads, by suffix, and the builder that reads each.
DATA_FILE_SUFFIXES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# `train`, `validation[:10%]`, `train[90%:]`, `train[10:200]`, `train[10%:20%]`
SPLIT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+(\[(-?\d+%?)?:(-?\d+%?)?\])?$")


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
            problems.append(MissingLocalPath(f"{here}.dataset_name: local dataset {local} does not exist"))
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
        mixed = mixed_column(scan) if scan is not None else None
        if mixed:
            raise DataError(f"data.{role}: cannot load {name}: {mixed}; `datasets` needs one type per "
                            f"column ({error_text(e)})") from e
        raise DataError(f"data.{role}: cannot load {name!r} split {split!r}: {error_text(e)}") from e


def _looks_offline(error: Exception) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return True
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in ("connection", "offline", "resolve", "network", "timed out",
                                         "couldn't reach", "max retries"))


# ----------------------------------------------------------------------------------------------
# Rows: each as chat turns (row_formats), a wrong value named by file, line and column.


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
    line = line_of_row(Path(entry.dataset_name), row) if entry.local and Path(entry.dataset_name).is_file() else None
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
