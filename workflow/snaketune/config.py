"""Validate a tune.yaml and turn it into the resolved config every rule and trial reads.

Everything that can be wrong with a config is found here, at parse time, before any job runs and
before a journal exists, and reported all at once, each problem named by its YAML path.
The JSON schema (workflow/schemas/tune.schema.yaml) checks shape and fills defaults; this module
checks what a schema cannot: bounds, parameter names, imports, paths.
"""

from __future__ import annotations

import copy
import importlib
import re
import sys
from pathlib import Path

import yaml

from snaketune import resources

SCHEMA_PATH = resources.schema_path()

TUNER_TYPES = ("OPTUNA",)
DIRECTIONS = ("minimize", "maximize")
PARAM_TYPES = ("categorical", "int", "uniform", "float", "loguniform")
# condition: {other_param: [values]} tunes this one only when other_param takes one of the values;
# scale_by: other_param multiplies the sampled value (e.g. lora_alpha as a multiple of lora_r).
CONDITIONAL_KEYS = {"condition", "scale_by"}
PARAM_KEYS = {
    "categorical": {"type", "choices"} | CONDITIONAL_KEYS,
    "int": {"type", "low", "high", "step", "log"} | CONDITIONAL_KEYS,
    "uniform": {"type", "low", "high", "step", "log"} | CONDITIONAL_KEYS,
    "float": {"type", "low", "high", "step", "log"} | CONDITIONAL_KEYS,
    "loguniform": {"type", "low", "high"} | CONDITIONAL_KEYS,
}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DATA_FILE_SUFFIXES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# `train`, `validation[:10%]`, `train[90%:]`, `train[10:200]`, `train[10%:20%]`
SPLIT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+(\[(-?\d+%?)?:(-?\d+%?)?\])?$")
# PyYAML (YAML 1.1) reads `1e-5` (no dot) as a string; the seed writes bounds that way.
YAML11_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


class ConfigError(ValueError):
    """A tune.yaml with problems; `problems` lists each as 'yaml.path: what is wrong'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Invalid tune config ({len(problems)} problem(s)):\n{listing}")


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def read_tune_yaml(path: str | Path) -> dict:
    with open(path) as f:
        raw = yaml.safe_load(f)
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


def load_tune_config(raw: dict, base_dir: str | Path | None = None, validated: bool = False) -> dict:
    """Validate `raw` (a parsed tune.yaml) and return the resolved config.

    Relative paths resolve against `base_dir` (the working directory by default).
    `validated=True` is for jobs of a run whose main process already validated the config: the
    checks that import TRL/PEFT (parameter names), custom metric modules or CUDA are skipped,
    which saves seconds of start-up in every job.
    Raises ConfigError listing every problem found.
    """
    base = Path(base_dir or Path.cwd()).resolve()
    cfg = _coerce_yaml11_numbers(copy.deepcopy(raw))
    tuning = cfg.get("tuning")
    if isinstance(tuning, dict):
        for key in ("evaluation_metrics", "evaluation_direction"):
            if isinstance(tuning.get(key), str):  # a single name is a list of one
                tuning[key] = [tuning[key]]
        for key in ("tunable_training_params", "fixed_training_params",
                    "tunable_peft_params", "fixed_peft_params"):
            if key in tuning and tuning[key] is None:
                tuning[key] = {}
    cfg.setdefault("tuning", {})
    schema = load_schema()
    problems = _schema_problems(cfg, schema)
    _fill_defaults(cfg, schema, schema)

    checker = _Checker(base, validated)
    if not problems:
        resolved = checker.resolve(cfg)
        if checker.problems:
            raise ConfigError(checker.problems)
        return resolved
    # The semantic checks assume the schema's shape. Past a shape problem they still run, so that
    # a typo'd key and a bad bound show up together; they stop at the first part they cannot read,
    # and say nothing about a path the schema already reported.
    try:
        checker.resolve(cfg)
    except Exception:
        pass
    reported = [p.split(": ", 1)[0] for p in problems]
    raise ConfigError(problems + [p for p in checker.problems
                                  if not any(_overlaps(p.split(": ", 1)[0], r) for r in reported)])


def load_gpu_settings(raw: dict, base_dir: str | Path | None = None) -> dict:
    """Only the device settings (`tuning["gpu"]` of the resolved config) of an already validated
    config: a trial leases its GPU with these before anything may import torch."""
    schema = load_schema()
    tuning = {k: v for k, v in (raw.get("tuning") or {}).items()
              if k in ("trials_per_gpu", "gpus_per_trial", "gpu_devices", "gpu_lease_dir")}
    _fill_defaults(tuning, schema["properties"]["tuning"], schema)
    return _Checker(Path(base_dir or Path.cwd()).resolve()).gpu_settings(tuning)


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


def _schema_problems(cfg: dict, schema: dict) -> list[str]:
    from jsonschema import Draft202012Validator

    problems = []
    for error in sorted(Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.path)):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":
            known = error.schema.get("properties", {}).keys()
            for key in sorted(set(error.instance) - set(known)):
                from snaketune.names import closest

                problems.append(f"{_yaml_path(path + [key])}: unknown key{closest(key, known)}")
        elif error.validator == "required":
            missing = error.message.split("'")[1]
            problems.append(f"{_yaml_path(path + [missing])}: required but missing")
        else:
            problems.append(f"{_yaml_path(path)}: {error.message}")
    return problems


def _fill_defaults(instance, schema: dict, root: dict) -> None:
    """Fill schema defaults into `instance`, as snakemake.utils.validate(set_default=True) does."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                _fill_defaults(instance[key], sub, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill_defaults(item, schema["items"], root)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def looks_like_local_path(name: str) -> bool:
    """A dataset or model name that cannot be a hub id ('org/name') is meant as a local path."""
    return (
        name.startswith((".", "/", "~"))
        or Path(name).suffix.lower() in DATA_FILE_SUFFIXES
        or name.count("/") > 1
    )


class _Checker:
    """Collects every problem while building the resolved config."""

    def __init__(self, base: Path, validated: bool = False):
        self.base = base
        self.validated = validated
        self.problems: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def resolve(self, cfg: dict) -> dict:
        tuning = cfg["tuning"]
        space, training_args, lora_args, quantization = self.parameters(tuning)
        use_peft = bool(tuning["tunable_peft_params"] or tuning["fixed_peft_params"])
        if quantization.get("q_lora"):
            if not self.validated:
                self.check_cuda_for_qlora()
        metrics, directions = self.objectives(tuning)
        custom = self.custom_metrics(tuning)
        space = self.conditions(tuning, space)
        n_trials = self.study_settings(tuning, space, metrics, custom)
        enqueued = self.enqueued(tuning, space, n_trials)
        model = self.model(cfg["model"], tuning["seed"])
        data = {split: self.datasets(cfg["data"][split]["datasets"], f"data.{split}.datasets")
                for split in ("train", "validation")}
        return {
            "model": model,
            "data": data,
            "tuning": {
                "n_trials": n_trials,
                "study_name": tuning["study_name"],
                "seed": tuning["seed"],
                "output_dir": str(self.path(tuning["output_dir"])),
                "sampler": tuning["tuner_sampler"],
                "sampler_kwargs": tuning["sampler_kwargs"],
                "pruner": tuning["pruner"],
                "pruner_kwargs": tuning["pruner_kwargs"],
                "report_every_steps": tuning["report_every_steps"],
                "enqueue_trials": enqueued,
                "timeout_minutes": tuning["timeout_minutes"],
                "metrics": metrics,
                "directions": directions,
                "custom_eval_metrics": custom,
                "space": space,
                "training_args": training_args,
                "lora_args": lora_args,
                "quantization": quantization,
                "use_peft": use_peft,
                "gpu": self.gpu_settings(tuning),
                "on_divergence": tuning["on_divergence"],
            },
        }

    def path(self, value: str) -> Path:
        return (self.base / Path(value).expanduser()).resolve()

    # -- parameters -----------------------------------------------------------------------
    def parameters(self, tuning: dict):
        from snaketune import names

        space, training_args, lora_args, quantization = [], {}, {}, {}
        groups = (
            ("training", names.training_target, "tunable_training_params", "fixed_training_params"),
            ("peft", names.peft_target, "tunable_peft_params", "fixed_peft_params"),
        )
        for group, target_of, tunable_key, fixed_key in groups:
            tunable_targets, fixed_targets = {}, {}
            for name, spec in tuning[tunable_key].items():
                path = f"tuning.{tunable_key}.{name}"
                target, problem = target_of(name, check_fields=not self.validated)
                if problem:
                    self.error(path, problem)
                    continue
                if target in names.OUMI_ONLY_TRAINING_NAMES or target in names.OUMI_ONLY_PEFT_NAMES:
                    self.error(path, "cannot be tuned")
                    continue
                if group == "peft" and name in names.QUANTIZATION_NAMES:
                    # Quantisation is chosen when the model is loaded, not per LoraConfig.
                    self.error(path, f"cannot be tuned; set it in tuning.{fixed_key}")
                    continue
                if target in tunable_targets:  # an Oumi name and its HF name: one parameter
                    self.error(path, f"is the same parameter as "
                                     f"tuning.{tunable_key}.{tunable_targets[target]}; keep one")
                    continue
                tunable_targets[target] = name
                param = self.distribution(path, name, spec)
                if param:
                    conditional = {k: spec[k] for k in CONDITIONAL_KEYS if spec.get(k) is not None}
                    space.append({"name": name, "group": group, "target": target, **param, **conditional})
            for name, value in tuning[fixed_key].items():
                path = f"tuning.{fixed_key}.{name}"
                target, problem = target_of(name, check_fields=not self.validated)
                if problem:
                    self.error(path, problem)
                    continue
                if target in tunable_targets:
                    other = tunable_targets[target]
                    self.error(path, f"is both fixed and tunable (tuning.{tunable_key}.{other}); "
                                     "keep one")
                    continue
                if target in fixed_targets:
                    self.error(path, f"is the same parameter as "
                                     f"tuning.{fixed_key}.{fixed_targets[target]}; keep one")
                    continue
                fixed_targets[target] = name
                oumi_only = {**names.OUMI_ONLY_TRAINING_NAMES, **names.OUMI_ONLY_PEFT_NAMES}
                if target in oumi_only:
                    if value not in oumi_only[target]:
                        self.error(path, f"{value!r} is not supported; snaketune supports "
                                         f"{', '.join(map(repr, oumi_only[target]))}")
                elif group == "peft" and name in names.QUANTIZATION_NAMES:
                    quantization[target] = value
                elif group == "peft":
                    lora_args[target] = value
                else:
                    training_args[target] = value
        return space, training_args, lora_args, quantization

    def distribution(self, path: str, name: str, spec) -> dict | None:
        """A search-space entry in Optuna's terms: categorical, int or float (with log/step)."""
        if not isinstance(spec, dict) or "type" not in spec:
            self.error(path, "a tunable parameter needs a mapping with a 'type'")
            return None
        kind = spec["type"]
        if kind not in PARAM_TYPES:
            from snaketune.names import closest

            self.error(f"{path}.type", f"unknown parameter type {kind!r}{closest(str(kind), PARAM_TYPES)}; "
                                       f"expected one of {', '.join(PARAM_TYPES)}")
            return None
        ok = True
        for key in sorted(set(spec) - PARAM_KEYS[kind]):
            from snaketune.names import closest

            self.error(f"{path}.{key}", f"not a field of a {kind} parameter"
                                        f"{closest(key, PARAM_KEYS[kind])}")
            ok = False
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                self.error(f"{path}.choices", "needs a non-empty list of choices")
                return None
            for i, choice in enumerate(choices):
                if not (choice is None or isinstance(choice, (bool, int, float, str))):
                    self.error(f"{path}.choices[{i}]", f"{choice!r} is not a scalar "
                                                        "(Optuna choices are None, bool, int, float or str)")
                    ok = False
            # Optuna finds a choice by ==, so 1, 1.0 and true (or 0 and false) are one choice.
            if any(a == b for i, a in enumerate(choices) for b in choices[:i]):
                self.error(f"{path}.choices", "lists the same choice twice (Optuna treats equal "
                                              "values such as 1, 1.0 and true as one choice)")
                ok = False
            return {"type": "categorical", "choices": choices} if ok else None

        low, high = spec.get("low"), spec.get("high")
        for key, bound in (("low", low), ("high", high)):
            if bound is None:
                self.error(f"{path}.{key}", "required but missing")
                ok = False
            elif not _is_number(bound):
                self.error(f"{path}.{key}", f"{bound!r} is not a number")
                ok = False
            elif kind == "int" and not float(bound).is_integer():
                self.error(f"{path}.{key}", f"{bound!r} is not an integer (an int parameter needs integer bounds)")
                ok = False
        if not ok:
            return None
        log = kind == "loguniform" or bool(spec.get("log", False))
        step = spec.get("step")
        if "log" in spec and not isinstance(spec["log"], bool):
            self.error(f"{path}.log", f"{spec['log']!r} is not true or false")
            ok = False
        if low >= high:
            self.error(path, f"low ({low}) must be less than high ({high})")
            ok = False
        if log and low <= 0:
            self.error(f"{path}.low", f"a log-scaled parameter needs low > 0, got {low}")
            ok = False
        if step is not None:
            if not _is_number(step) or step <= 0 or (kind == "int" and not float(step).is_integer()):
                self.error(f"{path}.step", f"{step!r} is not a positive {'integer' if kind == 'int' else 'number'}")
                ok = False
            elif log and not (kind == "int" and step == 1):
                self.error(f"{path}.step", "cannot be combined with log scale (Optuna samples log "
                                           "scales without a step)")
                ok = False
        if not ok:
            return None
        if kind == "int":
            return {"type": "int", "low": int(low), "high": int(high),
                    "step": int(step or 1), "log": log}
        return {"type": "float", "low": float(low), "high": float(high),
                "step": None if step is None else float(step), "log": log}

    def check_cuda_for_qlora(self) -> None:
        import torch

        if not torch.cuda.is_available():
            self.error("tuning.fixed_peft_params.q_lora",
                       "QLoRA (4-bit bitsandbytes) needs a CUDA GPU and none is visible here; "
                       "set q_lora: false to train plain LoRA")

    # -- objectives -----------------------------------------------------------------------
    def objectives(self, tuning: dict):
        metrics, directions = tuning["evaluation_metrics"], tuning["evaluation_direction"]
        if len(set(metrics)) != len(metrics):
            self.error("tuning.evaluation_metrics", f"names a metric twice: {metrics}")
        for i, direction in enumerate(directions):
            if direction not in DIRECTIONS:
                self.error(f"tuning.evaluation_direction[{i}]",
                           f"{direction!r} is not a direction; use minimize or maximize")
        if len(directions) == 1:  # one direction applies to every metric, as in Oumi
            directions = directions * len(metrics)
        elif len(directions) != len(metrics):
            self.error("tuning.evaluation_direction",
                       f"has {len(directions)} directions for {len(metrics)} evaluation_metrics; "
                       "give one direction per metric, or a single one for all")
        return list(metrics), list(directions)

    def custom_metrics(self, tuning: dict) -> list[dict]:
        seen, custom = set(), []
        if str(self.base) not in sys.path:  # custom metric modules live in the working directory
            sys.path.insert(0, str(self.base))
        for i, entry in enumerate(tuning["custom_eval_metrics"]):
            path = f"tuning.custom_eval_metrics[{i}]"
            if entry["name"] in seen:
                self.error(f"{path}.name", f"{entry['name']!r} is defined twice")
            seen.add(entry["name"])
            problem = None if self.validated else import_problem(entry["function"])
            if problem:
                self.error(f"{path}.function", problem)
            custom.append(dict(entry))
        return custom

    def study_settings(self, tuning: dict, space: list[dict], metrics: list[str], custom: list[dict]) -> int:
        """Checks the tuner, sampler and pruner; returns n_trials (default 10, or the grid's size)."""
        from snaketune import strategy

        if str(tuning["tuner_type"]).upper() not in TUNER_TYPES:
            self.error("tuning.tuner_type", f"unknown tuner type {tuning['tuner_type']!r}; "
                                            "snaketune supports OPTUNA")
        self.problems.extend(strategy.check(tuning, space, len(metrics)))
        n_trials = tuning.get("n_trials")
        grid_size = None
        if tuning["tuner_sampler"] == "GridSampler" and not any("GridSampler" in p for p in self.problems):
            grid_size = len(strategy.grid_points(space))
        if n_trials is None:
            n_trials = grid_size or 10
        elif n_trials < 1:
            self.error("tuning.n_trials", f"must be at least 1, got {n_trials}")
        elif grid_size is not None and n_trials > grid_size:
            self.error("tuning.n_trials", f"{n_trials} trials, but the grid has only {grid_size} points "
                                          "(leave n_trials out to run the whole grid)")
        if tuning["pruner"] != "none" or tuning["report_every_steps"]:
            custom_names = {c["name"] for c in custom}
            if metrics and metrics[0] in custom_names:
                self.error("tuning.evaluation_metrics[0]",
                           f"{metrics[0]!r} is a custom metric, computed once after training; "
                           "pruning and report_every_steps need a metric the evaluation produces "
                           "at every report (eval_loss, eval_mean_token_accuracy)")
            if tuning["pruner"] != "none" and not tuning["report_every_steps"]:
                self.error("tuning.report_every_steps",
                           "a pruner needs intermediate values: set report_every_steps (e.g. 10)")
        return n_trials

    def conditions(self, tuning: dict, space: list[dict]) -> list[dict]:
        """Checks condition/scale_by; returns the space with every parent before its children."""
        by_name = {p["name"]: p for p in space}
        for param in space:
            path = f"tuning.tunable_{param['group']}_params.{param['name']}"
            condition = param.get("condition")
            if condition is not None:
                if not (isinstance(condition, dict) and len(condition) == 1):
                    self.error(f"{path}.condition", "write it as {other_parameter: [values, ...]}")
                    del param["condition"]
                else:
                    (parent, values), = condition.items()
                    values = values if isinstance(values, list) else [values]
                    param["condition"] = {parent: values}
                    if parent not in by_name or parent == param["name"]:
                        self.error(f"{path}.condition", f"{parent!r} is not another tunable parameter")
                    elif by_name[parent]["type"] == "categorical":
                        bad = [v for v in values if v not in by_name[parent]["choices"]]
                        if bad:
                            self.error(f"{path}.condition", f"{bad} are not choices of {parent!r}")
            scale_by = param.get("scale_by")
            if scale_by is not None:
                parent = by_name.get(scale_by)
                numeric = lambda p: p["type"] != "categorical" or all(  # noqa: E731
                    isinstance(c, (int, float)) and not isinstance(c, bool) for c in p["choices"])
                if parent is None or scale_by == param["name"]:
                    self.error(f"{path}.scale_by", f"{scale_by!r} is not another tunable parameter")
                elif not (numeric(parent) and numeric(param)):
                    self.error(f"{path}.scale_by", f"both {param['name']!r} and {scale_by!r} must be numeric")
        from snaketune.space import ordered

        try:
            return ordered(space)
        except ValueError as e:
            self.error("tuning", str(e))
            return space

    def enqueued(self, tuning: dict, space: list[dict], n_trials: int) -> list[dict]:
        """Validates enqueue_trials against the space (values, and conditions among them)."""
        from snaketune.names import closest
        from snaketune.space import check_value, is_active

        entries = tuning["enqueue_trials"]
        if entries and tuning["tuner_sampler"] == "GridSampler":
            self.error("tuning.enqueue_trials", "GridSampler runs every grid point once by itself; "
                                                "remove enqueue_trials or use another sampler")
        if entries and len(entries) > max(n_trials, 1):
            self.error("tuning.enqueue_trials", f"{len(entries)} configurations for {n_trials} trials; "
                                                "raise tuning.n_trials or enqueue fewer")
        by_name = {p["name"]: p for p in space}
        for i, entry in enumerate(entries):
            for name, value in entry.items():
                path = f"tuning.enqueue_trials[{i}].{name}"
                if name not in by_name:
                    self.error(path, f"not a tunable parameter{closest(name, by_name)}")
                    continue
                problem = check_value(by_name[name], value)
                if problem:
                    self.error(path, problem)
                elif not is_active(by_name[name], entry):
                    (parent, allowed), = by_name[name]["condition"].items()
                    self.error(path, f"is only tuned when {parent} is one of {allowed}; "
                                     f"this configuration has {parent}={entry.get(parent)!r}")
        return [dict(entry) for entry in entries]

    def gpu_settings(self, tuning: dict) -> dict:
        """Device settings for snaketune.gpu (the schema checked the types and minimums)."""
        devices = tuning["gpu_devices"]
        if devices is not None:
            devices = [str(d) for d in devices]
            if len(set(devices)) != len(devices):
                self.error("tuning.gpu_devices", f"names a device twice: {devices}")
            if devices and tuning["gpus_per_trial"] > len(devices):
                self.error("tuning.gpus_per_trial",
                           f"{tuning['gpus_per_trial']} GPUs per trial, but tuning.gpu_devices "
                           f"lists only {len(devices)}")
        lease_dir = tuning["gpu_lease_dir"]
        return {
            "trials_per_gpu": tuning["trials_per_gpu"],
            "gpus_per_trial": tuning["gpus_per_trial"],
            "devices": devices,
            "lease_dir": None if lease_dir is None else str(self.path(lease_dir)),
        }

    # -- model and data -------------------------------------------------------------------
    def model(self, model: dict, seed: int) -> dict:
        model = dict(model)
        model["torch_dtype_str"] = DTYPE_ALIASES.get(model["torch_dtype_str"], model["torch_dtype_str"])
        model["seed"] = seed
        for key in ("model_name", "tokenizer_name"):
            name = model.get(key)
            if not name:
                continue
            local = self.path(name)
            if local.exists():
                model[key] = str(local)
            elif looks_like_local_path(name):
                self.error(f"model.{key}", f"local path {local} does not exist")
        if model.get("gguf_file"):
            from snaketune.model import resolve_gguf_file

            try:
                local = self.path(model["gguf_file"])
                model["gguf_file"] = str(resolve_gguf_file(local if local.exists() else model["gguf_file"]))
            except FileNotFoundError as e:
                self.error("model.gguf_file", str(e))
        return model

    def datasets(self, entries: list[dict], path: str) -> list[dict]:
        resolved = []
        for i, entry in enumerate(entries):
            here = f"{path}[{i}]"
            name, split = entry["dataset_name"], entry["split"]
            if not SPLIT_PATTERN.match(split.replace(" ", "")):
                self.error(f"{here}.split", f"{split!r} is not a split; write e.g. 'train', "
                                            "'train[90%:]', 'train[:10%]' or 'train[:200]'")
            local = self.path(name)
            if local.exists():
                if local.is_file() and local.suffix.lower() not in DATA_FILE_SUFFIXES:
                    self.error(f"{here}.dataset_name", f"{local} is not a json, jsonl, csv or parquet file")
                resolved.append({**entry, "dataset_name": str(local), "local": True,
                                 "split": split.replace(" ", "")})
            elif looks_like_local_path(name):
                self.error(f"{here}.dataset_name", f"local dataset {local} does not exist")
            else:
                resolved.append({**entry, "local": False, "split": split.replace(" ", "")})
        return resolved


def import_problem(dotted: str) -> str | None:
    """Why 'module.attr' cannot be used as a function, or None if it can."""
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        return f"{dotted!r} is not 'module.function'"
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any import error is the user's to see
        return f"cannot import module {module_name!r}: {type(e).__name__}: {e}"
    fn = getattr(module, attr, None)
    if not callable(fn):
        return f"module {module_name!r} has no function {attr!r}"
    return None


def import_function(dotted: str):
    module_name, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)
