"""The checker: a tune.yaml read, checked and turned into the resolved config (`config.TuningConfig`).

Everything that can be wrong with a config is found at parse time, before any job runs and before a
journal exists, and reported all at once, each problem named by its YAML path. This module owns
reading the YAML (keys given twice, YAML 1.1 numbers), the JSON schema pass
(workflow/schemas/tune.schema.yaml: shape, and the defaults it fills in the same pass), Oumi's
input forms, the order of the checks and the problem list. The types it builds live below it, in
snaketune.config, so that every layer may import them without importing this checker (which
imports every concept's checks, and preflight's).

One pass, no write into the config while checking: `_as_written` turns Oumi's input forms into
snaketune's before the schema (a copy of the caller's dict); the schema fills its defaults; then
each part is resolved from that filled config, read only. Each concept checks its own section and
returns (value, 'yaml.path: what is wrong' lines, notices), in one shape,
`resolve_section(cfg, base, written, ask)`: model, data, generation, lm_harness (SECTIONS), and in
`tuning:` metrics (custom metrics) and gpu (devices). The values derived from several fields are
computed once, in `_resolve_tuning`: the study name (Oumi's tuning_study_name), the objectives'
directions (`_answer_directions`) and the study settings (strategy.resolve_settings: n_trials,
report_every_steps, resume_pruned); names (parameter names) and space (distributions, conditions,
enqueued trials) are asked there too.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from snaketune import (data, data_check, database, generation, gpu, library_checks, lm_harness, metrics, model, names, preflight,
                       resources, scoring, space, strategy)
from snaketune.config import Budget, ConfigError, ConvergedStop, TuningConfig, TuningParams, WarmStart
from snaketune.errors import MissingLocalPath, closest
from snaketune.gpu import DeviceSettings

SCHEMA_PATH = resources.schema_path()

# PyYAML (YAML 1.1) reads `1e-5` (no dot) as a string; the seed writes bounds that way.
YAML11_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")

# The top-level sections besides `tuning:`, each resolved by the module that owns its concept, in
# this order, with one signature: resolve_section(cfg, base, written, ask) -> (value, problems, notices).
SECTIONS = {"model": model, "data": data, "generation": generation, "lm_eval": lm_harness}


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last one
    silently (two `tunable_training_params:` blocks would drop the first block's parameters)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first is None:
                seen[key] = line
            else:
                self.duplicates.append(f"{key_node.start_mark.name}: key {key!r} is given twice "
                                       f"(lines {first} and {line}); "
                                       "YAML would keep only the last: merge them into one")
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path):
    """The YAML document in `path`. Raises ConfigError naming every key given twice, with its
    lines (Snakemake's own reading of a --configfile keeps the last silently)."""
    with open(path) as f:
        loader = _StrictLoader(f)
        loader.duplicates = []
        try:
            data = loader.get_single_data()
        except yaml.MarkedYAMLError as error:
            raise ConfigError([_syntax_problem(path, error)]) from None
        finally:
            loader.dispose()
    if loader.duplicates:
        raise ConfigError(loader.duplicates)
    return data


def _syntax_problem(path: str | Path, error: yaml.MarkedYAMLError) -> str:
    """'FILE:LINE:COLUMN: what' (1-based) for YAML that does not parse, as compilers write it, with
    where the construct it was reading began (PyYAML's context) and a hint for a tab."""
    mark, context = error.problem_mark, error.context_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    what = error.problem or "not YAML"
    if error.context and context and (not mark or context.line != mark.line):
        what += f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
    if "'\\t'" in what:
        what += "; YAML indents with spaces, not tabs: replace the tab with spaces"
    return f"{where}: {what}"


def read_tune_yaml(path: str | Path) -> dict:
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping with model, data and tuning"])
    return raw


def read_default_tune_yaml(repo_dir: str | Path | None = None) -> dict:
    """The embedded default (config/tune.yaml under `repo_dir`, a workflow root; by default the
    package's own, see `snaketune.resources`), its data paths anchored to that root (outputs still
    go to the working directory, like a user's own config)."""
    repo_dir = Path(repo_dir if repo_dir is not None else resources.workflow_root())
    raw = read_tune_yaml(resources.default_tune_config(repo_dir))
    for split in raw["data"].values():
        for entry in split["datasets"]:
            entry["dataset_name"] = str(repo_dir / entry["dataset_name"])
    return raw


def load_tune_config(raw: dict, base_dir: str | Path | None = None, validated: bool = False) -> TuningConfig:
    """Validate `raw` (a parsed tune.yaml; not changed) and return the resolved config.

    Relative paths resolve against `base_dir` (the working directory by default).
    `validated=True` is for jobs of a run whose main process already validated the config: the
    checks that import TRL/PEFT (parameter names), custom metric modules or CUDA are skipped,
    which saves seconds of start-up in every job.
    Raises ConfigError listing every problem found.
    """
    base = Path(base_dir or Path.cwd()).resolve()
    cfg, oumi_problems = _as_written(raw)
    written = copy.deepcopy(cfg)  # before the schema fills its defaults: what the user wrote
    shape_problems = oumi_problems + _schema_problems(cfg, load_schema())  # fills the defaults too
    problems: list[str] = []
    if not shape_problems:
        resolved = _resolve(cfg, written, base, validated, problems)
        if problems:
            raise ConfigError(problems)
        return resolved
    # The semantic checks assume the schema's shape. Past a shape problem they still run, so that
    # a typo'd key and a bad bound show up together; they stop at the first part they cannot read,
    # and say nothing about a path the schema already reported.
    try:  # not asking the libraries (seconds of imports): the shape problems come first
        _resolve(cfg, written, base, validated, problems, full_checks=False)
    except Exception:
        pass
    reported = [p.split(": ", 1)[0] for p in shape_problems]
    raise ConfigError(shape_problems + [p for p in problems
                                        if not any(_overlaps(p.split(": ", 1)[0], r) for r in reported)])


def _as_written(raw: dict) -> tuple[dict, list[str]]:
    """A copy of `raw` with Oumi's and YAML's input forms in snaketune's, for the schema: YAML 1.1
    number strings as numbers, a dtype's case (Oumi: BF16, bf16), a single metric or direction as
    a list of one, an empty section (`generation:` with nothing under it) as {}, Oumi's nulls
    (OUMI_NULLS) as their values; and the problems of Oumi's registry names in
    custom_eval_metrics (left out, so that the schema checks the rest)."""
    cfg = _coerce_yaml11_numbers(copy.deepcopy(raw))
    model_section = cfg.get("model")
    if isinstance(model_section, dict) and isinstance(model_section.get("torch_dtype_str"), str):
        model_section["torch_dtype_str"] = model_section["torch_dtype_str"].lower()
    tuning = cfg.get("tuning")
    if isinstance(tuning, dict):
        for key in ("evaluation_metrics", "evaluation_direction"):
            if isinstance(tuning.get(key), str):  # a single name is a list of one
                tuning[key] = [tuning[key]]
        for key in ("tunable_training_params", "fixed_training_params",
                    "tunable_peft_params", "fixed_peft_params"):
            if key in tuning and tuning[key] is None:
                tuning[key] = {}
    for key in ("generation", "lm_eval"):
        if key in cfg and cfg[key] is None:  # `generation:` with nothing under it
            cfg[key] = {}
    cfg.setdefault("tuning", {})
    for (part_name, key), value in OUMI_NULLS.items():
        part = cfg.get(part_name)
        if isinstance(part, dict) and key in part and part[key] is None:
            part[key] = value
    problems = []
    if isinstance(cfg["tuning"], dict) and isinstance(cfg["tuning"].get("custom_eval_metrics"), list):
        cfg["tuning"]["custom_eval_metrics"], problems = _oumi_metric_names(cfg["tuning"]["custom_eval_metrics"])
    return cfg, problems


def load_gpu_settings(raw: dict, base_dir: str | Path | None = None) -> DeviceSettings:
    """Only the device settings (`tuning.gpu` of the resolved config) of an already validated
    config: a trial leases its GPU with these before anything may import torch.

    Here rather than in gpu.py: the defaults come from the schema, and gpu.py stays a leaf.
    """
    schema = load_schema()
    tuning_schema = schema["properties"]["tuning"]
    tuning = {k: v for k, v in (raw.get("tuning") or {}).items() if k in gpu.SETTING_KEYS}
    subset = {"$defs": schema["$defs"], "type": "object",
              "properties": {k: tuning_schema["properties"][k] for k in gpu.SETTING_KEYS}}
    for _ in _DefaultingValidator(subset).iter_errors(tuning):  # validated already: defaults only
        pass
    return gpu.resolve_section({"tuning": tuning}, Path(base_dir or Path.cwd()).resolve(), {}, False)[0]


def _resolve(cfg: dict, written: dict, base: Path, validated: bool, problems: list[str],
             full_checks: bool = True) -> TuningConfig:
    """The resolved config of a schema-filled `cfg` (read only; `written`: the same before the
    schema's defaults), each concept checking its own section in turn; their problems are
    appended to `problems` as they are found (so a check that fails on a shape the schema refused
    leaves those found before it). `full_checks`: once every section is sound, read the local data
    files' rows (data_check) and ask TRL, PEFT, transformers and the hub (`_library_problems`),
    which take a second and seconds."""
    notices: list[str] = []
    tuning = _resolve_tuning(cfg, written, base, validated, problems, notices)
    sections = {}
    for name, owner in SECTIONS.items():  # lm-eval's task index takes seconds: not past a problem
        sections[name], found, said = owner.resolve_section(cfg, base, written, not validated and not problems)
        # A job reads what the run's main process (which checked these paths) made of the user's files.
        problems.extend(p for p in found if not (validated and isinstance(p, MissingLocalPath)))
        notices.extend(said)
    if cfg.get("fsdp"):
        notices.append("fsdp: unused: oumi tune does not pass it to trials either; a trial on several "
                       "GPUs is data parallel (tuning.gpu.gpus_per_trial)")
    resolved = TuningConfig(notices=notices, tuning=tuning, **sections)
    if resolved.uses_generation and not validated:  # reads the files' first rows: once, in the main process
        problems.extend(data_check.generation_problems(resolved.data.validation))
    if not validated:  # a job runs in a folder its main process accepted (and began to fill)
        unusable = tuning.layout.unusable_because()
        if unusable:
            problems.append(f"tuning.output_dir: {unusable}")
    if not validated and not problems and full_checks:  # reads the local files' rows: once, in the main process
        problems.extend(data_check.file_problems(resolved.data))
    if not validated and not problems and full_checks:
        found, said = _library_problems(resolved)
        problems.extend(found)
        if said:  # the sampler's and pruner's warnings
            resolved = dataclasses.replace(resolved, notices=notices + said)
    return resolved


def _resolve_tuning(cfg: dict, written: dict, base: Path, validated: bool, problems: list[str],
                    notices: list[str]) -> TuningParams:
    """The `tuning:` section of a schema-filled `cfg`, appending to `problems` and `notices` as
    they are found. Every value derived from several fields is computed here, once: the study
    name, the directions, the study settings (strategy.resolve_settings), the training arguments
    Oumi's model fields become."""
    tuning = cfg["tuning"]
    ask = not validated
    params = names.resolve_parameters(tuning, check_fields=ask)
    problems.extend(params.problems)
    notices.extend(params.notices)
    study_name = _oumi_tuning_fields(tuning, problems, notices)
    if ask:  # imports torch
        problems.extend(library_checks.qlora_problems(params.quantization))
    custom, found, _ = metrics.resolve_section(cfg, base, written, ask)
    problems.extend(found)
    directions, said = _answer_directions(tuning, isinstance(written["tuning"], dict)
                                          and "evaluation_direction" in written["tuning"])
    notices.extend(said)
    metric_names, directions, found = metrics.resolve_objectives(
        tuning["evaluation_metrics"], directions, custom_names=None if validated else [c.name for c in custom])
    problems.extend(found)
    constraints, found = metrics.resolve_constraints(tuning["constraints"],
                                                     None if validated else [c.name for c in custom], metric_names)
    problems.extend(found)
    if constraints and isinstance(tuning["tuner_sampler"], str) and tuning["tuner_sampler"] not in strategy.CONSTRAINED_SAMPLERS:
        notices.append(f"tuning.constraints: {tuning['tuner_sampler']} samples without them (TPESampler, GPSampler, "
                       "NSGAIISampler and NSGAIIISampler steer away from infeasible trials); infeasible trials are "
                       "still marked and never the best")
    warm_start, found = _warm_start(tuning.get("warm_start_from"), base)
    problems.extend(found)
    output_dir = str((base / Path(tuning["output_dir"]).expanduser()).resolve())
    if warm_start and ((warm_start.output_dir == output_dir and not tuning.get("storage"))
                       or (warm_start.storage and warm_start.storage == tuning.get("storage")
                           and warm_start.study_name == study_name)):
        problems.append("tuning.warm_start_from: names this study itself; name an earlier study (another "
                        "output_dir, or another study_name in the database)")
    if tuning["stop_when_converged"] and len(metric_names) > 1:
        problems.append("tuning.stop_when_converged: a study of several objectives has no one best value to stop "
                        "improving (its Pareto front grows); leave it out, or tune one objective")
    search_space, found = space.resolve_conditions(params.space)
    problems.extend(found)
    settings, found, said = strategy.resolve_settings(tuning, search_space, metric_names, [c.name for c in custom])
    problems.extend(found)
    notices.extend(said)
    enqueued, found = space.resolve_enqueued(tuning["enqueue_trials"], search_space, settings.n_trials,
                                             tuning["tuner_sampler"])
    problems.extend(found)
    moved = model.moved_training_args(cfg["model"])  # Oumi's model.compile / enable_liger_kernel
    training_args = dict(params.training_args)
    for target, value in moved.items():  # a fixed training parameter of the same name wins
        training_args.setdefault(target, value)
    devices, found, _ = gpu.resolve_section(cfg, base, written, ask)
    problems.extend(found)
    return TuningParams(
        n_trials=settings.n_trials,
        study_name=study_name,
        seed=tuning["seed"],
        output_dir=str((base / Path(tuning["output_dir"]).expanduser()).resolve()),
        sampler=tuning["tuner_sampler"],
        sampler_kwargs=tuning["sampler_kwargs"],
        pruner=tuning["pruner"],
        pruner_kwargs=tuning["pruner_kwargs"],
        report_every_steps=settings.report_every_steps,
        resume_pruned=settings.resume_pruned,
        enqueue_trials=enqueued,
        timeout_minutes=tuning["timeout_minutes"],
        evaluation_timeout_minutes=tuning["evaluation_timeout_minutes"],
        budget=Budget(*next(iter(tuning["budget"].items()))) if tuning["budget"] else None,
        stop_when_converged=ConvergedStop.from_fields(tuning["stop_when_converged"]) if tuning["stop_when_converged"] else None,
        metrics=metric_names,
        directions=directions,
        custom_eval_metrics=custom,
        constraints=constraints,
        warm_start=warm_start,
        space=search_space,
        training_args=training_args,
        lora_args=params.lora_args,
        quantization=params.quantization,
        use_peft=params.use_peft,
        gpu=devices,
        on_divergence=tuning["on_divergence"],
        storage=tuning.get("storage") or None,
        argument_paths={**_argument_paths(tuning, params),
                        **{("training", target): f"model.{key}" for key, target in model.MOVED_MODEL_FIELDS.items()
                           if target in moved}},
    )


def _library_problems(resolved: TuningConfig) -> tuple[list[str], list[str]]:
    """What Optuna, TRL, PEFT, transformers and the hub will say, asked at parse time (seconds) of
    a config whose every section is sound: (problems, notices). The sampler and pruner over the
    space (their warnings become notices), the trial arguments at each corner of the space, the
    model's weights and chat template, the hub ids of model and data. The rest (the model, PEFT,
    the trainer, a step) is the preflight rule's (snaketune.preflight)."""
    problems, notices = preflight.search_problems(resolved.tuning)
    if problems:
        return problems, notices
    problems = library_checks.argument_problems(resolved.tuning, resolved.max_length, resolved.tuning.argument_paths)
    if problems:
        return problems, notices
    problems = library_checks.model_problems(resolved.model, needs_chat_template=data_check.needs_chat_template(resolved.data),
                                             prepared=resolved.tuning.layout.model_source,
                                             answer_tokens=resolved.generation.max_new_tokens
                                             if resolved.uses_generation else None)
    if resolved.uses_generation:
        problems += library_checks.generation_config_problems(resolved.generation)
    return problems + data_check.hub_problems(resolved.data), notices


def _argument_paths(tuning: dict, params: names.Parameters) -> dict:
    """{(group, target field): the YAML path of the fixed parameter that set it} (TuningParams.argument_paths)."""
    paths = {}
    for group, key, target_of, args in (
            ("training", "fixed_training_params", names.training_target, params.training_args),
            ("peft", "fixed_peft_params", names.peft_target, params.lora_args)):
        for name in tuning[key] if isinstance(tuning[key], dict) else {}:
            target = target_of(name, check_fields=False)[0]
            if target in args:
                paths[(group, target)] = f"tuning.{key}.{name}"
    return paths


# Oumi TuningParams fields about Oumi's own logging: accepted, with a notice of what is done instead.
OUMI_LOGGING_FIELDS = {
    "log_level": "each trial's log is trial_<i>/logs/trial.log; Snakemake's own is .snakemake/log",
    "logging_strategy": "every trial logs to its own folder",
    "logging_dir": "each trial logs to <tuning.output_dir>/trial_<i>/logs",
    "log_examples": "the tokenized rows are in <tuning.output_dir>/data/tokenized",
    "telemetry": "each trial's devices and wall time are in its user attributes and logs/benchmark.tsv",
    "load_if_exists": "an existing study in tuning.output_dir is always continued (its failed trials "
                      "re-run, new slots added); a new study needs a new tuning.output_dir",
}


def _oumi_metric_names(entries: list) -> tuple[list, list[str]]:
    """Oumi's custom_eval_metrics are names in Oumi's registry of evaluation functions, which
    snaketune does not have: (the other entries, a problem for each name saying how to write it)."""
    problems = [f"tuning.custom_eval_metrics[{i}]: {entry!r} names an evaluation function in Oumi's "
                f"registry, which snaketune does not have: write {{name: {entry}, function: "
                "my_module.my_function} (a Python function of the working directory)"
                for i, entry in enumerate(entries) if isinstance(entry, str)]
    return [entry for entry in entries if not isinstance(entry, str)], problems


def _oumi_tuning_fields(tuning: dict, problems: list[str], notices: list[str]) -> str:
    """Oumi's TuningParams fields snaketune has no field of its own for: `tuning_study_name` is
    `study_name`, `trainer_type` must be TRL's SFT, `storage` a database URL snaketune takes
    (database.storage_problems), the rest are accepted and said to be unused. Returns the study name; appends to `problems` and
    `notices`."""
    study_name = tuning["study_name"]
    if tuning.get("tuning_study_name"):
        if study_name not in ("snaketune", tuning["tuning_study_name"]):  # not the default
            problems.append(f"tuning.tuning_study_name: study_name {study_name!r} is given too; "
                            "keep one (Oumi's name and snaketune's are one setting)")
        study_name = tuning["tuning_study_name"]
    trainer = tuning.get("trainer_type")
    if trainer is not None and str(trainer).upper() not in names.OUMI_ONLY_TRAINING_NAMES["trainer_type"]:
        problems.append(f"tuning.trainer_type: {trainer!r} is not supported; snaketune trains with TRL's "
                        "SFTTrainer (TRL_SFT)")
    if tuning.get("storage"):
        problems.extend(database.storage_problems(str(tuning["storage"])))
    for key, instead in OUMI_LOGGING_FIELDS.items():
        if key in tuning:
            notices.append(f"tuning.{key}: unused: {instead}")
    return study_name


def _warm_start(given, base: Path) -> tuple[WarmStart | None, list[str]]:
    """tuning.warm_start_from as the schema let it through (a folder, or a mapping): the earlier
    study's place (a folder relative to `base`, or a database URL as tuning.storage takes it) and
    (problems). Whether the study is there and fits is snaketune.warm_start's, once the whole
    config resolved (check.accepted_config)."""
    if not given:
        return None, []
    entry = {"output_dir": given} if isinstance(given, str) else dict(given) if isinstance(given, dict) else None
    if entry is None:
        return None, []  # the schema reports the shape
    path = "tuning.warm_start_from"
    if ("output_dir" in entry) == ("storage" in entry):
        return None, [f"{path}: name the earlier study by its output_dir or by its storage (a postgresql:// URL "
                      "with study_name), one of the two"]
    problems = []
    if entry.get("storage"):
        problems += database.storage_problems(str(entry["storage"]), f"{path}.storage")
        if not entry.get("study_name"):
            problems.append(f"{path}.study_name: a database holds many studies: name the earlier one")
    folder = entry.get("output_dir")
    return WarmStart(output_dir=str((base / Path(folder).expanduser()).resolve()) if folder else None,
                     storage=entry.get("storage"), study_name=entry.get("study_name"),
                     enqueue_best=int(entry.get("enqueue_best") or 0)), problems


def _answer_directions(tuning: dict, directions_given: bool) -> tuple[list[str], list[str]]:
    """Scores of answers (generation and lm-eval metrics) are better higher: without
    evaluation_direction they are maximized (the schema's default, minimize, is the loss's), said
    in a notice; minimizing one the user asked for is said too. Returns (the directions as given
    or so derived, notices)."""
    metric_names, directions = tuning["evaluation_metrics"], tuning["evaluation_direction"]
    answers = [n for n in metric_names if n in scoring.GENERATION_METRICS or lm_harness.is_lm_eval_metric(n)]
    if not answers:
        return directions, []
    if not directions_given:
        return ["maximize" if n in answers else "minimize" for n in metric_names], [
            f"tuning.evaluation_direction: not given; {', '.join(answers)} maximized (the share of right "
            "answers: higher is better), any other objective minimized"]
    directions = directions * len(metric_names) if len(directions) == 1 else directions
    return tuning["evaluation_direction"], [
        f"tuning.evaluation_direction[{i}]: minimizes {name}, a score where higher is better; write "
        "maximize unless you mean it" for i, (name, direction) in enumerate(zip(metric_names, directions))
        if name in answers and direction == "minimize"]


# Oumi's meaning of null where snaketune needs a value: `tuner_sampler: null` is Optuna's default
# (TPE); `model_max_length: null` is no limit of the model's own, so rows are cut to TRL's
# SFTConfig.max_length default.
OUMI_NULLS = {("tuning", "tuner_sampler"): "TPESampler", ("model", "model_max_length"): 1024}


def _overlaps(path: str, other: str) -> bool:
    """Whether one YAML path is the other or lies inside it."""
    short, long = sorted((path, other), key=len)
    return long == short or long.startswith((short + ".", short + "["))


def _coerce_yaml11_numbers(value):
    if isinstance(value, dict):
        return {k: _coerce_yaml11_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce_yaml11_numbers(v) for v in value]
    if isinstance(value, str) and YAML11_FLOAT.match(value.strip()):
        return float(value)
    return value


def _yaml_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _set_defaults(validator, properties, instance, schema):
    """jsonschema's `properties` keyword, filling in each missing property's `default` first
    (jsonschema's documented recipe for defaults), so one pass both validates and fills."""
    if validator.is_type(instance, "object"):
        for key, subschema in properties.items():
            if key not in instance and isinstance(subschema, dict) and "default" in subschema:
                instance[key] = copy.deepcopy(subschema["default"])  # never share the schema's {}
    yield from Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


# JSON Schema counts 3.0 as an integer; Python code (range, numpy seeds) does not: `n_trials: 3.0`
# and `seed: 42.0` are refused by their YAML path rather than failing inside a job.
_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
_DefaultingValidator = validators.extend(Draft202012Validator, {"properties": _set_defaults},
                                         type_checker=_TYPES)


def _schema_problems(cfg: dict, schema: dict) -> list[str]:
    """Validate `cfg` against the schema, filling its defaults in place; returns the problems."""
    problems = []
    for error in sorted(_DefaultingValidator(schema).iter_errors(cfg), key=lambda e: list(e.path)):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":
            known = error.schema.get("properties", {}).keys()
            for key in sorted(set(error.instance) - set(known)):
                problems.append(f"{_yaml_path(path + [key])}: unknown key{closest(key, known)}")
        elif error.validator == "required":
            missing = error.message.split("'")[1]
            problems.append(f"{_yaml_path(path + [missing])}: required but missing")
        else:  # the field's description says what it takes
            described = error.schema.get("description") if isinstance(error.schema, dict) else None
            problems.append(f"{_yaml_path(path)}: {error.message}" + (f" (it is: {described})" if described else ""))
    return problems
