"""Oumi's tuning configs as written (issue 15): Oumi's semantics and the values Oumi translates."""

import json
import sys

import pytest
import yaml

from snaketune.config import load_tune_config
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
    assert [p["name"] for p in tune.tuning.space] == ["optimizer", "learning_rate", "warmup_ratio",
                                                      "gradient_accumulation_steps"]
    assert "optim" not in tune.tuning.training_args  # the tuned optimizer wins over the fixed one
    notices = "\n".join(tune.notices)
    assert ("tuning.fixed_training_params.optimizer: unused: tuning.tunable_training_params.optimizer "
            "is tuned") in notices
    assert "tuning.fixed_training_params.num_train_epochs: has no effect" in notices


def test_oumis_smollm_recipe_runs_two_short_trials_training_the_full_model(workdir):
    path = workdir / "tune.yaml"
    path.write_text(yaml.safe_dump(recipe_with_local_ids(workdir), sort_keys=False))
    run_cli(workdir, "tune", "-c", "tune.yaml", "--cores", "2", "tuning.fixed_training_params.max_steps=2",
            "model.torch_dtype_str=float32")
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


@pytest.mark.parametrize("trainer_type", ["trl_sft", "TRL_SFT", "Sft"])
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
    ("storage", "sqlite:///tune.db", "database storage is not supported"),
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
