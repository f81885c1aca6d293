"""lm-evaluation-harness tasks as metrics: `tuning.evaluation_metrics: [lm_eval:<task>/<metric>]`.

After training, the trial's model (in eval mode, on its device; a LoRA model as it is, adapters on)
is evaluated on each task named by an objective through lm-eval's Python API (`simple_evaluate`
with an `HFLM` wrapping the model in memory), and each metric of each task becomes a metric of the
trial, named `lm_eval:<task>/<metric>` (`lm_eval:gsm8k/exact_match,strict-match`: lm-eval keys a
metric by name and filter; the filter may be left out when the task has one). The `lm_eval:`
section of tune.yaml holds lm-eval's own options: `include_path` (a folder of task YAMLs, for
tasks on local data), `limit`, `num_fewshot`, `batch_size`, `apply_chat_template`.

lm-eval is an optional extra: `pip install 'snaketune[lm-eval]'`. Its usual tasks (gsm8k, arc_easy,
hellaswag, ...) download their data from the Hugging Face hub on first use; on a machine without
the hub, describe the task in a YAML file of your own over local data (`dataset_path: json`,
`dataset_kwargs: {data_files: ...}`) in `include_path`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from snaketune.errors import closest
from snaketune.records import Record, section

PREFIX = "lm_eval:"


@section
class LmEvalParams(Record):
    """The resolved `lm_eval:` section (the schema fills the defaults)."""

    include_path: str | None  # absolute: a folder of task YAMLs (lm-eval's --include_path)
    limit: int | None  # rows per task (lm-eval's --limit); None: all of them
    num_fewshot: int | None  # examples in each prompt; None: the task's own number
    batch_size: int
    apply_chat_template: bool  # format prompts with the model's chat template (as training did)

    def result_settings(self) -> dict:
        """What changes the scores (the study's definition records it): all but the batch size."""
        return {"include_path": self.include_path, "limit": self.limit, "num_fewshot": self.num_fewshot,
                "apply_chat_template": self.apply_chat_template}


def is_lm_eval_metric(name: str) -> bool:
    return name.startswith(PREFIX)


def split_name(name: str) -> tuple[str, str]:
    """`lm_eval:<task>/<metric>` -> (task, metric); ValueError when it is not of that form."""
    task, slash, metric = name.removeprefix(PREFIX).partition("/")
    if not (task and slash and metric):
        raise ValueError(f"{name!r} is not lm_eval:<task>/<metric> (e.g. lm_eval:gsm8k/exact_match)")
    return task, metric


def resolve_section(cfg: dict, base: Path, written: dict, ask: bool) -> tuple[LmEvalParams, list[str], list[str]]:
    """`lm_eval:` of a schema-filled config `cfg` and the lm_eval objectives among its
    tuning.evaluation_metrics: (settings, problems, notices), each as 'yaml.path: what'; the shape
    every section resolver has (`written` is unused). `ask`: ask lm-eval whether it knows each
    task (seconds: it indexes its task folder); a job of a validated run skips it. A relative
    include_path resolves against `base`."""
    raw, metric_names, check_tasks = cfg["lm_eval"], cfg["tuning"]["evaluation_metrics"], ask
    problems, notices = [], []
    include = raw.get("include_path")
    include_path = str((base / Path(include).expanduser()).resolve()) if include else None
    params = LmEvalParams.from_fields({**raw, "include_path": include_path})
    wanted = [(i, name) for i, name in enumerate(metric_names) if is_lm_eval_metric(name)]
    tasks = {}
    for i, name in wanted:
        try:
            tasks.setdefault(split_name(name)[0], i)
        except ValueError as error:
            problems.append(f"tuning.evaluation_metrics[{i}]: {error}")
    if include_path and not Path(include_path).is_dir():
        problems.append(f"lm_eval.include_path: {include_path} is not a folder (of lm-eval task YAML files)")
    if not wanted:
        if include or raw.get("limit") or raw.get("num_fewshot"):
            notices.append("lm_eval: unused: no lm_eval:<task>/<metric> is in tuning.evaluation_metrics")
        return params, problems, notices
    if importlib.util.find_spec("lm_eval") is None:
        problems.append(f"tuning.evaluation_metrics[{wanted[0][0]}]: {wanted[0][1]!r} needs lm-evaluation-harness: "
                        "pip install 'snaketune[lm-eval]' (or lm-eval)")
        return params, problems, notices
    if check_tasks and tasks and not problems:
        from lm_eval.tasks import TaskManager

        index = TaskManager(include_path=include_path).task_index  # {task, group or tag name: its YAML}
        for task, i in tasks.items():
            if task not in index:
                problems.append(f"tuning.evaluation_metrics[{i}]: lm-eval has no task {task!r}{closest(task, index)}"
                                + ("" if include_path else "; for a task of your own, put its YAML in a folder "
                                   "and give it as lm_eval.include_path"))
        for i, name in wanted:
            task, metric = split_name(name)
            problem = metric_problem(task, metric, index[task]) if task in index else None
            if problem:
                problems.append(f"tuning.evaluation_metrics[{i}]: {problem}")
    return params, problems, notices


def metric_problem(task: str, metric: str, entry) -> str | None:
    """What is wrong with `metric` (`<name>` or `<name>,<filter>`) for lm-eval's task, read from
    its YAML (`entry`: an item of TaskManager.task_index) as lm-eval keys results: each metric of
    `metric_list` under each filter of `filter_list` ("none" without one). None when it is one of
    them, or when the YAML lists none (a group, a Python task, the output type's defaults): then
    `evaluate` says it after training."""

    config = getattr(entry, "cfg", None) or {}
    listed = [m.get("metric") for m in config.get("metric_list") or [] if isinstance(m, dict)]
    if not listed or not all(isinstance(m, str) and not m.startswith("!") for m in listed):
        return None
    filters = [f.get("name") for f in config.get("filter_list") or [] if isinstance(f, dict)] or ["none"]
    name, comma, filter_name = metric.partition(",")
    keys = ", ".join(f"{m},{f}" for m in listed for f in filters)
    if name not in listed:
        return f"lm-eval's task {task!r} has no metric {name!r}{closest(name, listed)}; it gives {keys}"
    if comma and filter_name not in filters:
        return f"lm-eval's task {task!r} has no filter {filter_name!r}{closest(filter_name, filters)}; it gives {keys}"
    if not comma and len(filters) > 1:
        return (f"lm-eval's task {task!r} gives {name!r} under {len(filters)} filters: name one, e.g. "
                f"'lm_eval:{task}/{name},{filters[0]}' (it gives {keys})")
    return None


def evaluate(model, tokenizer, settings: LmEvalParams, metric_names: list[str], seed: int) -> dict[str, float]:
    """Every metric of every task the lm_eval objectives among `metric_names` name, for `model`
    (as it is in memory): {`lm_eval:<task>/<metric>,<filter>`: value}, plus each objective under
    the name it was written with. Raises KeyError naming the task's metrics when an objective's
    metric is not among them."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    objectives = {name: split_name(name) for name in metric_names if is_lm_eval_metric(name)}
    tasks = sorted({task for task, _ in objectives.values()})
    was_training = model.training
    model.eval()
    results = simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size),
        tasks=tasks, task_manager=TaskManager(include_path=settings.include_path),
        limit=settings.limit, num_fewshot=settings.num_fewshot, apply_chat_template=settings.apply_chat_template,
        log_samples=False, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
        fewshot_random_seed=seed)["results"]
    if was_training:
        model.train()
    produced = {}
    for task in tasks:
        for key, value in results.get(task, {}).items():
            if "," in key and "_stderr," not in key and isinstance(value, (int, float)):
                produced[f"{PREFIX}{task}/{key}"] = float(value)
    for name, (task, metric) in objectives.items():
        if f"{PREFIX}{task}/{metric}" in produced:
            produced[name] = produced[f"{PREFIX}{task}/{metric}"]
            continue
        matches = [key for key in produced if key.startswith(f"{PREFIX}{task}/{metric},")]
        if len(matches) != 1:
            available = sorted(k.removeprefix(f"{PREFIX}{task}/") for k in produced if k.startswith(f"{PREFIX}{task}/"))
            raise KeyError(f"{name}: lm-eval's task {task!r} gave " + (
                f"{metric!r} under several filters: name one ({', '.join(available)})" if matches
                else f"no metric {metric!r}; it gave {', '.join(available) or 'none'}"))
        produced[name] = produced[matches[0]]
    return produced
