"""Parse-time checks that ask transformers, TRL, PEFT and the hub what they will make of the
config, without loading weights: the model's and tokenizer's ids and folders, the weights a local
folder holds, the tokenizer's chat template, the answers' length against the model's positions,
the generation settings (GenerationConfig), that QLoRA has a CUDA GPU, and the trial arguments
(`SFTConfig`, `LoraConfig`) at every corner of the search space (`argument_problems`).

The config's checker (snaketune.validate) calls them once every section is sound; what the
model, PEFT and the trainer make of the values the preflight asks them (snaketune.preflight). Each
returns 'yaml.path: what is wrong' lines.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

from snaketune import hub, train, user_cache
from snaketune import space as search_space
from snaketune.config import TuningParams
from snaketune.generation import GenerationParams
from snaketune.model import ModelParams, hub_revision, position_limit, read_model_config, read_source
from snaketune.names import oumi_value


def qlora_problems(quantization: dict) -> list[str]:
    """QLoRA (bitsandbytes) needs CUDA: a problem when `q_lora` is on and none is visible.
    Imports torch, so a job of an already validated run skips it."""
    if not quantization.get("q_lora"):
        return []
    import torch

    if torch.cuda.is_available():
        return []
    return ["tuning.fixed_peft_params.q_lora: QLoRA (4-bit bitsandbytes) needs a CUDA GPU and none "
            "is visible here; set q_lora: false to train plain LoRA"]


# Files whose presence means a local model directory has weights transformers can load.
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


def model_problems(model: ModelParams, needs_chat_template: bool, prepared: Path | None = None,
                   answer_tokens: int | None = None) -> list[str]:
    """What transformers will say about the model, found at parse time without loading weights: a
    hub id that cannot be reached (nor is cached), a local directory that is not a model or has no
    weights while `load_pretrained_weights` is true, a tokenizer without the chat template chat
    rows need (`needs_chat_template`), and `answer_tokens` (generation.max_new_tokens, when answers
    are generated) that fill the model's positions alone (position_limit).
    Returns 'yaml.path: what is wrong' lines. What from_pretrained makes of model_kwargs and
    freeze_layers, and what PEFT makes of the LoRA targets, the preflight asks them
    (snaketune.preflight), on a shrunken copy of the model.
    Takes seconds: a GGUF file's metadata is read, not its tensors, and not even that when the
    study's prepared model (`prepared`, its source.json) was converted from the same file."""

    problems = []
    names = {"model_name": model.model_name, "tokenizer_name": model.tokenizer_name}
    for key, name in names.items():
        if not name or (key == "model_name" and model.gguf_file):
            continue
        if Path(name).is_dir():
            if not (Path(name) / "config.json").is_file() and key == "model_name":
                problems.append(f"model.model_name: {name} has no config.json: it is not a Hugging "
                                "Face model directory (one save_pretrained wrote)")
        elif not Path(name).exists():
            problem = hub.problem(name, "model", model.model_revision)
            if problem:
                # The repository is there but not at that revision: the revision is what to fix.
                wrong = "model_revision" if model.model_revision and not hub.problem(name, "model") else key
                problems.append(f"model.{wrong}: {problem}")
    if problems:
        return problems
    if model.load_pretrained_weights and not model.gguf_file and Path(model.model_name).is_dir():
        if not any(next(Path(model.model_name).glob(pattern), None) for pattern in WEIGHT_FILES):
            problems.append(f"model.model_name: {model.model_name} has no weights ("
                            f"{' or '.join(WEIGHT_FILES)}); set model.load_pretrained_weights: false "
                            "to train from random weights, or point model_name at a directory with "
                            "the model's weights")
    trust = bool(model.trust_remote_code)
    gguf = None
    if model.gguf_file and prepared is not None and prepared.is_file():
        source = read_source(prepared)
        if source.get("gguf_file") == model.gguf_file:  # converted already: a plain HF folder
            model = replace(model, model_name=source["path"], gguf_file=None)
    wants_config = bool(answer_tokens)
    if model.gguf_file and (wants_config or (needs_chat_template and not model.tokenizer_name)):
        # One read of the GGUF metadata gives both the config and the chat template (seconds).
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        gguf = load_gguf_checkpoint(model.gguf_file, return_tensors=False)
    config, problem = _read_config(model, gguf) if wants_config else (None, None)
    if problem:  # the checks that need the config are not made; the chat template's still is
        problems.append(problem)
    elif wants_config:
        # By hand: transformers' generate does not refuse answers that pass the model's positions.
        positions = position_limit(config)
        if answer_tokens and positions is not None and answer_tokens >= positions:
            problems.append(f"generation.max_new_tokens: {answer_tokens} tokens, but the model has {positions} "
                            "positions for a prompt and its answer together: lower it (a prompt longer than "
                            "the positions less max_new_tokens is cut from the left)")
    if needs_chat_template:
        problems += _chat_template_problems(model, gguf, trust)
    return problems


def cached_hub_id(name: str, revision: str | None = None) -> bool:
    """A hub id with a copy (of `revision`) in the cache: read the copy (an unreachable hub would
    make transformers retry for minutes before falling back to it)."""

    return not Path(name).exists() and hub.in_cache(name, "model", revision)


def _read_config(model: ModelParams, gguf: dict | None):
    """(the model's transformers config, None), read without its weights (from the GGUF metadata
    `gguf` when given), or (None, the problem); as a trial loads it (read_model_config)."""
    from transformers import AutoConfig

    try:
        if gguf is not None:
            config = AutoConfig.for_model(**gguf["config"])
            # What from_pretrained does with its kwargs when the converted model is loaded
            # (PretrainedConfig.from_dict): those that are config attributes are set.
            config.update({k: v for k, v in model.model_kwargs.items() if hasattr(config, k)})
            return config, None
        cached = cached_hub_id(model.model_name, hub_revision(model, model.model_name).get("revision"))
        return read_model_config(model, local_files_only=cached), None
    except Exception as error:
        return None, (f"model.model_name: transformers cannot read the model's config: "
                      f"{type(error).__name__}: {error}")


def _chat_template_problems(model: ModelParams, gguf: dict | None, trust: bool) -> list[str]:
    if model.chat_template:  # model.chat_template is the one used
        return []
    key = "tokenizer_name" if model.tokenizer_name else "model_name"
    if gguf is not None and not model.tokenizer_name:
        template = gguf.get("tokenizer_config", {}).get("chat_template")
    elif _had_chat_template(model, key):
        return []
    else:
        from transformers import AutoTokenizer  # imports torch: only when a tokenizer is loaded

        try:
            name = getattr(model, key)
            revision = hub_revision(model, name)
            template = AutoTokenizer.from_pretrained(  # as load_tokenizer loads it
                name, **{"trust_remote_code": trust, "local_files_only": cached_hub_id(name, revision.get("revision")),
                         **model.tokenizer_kwargs, **revision}).chat_template
        except Exception as error:
            return [f"model.{key}: transformers cannot load the tokenizer: {type(error).__name__}: {error}"]
    if template:
        _had_chat_template(model, key, remember=True)
        return []
    where = model.gguf_file if gguf is not None and not model.tokenizer_name else getattr(model, key)
    return [f"model.{key}: the tokenizer of {where} has no chat template, which chat and "
            "instruction rows (messages, Alpaca, prompt/completion) need to be formatted: use an "
            "instruct model's tokenizer (model.tokenizer_name), or plain-text rows ({\"text\": ...})"]


def _had_chat_template(model: ModelParams, key: str, remember: bool = False) -> bool:
    """Whether transformers found a chat template in this local tokenizer directory before, with
    these files (names, sizes, modification times), kwargs and transformers version (user_cache):
    loading a tokenizer imports transformers and torch, ~5 s of a re-run's check. Only a template
    found is kept; with `remember`, keep it. A hub id is always asked."""
    folder = Path(getattr(model, key))
    found = user_cache.versions(("transformers", "tokenizers"))
    if not found or not folder.is_dir():
        return False
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    question = {"folder": str(folder.resolve()), "files": files, "kwargs": model.tokenizer_kwargs,
                "trust_remote_code": bool(model.trust_remote_code)}
    entry = f"chat-templates/{found}-{user_cache.digest(question)}.json"
    if remember:
        user_cache.write(entry, True)
    return user_cache.read(entry) is True


# What an accepted set of trial arguments was judged by besides its values: the libraries, the code
# that builds their objects, and the machine facts build_training_args reads (CUDA, CPU threads).
ARGUMENT_JUDGES = ("torch", "transformers", "trl", "peft")
_ARGUMENT_CODE = ("library_checks.py", "train.py", "names.py", "space.py")


def argument_problems(tuning: TuningParams, max_length: int, fixed_paths: dict[tuple[str, str], str]) -> list[str]:
    """`judge_arguments`, skipped when the same arguments were accepted before by the same library
    versions and code on a machine like this one (the user's cache, `user_cache`). Importing TRL and
    PEFT to ask takes ~8 s of a ~10 s check, and every re-run of the command (the way failed trials
    are re-run) asks again. Only an acceptance is kept, and rule preflight judges every
    configuration again before any trial, so a stale entry can only delay an answer, never change it.
    Returns problems as 'yaml.path: what is wrong'."""
    found = user_cache.versions(ARGUMENT_JUDGES)
    question = {
        "training": tuning.training_args, "peft": tuning.lora_args, "use_peft": tuning.use_peft,
        "space": [p.as_dict() for p in tuning.space], "seed": tuning.seed,
        "report_every_steps": tuning.report_every_steps, "max_length": max_length,
        "fixed_paths": sorted([list(k), v] for k, v in fixed_paths.items()),
        "code": user_cache.code_digest(_ARGUMENT_CODE),
        "cuda": os.path.exists("/proc/driver/nvidia/version"), "cpus": os.cpu_count(),
    }
    entry = f"accepted-arguments/{found}-{user_cache.digest(question)}.json"
    if found and user_cache.read(entry) is True:
        return []
    problems = judge_arguments(tuning, max_length, fixed_paths)
    if found and not problems:
        user_cache.write(entry, True)
    return problems


def judge_arguments(tuning: TuningParams, max_length: int, fixed_paths: dict[tuple[str, str], str]) -> list[str]:
    """Build `SFTConfig` (and `LoraConfig` when LoRA is on) from the fixed parameters and at each
    corner of the search space (`space.corners`: every choice, every bound), as a trial would, and
    check each value against its field's type: parse time's share of the preflight (no model, no
    data, a second). Returns problems as 'yaml.path: what is wrong'.

    `fixed_paths` maps (group, target field) to the fixed parameter's YAML path. The library's own
    complaint is reported under the path of the value that caused it: a tunable parameter's when
    only some of its values fail, else the fixed parameters the message names.
    """
    from peft import LoraConfig
    from trl import SFTConfig

    problems = []
    scratch = Path(tempfile.gettempdir()) / "snaketune-argument-check"  # never created
    for (group, target), path in fixed_paths.items():
        value = (tuning.training_args if group == "training" else tuning.lora_args).get(target)
        if (target, value) == ("dataloader_num_workers", "auto"):  # Oumi's value: a number per trial
            continue
        problem = type_problem(SFTConfig if group == "training" else LoraConfig, target, value)
        if problem:
            problems.append(f"{path}: {problem}")
    for param in tuning.space:
        cls = SFTConfig if param.group == "training" else LoraConfig
        for i, value in enumerate(search_space.edge_values(param)):
            problem = type_problem(cls, param.target, oumi_value(param.target, value))
            if problem:
                where = f".choices[{i}]" if param.type == "categorical" else (".low", ".high")[i]
                problems.append(f"tuning.tunable_{param.group}_params.{param.name}{where}: "
                                f"{problem}")
    if problems:  # a value of the wrong type makes the libraries' own messages misleading
        return problems

    said = set()

    def build(group: str, fixed: dict, training: dict, peft: dict):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if group == "training":
                return train.build_training_args(replace(tuning, training_args=fixed), max_length, training, scratch)
            return train.build_lora_config(fixed, peft)

    def culprits(group: str, fixed: dict, training: dict, peft: dict) -> list[str]:
        """The fixed parameters without any one of which the arguments build."""
        found = []
        for target in fixed:
            try:
                build(group, {k: v for k, v in fixed.items() if k != target}, training, peft)
            except Exception:
                continue
            found.append(fixed_paths.get((group, target), f"tuning.fixed_{group}_params"))
        return found or [f"tuning.fixed_{group}_params"]

    def refused(group: str, param, value, values: dict) -> None:
        fixed = tuning.training_args if group == "training" else tuning.lora_args
        training, peft = search_space.split_by_group(tuning.space, values)
        try:
            build(group, fixed, training, peft)
        except Exception as error:  # ValueError, TypeError, ImportError: the library's complaint
            message = "; ".join(line.strip() for line in f"{type(error).__name__}: {error}".splitlines()
                                if line.strip())
            library = "SFTConfig" if group == "training" else "LoraConfig"
            if param is None:
                named = culprits(group, fixed, training, peft)
                line = f"{', '.join(named)}: {library} refuses these values: {message}"
            else:
                line = (f"tuning.tunable_{group}_params.{param.name}: {library} refuses "
                        f"{param.name}={value!r} (with {values}): {message}")
            if message not in said:
                said.add(message)
                problems.append(line)

    for param, value, values in search_space.corners(tuning.space):
        varied = None if param is None else param.group
        if varied in (None, "training"):
            refused("training", param, value, values)
        if tuning.use_peft and varied in (None, "peft"):
            refused("peft", param, value, values)
    return problems


def type_problem(cls, field: str, value) -> str | None:
    """By hand, because dataclasses do not check types and TRL, PEFT and transformers take a wrong
    one until deep in a trial (`range(3.0)`): why `value` does not fit dataclass `cls`'s `field` by type (an integer field given 3.0 or
    '4', a flag given 'true'), or None. Only what a type can say: the library checks the rest."""
    import typing

    hint = typing.get_type_hints(cls).get(field)
    if hint is None or _fits(hint, value):
        return None
    wanted = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
              list: "a list", dict: "a mapping"}
    names = [wanted.get(typing.get_origin(a) or a) for a in _alternatives(hint)]
    expected = " or ".join(dict.fromkeys(n for n in names if n)) or str(hint)
    return f"{value!r} ({type(value).__name__}) does not fit {cls.__name__}.{field}, which takes {expected}"


def _alternatives(hint) -> list:
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(hint) for a in _alternatives(arg)]
    return [hint]


def _fits(hint, value) -> bool:
    import enum
    import typing

    for option in _alternatives(hint):
        origin = typing.get_origin(option) or option
        if option is typing.Any or (option is type(None) and value is None):
            return True
        if origin is typing.Literal:
            if value in typing.get_args(option) or isinstance(value, str):  # the library checks strings
                return True
        elif origin is bool:
            if isinstance(value, bool):
                return True
        elif origin is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif origin is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif origin in (list, tuple):
            if isinstance(value, (list, tuple)):
                return True
        elif isinstance(origin, type) and issubclass(origin, enum.Enum):
            if isinstance(value, (str, origin)):
                return True
        elif isinstance(origin, type):
            if isinstance(value, origin):
                return True
        else:  # a type this check does not know: the library has the last word
            return True
    return False


def generation_config_problems(params: GenerationParams) -> list[str]:
    """What transformers says about the settings (GenerationConfig.validate, strict), at parse time."""
    import warnings

    from transformers import GenerationConfig

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            GenerationConfig(**params.generate_kwargs()).validate(strict=True)
    except ValueError as error:
        message = " ".join(str(error).split())
        return [f"generation: transformers' GenerationConfig refuses these settings: {message}"]
    return []
