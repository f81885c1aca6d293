"""Oumi's tuning configs as written (issue 15): Oumi's semantics and the values Oumi translates."""

import json
import sys

import pytest
import yaml

from snaketune.validate import load_tune_config
from workflow_helpers import TINY_MODEL, run_cli, tiny_config, write_reverse_words

# Oumi's SmolLM tuning recipe, verbatim (oumi-ai/oumi d8ed07778,
# configs/recipes/smollm/tuning/135m/tune.yaml) but for its comments.
OUMI_SMOLLM_RECIPE = """
model:
  model_name: "HuggingFaceTB/SmolLM2-135M-Instruct"
  model_max_length: 2048
  torch_dtype_str: "bfloat16"
  attn_implementation: "sdpa"
  load_pretrained_weights: True
  trust_remote_code: True

data:
  train:
    datasets:
      - dataset_name: "yahma/alpaca-cleaned"
        split: "train[90%:]"

  validation:
    datasets:
      - dataset_name: "yahma/alpaca-cleaned"
        split: "train[:10%]" # Use last 10% as validation

tuning:
  n_trials: 2
  tunable_training_params:
    optimizer:
      type: categorical
      choices: [ "adamw_torch", "sgd", "adafactor" ]
    learning_rate:
      type: loguniform
      low: 1e-5
      high: 1e-2
    warmup_ratio:
      type: uniform
      low: 0.0
      high: 0.3
    gradient_accumulation_steps:
      type: int
      low: 1
      high: 8

  fixed_training_params:
    trainer_type: TRL_SFT
    per_device_train_batch_size: 1
    num_train_epochs: 3
    optimizer: "adamw_torch"
    max_steps: 1000

  fixed_peft_params:
    q_lora: false

  evaluation_metrics: ["eval_loss"]
  evaluation_direction: ["minimize"]
  tuner_type: OPTUNA
  tuner_sampler: "RandomSampler"
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


def recipe_with_local_ids(workdir) -> dict:
    """The recipe with only its hub ids swapped for local ones (the hub is unreachable here): the
    tiny Llama, saved with random weights so that its weights load, and the local rows."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model_dir = workdir / "smollm"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY_MODEL)).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(TINY_MODEL).save_pretrained(model_dir)
    recipe = yaml.safe_load(OUMI_SMOLLM_RECIPE)
    recipe["model"]["model_name"] = str(model_dir)
    for split in ("train", "validation"):
        recipe["data"][split]["datasets"][0]["dataset_name"] = "data.jsonl"
    return recipe


def test_oumis_smollm_recipe_loads_as_written_with_oumis_semantics(workdir):
    tune = load_tune_config(recipe_with_local_ids(workdir), workdir)
    assert tune.tuning.use_peft is False  # q_lora: false alone: a full fine-tune, as in Oumi
    assert [p.name for p in tune.tuning.space] == ["optimizer", "learning_rate", "warmup_ratio",
                                                      "gradient_accumulation_steps"]
    assert "optim" not in tune.tuning.training_args  # the tuned optimizer wins over the fixed one
    notices = "\n".join(tune.notices)
    assert ("tuning.fixed_training_params.optimizer: unused: tuning.tunable_training_params.optimizer "
            "is tuned") in notices
    assert "tuning.fixed_training_params.num_train_epochs: has no effect" in notices


@pytest.mark.workflow
def test_oumis_smollm_recipe_runs_two_short_trials_training_the_full_model(workdir):
    path = workdir / "tune.yaml"
    path.write_text(yaml.safe_dump(recipe_with_local_ids(workdir), sort_keys=False))
    # The two trials' metrics.json as the targets: what is asserted is the trials (the table, the
    # report and the best model of a full fine-tune are the tiny studies' of test_workflow.py).
    run_cli(workdir, "tune", "-c", "tune.yaml", "--cores", "2", "tuning.fixed_training_params.max_steps=2",
            "model.torch_dtype_str=float32", "--", *(str(workdir / "tuning_output" / f"trial_{slot}" / "metrics.json")
                                                     for slot in (0, 1)))
    out = workdir / "tuning_output"
    for slot in (0, 1):
        metrics = json.loads((out / f"trial_{slot}" / "metrics.json").read_text())
        assert metrics["state"] == "COMPLETE"
        checkpoint = next((out / f"trial_{slot}").glob("checkpoint-*"))
        assert not (checkpoint / "adapter_config.json").exists()  # the full model, no LoRA adapter
        assert (checkpoint / "model.safetensors").exists()


# -- values Oumi translates for transformers and PEFT -----------------------------------------------

@pytest.mark.parametrize("name,value,target,translated", [
    ("lora_init_weights", "DEFAULT", "init_lora_weights", True),
    ("lora_init_weights", "RANDOM", "init_lora_weights", False),
    ("lora_init_weights", "GAUSSIAN", "init_lora_weights", "gaussian"),
    ("lora_target_modules", ["all-linear"], "target_modules", "all-linear"),
])
def test_peft_values_oumi_translates_are_translated(workdir, name, value, target, translated):
    config = tiny_config(fixed_peft_params={name: value})
    config["tuning"]["fixed_training_params"]["use_peft"] = True
    tune = load_tune_config(config, workdir)
    assert tune.tuning.lora_args[target] == translated


def test_max_grad_norm_null_means_no_clipping_as_in_oumi(workdir):
    config = tiny_config()
    config["tuning"]["fixed_training_params"]["max_grad_norm"] = None
    assert load_tune_config(config, workdir).tuning.training_args["max_grad_norm"] == 0.0


@pytest.mark.parametrize("workers,prefetch,expected_workers", [
    ("auto", 2, None),  # Oumi's "auto": a number per trial, from the trial's threads
    (0, 2, 0),  # a prefetch factor without workers is dropped, as Oumi does
])
def test_dataloader_values_oumi_translates_build_the_trials_arguments(workdir, workers, prefetch, expected_workers):
    import torch

    from snaketune.train import build_training_args

    config = tiny_config()
    config["tuning"]["fixed_training_params"].update(dataloader_num_workers=workers,
                                                     dataloader_prefetch_factor=prefetch)
    tune = load_tune_config(config, workdir)
    args = build_training_args(tune.tuning, tune.max_length, {}, workdir / "trial_0")
    auto = min(2, int(torch.get_num_threads() * 0.25))
    assert args.dataloader_num_workers == (auto if expected_workers is None else expected_workers)
    assert args.dataloader_prefetch_factor == (prefetch if args.dataloader_num_workers else None)


@pytest.mark.parametrize("trainer_type", ["trl_sft", "TRL_SFT", "Trl_Sft"])
def test_enum_values_are_read_in_any_case(workdir, trainer_type):
    config = tiny_config()
    config["tuning"]["fixed_training_params"]["trainer_type"] = trainer_type
    assert load_tune_config(config, workdir).tuning.n_trials == 3


@pytest.mark.parametrize("section,key,value,resolved", [
    ("tuning", "tuner_sampler", None, "TPESampler"),  # Oumi: null is Optuna's default sampler
    ("model", "model_max_length", None, 1024),  # Oumi: no limit of its own; TRL's default cut
    ("model", "torch_dtype_str", "BF16", "bfloat16"),  # Oumi's enums are read in any case
])
def test_oumis_nulls_and_enum_cases_are_read_as_oumi_reads_them(workdir, section, key, value, resolved):
    config = tiny_config()
    config[section][key] = value
    tune = load_tune_config(config, workdir)
    got = {"tuner_sampler": lambda: tune.tuning.sampler, "model_max_length": lambda: tune.max_length,
           "torch_dtype_str": lambda: tune.model.torch_dtype_str}[key]()
    assert got == resolved


def test_trials_train_with_oumis_defaults_where_trl_differs(workdir):
    from snaketune.train import build_training_args

    config = tiny_config()
    config["tuning"]["fixed_training_params"] = {"max_steps": 3}
    config["tuning"]["tunable_training_params"] = {"weight_decay": {"type": "uniform", "low": 0.0, "high": 0.1}}
    tune = load_tune_config(config, workdir)
    args = build_training_args(tune.tuning, tune.max_length, {}, workdir / "trial_0")
    assert (args.gradient_checkpointing, args.optim, args.learning_rate) == (False, "adamw_torch", 5e-5)


# -- Oumi's TuningParams fields ----------------------------------------------------------------------

def test_tuning_study_name_is_the_study_name(workdir):
    config = tiny_config(tuning_study_name="oumi-tuning")
    assert load_tune_config(config, workdir).tuning.study_name == "oumi-tuning"


@pytest.mark.parametrize("key,value", [("log_level", "info"), ("logging_strategy", "trials"),
                                       ("logging_dir", "logs"), ("log_examples", True),
                                       ("telemetry", {"collect_telemetry_for_all_ranks": False}),
                                       ("load_if_exists", True)])
def test_oumis_logging_fields_are_accepted_and_said_unused(workdir, key, value):
    tune = load_tune_config(tiny_config(**{key: value}), workdir)
    assert any(n.startswith(f"tuning.{key}: unused: ") for n in tune.notices), tune.notices


@pytest.mark.parametrize("key,value,fragment", [
    ("storage", "sqlite:///tune.db", "Optuna's FAQ advises against SQLite"),  # postgresql:// is taken: test_database.py
    ("trainer_type", "TRL_DPO", "is not supported; snaketune trains with TRL's SFTTrainer"),
])
def test_oumi_tuning_fields_snaketune_cannot_honour_are_refused(workdir, key, value, fragment):
    from snaketune.config import ConfigError

    with pytest.raises(ConfigError) as info:
        load_tune_config(tiny_config(**{key: value}), workdir)
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(f"tuning.{key}: ")
    assert fragment in info.value.problems[0]


def test_tuning_trainer_type_in_any_case_is_accepted(workdir):
    assert load_tune_config(tiny_config(trainer_type="trl_sft"), workdir).tuning.n_trials == 3


# -- Oumi's ModelParams fields ------------------------------------------------------------------------

@pytest.fixture
def base_model(workdir):
    """The tiny model without its chat template (a base model), with weights."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    path = workdir / "base-model"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY_MODEL)).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_MODEL / name, path / name)
    return path


@pytest.mark.parametrize("how", ["text", "file"])
def test_a_chat_template_given_in_the_config_formats_the_rows(workdir, base_model, how):
    template = (TINY_MODEL / "chat_template.jinja").read_text()
    config = tiny_config()
    config["model"].update(model_name=str(base_model), load_pretrained_weights=True)
    if how == "file":
        (workdir / "chat.jinja").write_text(template)
        config["model"]["chat_template"] = "chat.jinja"
    else:
        config["model"]["chat_template"] = template
    tune = load_tune_config(config, workdir)  # without it: "has no chat template"
    from snaketune.model import load_tokenizer

    tokenizer = load_tokenizer({"tokenizer_path": str(base_model), "kind": "reference"}, tune.model)
    assert tokenizer.chat_template == template


def test_an_oumi_built_in_template_name_is_refused_with_what_to_do(workdir):
    from snaketune.config import ConfigError

    config = tiny_config()
    config["model"]["chat_template"] = "chat_ml"
    with pytest.raises(ConfigError, match="model.chat_template: 'chat_ml' is neither Jinja text nor an "
                                          "existing file; Oumi's built-in template names"):
        load_tune_config(config, workdir)


def test_tokenizer_and_model_fields_reach_the_libraries(workdir, base_model):
    from snaketune.model import load_model, load_tokenizer

    config = tiny_config()
    config["model"].update(model_name=str(base_model), load_pretrained_weights=True, tokenizer_pad_token="<unk>",
                           tokenizer_kwargs={"padding_side": "left"}, model_kwargs={"low_cpu_mem_usage": True},
                           freeze_layers=["embed_tokens", "model.layers.0"],
                           chat_template=(TINY_MODEL / "chat_template.jinja").read_text())
    tune = load_tune_config(config, workdir)
    source = {"path": str(base_model), "tokenizer_path": str(base_model), "kind": "reference"}
    tokenizer = load_tokenizer(source, tune.model)
    assert tokenizer.pad_token == "<unk>" and tokenizer.padding_side == "left"
    model = load_model(source, tune.model)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert "model.embed_tokens.weight" in frozen
    assert any(name.startswith("model.layers.0.") for name in frozen)
    assert not any(name.startswith("model.layers.1.") for name in frozen)


@pytest.mark.parametrize("key,value,said", [
    ("device_map", "auto", "model.device_map: unused: each trial's device is leased"),
    ("shard_for_eval", True, "model.shard_for_eval: unused"),
    ("tool_call_parser", "hermes", "model.tool_call_parser: unused"),
])
def test_oumi_model_fields_without_meaning_here_are_said_unused(workdir, key, value, said):
    config = tiny_config()
    config["model"][key] = value
    assert any(n.startswith(said) for n in load_tune_config(config, workdir).notices)


def test_model_compile_is_sftconfigs_torch_compile(workdir):
    config = tiny_config()
    config["model"]["compile"] = True
    assert load_tune_config(config, workdir).tuning.training_args["torch_compile"] is True


@pytest.mark.parametrize("key,value,fragment", [
    ("adapter_model", "my-adapter", "starting from a trained adapter is not supported"),
    ("chat_template_kwargs", {"enable_thinking": False}, "write the values into model.chat_template"),
])
def test_oumi_model_fields_snaketune_cannot_honour_are_refused(workdir, key, value, fragment):
    from snaketune.config import ConfigError

    config = tiny_config()
    config["model"][key] = value
    with pytest.raises(ConfigError) as info:
        load_tune_config(config, workdir)
    assert info.value.problems[0].startswith(f"model.{key}: ") and fragment in info.value.problems[0]


# -- Oumi's DataParams, DatasetSplitParams and DatasetParams fields ------------------------------------

def test_oumi_dataset_class_with_a_dataset_path_reads_the_file(workdir):
    # Oumi's style: dataset_name is its dataset class, dataset_path the rows.
    config = tiny_config()
    for split in ("train", "validation"):
        config["data"][split]["datasets"][0].update(dataset_name="text_sft", dataset_path="data.jsonl")
    tune = load_tune_config(config, workdir)
    assert tune.data.train[0].dataset_name == str(workdir / "data.jsonl") and tune.data.train[0].local
    assert any("dataset_name: 'text_sft' (an Oumi dataset class) is not used" in n for n in tune.notices)


@pytest.mark.parametrize("rows", [
    [{"instruction": "Sum?", "input": "1 2", "output": "3"}],                        # Alpaca
    [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
    [{"prompt": "2+2?", "completion": "4"}],
    [{"text": "plain text, read from its 'text' column"}],
])
def test_oumis_deprecated_target_col_is_said_unused_whatever_the_rows(workdir, rows):
    """Oumi's SmolLM recipe (a branch) writes `target_col: prompt` on instruction rows; Oumi
    deprecates the field and its datasets do not read it: a notice, not a refusal."""
    (workdir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 10))
    config = tiny_config("rows.jsonl")
    config["data"]["train"]["target_col"] = "prompt"
    tune = load_tune_config(config, workdir)
    assert any(n.startswith("data.train.target_col: unused ('prompt')") for n in tune.notices), tune.notices


@pytest.mark.parametrize("name", ["debug_sft", "debug_pretraining", "text_sft", "PromptResponseDataset"])
def test_an_oumi_registered_dataset_name_is_refused_as_such_not_as_a_hub_id(workdir, name):
    from snaketune.config import ConfigError

    config = tiny_config()
    config["data"]["train"]["datasets"][0].update(dataset_name=name, dataset_kwargs={"dataset_size": 10})
    with pytest.raises(ConfigError) as info:
        load_tune_config(config, workdir)
    (problem,) = [p for p in info.value.problems if p.startswith("data.train.datasets[0].dataset_name")]
    assert f"{name!r} is a dataset class registered in Oumi" in problem and "point dataset_name at" in problem
    assert "hub" not in problem.split("not a file or a hub dataset")[0]


def test_sample_count_and_shuffle_take_the_rows_oumi_would(workdir):
    from snaketune.data import load_rows

    config = tiny_config()
    config["data"]["train"]["datasets"][0].update(split="train", sample_count=5, shuffle=True, seed=3)
    tune = load_tune_config(config, workdir)
    rows = load_rows(tune.data.train, "train")
    assert len(rows) == 5
    lines = [json.loads(line) for line in (workdir / "data.jsonl").read_text().splitlines()]
    firsts = [f"{r['instruction']}\n\n{r['input']}" for r in lines[:5]]
    assert [m[0]["content"] for m in rows["messages"]] != firsts  # shuffled before the 5 were taken


@pytest.mark.parametrize("where,key,value,fragment", [
    ("split", "pack", True, "data.train.pack: true is not supported"),
    ("split", "stream", True, "data.train.stream: true is not supported"),
    ("split", "collator_name", "text_with_padding", "is not what snaketune trains with"),
    ("dataset", "mixture_proportion", 0.5, "data.train.datasets[0].mixture_proportion: not supported"),
])
def test_oumi_data_fields_snaketune_cannot_honour_are_refused(workdir, where, key, value, fragment):
    from snaketune.config import ConfigError

    config = tiny_config()
    target = config["data"]["train"] if where == "split" else config["data"]["train"]["datasets"][0]
    target[key] = value
    with pytest.raises(ConfigError) as info:
        load_tune_config(config, workdir)
    assert any(fragment in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize("where,key,value", [
    ("split", "collator_name", "text_completions_only_with_padding"),
    ("split", "mixture_strategy", "first_exhausted"),
    ("split", "use_torchdata", True),
    ("dataset", "transform_num_workers", "auto"),
    ("top", "test", {"datasets": [{"dataset_name": "data.jsonl"}]}),
])
def test_oumi_data_fields_without_meaning_here_are_accepted(workdir, where, key, value):
    config = tiny_config()
    target = {"split": config["data"]["train"], "dataset": config["data"]["train"]["datasets"][0],
              "top": config["data"]}[where]
    target[key] = value
    tune = load_tune_config(config, workdir)
    if key != "collator_name":  # the completion-only collator is what snaketune does anyway
        assert any(f".{key}: unused" in n or n.startswith(f"data.{key}: unused") for n in tune.notices), tune.notices


# -- Oumi's TrainingParams and PeftParams names that are not SFTConfig/LoraConfig fields --------------

@pytest.mark.parametrize("name,value,arguments", [
    ("save_epoch", True, {"save_strategy": "epoch"}),
    ("use_deterministic", True, {"full_determinism": True}),
    ("dep_log_level", "warning", {"log_level": "warning"}),
    ("sgd_momentum", 0.9, {"optim_args": "momentum=0.9"}),
    ("mixed_precision_dtype", "NONE", {}),
    ("empty_device_cache_steps", 50, {"torch_empty_cache_steps": 50}),
    ("nccl_default_timeout_minutes", 5, {"ddp_timeout": 300}),
    ("trainer_kwargs", {"adam_beta2": 0.95, "weight_decay": 0.01}, {"adam_beta2": 0.95, "weight_decay": 0.01}),
])
def test_oumi_training_names_become_sftconfig_arguments(workdir, name, value, arguments):
    config = tiny_config()
    config["tuning"]["fixed_training_params"][name] = value
    tune = load_tune_config(config, workdir)
    for key, expected in arguments.items():
        assert tune.tuning.training_args[key] == expected
    assert name not in tune.tuning.training_args


@pytest.mark.parametrize("name,value,fragment", [
    ("enable_wandb", True, "logs to wandb, whose package is not installed: pip install wandb"),
    ("metrics_function", "my.metric", "tuning.custom_eval_metrics"),
    ("label_ignore_index", -1, "-100"),
    ("trainer_kwargs", {"learning_rat": 1e-3}, "trainer_kwargs.learning_rat: unknown training parameter"),
])
def test_oumi_training_names_snaketune_cannot_honour_are_refused(workdir, name, value, fragment):
    from snaketune.config import ConfigError

    config = tiny_config()
    config["tuning"]["fixed_training_params"][name] = value
    with pytest.raises(ConfigError) as info:
        load_tune_config(config, workdir)
    assert len(info.value.problems) == 1 and fragment in info.value.problems[0], info.value.problems


@pytest.mark.parametrize("name,value", [("save_final_model", False), ("log_model_summary", True),
                                        ("try_resume_from_last_checkpoint", True), ("enable_tensorboard", False)])
def test_oumi_training_names_without_meaning_here_are_accepted(workdir, name, value):
    config = tiny_config()
    config["tuning"]["fixed_training_params"][name] = value
    tune = load_tune_config(config, workdir)
    assert name not in tune.tuning.training_args
    assert value is False or any(n.startswith(f"tuning.fixed_training_params.{name}: unused") for n in tune.notices)


@pytest.mark.parametrize("name,value,target", [
    ("lora_exclude_modules", ["lm_head"], "exclude_modules"),
    ("lora_target_parameters", None, "target_parameters"),
])
def test_oumi_peft_names_map_to_loraconfig(workdir, name, value, target):
    config = tiny_config(fixed_peft_params={"lora_target_modules": "all-linear", name: value})
    config["tuning"]["fixed_training_params"]["use_peft"] = True
    assert load_tune_config(config, workdir).tuning.lora_args[target] == value


def test_peft_save_mode_is_accepted(workdir):
    config = tiny_config(fixed_peft_params={"peft_save_mode": "ADAPTER_ONLY"})
    assert load_tune_config(config, workdir).tuning.use_peft is False


def test_oumis_fsdp_section_is_accepted_and_said_unused(workdir):
    config = tiny_config()
    config["fsdp"] = {"enable_fsdp": False, "sharding_strategy": "FULL_SHARD"}
    assert any(n.startswith("fsdp: unused") for n in load_tune_config(config, workdir).notices)


def test_oumis_registered_metric_names_are_refused_saying_how_to_write_them(workdir):
    from snaketune.config import ConfigError

    config = tiny_config(custom_eval_metrics=["my_eval"])
    with pytest.raises(ConfigError) as info:
        load_tune_config(config, workdir)
    assert info.value.problems == [
        "tuning.custom_eval_metrics[0]: 'my_eval' names an evaluation function in Oumi's registry, which "
        "snaketune does not have: write {name: my_eval, function: my_module.my_function} (a Python "
        "function of the working directory)"]


# -- every field of Oumi's config classes has a verdict (never "unknown key") --------------------------

OUMI_FIELDS = json.loads((TINY_MODEL.parent / "oumi_fields.json").read_text())
# Where each class lives in a tune.yaml.
PLACES = {"TuningParams": ("tuning",), "ModelParams": ("model",), "DataParams": ("data",),
          "DatasetSplitParams": ("data", "train"), "DatasetParams": ("data", "train", "datasets", 0),
          "TrainingParams": ("tuning", "fixed_training_params"), "PeftParams": ("tuning", "fixed_peft_params"),
          "FSDPParams": ("fsdp",)}
# Fields whose default in Oumi's class is not a value a tune.yaml can hold as written (a section
# snaketune fills itself, or a default Oumi fills in __post_init__): set to a typical one instead.
TYPICAL = {("TuningParams", "n_trials"): 2, ("TuningParams", "tunable_training_params"): {},
           ("TuningParams", "output_dir"): "tuning_output", ("TuningParams", "trainer_type"): "TRL_SFT",
           ("TuningParams", "tuner_type"): "OPTUNA", ("TuningParams", "storage"): None,
           ("TrainingParams", "trainer_type"): "TRL_SFT", ("ModelParams", "model_name"): str(TINY_MODEL),
           ("DataParams", "train"): None, ("DataParams", "validation"): None,
           ("DatasetSplitParams", "datasets"): None, ("DatasetParams", "dataset_name"): "data.jsonl",
           ("DatasetParams", "split"): "train", ("TrainingParams", "output_dir"): "output",
           ("ModelParams", "load_pretrained_weights"): False, ("TrainingParams", "enable_tensorboard"): False,
           ("TrainingParams", "dataloader_num_workers"): "auto", ("PeftParams", "lora_target_modules"): ["all-linear"],
           ("TuningParams", "evaluation_metrics"): ["eval_loss"], ("TuningParams", "evaluation_direction"): ["minimize"]}


def oumi_fields():
    return [(cls, name) for cls, fields in OUMI_FIELDS["classes"].items() for name in fields]


@pytest.mark.parametrize("cls,name", oumi_fields(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_oumi_field_is_used_mapped_said_unused_or_refused_with_what_to_do(workdir, cls, name):
    value = TYPICAL.get((cls, name), OUMI_FIELDS["classes"][cls][name])
    config = tiny_config()
    node = config
    for part in PLACES[cls]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    if (cls, name) not in TYPICAL or value is not None:
        node[name] = value
    from snaketune.config import ConfigError

    try:
        load_tune_config(config, workdir)
    except ConfigError as error:
        path = ".".join(str(p) for p in PLACES[cls])
        unknown = [p for p in error.problems if "unknown" in p or "not of type" in p or "Additional" in p]
        assert not unknown, f"{cls}.{name} ({path}.{name}: {value!r}): {error.problems}"


# Oumi's integration test of tuning (oumi-ai/oumi d8ed07778, tests/integration/tune/test_tune.py,
# test_tune), its TuningConfig written as YAML.
OUMI_INTEGRATION_TEST_CONFIG = """
data:
  train:
    datasets:
      - dataset_name: debug_sft
        dataset_kwargs: {dataset_size: 10}
  validation:
    datasets:
      - dataset_name: debug_sft
        dataset_kwargs: {dataset_size: 5}
model:
  model_name: openai-community/gpt2
  model_max_length: 1024
  trust_remote_code: true
  tokenizer_pad_token: "<|endoftext|>"
tuning:
  tunable_training_params:
    learning_rate: {type: loguniform, low: 1e-5, high: 1e-4}
    per_device_train_batch_size: {type: categorical, choices: [2, 4]}
  fixed_training_params:
    max_steps: 2
    enable_wandb: false
    enable_tensorboard: false
    enable_mlflow: false
  tunable_peft_params:
    lora_r: {type: categorical, choices: [4, 8]}
    lora_alpha: {type: categorical, choices: [16, 32]}
  output_dir: tuning_output
  n_trials: 2
"""


def test_oumis_integration_test_config_loads_as_written(workdir):
    config = yaml.safe_load(OUMI_INTEGRATION_TEST_CONFIG)
    # Its model and data swapped for local ones: the tiny Llama (with weights) and local rows.
    config["model"]["model_name"] = recipe_with_local_ids(workdir)["model"]["model_name"]
    config["model"]["tokenizer_pad_token"] = "<unk>"  # the tiny Llama's (gpt2's is <|endoftext|>)
    for split in ("train", "validation"):
        config["data"][split]["datasets"][0]["dataset_name"] = "data.jsonl"
    tune = load_tune_config(config, workdir)
    assert tune.tuning.use_peft is True  # LoRA parameters without use_peft: LoRA, said below
    notices = "\n".join(tune.notices)
    assert "tuning.fixed_training_params.use_peft: not set, and LoRA parameters are given" in notices
    assert "data.train.datasets[0].dataset_kwargs: unused" in notices
    assert tune.model.tokenizer_pad_token == "<unk>"


def test_a_tuned_choice_is_translated_as_oumi_translates_a_fixed_value(workdir):
    from snaketune.train import build_lora_config

    config = tiny_config(tunable_peft_params={"lora_init_weights": {"type": "categorical",
                                                                    "choices": ["DEFAULT", "GAUSSIAN"]}})
    config["tuning"]["fixed_training_params"]["use_peft"] = True
    tune = load_tune_config(config, workdir)  # both corners build a LoraConfig
    assert build_lora_config(tune.tuning.lora_args, {"init_lora_weights": "DEFAULT"}).init_lora_weights is True
    assert build_lora_config(tune.tuning.lora_args, {"init_lora_weights": "GAUSSIAN"}).init_lora_weights == "gaussian"


# -- found by review: each rule applies wherever the value comes from ----------------------------------

@pytest.mark.parametrize("where,value,path,fragment", [
    ("trainer_kwargs", {"packing": True}, "tuning.fixed_training_params.trainer_kwargs.packing",
     "would do nothing here"),
    ("trainer_kwargs", {"max_steps": 5}, "tuning.fixed_training_params.trainer_kwargs.max_steps",
     "is the same parameter as tuning.fixed_training_params.max_steps"),
    ("model_kwargs", {"attn_implementation": "eager"}, "model.model_kwargs.attn_implementation",
     "set model.attn_implementation instead"),
    # (freeze_layers is judged on the model itself, by the preflight: tests/test_preflight.py)
    ("dep_log_level", "loud", "tuning.fixed_training_params.dep_log_level", "expected debug, info"),
])
def test_values_that_would_fail_every_trial_are_refused_wherever_they_are_written(workdir, where, value, path, fragment):
    from snaketune.config import ConfigError

    config = tiny_config()
    (config["model"] if where in ("model_kwargs", "freeze_layers") else config["tuning"]["fixed_training_params"])[where] = value
    with pytest.raises(ConfigError) as info:
        load_tune_config(config, workdir)
    assert any(p.startswith(f"{path}: ") and fragment in p for p in info.value.problems), info.value.problems


def test_lora_tuned_while_use_peft_is_false_is_refused(workdir):
    from snaketune.config import ConfigError

    config = tiny_config(tunable_peft_params={"lora_r": {"type": "categorical", "choices": [2, 4]}})
    config["tuning"]["fixed_training_params"]["use_peft"] = False
    with pytest.raises(ConfigError, match="tuning.tunable_peft_params: use_peft is false"):
        load_tune_config(config, workdir)


def test_a_tuned_max_grad_norm_of_null_means_no_clipping(workdir):
    from snaketune.train import build_training_args

    config = tiny_config(tunable_training_params={"max_grad_norm": {"type": "categorical", "choices": [None, 1.0]}})
    tune = load_tune_config(config, workdir)
    assert build_training_args(tune.tuning, tune.max_length, {"max_grad_norm": None}, workdir / "t").max_grad_norm == 0.0


def test_report_to_none_and_an_oumi_logger_give_the_logger(workdir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorboard" else real(name, *a))
    config = tiny_config()
    config["tuning"]["fixed_training_params"].update(report_to="none", enable_tensorboard=True)
    assert load_tune_config(config, workdir).tuning.training_args["report_to"] == ["tensorboard"]


def test_a_sample_count_above_the_rows_repeats_them_as_oumi_does(workdir):
    from snaketune.data import load_rows

    config = tiny_config()
    config["data"]["train"]["datasets"][0].update(split="train[:10]", sample_count=25)
    rows = load_rows(load_tune_config(config, workdir).data.train, "train")
    assert len(rows) == 25 and rows["messages"][0] == rows["messages"][10] == rows["messages"][20]
