"""The one table from Oumi's parameter names to TRL `SFTConfig` and PEFT `LoraConfig` names.

A tune.yaml written for `oumi tune` uses Oumi's names (`optimizer`, `lora_r`, ...). Every other
valid `SFTConfig` / `LoraConfig` field is accepted under its own name. The lists of valid fields
come from the installed libraries, so a new TRL release never needs an edit here.
`resolve_parameters` sorts a config's tunable and fixed parameters by this table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache

from snaketune import space, user_cache
from snaketune.errors import closest

# Oumi TrainingParams name -> SFTConfig field.
TRAINING_NAMES = {
    "optimizer": "optim",
    "enable_gradient_checkpointing": "gradient_checkpointing",
    "gradient_checkpointing_kwargs": "gradient_checkpointing_kwargs",
    "compile": "torch_compile",
    "max_grad_norm": "max_grad_norm",
    "lr_scheduler_type": "lr_scheduler_type",
    "warmup_ratio": "warmup_steps",  # transformers 5 dropped warmup_ratio: a float < 1 is a ratio
    "warmup_steps": "warmup_steps",
    "dataloader_num_workers": "dataloader_num_workers",
    "save_steps": "save_steps",
    "eval_steps": "eval_steps",
    "logging_steps": "logging_steps",
    "max_seq_length": "max_length",
}

# Oumi training names that configure Oumi itself, not the trainer: accepted, checked, not passed.
# trainer_type: snaketune trains with TRL's SFTTrainer, which is Oumi's TRL_SFT.
# use_peft: Oumi's LoRA switch (Parameters.use_peft), not an SFTConfig field.
OUMI_ONLY_TRAINING_NAMES = {"trainer_type": ("TRL_SFT", "OUMI"), "use_peft": (True, False)}

# SFTConfig fields snaketune sets itself: a value in tune.yaml would be overwritten.
MANAGED_TRAINING_FIELDS = {
    "dataset_kwargs": "data is tokenized once per study by the prepare_data rule",
}
# Fields every Oumi training config sets, which each trial replaces with its own, as `oumi tune`
# does: accepted, with a notice.
REPLACED_TRAINING_FIELDS = {
    "output_dir": "each trial writes to <tuning.output_dir>/trial_<i>, as oumi tune does",
    "logging_dir": "each trial logs to <tuning.output_dir>/trial_<i>/logs",
}
# Two names of one SFTConfig field given together: the first wins, as in Oumi and transformers
# (warmup_steps over warmup_ratio).
PRECEDENCE = {"warmup_steps": ("warmup_steps", "warmup_ratio")}

# SFTConfig fields TRL reads only while it prepares a dataset. snaketune tokenizes once per study
# (rule prepare_data) and hands TRL the result (`skip_prepare_dataset`), so TRL never reads them: a
# value asking for what prepare_data does anyway is accepted; any other is refused, saying why
# (accepted, it would silently do nothing). Field -> (values that match, what happens instead).
PREPARED_DATA_FIELDS = {
    "packing": ((False,), "rows are tokenized once per study and trained unpacked (one row a "
                          "sequence); remove packing"),
    "packing_strategy": (("bfd",), "rows are not packed; remove packing_strategy"),
    "eval_packing": ((None, False), "rows are not packed; remove eval_packing"),
    "truncation_mode": (("keep_start",), "rows are cut to max_length keeping their start"),
    "dataset_text_field": (("text",), "plain-text rows are read from their 'text' column; name the "
                                      "column text"),
    "shuffle_dataset": ((False,), "the trainer's data loader already shuffles the training rows "
                                  "every epoch; remove shuffle_dataset"),
    "completion_only_loss": ((None, True), "the loss is on the answers only (prompt tokens are "
                                           "masked when the data is prepared); for loss on whole "
                                           "texts, write rows as {\"text\": ...}"),
    "assistant_only_loss": ((True,), "every assistant turn carries the loss and no other turn does; "
                                     "for loss on whole texts, write rows as {\"text\": ...}"),
    "dataset_num_proc": ((None,), "rows are tokenized once per study by the prepare_data rule"),
    "eos_token": ((None,), "answers end with the chat template's own end-of-turn tokens"),
    "chat_template_path": ((None,), "rows are formatted with the tokenizer's chat template; choose "
                                    "the tokenizer with model.tokenizer_name"),
    "model_init_kwargs": ((None,), "the model is loaded as the model: section says "
                                   "(torch_dtype_str, attn_implementation, trust_remote_code)"),
    "trust_remote_code": ((False,), "set model.trust_remote_code instead"),
}
# Fields that change how rows are tokenized, which happens once per study, before any trial.
TOKENIZATION_FIELDS = {"max_length": "rows are tokenized and cut to max_length once per study, "
                                     "before any trial: set it in fixed_training_params"}

# SFTConfig fields that change how a trial runs or is recorded but not what it learns (logging,
# saving, evaluation batching, data loading, memory and speed): a study may change them and continue.
# Every other fixed training argument is part of the study's definition (study.study_definition).
NOT_RESULT_FIELDS = ("logging_", "save_", "push_to_hub", "hub_", "dataloader_", "report_to",
                     "run_name", "disable_tqdm", "eval_accumulation_steps", "per_device_eval_batch_size",
                     "eval_do_concat_batches", "ddp_", "gradient_checkpointing", "torch_compile",
                     "include_", "skip_memory_metrics", "use_cpu", "activation_offloading",
                     "torch_empty_cache_steps", "log_level", "log_on_each_node")


def changes_results(target: str) -> bool:
    """Whether the SFTConfig field `target` changes what a trial learns (see NOT_RESULT_FIELDS)."""
    return not target.startswith(NOT_RESULT_FIELDS)


# Oumi's TrainingParams defaults where TRL's SFTConfig has another (a config written for oumi tune
# trains the same way): full activations (no gradient checkpointing), torch's AdamW, 5e-5.
# logging_steps stays 1 (snaketune's: a NaN loss is seen the step it happens) and report_to none.
OUMI_TRAINING_DEFAULTS = {"gradient_checkpointing": False, "optim": "adamw_torch", "learning_rate": 5e-5}


def oumi_value(target: str, value):
    """A fixed value as Oumi translates it for transformers/PEFT (its TrainingParams.to_hf and
    PeftParams.to_lora): `lora_init_weights` DEFAULT/RANDOM/GAUSSIAN/... (any case) become PEFT's
    True/False/"gaussian"/...; `lora_target_modules: ["all-linear"]` becomes PEFT's "all-linear";
    `max_grad_norm: null` becomes 0 (no clipping). Other values are returned as they are
    (`dataloader_num_workers: auto` is resolved in each trial: train.build_training_args)."""
    if target == "init_lora_weights" and isinstance(value, str):
        return {"default": True, "random": False}.get(value.lower(), value.lower())
    if target == "target_modules" and value == ["all-linear"]:
        return "all-linear"
    if target == "max_grad_norm" and value is None:
        return 0.0
    return value


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _report_to(logger: str, package: str):
    def handle(value):
        if not value:
            return {}, None, None
        import importlib.util

        if importlib.util.find_spec(package) is None:
            return {}, None, f"logs to {logger}, whose package is not installed: pip install {package}, or remove it"
        return {"report_to": [logger]}, None, None
    return handle


def _refused_unless_empty(instead: str):
    return lambda value: ({}, None, None if not value else instead)


def _unused(why: str):
    return lambda value: ({}, None if value in (None, False, {}, []) else f"unused: {why}", None)


# Oumi TrainingParams fields that are not SFTConfig fields: each value becomes SFTConfig arguments,
# a notice ('unused: why') or a problem (what to do), as Oumi's TrainingParams.to_hf would use it.
# name -> value -> (SFTConfig arguments, notice or None, problem or None).
OUMI_TRAINING_FIELDS = {
    "save_epoch": lambda v: ({"save_strategy": "epoch"} if v else {}, None, None),
    "save_final_model": lambda v: ({}, None if v else "unused: the final checkpoint is always kept "
                                   "(a re-run resumes from it, the best model is built from it)", None),
    "use_deterministic": lambda v: ({"full_determinism": True} if v else {}, None, None),
    "dep_log_level": lambda v: ({"log_level": str(v).lower()}, None, None if str(v).lower() in (
        "debug", "info", "warning", "error", "critical", "passive") else
        "expected debug, info, warning, error or critical"),
    "sgd_momentum": lambda v: ({"optim_args": f"momentum={v}"} if v else {}, None, None),
    "mixed_precision_dtype": lambda v: (
        {"fp16": True} if str(v).upper() == "FP16" else {"bf16": True} if str(v).upper() == "BF16" else {},
        None, None if str(v).upper() in ("NONE", "FP16", "BF16") else "expected NONE, FP16 or BF16"),
    "empty_device_cache_steps": lambda v: (
        {"torch_empty_cache_steps": v} if _whole(v) and v > 0 else {}, None,
        None if v is None or (_whole(v) and v > 0) else "expected a positive integer (steps)"),
    "nccl_default_timeout_minutes": lambda v: (
        {"ddp_timeout": int(v * 60)} if _number(v) and v > 0 else {}, None,
        None if v is None or (_number(v) and v > 0) else "expected a positive number of minutes"),
    "label_ignore_index": lambda v: ({}, None, None if v in (None, -100) else
                                     "labels mark tokens without loss as -100 (what transformers expects); remove it"),
    "enable_wandb": _report_to("wandb", "wandb"),
    "enable_mlflow": _report_to("mlflow", "mlflow"),
    "enable_tensorboard": _report_to("tensorboard", "tensorboard"),
    "metrics_function": _refused_unless_empty("a metric after evaluation is a custom metric here: "
                                              "tuning.custom_eval_metrics"),
    "reward_functions": _refused_unless_empty("used by Oumi's GRPO trainer; snaketune trains SFT"),
    "reward_function_kwargs": _refused_unless_empty("used by Oumi's GRPO trainer; snaketune trains SFT"),
    "grpo": _refused_unless_empty("used by Oumi's GRPO trainer; snaketune trains SFT"),
    "gkd": _refused_unless_empty("used by Oumi's GKD trainer; snaketune trains SFT"),
    "gold": _refused_unless_empty("used by Oumi's GOLD trainer; snaketune trains SFT"),
    "verl_config_overrides": _refused_unless_empty("used by Oumi's verl trainer; snaketune trains SFT"),
    "log_examples": _unused("the tokenized rows are in <tuning.output_dir>/data/tokenized"),
    "include_performance_metrics": _unused("each trial's wall time and throughput are in its logs"),
    "include_alternative_mfu_metrics": _unused("each trial's wall time and throughput are in its logs"),
    "log_model_summary": _unused("the model is the same in every trial"),
    "profiler": _unused("no profiler runs in a trial"),
    "telemetry": _unused("each trial's devices and wall time are in its user attributes"),
    "try_resume_from_last_checkpoint": _unused("a re-run trial always resumes from its last checkpoint"),
    "dataloader_main_process_only": _unused("each trial is one process (data parallel: one per GPU)"),
}

# Oumi PeftParams name -> LoraConfig field.
PEFT_NAMES = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "target_modules",
    "lora_modules_to_save": "modules_to_save",
    "lora_bias": "bias",
    "lora_task_type": "task_type",
    "lora_init_weights": "init_lora_weights",
    "lora_rank_pattern": "rank_pattern",
    "lora_alpha_pattern": "alpha_pattern",
    "use_rslora": "use_rslora",
    "use_dora": "use_dora",
    "lora_exclude_modules": "exclude_modules",
    "lora_target_parameters": "target_parameters",
}

# PEFT names that choose quantisation (QLoRA), applied when loading the model, not to LoraConfig.
QUANTIZATION_NAMES = {
    "q_lora": "q_lora",
    "q_lora_bits": "q_lora_bits",
    "bnb_4bit_quant_type": "bnb_4bit_quant_type",
    "use_bnb_nested_quant": "bnb_4bit_use_double_quant",
    "bnb_4bit_quant_storage": "bnb_4bit_quant_storage",
    "bnb_4bit_compute_dtype": "bnb_4bit_compute_dtype",
    "llm_int8_skip_modules": "llm_int8_skip_modules",
}
# Oumi PEFT names about Oumi's own choices; only LoRA is supported.
OUMI_ONLY_PEFT_NAMES = {"peft_method": ("lora", "LORA"),
                        # Oumi's choice of what its trainer saves; here a checkpoint holds the
                        # adapter (PEFT's save_pretrained) and best_model/ the merged model.
                        "peft_save_mode": ("ADAPTER_ONLY", "ADAPTER_AND_BASE_MODEL", "MERGED")}


@cache
def sft_config_fields() -> frozenset[str]:
    """The init fields of TRL's SFTConfig (TrainingArguments' and TRL's own)."""
    return _library_fields("trl", "SFTConfig", ("trl", "transformers"))


@cache
def lora_config_fields() -> frozenset[str]:
    """The init fields of PEFT's LoraConfig."""
    return _library_fields("peft", "LoraConfig", ("peft",))


def _library_fields(module: str, name: str, packages: tuple[str, ...]) -> frozenset[str]:
    """The init fields of the dataclass `module.name`, read from the class once per version of
    `packages` and kept in the user's cache (user_cache): importing TRL takes seconds, and a
    config's unknown name should be answered in about one."""
    import importlib

    found = user_cache.versions(packages)
    entry = f"fields-{name}-{found}.json"
    if found and isinstance(cached := user_cache.read(entry), list):
        return frozenset(cached)
    cls = getattr(importlib.import_module(module), name)
    fields = frozenset(f.name for f in dataclasses.fields(cls) if f.init)
    if found:
        user_cache.write(entry, sorted(fields))
    return fields


def training_target(name: str, check_fields: bool = True) -> tuple[str | None, str | None]:
    """(SFTConfig field, None) for a training parameter name, or (None, error message).

    check_fields=False trusts a name that is not in the tables (it was checked already).
    """
    if name in MANAGED_TRAINING_FIELDS:
        return None, f"cannot be set: {MANAGED_TRAINING_FIELDS[name]}"
    if (name in OUMI_ONLY_TRAINING_NAMES or name in REPLACED_TRAINING_FIELDS or name in OUMI_TRAINING_FIELDS
            or name == "trainer_kwargs"):
        return name, None
    if name in TRAINING_NAMES:
        return TRAINING_NAMES[name], None
    if not check_fields:
        return name, None
    fields = sft_config_fields()
    if name in fields:
        return name, None
    valid = (fields | TRAINING_NAMES.keys() | OUMI_ONLY_TRAINING_NAMES.keys() | REPLACED_TRAINING_FIELDS.keys()
             | OUMI_TRAINING_FIELDS.keys() | {"trainer_kwargs"})
    return None, f"unknown training parameter{closest(name, valid)}"


def peft_target(name: str, check_fields: bool = True) -> tuple[str | None, str | None]:
    """(LoraConfig field or quantisation option, None) for a PEFT parameter, or (None, error)."""
    if name in OUMI_ONLY_PEFT_NAMES:
        return name, None
    for table in (PEFT_NAMES, QUANTIZATION_NAMES):
        if name in table:
            return table[name], None
    if not check_fields:
        return name, None
    fields = lora_config_fields()
    if name in fields:
        return name, None
    valid = fields | PEFT_NAMES.keys() | QUANTIZATION_NAMES.keys() | OUMI_ONLY_PEFT_NAMES.keys()
    return None, f"unknown PEFT parameter{closest(name, valid)}"


@dataclass
class Parameters:
    """The training and PEFT parameters of a `tuning:` section, by target name: the search space
    (`space.Parameter` entries, in the order written), the fixed `SFTConfig` and `LoraConfig`
    arguments, the quantisation options (QLoRA), and a problem list ('yaml.path: what is wrong')."""

    space: list = field(default_factory=list)
    training_args: dict = field(default_factory=dict)
    lora_args: dict = field(default_factory=dict)
    quantization: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # 'yaml.path: what was adjusted', said once
    use_peft: bool = False  # LoRA on (see `_use_peft`)


def resolve_parameters(tuning: dict, check_fields: bool = True) -> Parameters:
    """Map `tunable_*_params` and `fixed_*_params` (schema-filled dicts) to their targets.

    Oumi's rules: a parameter both fixed and tuned is tuned (`{**fixed, **suggested}` in Oumi's
    tune.py), with a notice that the fixed value is unused; of two names for one field the
    PRECEDENCE one wins; output_dir/logging_dir are replaced by the trial's; Oumi-only names are
    checked, not passed on; quantisation options are fixed, for the model load. `check_fields=False`
    (a job of a validated run) trusts names without importing TRL/PEFT.
    """
    out = Parameters()
    oumi_only = {**OUMI_ONLY_TRAINING_NAMES, **OUMI_ONLY_PEFT_NAMES}
    groups = (
        ("training", training_target, "tunable_training_params", "fixed_training_params"),
        ("peft", peft_target, "tunable_peft_params", "fixed_peft_params"),
    )
    for group, target_of, tunable_key, fixed_key in groups:
        tunable_targets, fixed_targets = {}, {}
        # A section that is not a mapping is the schema's to report; the other section's problems
        # are still found (every problem at once).
        tunable = tuning[tunable_key] if isinstance(tuning[tunable_key], dict) else {}
        fixed = tuning[fixed_key] if isinstance(tuning[fixed_key], dict) else {}
        for name, spec in tunable.items():
            path = f"tuning.{tunable_key}.{name}"
            target, problem = target_of(name, check_fields=check_fields)
            if problem:
                out.problems.append(f"{path}: {problem}")
            elif target in oumi_only or target in REPLACED_TRAINING_FIELDS or (
                    group == "training" and target in OUMI_TRAINING_FIELDS):
                out.problems.append(f"{path}: cannot be tuned")
            elif group == "peft" and name in QUANTIZATION_NAMES:
                # Quantisation is chosen when the model is loaded, not per LoraConfig.
                out.problems.append(f"{path}: cannot be tuned; set it in tuning.{fixed_key}")
            elif group == "training" and target in {**PREPARED_DATA_FIELDS, **TOKENIZATION_FIELDS}:
                reason = TOKENIZATION_FIELDS.get(target) or PREPARED_DATA_FIELDS[target][1]
                out.problems.append(f"{path}: cannot be tuned: {reason}")
            elif target in tunable_targets:  # an Oumi name and its HF name: one parameter
                out.problems.append(f"{path}: is the same parameter as "
                                    f"tuning.{tunable_key}.{tunable_targets[target]}; keep one")
            else:
                tunable_targets[target] = name
                param, problems = space.parameter(path, name, group, target, spec)
                out.problems += problems
                if param is not None:
                    out.space.append(param)
                    if param.notice:
                        out.notices.append(f"{path}: {param.notice}")
        for path, name, value in _fixed_items(fixed, fixed_key, group, out):
            target, problem = target_of(name, check_fields=check_fields)
            if problem:
                out.problems.append(f"{path}: {problem}")
            elif target in REPLACED_TRAINING_FIELDS and group == "training":
                out.notices.append(f"{path}: replaced: {REPLACED_TRAINING_FIELDS[target]}")
            elif group == "training" and target in OUMI_TRAINING_FIELDS:
                arguments, notice, problem = OUMI_TRAINING_FIELDS[target](value)
                if problem:
                    out.problems.append(f"{path}: {problem}")
                if notice:
                    out.notices.append(f"{path}: {notice}")
                for key, argument in arguments.items():  # a field given by its own name wins
                    if key == "report_to":  # enable_wandb and enable_tensorboard: both loggers
                        given = out.training_args.get("report_to") or []
                        given = [given] if isinstance(given, str) else list(given)
                        out.training_args["report_to"] = [*(g for g in given if g != "none"), *argument]
                    else:
                        out.training_args.setdefault(key, argument)
            elif target in tunable_targets:
                out.notices.append(f"{path}: unused: tuning.{tunable_key}.{tunable_targets[target]} "
                                   "is tuned, and the tuned value wins (as in oumi tune)")
            elif target in fixed_targets and name in PRECEDENCE.get(target, ()):
                first, other = PRECEDENCE[target][0], fixed_targets[target]
                winner, loser = (name, other) if name == first else (other, name)
                out.notices.append(f"tuning.{fixed_key}.{loser}: unused: tuning.{fixed_key}.{winner} "
                                   "is given and takes precedence (as in Oumi and transformers)")
                if name == first:
                    fixed_targets[target] = name
                    out.training_args[target] = value
            elif target in fixed_targets:
                out.problems.append(f"{path}: is the same parameter as "
                                    f"tuning.{fixed_key}.{fixed_targets[target]}; keep one")
            else:
                fixed_targets[target] = name
                value = oumi_value(target, value)
                if target == "trainer_type" and str(value).upper() == "OUMI":
                    out.notices.append(f"{path}: 'OUMI' (Oumi's own SFT trainer): trials train with "
                                       "TRL's SFTTrainer (TRL_SFT)")
                if target in oumi_only:
                    if (value.upper() if isinstance(value, str) else value) not in oumi_only[target]:
                        out.problems.append(f"{path}: {value!r} is not supported; snaketune supports "
                                            f"{', '.join(map(repr, oumi_only[target]))}")
                elif group == "peft" and name in QUANTIZATION_NAMES:
                    out.quantization[target] = value
                elif (group == "training" and target in PREPARED_DATA_FIELDS
                      and not any(value == ok and type(value) is type(ok)
                                  for ok in PREPARED_DATA_FIELDS[target][0])):
                    out.problems.append(f"{path}: {value!r} would do nothing here: "
                                        f"{PREPARED_DATA_FIELDS[target][1]}")
                elif group == "peft":
                    out.lora_args[target] = value
                else:
                    out.training_args[target] = value
        if group == "training":
            out.notices += _inert_epochs(tunable, fixed, tunable_targets, fixed_targets)
    out.use_peft = _use_peft(tuning, out)
    return out


def _use_peft(tuning: dict, out: Parameters) -> bool:
    """Whether trials train LoRA, with a notice where Oumi would decide otherwise.

    Oumi's switch is fixed_training_params.use_peft (default false: the full model, PEFT
    parameters ignored). The seed document's PEFT example gives PEFT parameters without it, so
    snaketune reads given LoRA parameters (or q_lora: true) as asking for LoRA, and says so;
    `q_lora: false` alone (Oumi's SmolLM recipe) trains the full model, as in Oumi.
    """
    fixed = tuning["fixed_training_params"] if isinstance(tuning["fixed_training_params"], dict) else {}
    switch = fixed.get("use_peft")
    lora_given = bool(out.lora_args or any(p.group == "peft" for p in out.space)
                      or out.quantization.get("q_lora"))
    if switch is None and lora_given:
        out.notices.append(
            "tuning.fixed_training_params.use_peft: not set, and LoRA parameters are given: "
            "snaketune trains LoRA (Oumi would train the full model and ignore them); set "
            "use_peft: true to say so, or use_peft: false for a full fine-tune")
        return True
    if switch is False:
        if any(p.group == "peft" for p in out.space):  # tuning what does nothing: refused
            out.problems.append("tuning.tunable_peft_params: use_peft is false, so the full model is "
                                "trained and these would be tuned for nothing: remove them, or set "
                                "use_peft: true for LoRA")
        if out.quantization.get("q_lora"):
            out.problems.append("tuning.fixed_peft_params.q_lora: QLoRA trains LoRA on a 4-bit model, "
                                "and use_peft is false: set use_peft: true, or q_lora: false")
        elif out.lora_args:
            out.notices.append("tuning.fixed_peft_params: unused: use_peft is false, so the full model "
                               "is trained (set use_peft: true for LoRA)")
    return bool(switch)


def _fixed_items(fixed: dict, fixed_key: str, group: str, out: Parameters):
    """(YAML path, name, value) of each fixed parameter, Oumi's trainer_kwargs (extra trainer
    arguments) spread out as fixed parameters of their own, so every rule applies to them too."""
    for name, value in fixed.items():
        if group == "training" and name == "trainer_kwargs":
            if not isinstance(value, dict):
                out.problems.append(f"tuning.{fixed_key}.trainer_kwargs: expected a mapping of "
                                    "SFTConfig arguments")
                continue
            for key, argument in value.items():
                yield f"tuning.{fixed_key}.trainer_kwargs.{key}", key, argument
        else:
            yield f"tuning.{fixed_key}.{name}", name, value


def _inert_epochs(tunable: dict, fixed: dict, tunable_targets: dict, fixed_targets: dict) -> list[str]:
    """A notice when num_train_epochs is set while max_steps is: Hugging Face's Trainer then trains
    exactly max_steps steps, whatever the epochs."""
    epochs = tunable_targets.get("num_train_epochs") or fixed_targets.get("num_train_epochs")
    steps_fixed = fixed.get(fixed_targets.get("max_steps"), -1)
    steps = tunable_targets.get("max_steps") or (
        fixed_targets.get("max_steps") if isinstance(steps_fixed, int) and steps_fixed > 0 else None)
    if not (epochs and steps):
        return []
    def path(name: str) -> str:
        return f"tuning.{'tunable' if name in tunable else 'fixed'}_training_params.{name}"

    return [f"{path(epochs)}: has no effect: {path(steps)} is set, and Hugging Face's Trainer "
            "trains max_steps steps whatever the epochs; remove one of the two"]
