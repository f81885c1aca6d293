"""The preflight: every configuration the search can draw, built and stepped by the libraries
themselves before any trial is created.

A configuration can pass every check of its own section and still fail in a trial, because its
preconditions live in another library object: a scheduler's kwargs, the optional package behind
an optimizer name, a sampler's need for a finite space, LoRA target names the model lacks. Rather
than re-implement each precondition, the preflight builds what a trial builds, with the trial's own
code (`train.build_trainer`), and takes one real step:

- `search_problems` (at parse time, milliseconds to a second; the trial arguments' share of parse
  time is `library_checks.argument_problems`): the study's sampler and pruner
  (`strategy.make_sampler`, `make_pruner`) in an in-memory study over the search space, asked for
  the enqueued configurations and then for trials past the sampler's start-up ones, each
  parameter suggested, intermediate values reported and the pruner asked.
- `run` (rule preflight, after prepare_model and prepare_data, before any trial and the baseline):
  for each configuration of the covering set (`configurations`: the base point, each categorical
  choice, each numeric bound, each enqueued trial), the trial's `SFTConfig` and `LoraConfig`, the
  model loaded through the trial's `from_pretrained` (with model_kwargs) from a shrunken random
  copy (`shrink_config`: the same architecture class and config, two narrow layers, or every
  layer when a value names layers), the PEFT
  model, the `SFTTrainer` over the prepared rows, its optimizer and LR scheduler through the
  Trainer's own creation path, one optimizer step and its checkpoint, one evaluation, and with a
  generation metric one generation: on CPU, in seconds.

A failure names the YAML path of the value that causes it: a tunable parameter's bound or choice
when only configurations with it fail, else the fixed parameters without which the base
configuration builds (found by leaving each out in turn), and quotes the library. Warnings the
libraries raise meanwhile are refusals (REFUSED_WARNINGS: the value would do nothing, or something
else than written), deliberately ignored (IGNORED_WARNINGS, each with its reason), or notices
naming the YAML path. Each name of a LoRA module list (target_modules, modules_to_save,
exclude_modules) must match a module.

Not covered, because a CPU step cannot show it: bf16/fp16/tf32 kernels and mixed precision,
flash attention and other GPU attention kernels (the step uses sdpa), QLoRA's 4/8-bit loading,
torch.compile, activation offloading, device placement, several GPUs, memory; nor lm-eval tasks
and custom metric functions (they run after training, on the user's code).

One module past 500 lines on purpose: the covering set, the step, the judging of what the libraries
raise and warn (the warning tables below) and the search for the value at fault are one procedure;
split, each part would reach into the others' private helpers.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import random
import re
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from snaketune import data as datasets_
from snaketune import generation, preflight_cache, scoring, strategy, train, user_cache
from snaketune import model as models
from snaketune import space as search_space
from snaketune.config import TuningConfig, TuningParams
from snaketune.errors import ProblemsError
from snaketune.layout import write_json
from snaketune.library_checks import cached_hub_id

# The one step: an optimizer step (with the configuration's gradient accumulation) and the last
# step's checkpoint; the evaluation, generation and everything else are the trial's own settings.
STEP_OVERRIDES = {"max_steps": 1, "disable_tqdm": True,
                  # no side effects of the user's: no tracker run, no push of a random model
                  "report_to": "none", "push_to_hub": False}
# Without a GPU the step runs in float32 and eagerly: mixed precision, TF32, activation offloading
# (CUDA streams) and torch.compile are a GPU trial's, not covered here (README).
CPU_STEP_OVERRIDES = {"fp16": False, "bf16": False, "tf32": None, "fp16_full_eval": False,
                      "bf16_full_eval": False, "use_cpu": True, "activation_offloading": False,
                      "torch_compile": False, "torch_compile_mode": None, "torch_compile_backend": None}
# Validation rows the step's evaluation reads (the trial reads them all).
EVALUATION_ROWS = 4
# The shrunken copy of the model: this many layers (all of them when a value names layers:
# names_layers), with this many key-value heads of SHRUNK_HEAD_DIM, so that a step takes a
# fraction of a second whatever the model's size.
SHRUNK_LAYERS = 2
SHRUNK_KV_HEADS = 2
SHRUNK_HEAD_DIM = 16
# Trials an in-memory study asks its sampler for, past the sampler's own start-up trials (which
# sample at random and would never reach the code that fails), at most.
SAMPLER_ASKS_PAST_STARTUP = 2
SAMPLER_ASKS_MAX = 25

# Library loggers whose warnings the preflight hears (Python warnings are heard from anywhere).
LIBRARY_LOGGERS = ("transformers", "peft", "trl", "accelerate", "optuna")

# Warnings that say nothing about a value the user wrote, and why each is ignored. Kept in this
# one place: any other warning raised while a configuration is built and stepped becomes a notice
# naming its YAML path, or (REFUSED_WARNINGS) a refusal.
IGNORED_WARNINGS = {
    r"max_steps is given, it will override any value given in num_train_epochs":
        "the preflight's single step sets max_steps (STEP_OVERRIDES); a trial's own overlap of "
        "max_steps and epochs is said at parse time (names._inert_epochs)",
    r"ExperimentalWarning|is experimental \(supported from v":
        "Optuna flags samplers and arguments as experimental: they work as documented",
    r"`is_gradient_checkpointing` is deprecated":
        "PEFT reads transformers' old attribute name itself (seen with peft 0.21, transformers 5.25); "
        "nothing the user wrote",
    r"A decoder-only architecture is being used, but right-padding was detected":
        "generation pads on the left (generation.evaluate_generation sets it per batch)",
}
# Warnings that mean an accepted value would do nothing here, or do something else than written:
# the value is refused by its YAML path, with the library's words and what to do. Only messages
# that name a field (`name`) and say so: a broader pattern would refuse what the step itself did.
REFUSED_WARNINGS = {
    r"`init_lora_weights` is 'eva'|lora with eva initialization|eva.*initialize_lora_eva_weights":
        "this LoRA initialisation needs a pass over training data (or a conversion) that a trial "
        "never makes, so the adapter would start as plain LoRA: use another init_lora_weights "
        "(true, gaussian, pissa, olora)",
    r"`\w+`[^.]*(has no effect|will be ignored|is ignored|will not be used|does nothing)":
        "the library says it does nothing here: remove it, or change it as the library says",
}
# An error that says it needs a GPU, met by a step without one, is not the value's fault: said in a
# notice (not checked here), not refused.
NEEDS_GPU = r"\bcuda\b|\bgpu\b|triton|nvidia"


class PreflightError(ProblemsError):
    """Configurations the libraries refuse; `problems` lists each as 'yaml.path: what is wrong'."""

    heading = "Preflight: {count} problem(s); no trial was started"


@dataclass
class Configuration:
    """One point of the covering set: its {parameter name: value}, the tunable values in it that
    differ from the base point (`changes`, each as (YAML path of the value, {name: value} of the
    point that varies it alone)), and where it comes from when that is one value (`varied`:
    `...learning_rate.high`, `tuning.enqueue_trials[0]`; None for the base point, every parameter
    at its first choice or low bound, and for a point that varies several at once)."""

    values: dict
    varied: str | None = None
    changes: list = field(default_factory=list)


@dataclass
class Outcome:
    """What building and stepping one configuration gave: the library's error ('Type: message'),
    the stage it came at, the warnings heard, and the names of LoRA list fields no module matched."""

    error: str | None = None
    stage: str | None = None
    warnings: list[str] = field(default_factory=list)
    # {LoraConfig list field: its names that match no module} (target_modules, modules_to_save)
    unmatched: dict = field(default_factory=dict)
    linear_modules: list[str] = field(default_factory=list)  # the model's linear module names


# -- the covering set -----------------------------------------------------------------------------


def configurations(tuning: TuningParams) -> list[Configuration]:
    """The covering set of the search space, each point once: every categorical choice and every
    numeric bound reached with as few points as the parameter with the most edge values needs
    (point k takes each parameter's k-th edge value, space.edge_values, cycling), then, one
    parameter at a time (space.corners), any edge value those points miss (a conditional
    parameter's, under its parent's value), then each enqueued trial. Point 0 is the base point.
    A point that fails is taken apart one value at a time (judge), so only a failure costs more."""
    corners = search_space.corners(tuning.space)
    alone = {(param.name, repr(value)): (_value_path(param, value), values)
             for param, value, values in corners[1:]}
    base = corners[0][2]
    width = max([len(search_space.edge_values(p)) for p in tuning.space] + [1])
    found: list[Configuration] = []
    seen = []

    def add(values: dict, varied: str | None = None) -> None:
        if values in seen:
            return
        seen.append(values)
        changes = [alone[(name, repr(value))] for name, value in values.items()
                   if value != base.get(name) and (name, repr(value)) in alone]
        if varied is None and len(changes) == 1:
            varied = changes[0][0]
        found.append(Configuration(values, varied, changes))

    for k in range(width):
        values = {}
        for param in tuning.space:
            if search_space.is_active(param, values):
                edges = search_space.edge_values(param)
                values[param.name] = edges[k % len(edges)]
        add(values)
    reached = {(name, repr(value)) for point in found for name, value in point.values.items()}
    for param, value, values in corners[1:]:
        if (param.name, repr(value)) not in reached:
            add(values, _value_path(param, value))
    names = {p.name for p in tuning.space}
    for i, values in enumerate(tuning.enqueue_trials):
        add({k: v for k, v in {**base, **values}.items() if k in names}, f"tuning.enqueue_trials[{i}]")
    return found


def _value_path(param: dict, value) -> str:
    """The YAML path of a tunable parameter's bound or choice."""
    base = f"tuning.tunable_{param.group}_params.{param.name}"
    if param.type == "categorical":
        return f"{base}.choices[{list(param.choices).index(value)}]"
    return f"{base}.{'low' if value == param.low else 'high'}"


# -- the sampler and pruner (parse time) ----------------------------------------------------------


def search_problems(tuning: TuningParams) -> tuple[list[str], list[str]]:
    """Ask the study's own sampler and pruner (built as every trial builds them) for trials over
    the space in an in-memory study: the enqueued configurations first, then trials past the
    sampler's start-up trials (its `n_startup_trials`, Optuna's 10 when it has one), each with
    made-up values told, intermediate values reported and the pruner asked. Returns (problems,
    notices) as 'yaml.path: ...' lines: a sampler that cannot sample a parameter is refused under
    tuning.tuner_sampler, naming the parameter; its warnings are notices."""
    import optuna

    problems, notices = [], []
    rng = random.Random(tuning.seed)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    optuna.logging.disable_default_handler()  # its warnings are said once, as notices
    try:
        with _heard() as heard:
            _ask_and_tell(tuning, rng, problems)
    finally:
        optuna.logging.enable_default_handler()
        optuna.logging.set_verbosity(verbosity)
    if problems:
        return problems, notices
    paths = {p.name: f"tuning.tunable_{p.group}_params.{p.name}" for p in tuning.space}
    said = set()
    for message in sum(_judged(heard), []):  # a sampler falls back, it does not ignore: notices
        named = re.search(r"parameter `([^`]+)`", message)
        where = paths.get(named.group(1)) if named else None
        key = (where, re.sub(r"Trial#\d+", "", message))
        if key not in said:
            said.add(key)
            notices.append(f"{where or 'tuning.tuner_sampler'}: {tuning.sampler} warns: "
                           f"{re.sub(r' in Trial#[0-9]+', '', message)}")
    return problems, notices


def _ask_and_tell(tuning: TuningParams, rng: random.Random, problems: list[str]) -> None:
    """search_problems' in-memory study; a parameter the sampler cannot sample is appended to
    `problems` and ends it."""
    import optuna

    try:
        sampler = strategy.make_sampler(tuning, 0)
        study = optuna.create_study(sampler=sampler, pruner=strategy.make_pruner(tuning),
                                    directions=list(tuning.directions))
    except Exception as error:  # checked by strategy.check already; a combination it missed
        problems.append(f"tuning.tuner_sampler: Optuna cannot build the study's {tuning.sampler} with "
                        f"tuning.sampler_kwargs and the {tuning.pruner} pruner: {_message(error)}")
        return
    for values in tuning.enqueue_trials:
        study.enqueue_trial(values)
    startup = tuning.sampler_kwargs.get("n_startup_trials",
                                        getattr(sampler, "_n_startup_trials", 0)) or 0
    asks = min(SAMPLER_ASKS_MAX, len(tuning.enqueue_trials) + int(startup) + SAMPLER_ASKS_PAST_STARTUP)
    if tuning.sampler == "GridSampler":
        asks = min(asks, len(strategy.grid_points(tuning.space)))
    for _ in range(asks):
        trial = study.ask()
        values = {}
        for param in tuning.space:
            if not search_space.is_active(param, values):
                continue
            try:
                values.update(search_space.suggest(trial, [param]))
            except Exception as error:
                problems.append(
                    f"tuning.tuner_sampler: {tuning.sampler} cannot sample "
                    f"tuning.tunable_{param.group}_params.{param.name} ({param.type}"
                    f"{', log' if param.log else ''}): Optuna says {_message(error)}: "
                    "give the parameter what the sampler needs (a step, or categorical choices), "
                    "or use a sampler that takes it (TPESampler, RandomSampler)")
                return
        if tuning.pruner not in ("none", "wilcoxon") and len(tuning.metrics) == 1 and tuning.report_every_steps:
            try:
                for step in (tuning.report_every_steps, 2 * tuning.report_every_steps):
                    trial.report(rng.random(), step)
                    trial.should_prune()
            except Exception as error:
                problems.append(f"tuning.pruner_kwargs: the {tuning.pruner} pruner fails when a trial asks it "
                                f"whether to stop: Optuna says {_message(error)}: change pruner_kwargs as it says")
                return
        study.tell(trial, [rng.random() for _ in tuning.metrics] if len(tuning.metrics) > 1
                   else rng.random())


# -- the step (rule preflight) --------------------------------------------------------------------


def run(tune: TuningConfig, model_source: dict, data_dir: str | Path, record_path: str | Path,
        threads: int = 1) -> dict:
    """Build and step every configuration of the covering set (see the module's docstring) and
    write `record_path` (rule preflight's output, JSON: configurations, seconds, notices, the
    warnings ignored and why) last.

    `model_source` is the prepared model's source.json (model.read_source), `data_dir` the folder of
    prepare_data's summary. Raises PreflightError, naming each refused value by its YAML path, and
    writes nothing, when a configuration fails or a library warns that a value would do nothing.
    A record the libraries accepted before for the same fingerprint, model and rows
    (`preflight_cache`) is written again without stepping anything.
    """
    started = time.time()
    cache_entry = preflight_cache.entry(fingerprint(tune), model_source, data_dir)
    if (before := preflight_cache.read(cache_entry)) is not None:
        accepted_before = {"output_dir": before.get("output_dir"), "seconds": before.get("seconds"), "cache": cache_entry}
        record = {**before, "output_dir": str(tune.tuning.output_dir), "seconds": round(time.time() - started, 2),
                  "accepted_before": accepted_before}
        print(f"preflight: these {len(record['configurations'])} configurations were accepted before on the same "
              f"model and rows (in {before.get('output_dir')}): not stepped again (the record is "
              f"{user_cache.cache_dir() / cache_entry}; remove it to step them again)")
        write_json(record_path, record)
        return record
    import peft  # noqa: F401 (imported before gc.freeze: see there)
    import torch
    import trl  # noqa: F401

    torch.set_num_threads(max(1, threads))
    # The libraries' objects imported so far live to the end: out of the garbage collector's sight,
    # the collection accelerate runs after every configuration's training takes a tenth of the time.
    gc.freeze()
    prepared = datasets_.load_prepared(data_dir)
    train_rows = prepared["train"]
    eval_rows = prepared["validation"].select(range(min(EVALUATION_ROWS, len(prepared["validation"]))))
    points = configurations(tune.tuning)
    scratch = Path(tempfile.mkdtemp(prefix="snaketune-preflight-"))
    try:
        tune = step_config(tune)
        small_source = shrunken_model(tune, model_source, scratch / "model")
        stepper = _Stepper(tune, small_source, train_rows, eval_rows, scratch)
        problems, notices = judge(tune, points, stepper)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if problems:
        raise PreflightError(problems)
    heard = dict.fromkeys(w for outcome in stepper.outcomes.values() for w in outcome.warnings)
    ignored = [{"warning": w, "why": reason} for w in heard for pattern, reason in IGNORED_WARNINGS.items()
               if re.search(pattern, w, re.IGNORECASE)]
    record = {"configurations": [{"values": p.values, "varied": p.varied} for p in points],
              "seconds": round(time.time() - started, 2), "notices": notices, "ignored_warnings": ignored,
              "not_covered": "bf16/fp16/tf32 kernels, GPU attention kernels, QLoRA loading, torch.compile, "
                             "activation offloading, device placement, several GPUs, memory, lm-eval tasks, "
                             "custom metrics", "output_dir": str(tune.tuning.output_dir)}
    preflight_cache.write(cache_entry, record)
    write_json(record_path, record)
    return record


class _Stepper:
    """Builds and steps one configuration (with fixed arguments left out, for finding culprits)."""

    def __init__(self, tune, small_source, train_rows, eval_rows, scratch: Path):
        self.tune, self.small_source, self.scratch = tune, small_source, scratch
        self.train_rows, self.eval_rows = train_rows, eval_rows
        self.outcomes: dict[str, Outcome] = {}  # each configuration is stepped once
        self.loaded: dict[str, tuple] = {}  # the model and tokenizer, loaded once per model_kwargs

    def __call__(self, values: dict, without: tuple[str, str] | None = None) -> Outcome:
        """Step the configuration `values`, with the fixed argument `without` ((group, target), or
        ("model_kwargs", key)) left out."""
        key = json.dumps([values, without], sort_keys=True, default=str)
        if key not in self.outcomes:
            out_dir = self.scratch / f"configuration_{len(self.outcomes)}"
            try:
                self.outcomes[key] = step(_without(self.tune, without), values, self.small_source,
                                          self.train_rows, self.eval_rows, out_dir, self.loaded)
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
        return self.outcomes[key]


def _without(tune: TuningConfig, without: tuple[str, str] | None) -> TuningConfig:
    if without is None:
        return tune
    group, key = without
    tuning = tune.tuning
    if group == "training":
        return replace(tune, tuning=replace(tuning, training_args={k: v for k, v in tuning.training_args.items() if k != key}))
    if group == "peft":
        return replace(tune, tuning=replace(tuning, lora_args={k: v for k, v in tuning.lora_args.items() if k != key}))
    return replace(tune, model=replace(tune.model, model_kwargs={k: v for k, v in tune.model.model_kwargs.items() if k != key}))


def step(tune: TuningConfig, values: dict, small_source: dict, train_rows, eval_rows, out_dir: Path,
         loaded: dict | None = None) -> Outcome:
    """Build configuration `values` as a trial builds it (train.build_trainer) on the shrunken
    model `small_source`, take one optimizer step (and save its checkpoint), evaluate `eval_rows`
    once and, with a generation metric, generate one answer. `loaded` keeps the model and
    tokenizer as the trial's load_model and load_tokenizer give them, by model_kwargs, and each
    configuration steps a copy. Never raises: what failed, and at which stage, is in the Outcome,
    with every warning heard."""
    import torch

    outcome = Outcome()
    stage = "building the trainer (SFTConfig, LoraConfig, model, PEFT model, SFTTrainer)"
    with _heard() as heard:
        try:
            overrides = {**STEP_OVERRIDES, **({} if torch.cuda.is_available() else CPU_STEP_OVERRIDES)}
            if tune.tuning.report_every_steps or tune.tuning.training_args.get("eval_strategy", "no") != "no":
                # The trial evaluates while it trains: so does the step (metric_for_best_model, ...).
                overrides["eval_steps"] = 1
            loaded = {} if loaded is None else loaded
            key = json.dumps(tune.model.model_kwargs, sort_keys=True, default=str)
            if key not in loaded:
                loaded[key] = (models.load_model(small_source, tune.model),
                               models.load_tokenizer(small_source, tune.model))
            model, tokenizer = loaded[key]
            trainer, tokenizer = train.build_trainer(tune, values, out_dir, small_source, train_rows, eval_rows,
                                                     overrides=overrides,
                                                     loaded=(copy.deepcopy(model), copy.deepcopy(tokenizer)))
            outcome.unmatched, outcome.linear_modules = _unmatched_names(trainer.model)
            stage = "one training step (the optimizer and LR scheduler created by the Trainer)"
            trainer.train()
            stage = "one evaluation"
            if not any("eval_loss" in entry for entry in trainer.state.log_history):
                trainer.evaluate()
            if tune.uses_generation:
                stage = "one generation"
                params = replace(tune.generation, num_samples=1, max_new_tokens=min(4, tune.generation.max_new_tokens))
                objective = next(m for m in tune.tuning.metrics if m in scoring.GENERATION_METRICS)
                with torch.no_grad():
                    generation.evaluate_generation(trainer.model, tokenizer, eval_rows, params, seed=tune.tuning.seed,
                                                   objective=objective, out_path=out_dir / "generations.jsonl")
        except Exception as error:  # the library's complaint: the caller names the value
            outcome.error, outcome.stage = _one_line(error), stage
    outcome.warnings = heard
    return outcome


def judge(tune: TuningConfig, points: list[Configuration], stepper) -> tuple[list[str], list[str]]:
    """Step every configuration of `points` (the base point first) with `stepper` and turn what
    went wrong into (problems, notices), each 'yaml.path: ...': a failure or refused warning of
    the base point under the fixed parameters without which it goes away (`_culprits`), one that
    only another point shows under the value that shows it alone (`_values_behind`). Each library
    message is said once."""
    problems, notices, said = [], [], set()
    base_outcome = stepper(points[0].values)
    for point in points:
        outcome = stepper(point.values)
        refused, noticed = _judged(outcome.warnings)
        error = [outcome.error] if outcome.error else []
        if error and not _has_gpu() and re.search(NEEDS_GPU, outcome.error, re.IGNORECASE):
            error, noticed = [], [f"not checked without a GPU ({outcome.stage}): {outcome.error}", *noticed]
        for kind, messages in (("error", error), ("refused", refused), ("notice", noticed)):
            for message in messages:
                if message in said:
                    continue
                if point is not points[0] and (_shows(base_outcome, message) or message.startswith("not checked")):
                    continue  # the base point's, said under its culprits already
                said.add(message)
                where = point.varied or ", ".join(_culprits(tune, point, stepper, message)
                                                  if not point.changes else _values_behind(point, stepper, message))
                if kind == "refused" and any(p.startswith(f"{where}: ") for p in problems):
                    continue  # one refusal a value: another warning of the same cause adds nothing
                line = _describe(kind, message, outcome, point)
                (notices if kind == "notice" else problems).append(f"{where}: {line}")
        for target, names in outcome.unmatched.items():
            key = ("unmatched", target, tuple(names))
            if names and not outcome.error and key not in said:
                said.add(key)
                problems.append(f"{_list_path(tune, point, target)}: {', '.join(map(repr, names))} match no module "
                                "of the model, so they do nothing (PEFT refuses a list only when none of its names "
                                f"match): its linear modules are {', '.join(outcome.linear_modules)}; remove or "
                                "correct the names that match nothing")
    return problems, notices


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _values_behind(point: Configuration, stepper, message: str) -> list[str]:
    """The YAML paths of the tunable values of `point` (which varies several at once) that show
    `message` when each is varied alone; all of them when none alone does (they fail together)."""
    found = [path for path, values in point.changes if _shows(stepper(values), message)]
    return found or [f"{' and '.join(path for path, _ in point.changes)} (together)"]


def _shows(outcome: Outcome, message: str) -> bool:
    return message == outcome.error or message in outcome.warnings


def _describe(kind: str, message: str, outcome: Outcome, point: Configuration) -> str:
    values = f" (with {point.values})" if point.varied or point.changes else ""
    if kind == "error":
        return (f"every trial with this value would fail at {outcome.stage}{values}: {message}. "
                "Change the value as the message says, or remove it")
    if kind == "refused":
        return f"{message} ({_refusal_reason(message)})"
    return f"the libraries warn: {message}"


def _refusal_reason(message: str) -> str:
    return next(reason for pattern, reason in REFUSED_WARNINGS.items() if re.search(pattern, message, re.IGNORECASE))


def _culprits(tune: TuningConfig, point: Configuration, stepper, message: str) -> list[str]:
    """The YAML paths of what makes the base point show `message` (an error or a warning): a
    tunable parameter's first choice or low bound when moving it alone makes the message go, else
    the fixed parameters (training and PEFT arguments, model_kwargs keys) without any one of which
    it goes; the fixed sections' paths when none alone does (several together, or the model)."""
    named = re.match(r"\w+: ((model|tuning|data|generation)\.[\w.\[\]]+): ", message)
    if named:  # snaketune's own code named the field (model.freeze_layers)
        return [named.group(1)]
    tuning = tune.tuning
    # A tunable parameter's first choice or low bound: the message goes when only it moves.
    first = [_value_path(param, point.values[param.name]) for param, value, values
             in search_space.corners(tuning.space)[1:]
             if value != point.values.get(param.name) and param.name in point.values
             and {k: v for k, v in values.items() if k != param.name} == {
                 k: v for k, v in point.values.items() if k != param.name}
             and not _shows(stepper(values), message)]
    if first:
        return list(dict.fromkeys(first))
    candidates = [(key, path) for key, path in tuning.argument_paths.items()
                  if key[1] in (tuning.training_args if key[0] == "training" else tuning.lora_args)]
    candidates += [(("model_kwargs", key), f"model.model_kwargs.{key}") for key in tune.model.model_kwargs]
    # Fields the message names first: most often one of them, and then one step finds it.
    candidates.sort(key=lambda item: item[0][1] not in message and item[1].rsplit(".", 1)[-1] not in message)
    found = []
    for without, path in candidates:
        if not _shows(stepper(point.values, without), message):
            found.append(path)
            if without[1] in message or path.rsplit(".", 1)[-1] in message:
                break  # the field the library names: enough (each other step costs a second)
    if found:
        return found
    sections = ["tuning.fixed_training_params"] + (["tuning.fixed_peft_params"] if tuning.use_peft else [])
    return sections + (["model"] if "model" in message.lower() else [])


def _list_path(tune: TuningConfig, point: Configuration, target: str) -> str:
    """The YAML path of the LoraConfig list field `target` in configuration `point`."""
    for param in tune.tuning.space:
        if param.target == target and param.name in point.values:
            path = f"tuning.tunable_peft_params.{param.name}"
            return point.varied or next((p for p, _ in point.changes if p.startswith(path + ".")), path)
    return tune.tuning.argument_paths.get(("peft", target), f"tuning.fixed_peft_params.{target}")


# LoraConfig fields listing module names each of which should match a module: PEFT refuses
# target_modules only when none matches, and modules_to_save and exclude_modules never.
NAME_LIST_FIELDS = ("target_modules", "modules_to_save", "exclude_modules")


def _unmatched_names(model) -> tuple[dict, list[str]]:
    """({field: its names no module path ends with}, the model's linear module names) for the
    PEFT model's NAME_LIST_FIELDS; ({}, []) for a model without LoRA."""
    import torch

    config = (getattr(model, "peft_config", None) or {}).get("default")
    if config is None:
        return {}, []
    paths = [path for path, _ in model.get_base_model().named_modules() if path]
    adapted = list(getattr(model, "targeted_module_names", []) or [])
    unmatched = {}
    for target in NAME_LIST_FIELDS:
        names = getattr(config, target, None)
        if isinstance(names, (list, set, tuple)):
            among = adapted if target == "target_modules" else paths
            unmatched[target] = [name for name in sorted(names)
                                 if not any(p == name or p.endswith("." + name) for p in among)]
    linear = sorted({path.rsplit(".", 1)[-1] for path, module in model.get_base_model().named_modules()
                     if isinstance(module, torch.nn.Linear) and path and "lora_" not in path})
    return unmatched, [name for name in linear if name != "base_layer"]


# -- warnings -------------------------------------------------------------------------------------


class _Heard(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record):
        self.sink.append(record.getMessage())


@contextmanager
def _heard():
    """Collects the Python warnings and the library loggers' warnings raised inside, as one-line
    messages (each once). transformers says some warnings once per process (`warning_once`): its
    cache is cleared first, so every configuration hears its own."""
    heard: list[str] = []
    handler = _Heard(heard)
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    try:
        logging.Logger.warning_once.cache_clear()  # transformers' per-process "once"
    except AttributeError:
        pass
    for logger in loggers:
        logger.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield heard
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
            heard.extend(f"{w.category.__name__}: {w.message}" for w in caught)
            unique = list(dict.fromkeys(" ".join(str(m).split())[:600] for m in heard))
            heard[:] = unique


def _judged(messages: list[str]) -> tuple[list[str], list[str]]:
    """(refused, noticed) of `messages`; the IGNORED_WARNINGS are dropped."""
    refused, noticed = [], []
    for message in messages:
        if any(re.search(pattern, message, re.IGNORECASE) for pattern in IGNORED_WARNINGS):
            continue
        (refused if any(re.search(p, message, re.IGNORECASE) for p in REFUSED_WARNINGS) else noticed).append(message)
    return refused, noticed


def _message(error: BaseException) -> str:
    """The library's message in one line, without its closing full stop (a sentence follows)."""
    return _one_line(error).rstrip(". ")


def _one_line(error: BaseException) -> str:
    text = "; ".join(line.strip() for line in f"{type(error).__name__}: {error}".splitlines() if line.strip())
    return text[:800]


# -- the shrunken model ---------------------------------------------------------------------------


def shrink_config(config, keep_depth: bool = False, keep_width: bool = False):
    """A copy of a transformers model config with the same architecture class and settings but
    SHRUNK_LAYERS layers at most (unless `keep_depth`: when values name layers by index or
    pattern, names_layers) and narrow ones: SHRUNK_KV_HEADS key-value heads (their grouping
    kept, at most 2 query heads per key-value head) of SHRUNK_HEAD_DIM, and feed-forward widths of
    twice the new hidden size. Per-layer lists (layer_types) are cut with the depth. The
    vocabulary and positions are kept (the real tokenizer's ids, the real prompt lengths). A config
    without these attributes keeps the values it has; `keep_width` keeps the widths (a config the
    narrow shape does not fit)."""
    small = copy.deepcopy(config)
    text = small.get_text_config() if hasattr(small, "get_text_config") else small
    depth = getattr(text, "num_hidden_layers", None)
    if not keep_depth and isinstance(depth, int) and depth > SHRUNK_LAYERS:
        text.num_hidden_layers = SHRUNK_LAYERS
        for name, value in list(vars(text).items()):
            if isinstance(value, list) and len(value) == depth:
                setattr(text, name, value[:SHRUNK_LAYERS])
    heads = getattr(text, "num_attention_heads", None)
    kv = getattr(text, "num_key_value_heads", None) or heads
    if not keep_width and isinstance(heads, int) and isinstance(kv, int) and kv and heads % kv == 0:
        new_kv = min(kv, SHRUNK_KV_HEADS)
        new_heads = new_kv * min(heads // kv, 2)
        text.num_attention_heads = new_heads
        if getattr(text, "num_key_value_heads", None):
            text.num_key_value_heads = new_kv
        if hasattr(text, "head_dim"):
            text.head_dim = SHRUNK_HEAD_DIM
        if isinstance(getattr(text, "hidden_size", None), int):
            text.hidden_size = new_heads * SHRUNK_HEAD_DIM
            for width in ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size"):
                if isinstance(getattr(text, width, None), int):
                    setattr(text, width, 2 * text.hidden_size)
    return small


def shrunken_model(tune: TuningConfig, model_source: dict, out_dir: Path) -> dict:
    """Save a random model of the prepared model's architecture, narrowed (shrink_config; the full
    config when the narrow one cannot be built), to `out_dir`; returns a source dict for
    train.build_trainer ({path, tokenizer_path, kind}) with the real tokenizer. Its config is read
    as a trial's from_pretrained reads it (model.read_model_config: revision, model_kwargs)."""
    import torch
    from transformers import AutoModelForCausalLM

    trust = bool(tune.model.trust_remote_code)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        name = model_source["path"]
        config = models.read_model_config(replace(tune.model, model_name=name), local_files_only=cached_hub_id(
            name, models.hub_revision(tune.model, name).get("revision")))
        small = shrink_config(config, keep_depth=names_layers(tune))
        # The model_kwargs that are config attributes win, as the trial's from_pretrained sets them.
        small.update({k: v for k, v in tune.model.model_kwargs.items() if hasattr(small, k)})
        shallow = shrink_config(config, keep_depth=names_layers(tune), keep_width=True)
        last_error = None
        for candidate in (small, shallow, config):
            torch.manual_seed(0)
            try:
                model = AutoModelForCausalLM.from_config(candidate, trust_remote_code=trust, dtype=torch.float32)
                model(input_ids=torch.tensor([[1, 2]]))
                break
            except Exception as error:  # the next, larger candidate
                last_error = error
        else:
            raise RuntimeError(f"preflight: transformers cannot build the model from its config: {_one_line(last_error)}")
        model.save_pretrained(out_dir)
    return {**model_source, "path": str(out_dir), "kind": "preflight"}


# LoraConfig fields that can name layers by index or by a pattern over module paths.
LAYER_NAMING_FIELDS = ("layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern", "exclude_modules",
                       "layer_replication", "target_parameters")


def names_layers(tune: TuningConfig) -> bool:
    """Whether a value may name the model's layers by index or pattern (model.freeze_layers, the
    LAYER_NAMING_FIELDS, target_modules written as a regular expression): then the shrunken copy
    keeps every layer, so that each name finds what it would find in the trial's model."""
    tuning = tune.tuning
    values = [(k, v) for k, v in tuning.lora_args.items()]
    values += [(p.target, choice) for p in tuning.space if p.group == "peft"
               for choice in search_space.edge_values(p)]
    return bool(tune.model.freeze_layers) or any(
        (key in LAYER_NAMING_FIELDS and value not in (None, {}, [], ""))
        or (key == "target_modules" and isinstance(value, str) and value != "all-linear")
        or (key == "target_modules" and isinstance(value, (list, tuple))
            and any(re.search(r"\.\d+\.", str(name)) for name in value))  # model.layers.20.self_attn.q_proj
        for key, value in values)


def step_config(tune: TuningConfig) -> TuningConfig:
    """The config the step runs with: the trial's, less what only a GPU runs (QLoRA's quantised
    loading; a GPU attention kernel, replaced by sdpa)."""
    model = tune.model
    if model.attn_implementation and model.attn_implementation not in ("eager", "sdpa"):
        model = replace(model, attn_implementation="sdpa")
    return replace(tune, model=model, tuning=replace(tune.tuning, quantization={}))


def fingerprint(tune: TuningConfig) -> str:
    """What the preflight's result depends on, as rule preflight's params (JSON): a change re-runs
    it, and a re-run or a grown study (only n_trials changed) does not."""
    tuning = tune.tuning
    return json.dumps({
        # a library upgrade may read a value differently: the preflight runs again
        "versions": {p: _version(p) for p in ("torch", "transformers", "trl", "peft", "optuna", "snaketune")},
        "report_every_steps": tuning.report_every_steps, "seed": tuning.seed,
        "definition": tune.definition,
        "training": tuning.training_args, "peft": tuning.lora_args, "use_peft": tuning.use_peft,
        "space": [p.as_dict() for p in tuning.space], "enqueued": tuning.enqueue_trials,
        "generation": tune.generation.as_dict() if tune.uses_generation else None,
        "model_kwargs": tune.model.model_kwargs,
    }, sort_keys=True, default=str)


def _version(package: str) -> str | None:
    """The installed version of `package`; None when it is not installed (snaketune run from a
    source checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
