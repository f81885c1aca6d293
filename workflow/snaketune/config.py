"""Validate a tune.yaml and turn it into the resolved config every rule and trial reads.

Everything that can be wrong with a config is found at parse time, before any job runs and before a
journal exists, and reported all at once, each problem named by its YAML path. This module owns the
JSON schema pass (workflow/schemas/tune.schema.yaml: shape, and the defaults it fills in the same
pass), the order of the checks, the problem list and the resolved config's top two levels
(`TuningConfig`, `TuningParams`): frozen, typed, built once per process. Each concept checks its own section and
returns 'yaml.path: what is wrong' lines: names (parameter names), space (distributions,
conditions, enqueued trials), metrics (objectives, custom metric imports), strategy (sampler and
pruner), model, data and gpu (devices).
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from snaketune import data, data_check, generation, gpu, library_checks, lm_harness, metrics, model, names, resources, scoring, space, strategy
from snaketune.data import DataParams
from snaketune.errors import ProblemsError, closest
from snaketune.gpu import DeviceSettings
from snaketune.layout import StudyLayout
from snaketune.metrics import CustomMetric
from snaketune.model import ModelParams
from snaketune.records import Record, section

SCHEMA_PATH = resources.schema_path()

TUNER_TYPES = ("OPTUNA",)
# PyYAML (YAML 1.1) reads `1e-5` (no dot) as a string; the seed writes bounds that way.
YAML11_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


class ConfigError(ProblemsError):
    """A tune.yaml with problems; `problems` lists each as 'yaml.path: what is wrong'."""

    heading = "Invalid tune config ({count} problem(s))"


@section
class TuningParams(Record):
    """The resolved `tuning:` section: the study, its search space and the trials' fixed arguments.

    Names follow Optuna and Hugging Face where the YAML's differ (`sampler` is tuning.tuner_sampler,
    `metrics` tuning.evaluation_metrics; `training_args` and `lora_args` are SFTConfig and
    LoraConfig arguments by their field names).
    """

    n_trials: int  # the trial budget: slots trial_0 .. trial_<n-1>
    study_name: str
    seed: int
    output_dir: str  # absolute
    sampler: str  # an optuna.samplers class name
    sampler_kwargs: dict
    pruner: str  # a key of strategy.PRUNERS ("none": no pruning)
    pruner_kwargs: dict
    report_every_steps: int | None  # evaluate (and report to the pruner) every N steps
    # η of tuning.resume_pruned (strategy.reduction_factor): a slot resumes a pruned trial whose
    # value is among the best 1/η at its step (strategy.promotions); None: pruned trials stay stopped
    resume_pruned: int | None
    enqueue_trials: list[dict]  # configurations evaluated first, {parameter name: value}
    timeout_minutes: float | None
    # {"trained_steps": N} | {"trained_tokens": N} | {"gpu_hours": H}: compute the study may spend
    budget: dict | None
    metrics: list[str]  # the objectives, in order
    directions: list[str]  # "minimize" or "maximize", one per objective
    custom_eval_metrics: list[CustomMetric]
    space: list[space.Parameter]  # parents before the parameters conditioned on them
    training_args: dict  # fixed SFTConfig arguments
    lora_args: dict  # fixed LoraConfig arguments
    quantization: dict  # QLoRA options (q_lora, q_lora_bits, bnb_4bit_*), applied at model load
    use_peft: bool  # LoRA on: fixed_training_params.use_peft, or LoRA parameters given (names._use_peft)
    gpu: DeviceSettings
    on_divergence: str  # "fail" or "prune"
    # where each fixed argument was written: {(group, target field): YAML path}, group "training"
    # (training_args) or "peft" (lora_args); a library's complaint is reported under these
    argument_paths: dict

    @property
    def layout(self) -> StudyLayout:
        """Every path of the study under `output_dir`."""
        return StudyLayout(self.output_dir)


@section
class TuningConfig(Record):
    """A validated tune.yaml (Oumi's TuningConfig: model, data, tuning), as `load_tune_config`
    resolves it."""

    model: ModelParams
    data: DataParams
    tuning: TuningParams
    # how trials answer the validation prompts (tune.yaml's `generation:`); used when a generation
    # metric (scoring.GENERATION_METRICS) is an objective (`uses_generation`)
    generation: generation.GenerationParams
    # lm-evaluation-harness options (tune.yaml's `lm_eval:`), for the lm_eval:<task>/<metric> objectives
    lm_eval: lm_harness.LmEvalParams
    notices: list[str]  # 'yaml.path: what was adjusted': accepted, but not quite as written

    @functools.cached_property
    def definition(self) -> dict:
        """What determines a trial's result besides its parameters, as the study records it
        (study.study_definition): the model, the data (with its content), max_length, the fixed
        training arguments that change what is learnt, the LoRA and quantisation settings.
        Computed once per config (it reads every local data file to hash it)."""
        tuning = self.tuning
        return {
            "model": model.fingerprint(self.model),
            "data": {**data.fingerprint(self.data), "max_length": self.max_length},
            "training": {k: v for k, v in tuning.training_args.items() if names.changes_results(k)},
            "peft": {"use_peft": tuning.use_peft, **tuning.lora_args, **tuning.quantization},
            # only when used: a study without generation metrics keeps the definition it had
            **({"generation": self.generation.result_settings()} if self.uses_generation else {}),
            **({"lm_eval": self.lm_eval.result_settings()} if self.uses_lm_eval else {}),
        }

    @property
    def uses_lm_eval(self) -> bool:
        """Whether trials run lm-evaluation-harness tasks: an lm_eval:<task>/<metric> is an objective."""
        return any(lm_harness.is_lm_eval_metric(name) for name in self.tuning.metrics)

    @property
    def scores_answers(self) -> bool:
        """Whether the model's answers are scored (generation or lm-eval metrics): then rule
        baseline scores the untrained model's the same way."""
        return self.uses_generation or self.uses_lm_eval

    @property
    def uses_generation(self) -> bool:
        """Whether trials generate answers: a built-in generation metric is an objective."""
        return any(name in scoring.GENERATION_METRICS for name in self.tuning.metrics)

    @property
    def max_length(self) -> int:
        """Tokens a row is cut to when the data is tokenized, and SFTConfig.max_length: the fixed
        training parameter max_length (Oumi's max_seq_length) if given, else model.model_max_length."""
        return int(self.tuning.training_args.get("max_length") or self.model.model_max_length)


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
    """Validate `raw` (a parsed tune.yaml) and return the resolved config.

    Relative paths resolve against `base_dir` (the working directory by default).
    `validated=True` is for jobs of a run whose main process already validated the config: the
    checks that import TRL/PEFT (parameter names), custom metric modules or CUDA are skipped,
    which saves seconds of start-up in every job.
    Raises ConfigError listing every problem found.
    """
    base = Path(base_dir or Path.cwd()).resolve()
    cfg = _coerce_yaml11_numbers(copy.deepcopy(raw))
    model_section = cfg.get("model")
    if isinstance(model_section, dict) and isinstance(model_section.get("torch_dtype_str"), str):
        model_section["torch_dtype_str"] = model_section["torch_dtype_str"].lower()  # Oumi: BF16, bf16
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
    given_generation = set(cfg["generation"]) if isinstance(cfg.get("generation"), dict) else set()
    directions_given = isinstance(cfg["tuning"], dict) and "evaluation_direction" in cfg["tuning"]
    oumi_problems = _oumi_metric_names(cfg["tuning"]) if isinstance(cfg["tuning"], dict) else []
    shape_problems = oumi_problems + _schema_problems(cfg, load_schema())  # fills the defaults too
    _oumi_nulls(cfg)
    problems: list[str] = []
    if not shape_problems:
        resolved = _resolve(cfg, base, validated, problems, given_generation, directions_given)
        if problems:
            raise ConfigError(problems)
        return resolved
    # The semantic checks assume the schema's shape. Past a shape problem they still run, so that
    # a typo'd key and a bad bound show up together; they stop at the first part they cannot read,
    # and say nothing about a path the schema already reported.
    try:  # not asking the libraries (seconds of imports): the shape problems come first
        _resolve(cfg, base, validated, problems, given_generation, directions_given, full_checks=False)
    except Exception:
        pass
    reported = [p.split(": ", 1)[0] for p in shape_problems]
    raise ConfigError(shape_problems + [p for p in problems
                                        if not any(_overlaps(p.split(": ", 1)[0], r) for r in reported)])


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
    return gpu.resolve_settings(tuning, Path(base_dir or Path.cwd()).resolve())[0]


def _resolve(cfg: dict, base: Path, validated: bool, problems: list[str],
             given_generation: set[str] = frozenset(), directions_given: bool = True,
             full_checks: bool = True) -> TuningConfig:
    """The resolved config of a schema-filled `cfg`, each concept checking its own section in turn;
    their problems are appended to `problems` as they are found (so a check that fails on a shape
    the schema refused leaves those found before it). `given_generation`: the keys the user wrote
    under `generation:` (before the schema filled its defaults); `directions_given`: whether the
    user wrote tuning.evaluation_direction (else scores of answers are maximized); `full_checks`:
    once every section is sound, read the local data files' rows (data_check) and ask TRL, PEFT,
    transformers and the hub (`_library_problems`), which take a second and seconds."""

    def collect(result):
        value, found = result
        problems.extend(found)
        return value

    tuning = cfg["tuning"]
    params = names.resolve_parameters(tuning, check_fields=not validated)
    problems.extend(params.problems)
    notices = list(params.notices) + _oumi_tuning_fields(tuning, problems)
    if not validated:  # imports torch
        problems.extend(library_checks.qlora_problems(params.quantization))
    custom = collect(metrics.resolve_custom(tuning["custom_eval_metrics"], base,
                                            import_modules=not validated))
    notices.extend(_answer_directions(tuning, directions_given))
    metric_names, directions, found = metrics.resolve_objectives(
        tuning["evaluation_metrics"], tuning["evaluation_direction"],
        custom_names=None if validated else [c.name for c in custom])
    problems.extend(found)
    search_space = collect(space.resolve_conditions(params.space))
    n_trials = _study_settings(tuning, search_space, metric_names, custom, problems, notices)
    uses_generation = any(name in scoring.GENERATION_METRICS for name in metric_names)
    generation_section, found, said = generation.resolve_section(cfg["generation"], uses_generation,
                                                                  given_generation)
    problems.extend(found)
    notices.extend(said)
    lm_eval_section, found, said = lm_harness.resolve_section(cfg["lm_eval"], metric_names, base,
                                                              check_tasks=not validated and not problems)
    problems.extend(found)
    notices.extend(said)
    enqueued = collect(space.resolve_enqueued(tuning["enqueue_trials"], search_space, n_trials,
                                              tuning["tuner_sampler"]))
    model_notices, moved = model.model_notices(cfg["model"])
    notices += model_notices
    for target, value in moved.items():  # Oumi's model.compile / enable_liger_kernel: SFTConfig's
        params.training_args.setdefault(target, value)
    model_section = collect(model.resolve_section(cfg["model"], tuning["seed"], base))
    data_section = DataParams(**{split: collect(data.resolve_entries(cfg["data"][split]["datasets"],
                                                                     f"data.{split}.datasets", base))
                                 for split in ("train", "validation")})
    for split in ("train", "validation"):
        found, said = data.split_fields(cfg["data"][split], f"data.{split}")
        problems.extend(found)
        notices.extend(said)
    if uses_generation and not validated:  # reads the files' first rows: once, in the main process
        problems.extend(data_check.generation_problems(data_section.validation))
    if not validated and not problems and full_checks:  # reads the local files' rows: once, in the main process
        problems.extend(data_check.file_problems(data_section))
    if cfg["data"].get("test"):
        notices.append("data.test: unused: trials are evaluated on data.validation")
    if cfg.get("fsdp"):
        notices.append("fsdp: unused: oumi tune does not pass it to trials either; a trial on several "
                       "GPUs is data parallel (tuning.gpu.gpus_per_trial)")
    devices = collect(gpu.resolve_settings(tuning, base))
    output_dir = str((base / Path(tuning["output_dir"]).expanduser()).resolve())
    if not validated:  # a job runs in a folder its main process accepted (and began to fill)
        unusable = StudyLayout(output_dir).unusable_because()
        if unusable:
            problems.append(f"tuning.output_dir: {unusable}")
    resolved = TuningConfig(
        notices=notices,
        model=model_section,
        data=data_section,
        generation=generation_section,
        lm_eval=lm_eval_section,
        tuning=TuningParams(
            n_trials=n_trials,
            study_name=tuning["study_name"],
            seed=tuning["seed"],
            output_dir=output_dir,
            sampler=tuning["tuner_sampler"],
            sampler_kwargs=tuning["sampler_kwargs"],
            pruner=tuning["pruner"],
            pruner_kwargs=tuning["pruner_kwargs"],
            report_every_steps=tuning["report_every_steps"],
            resume_pruned=tuning["resume_pruned"] or None,
            enqueue_trials=enqueued,
            timeout_minutes=tuning["timeout_minutes"],
            budget=tuning["budget"],
            metrics=metric_names,
            directions=directions,
            custom_eval_metrics=custom,
            space=search_space,
            training_args=params.training_args,
            lora_args=params.lora_args,
            quantization=params.quantization,
            use_peft=params.use_peft,
            gpu=devices,
            on_divergence=tuning["on_divergence"],
            argument_paths={**_argument_paths(tuning, params),
                            **{("training", target): f"model.{key}" for key, target in model.MOVED_MODEL_FIELDS.items()
                               if target in moved}},
        ),
    )
    if not validated and not problems and full_checks:
        problems.extend(_library_problems(resolved))
    return resolved


def _library_problems(resolved: TuningConfig) -> list[str]:
    """What Optuna, TRL, PEFT, transformers and the hub will say, asked at parse time (seconds) of
    a config whose every section is sound: the sampler and pruner over the space (their warnings
    become notices), the trial arguments at each corner of the space, the model's weights and chat
    template, the hub ids of model and data. The rest (the model, PEFT, the trainer, a step) is
    the preflight rule's (snaketune.preflight)."""
    from snaketune import preflight

    problems, notices = preflight.search_problems(resolved.tuning)
    resolved.notices.extend(notices)
    if problems:
        return problems
    problems = library_checks.argument_problems(resolved.tuning, resolved.max_length, resolved.tuning.argument_paths)
    if problems:
        return problems
    problems = library_checks.model_problems(resolved.model, needs_chat_template=data_check.needs_chat_template(resolved.data),
                                             prepared=resolved.tuning.layout.model_source,
                                             answer_tokens=resolved.generation.max_new_tokens
                                             if resolved.uses_generation else None)
    if resolved.uses_generation:
        problems += library_checks.generation_config_problems(resolved.generation)
    return problems + data_check.hub_problems(resolved.data)


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


def _oumi_metric_names(tuning: dict) -> list[str]:
    """Oumi's custom_eval_metrics are names in Oumi's registry of evaluation functions, which
    snaketune does not have: each is refused saying how to write it (and removed, so the schema
    checks the rest)."""
    entries = tuning.get("custom_eval_metrics")
    if not isinstance(entries, list):
        return []
    problems = [f"tuning.custom_eval_metrics[{i}]: {entry!r} names an evaluation function in Oumi's "
                f"registry, which snaketune does not have: write {{name: {entry}, function: "
                "my_module.my_function} (a Python function of the working directory)"
                for i, entry in enumerate(entries) if isinstance(entry, str)]
    tuning["custom_eval_metrics"] = [entry for entry in entries if not isinstance(entry, str)]
    return problems


def _oumi_tuning_fields(tuning: dict, problems: list[str]) -> list[str]:
    """Oumi's TuningParams fields snaketune has no field of its own for: `tuning_study_name` is
    `study_name`, `trainer_type` must be TRL's SFT, `storage` must be the journal file, the rest
    are accepted and said to be unused (returned as notices)."""
    notices = []
    if tuning.get("tuning_study_name"):
        if tuning["study_name"] not in ("snaketune", tuning["tuning_study_name"]):  # not the default
            problems.append(f"tuning.tuning_study_name: study_name {tuning['study_name']!r} is given too; "
                            "keep one (Oumi's name and snaketune's are one setting)")
        tuning["study_name"] = tuning["tuning_study_name"]
    trainer = tuning.get("trainer_type")
    if trainer is not None and str(trainer).upper() not in names.OUMI_ONLY_TRAINING_NAMES["trainer_type"]:
        problems.append(f"tuning.trainer_type: {trainer!r} is not supported; snaketune trains with TRL's "
                        "SFTTrainer (TRL_SFT)")
    if tuning.get("storage"):
        problems.append(f"tuning.storage: {tuning['storage']!r}: the study's storage is the Optuna journal "
                        "file <tuning.output_dir>/study.journal (file-locked, shared by every trial job); "
                        "database storage is not supported: remove storage")
    for key, instead in OUMI_LOGGING_FIELDS.items():
        if key in tuning:
            notices.append(f"tuning.{key}: unused: {instead}")
    return notices


def _answer_directions(tuning: dict, directions_given: bool) -> list[str]:
    """Scores of answers (generation and lm-eval metrics) are better higher: without
    evaluation_direction they are maximized (the schema's default, minimize, is the loss's), said
    in a notice; minimizing one the user asked for is said too. Sets tuning.evaluation_direction."""
    names = tuning["evaluation_metrics"]
    answers = [n for n in names if n in scoring.GENERATION_METRICS or lm_harness.is_lm_eval_metric(n)]
    if not answers:
        return []
    if not directions_given:
        tuning["evaluation_direction"] = ["maximize" if n in answers else "minimize" for n in names]
        return [f"tuning.evaluation_direction: not given; {', '.join(answers)} maximized (the share of right "
                "answers: higher is better), any other objective minimized"]
    directions = tuning["evaluation_direction"]
    directions = directions * len(names) if len(directions) == 1 else directions
    return [f"tuning.evaluation_direction[{i}]: minimizes {name}, a score where higher is better; write "
            "maximize unless you mean it" for i, (name, direction) in enumerate(zip(names, directions))
            if name in answers and direction == "minimize"]


def _study_settings(tuning: dict, search_space: list[space.Parameter], metric_names: list[str],
                    custom: list[CustomMetric], problems: list[str], notices: list[str]) -> int:
    """Checks the tuner, sampler and pruner (appending to `problems`); returns n_trials (default
    10, the grid's size, or with a compute budget the slots it pays for: _slots_for_budget). A
    pruner without report_every_steps reports every quarter of a fixed max_steps
    (strategy.default_report_every_steps), said in `notices`."""
    if str(tuning["tuner_type"]).upper() not in TUNER_TYPES:
        problems.append(f"tuning.tuner_type: unknown tuner type {tuning['tuner_type']!r}; "
                        "snaketune supports OPTUNA")
    problems.extend(strategy.check(tuning["tuner_sampler"], tuning["sampler_kwargs"], tuning["pruner"],
                                   tuning["pruner_kwargs"], search_space, len(metric_names)))
    n_trials = tuning.get("n_trials")
    grid_size = None
    if tuning["tuner_sampler"] == "GridSampler" and not any("GridSampler" in p for p in problems):
        grid_size = len(strategy.grid_points(search_space))
    if n_trials is None:
        n_trials = grid_size or 10
    elif n_trials < 1:
        problems.append(f"tuning.n_trials: must be at least 1, got {n_trials}")
    elif grid_size is not None and n_trials > grid_size:
        problems.append(f"tuning.n_trials: {n_trials} trials, but the grid has only {grid_size} "
                        "points (leave n_trials out to run the whole grid)")
    _pause_settings(tuning, problems, notices)
    first = metric_names[0] if metric_names else None
    if tuning["pruner"] == "wilcoxon":
        # Its steps are validation rows (generation.evaluate_generation), not training steps.
        if first not in scoring.GENERATION_METRICS:
            problems.append(f"tuning.pruner: wilcoxon compares trials row by row on per-example scores, "
                            f"which only the generation metrics give ({', '.join(scoring.GENERATION_METRICS)}); "
                            f"tuning.evaluation_metrics[0] is {first!r}: make a generation metric the first "
                            "objective, or use another pruner (successive_halving, percentile)")
        elif tuning["report_every_steps"]:
            notices.append("tuning.report_every_steps: evaluations during training go to the loss curve only; "
                           "the wilcoxon pruner is asked on the per-row scores of the generation after training")
    elif tuning["pruner"] != "none" or tuning["report_every_steps"]:
        kind = ("a custom metric" if first in {c.name for c in custom}
                else "a generation metric" if first in scoring.GENERATION_METRICS
                else "an lm-eval metric" if first and lm_harness.is_lm_eval_metric(first) else None)
        if kind and tuning["pruner"] != "none":
            problems.append(f"tuning.evaluation_metrics[0]: {first!r} is {kind}, computed once after "
                            "training; a pruner needs a metric the evaluation produces at every report "
                            "(eval_loss, eval_mean_token_accuracy)"
                            + ("; or prune on its per-row scores with pruner: wilcoxon"
                               if kind == "a generation metric" else ""))
        elif kind:  # no pruner: the evaluations are learning curves, the objective is computed after
            notices.append(f"tuning.report_every_steps: the evaluations every {tuning['report_every_steps']} "
                           f"steps are recorded in each trial's loss curve only (eval_loss in logs/loss_curve.csv); "
                           f"the trial's value, {first!r}, is {kind}, computed once after training")
        if tuning["pruner"] != "none" and not tuning["report_every_steps"]:
            every = strategy.default_report_every_steps(tuning["fixed_training_params"].get("max_steps"))
            if every is None:
                problems.append("tuning.report_every_steps: a pruner needs intermediate values: set "
                                "report_every_steps (e.g. a quarter of the trial's steps)")
            else:
                tuning["report_every_steps"] = every
                notices.append(f"tuning.report_every_steps: not given; the pruner is asked every {every} "
                               "steps (a quarter of max_steps)")
    _pruner_reach(tuning, problems)
    if tuning.get("n_trials") is None and grid_size is None and tuning["budget"] \
            and not any(p.startswith("tuning.budget") for p in problems):
        n_trials = _slots_for_budget(tuning, problems, notices) or n_trials
    return n_trials


def _pruner_reach(tuning: dict, problems: list[str]) -> None:
    """Refuses a pruner that could never stop a trial of a fixed max_steps: no report before the
    last step, or pruner_kwargs that put its first judgement at or after it."""
    max_steps = tuning["fixed_training_params"].get("max_steps")
    every = tuning["report_every_steps"]
    if tuning["pruner"] in ("none", "wilcoxon") or not every or strategy.fixed_steps(max_steps) is None \
            or any(p.startswith(("tuning.pruner", "tuning.report_every_steps")) for p in problems) \
            or strategy.judged_steps(tuning["pruner"], tuning["pruner_kwargs"], every, max_steps):
        return
    if every >= max_steps:
        problems.append(f"tuning.report_every_steps: {every}, but the trials train {max_steps} steps "
                        f"(tuning.fixed_training_params.max_steps), so no report comes before the end and "
                        f"the {tuning['pruner']} pruner never stops a trial: report more often (e.g. every "
                        f"{strategy.default_report_every_steps(max_steps)} steps) or set pruner: none")
    else:
        knobs = ("min_resource or min_early_stopping_rate" if tuning["pruner"] == "successive_halving"
                 else "n_warmup_steps")
        problems.append(f"tuning.pruner_kwargs: {tuning['pruner']} with these arguments first judges a trial "
                        f"at or after its last step ({max_steps}), so it never stops one: lower {knobs}, "
                        "or leave it out")


# The most trial slots a budget stands for when n_trials is not written: Snakemake creates a job
# for every slot before the first one runs.
MAX_BUDGET_SLOTS = 1000


def _slots_for_budget(tuning: dict, problems: list[str], notices: list[str]) -> int | None:
    """n_trials for a study with a compute budget and no n_trials: as many slots as the budget
    pays for when every trial spends the least it can (strategy.least_steps), so the budget, not a
    default count, decides. None, with a problem, when that is not known before the trials run
    (tokens, device hours, steps that are not a fixed max_steps) or is more slots than
    MAX_BUDGET_SLOTS."""
    (unit, amount), = tuning["budget"].items()
    cap = "set tuning.n_trials as the cap on trial slots (e.g. n_trials: 100; the slots the budget does not reach finish as SKIPPED)"
    if unit != "trained_steps":
        problems.append(f"tuning.n_trials: not given, and how many trials a budget in {unit} pays for is "
                        f"known only as they run: {cap}")
        return None
    max_steps = tuning["fixed_training_params"].get("max_steps")
    if strategy.fixed_steps(max_steps) is None:
        problems.append("tuning.n_trials: not given, and the trials' length is not a fixed "
                        "tuning.fixed_training_params.max_steps, so how many trials the budget "
                        f"(trained_steps={amount}) pays for is unknown: {cap}")
        return None
    pausing = bool(tuning["resume_pruned"])
    least = strategy.least_steps(tuning["pruner"], tuning["pruner_kwargs"], tuning["report_every_steps"],
                                 max_steps, pausing)
    why = f"{max_steps} steps each" if least == max_steps else (
        f"{least} steps or more (a pruned trial stopped where the pruner first judges it"
        + (", or a resumed one trained up to its next judgement or the end)" if pausing else ")"))
    slots = -(-amount // least)
    if slots > MAX_BUDGET_SLOTS:
        problems.append(f"tuning.n_trials: not given; the budget (trained_steps={amount}) pays for up to "
                        f"{slots} trials of {why}, more than the {MAX_BUDGET_SLOTS} slots snaketune creates "
                        "unasked: set tuning.n_trials as the cap")
        return None
    notices.append(f"tuning.n_trials: not given; the budget (trained_steps={amount}) pays for at most {slots} "
                   f"trials of {why}, so there are {slots} trial slots and the budget decides how many run "
                   "(the others finish as SKIPPED)")
    return slots


def _pause_settings(tuning: dict, problems: list[str], notices: list[str]) -> None:
    """Checks tuning.resume_pruned and replaces it with its η (strategy.reduction_factor), or
    False: pruned trials stay stopped."""
    given = tuning["resume_pruned"]
    pausing = given not in (None, False)
    if pausing and tuning["pruner"] == "none":
        problems.append("tuning.resume_pruned: pauses pruned trials, but tuning.pruner is none: set a "
                        "pruner (successive_halving pauses by default) or remove resume_pruned")
    elif pausing and tuning["pruner"] == "wilcoxon":
        problems.append("tuning.resume_pruned: the wilcoxon pruner stops a trial while it generates, after "
                        "its training is done: there is nothing to resume; remove resume_pruned")
    elif pausing and tuning["tuner_sampler"] == "GridSampler":
        problems.append("tuning.resume_pruned: GridSampler runs each grid point in a slot of its own, and "
                        "a resumed trial takes a slot: set resume_pruned: false, or use BruteForceSampler")
    tuning["resume_pruned"] = False
    if problems and any(p.startswith(("tuning.pruner", "tuning.resume_pruned")) for p in problems):
        return
    wanted = given
    if given is None:  # successive halving pauses (ASHA's promotions), unless each point has its slot
        wanted = tuning["pruner"] == "successive_halving" and tuning["tuner_sampler"] != "GridSampler"
    factor = tuning["pruner_kwargs"].get("reduction_factor")
    if wanted is True and factor is not None and not (isinstance(factor, int) and not isinstance(factor, bool)):
        problems.append(f"tuning.pruner_kwargs.reduction_factor: {factor!r}: pausing resumes the best 1/η of "
                        "a step's values, η this reduction factor: give a whole number (e.g. 4), or set "
                        "tuning.resume_pruned to one, or to false")
        return
    eta = strategy.reduction_factor(tuning["pruner"], tuning["pruner_kwargs"], wanted)
    if given is None and eta:
        notices.append(f"tuning.resume_pruned: not given; {tuning['pruner']} pauses a pruned trial, and a "
                       f"slot that starts later resumes it from its checkpoint once its value is among the "
                       f"best 1/{eta} reported at its step. A resumed trial takes one of the n_trials slots: "
                       "give the study a budget and let n_trials be a cap (set resume_pruned: false to stop "
                       "pruned trials for good)")
    tuning["resume_pruned"] = eta or False


# Oumi's meaning of null where snaketune needs a value: `tuner_sampler: null` is Optuna's default
# (TPE); `model_max_length: null` is no limit of the model's own, so rows are cut to TRL's
# SFTConfig.max_length default.
OUMI_NULLS = {("tuning", "tuner_sampler"): "TPESampler", ("model", "model_max_length"): 1024}


def _oumi_nulls(cfg: dict) -> None:
    for (part_name, key), value in OUMI_NULLS.items():
        part = cfg.get(part_name)
        if isinstance(part, dict) and key in part and part[key] is None:
            part[key] = value


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
