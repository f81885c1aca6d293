"""snaketune.validate: a tune.yaml is validated at parse time, every problem named by its YAML path."""

import copy
import shutil
import sys

import pytest
import yaml

from snaketune.config import ConfigError
from snaketune.data import DatasetParams
from snaketune.metrics import CustomMetric
from snaketune.validate import load_tune_config
from workflow_helpers import TINY_MODEL

# The Quick Start tune.yaml of the seed document (Oumi's `oumi tune` guide), verbatim but for the
# dataset: the hub is unreachable here, so both splits read train.jsonl next to the config.
SEED_TUNE_YAML = """
model:
  model_name: "HuggingFaceTB/SmolLM2-135M-Instruct"
  model_max_length: 2048
  torch_dtype_str: "bfloat16"

data:
  train:
    datasets:
      - dataset_name: "train.jsonl"
        split: "train[90%:]"
  validation:
    datasets:
      - dataset_name: "train.jsonl"
        split: "train[:10%]"

tuning:
  n_trials: 10

  # Define hyperparameters to search
  tunable_training_params:
    learning_rate:
      type: loguniform
      low: 1e-5
      high: 1e-2

  # Fixed parameters (not tuned)
  fixed_training_params:
    trainer_type: TRL_SFT
    per_device_train_batch_size: 1
    max_steps: 1000

  # Metrics to optimize
  evaluation_metrics: ["eval_loss"]
  evaluation_direction: ["minimize"]

  tuner_type: OPTUNA
  tuner_sampler: "TPESampler"
"""

# Every other snippet of the seed document in one config (a `tuning:` section to splice in).
SEED_SNIPPETS_TUNING_YAML = """
n_trials: 4
tunable_training_params:
  learning_rate: {type: loguniform, low: 1e-5, high: 1e-2}
  optimizer: {type: categorical, choices: ["adamw_torch", "sgd", "adafactor"]}
  gradient_accumulation_steps: {type: int, low: 1, high: 8}
  warmup_ratio: {type: uniform, low: 0.0, high: 0.3}
  per_device_train_batch_size: {type: categorical, choices: [2, 4, 8]}
  num_train_epochs: {type: int, low: 1, high: 5}
  weight_decay: {type: uniform, low: 0.0, high: 0.1}
tunable_peft_params:
  lora_r: {type: categorical, choices: [4, 8, 16, 32]}
  lora_alpha: {type: categorical, choices: [8, 16, 32, 64]}
  lora_dropout: {type: uniform, low: 0.0, high: 0.1}
fixed_peft_params:
  q_lora: false
  lora_target_modules: ["q_proj", "v_proj"]
evaluation_metrics: ["eval_loss", "eval_accuracy", "custom_metric"]
evaluation_direction: ["minimize", "maximize", "maximize"]
tuner_type: OPTUNA
tuner_sampler: "RandomSampler"
custom_eval_metrics:
  - name: "custom_metric"
    function: "seed_metrics_module.compute_custom_metric"
"""


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    # load_tune_config puts base_dir on sys.path so custom metric modules import from there.
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def seed(alpaca_jsonl) -> dict:
    """The seed's tune.yaml, parsed, with its dataset file in place (base_dir: tmp_path)."""
    return yaml.safe_load(SEED_TUNE_YAML)


def problems_of(raw: dict, base_dir) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_tune_config(raw, base_dir)
    problems = info.value.problems
    assert problems and all(isinstance(p, str) for p in problems)
    return problems


def problem_at(problems: list[str], path: str, *fragments: str) -> str:
    """The one problem reported at exactly `path`, checked to contain every fragment."""
    at = [p for p in problems if p.startswith(f"{path}: ")]
    assert len(at) == 1, f"expected one problem at {path}, got {problems}"
    for fragment in fragments:
        assert fragment in at[0], f"{fragment!r} not in {at[0]!r}"
    return at[0]


def only_problem(raw: dict, base_dir, path: str, *fragments: str) -> str:
    problems = problems_of(raw, base_dir)
    assert len(problems) == 1, problems
    return problem_at(problems, path, *fragments)


def tunable(raw: dict, name: str, spec, group: str = "training") -> dict:
    raw["tuning"].setdefault(f"tunable_{group}_params", {})[name] = spec
    return raw


def fixed(raw: dict, name: str, value, group: str = "training") -> dict:
    raw["tuning"].setdefault(f"fixed_{group}_params", {})[name] = value
    return raw


# -- the seed's example is accepted and resolved ------------------------------------------------

def test_pyyaml_reads_the_seeds_bounds_as_strings():
    # The reason the loader coerces numbers: without it `low: 1e-5` is the string '1e-5'.
    raw = yaml.safe_load(SEED_TUNE_YAML)
    assert raw["tuning"]["tunable_training_params"]["learning_rate"]["low"] == "1e-5"


def test_seed_example_is_accepted(seed, tmp_path):
    tune = load_tune_config(seed, tmp_path).tuning
    assert [p.as_dict() for p in tune.space] == [{"name": "learning_rate", "group": "training", "target": "learning_rate",
                                                 "type": "float", "low": 1e-5, "high": 1e-2, "step": None, "log": True}]
    low = tune.space[0].low
    assert type(low) is float and low == 1e-5
    # trainer_type configures Oumi, not the trainer: checked, not passed to SFTConfig.
    assert tune.training_args == {"per_device_train_batch_size": 1, "max_steps": 1000}
    assert tune.metrics == ["eval_loss"] and tune.directions == ["minimize"]
    assert tune.n_trials == 10 and tune.sampler == "TPESampler"
    assert tune.use_peft is False and tune.lora_args == {} and tune.quantization == {}


def test_seed_model_section_is_kept(seed, tmp_path):
    model = load_tune_config(seed, tmp_path).model
    assert model.model_name == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id, untouched
    assert model.model_max_length == 2048
    assert model.torch_dtype_str == "bfloat16"


def test_relative_dataset_paths_resolve_against_base_dir(seed, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # base_dir, not the working directory, is what counts
    data = load_tune_config(seed, tmp_path).data
    assert data.train == [DatasetParams(dataset_name=str(tmp_path / "train.jsonl"), split="train[90%:]",
                                        subset=None, local=True, sample_count=None, shuffle=None,
                                        seed=None)]
    assert data.validation[0].dataset_name == str(tmp_path / "train.jsonl")
    assert data.validation[0].split == "train[:10%]"


def test_hub_dataset_ids_are_left_to_the_hub(seed, tmp_path):
    seed["data"]["validation"]["datasets"][0]["dataset_name"] = "yahma/alpaca-cleaned"
    entry = load_tune_config(seed, tmp_path).data.validation[0]
    assert entry.dataset_name == "yahma/alpaca-cleaned" and entry.local is False


def test_defaults_are_filled(alpaca_jsonl, tmp_path):
    raw = yaml.safe_load("""
model: {model_name: "HuggingFaceTB/SmolLM2-135M-Instruct"}
data:
  train: {datasets: [{dataset_name: train.jsonl}]}
  validation: {datasets: [{dataset_name: train.jsonl, split: "train[:2]"}]}
tuning:
  tunable_training_params:
    learning_rate: {type: loguniform, low: 1e-5, high: 1e-3}
""")
    resolved = load_tune_config(raw, tmp_path)
    tune = resolved.tuning
    assert tune.output_dir == str(tmp_path / "tuning_output")
    assert tune.study_name == "snaketune"
    assert tune.seed == 42
    assert tune.sampler == "TPESampler"
    assert tune.n_trials == 10
    assert tune.metrics == ["eval_loss"] and tune.directions == ["minimize"]
    assert tune.custom_eval_metrics == []
    assert resolved.data.train[0].split == "train"
    assert resolved.model.torch_dtype_str == "float32"
    assert resolved.model.seed == 42


def test_output_dir_resolves_against_base_dir(seed, tmp_path):
    seed["tuning"]["output_dir"] = "runs/lr_sweep"
    seed["tuning"]["study_name"] = "lr_sweep"
    tune = load_tune_config(seed, tmp_path).tuning
    assert tune.output_dir == str(tmp_path / "runs" / "lr_sweep")
    assert tune.study_name == "lr_sweep"


def test_every_seed_snippet_together_is_accepted_once_eval_accuracy_is_defined(alpaca_jsonl, tmp_path):
    (tmp_path / "seed_metrics_module.py").write_text(
        "def compute_custom_metric(**kwargs):\n    return 0.0\n")
    raw = yaml.safe_load(SEED_TUNE_YAML)
    raw["tuning"] = yaml.safe_load(SEED_SNIPPETS_TUNING_YAML)
    # The seed's objective eval_accuracy is nothing SFT evaluation produces: refused at parse time
    # rather than after every trial's training.
    only_problem(copy.deepcopy(raw), tmp_path, "tuning.evaluation_metrics[1]",
                 "'eval_accuracy' is not produced by SFT evaluation",
                 "did you mean 'eval_mean_token_accuracy'?", "tuning.custom_eval_metrics")
    raw["tuning"]["custom_eval_metrics"].append(
        {"name": "eval_accuracy", "function": "seed_metrics_module.compute_custom_metric"})
    tune = load_tune_config(raw, tmp_path).tuning

    targets = {p.name: p.target for p in tune.space}
    assert targets == {
        "learning_rate": "learning_rate", "optimizer": "optim",
        "gradient_accumulation_steps": "gradient_accumulation_steps",
        "warmup_ratio": "warmup_steps",  # transformers 5 reads a float < 1 there as a ratio
        "per_device_train_batch_size": "per_device_train_batch_size",
        "num_train_epochs": "num_train_epochs", "weight_decay": "weight_decay",
        "lora_r": "r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
    }
    groups = {p.name: p.group for p in tune.space}
    assert {n for n, g in groups.items() if g == "peft"} == {"lora_r", "lora_alpha", "lora_dropout"}
    assert tune.lora_args == {"target_modules": ["q_proj", "v_proj"]}
    assert tune.quantization == {"q_lora": False}
    assert tune.use_peft is True
    assert tune.metrics == ["eval_loss", "eval_accuracy", "custom_metric"]
    assert tune.directions == ["minimize", "maximize", "maximize"]
    assert tune.custom_eval_metrics[0] == CustomMetric(
        name="custom_metric", function="seed_metrics_module.compute_custom_metric")
    assert tune.sampler == "RandomSampler"


def test_oumi_names_map_to_hugging_face_names(seed, tmp_path):
    tunable(seed, "optimizer", {"type": "categorical", "choices": ["adamw_torch", "sgd"]})
    fixed(seed, "enable_gradient_checkpointing", True)
    fixed(seed, "max_seq_length", 512)
    fixed(seed, "lora_r", 8, group="peft")
    fixed(seed, "lora_target_modules", ["q_proj"], group="peft")
    fixed(seed, "lora_bias", "none", group="peft")
    tune = load_tune_config(seed, tmp_path).tuning
    assert [p.target for p in tune.space if p.name == "optimizer"] == ["optim"]
    assert tune.training_args["gradient_checkpointing"] is True
    assert tune.training_args["max_length"] == 512
    assert tune.lora_args == {"r": 8, "target_modules": ["q_proj"], "bias": "none"}


def test_any_sft_config_field_is_accepted(seed, tmp_path):
    tunable(seed, "lr_scheduler_type", {"type": "categorical", "choices": ["linear", "cosine"]})
    tunable(seed, "gradient_accumulation_steps", {"type": "int", "low": 1, "high": 4})
    fixed(seed, "logging_nan_inf_filter", False)
    fixed(seed, "eval_strategy", "steps")
    tune = load_tune_config(seed, tmp_path).tuning
    assert {p.name: p.target for p in tune.space} == {
        "learning_rate": "learning_rate", "lr_scheduler_type": "lr_scheduler_type",
        "gradient_accumulation_steps": "gradient_accumulation_steps"}
    assert tune.training_args["logging_nan_inf_filter"] is False
    assert tune.training_args["eval_strategy"] == "steps"


def test_peft_is_on_only_when_a_peft_param_is_given(seed, tmp_path):
    assert load_tune_config(seed, tmp_path).tuning.use_peft is False
    tunable(seed, "lora_r", {"type": "categorical", "choices": [4, 8]}, group="peft")
    assert load_tune_config(seed, tmp_path).tuning.use_peft is True
    del seed["tuning"]["tunable_peft_params"]
    fixed(seed, "lora_alpha", 16, group="peft")
    assert load_tune_config(seed, tmp_path).tuning.use_peft is True


def test_empty_param_sections_are_empty(seed, tmp_path):
    seed["tuning"]["fixed_peft_params"] = None  # `fixed_peft_params:` with nothing under it
    seed["tuning"]["tunable_peft_params"] = None
    assert load_tune_config(seed, tmp_path).tuning.use_peft is False


def test_numeric_strings_become_numbers_everywhere_in_a_spec(seed, tmp_path):
    raw = yaml.safe_load("""
warmup_ratio: {type: uniform, low: 0, high: 3e-1, step: 5e-2}
weight_decay: {type: float, low: 1E-4, high: 1.0e-1, log: true}
""")
    assert raw["warmup_ratio"]["high"] == "3e-1" and raw["weight_decay"]["low"] == "1E-4"
    seed["tuning"]["tunable_training_params"].update(raw)
    space = {p.name: p for p in load_tune_config(seed, tmp_path).tuning.space}
    assert space["warmup_ratio"].high == 0.3 and space["warmup_ratio"].step == 0.05
    assert space["weight_decay"].low == 1e-4 and space["weight_decay"].log is True
    assert type(space["warmup_ratio"].low) is float  # an int bound of a float parameter


def test_custom_metric_importable_from_base_dir(seed, tmp_path):
    (tmp_path / "cfg_ok_metrics.py").write_text("def token_count(**kwargs):\n    return 1.0\n")
    seed["tuning"]["custom_eval_metrics"] = [{"name": "tokens", "function": "cfg_ok_metrics.token_count"}]
    seed["tuning"]["evaluation_metrics"] = ["eval_loss", "tokens"]
    tune = load_tune_config(seed, tmp_path).tuning
    assert tune.custom_eval_metrics == [CustomMetric(name="tokens", function="cfg_ok_metrics.token_count")]
    assert tune.directions == ["minimize", "minimize"]  # one direction applies to every metric


def test_loaded_config_is_not_mutated(seed, tmp_path):
    before = yaml.safe_load(SEED_TUNE_YAML)
    load_tune_config(seed, tmp_path)
    assert seed == before


# -- search-space entries -----------------------------------------------------------------------

LR = "tuning.tunable_training_params.learning_rate"


@pytest.mark.parametrize("kind", ["normal", "choice", 3])
def test_unknown_parameter_type(seed, tmp_path, kind):
    tunable(seed, "learning_rate", {"type": kind, "low": 0.1, "high": 0.2})
    only_problem(seed, tmp_path, f"{LR}.type", f"unknown parameter type {kind!r}",
                 "categorical, int, uniform, float, loguniform")


def test_unknown_parameter_type_suggests_the_closest(seed, tmp_path):
    tunable(seed, "learning_rate", {"type": "log_uniform", "low": 1e-5, "high": 1e-2})
    only_problem(seed, tmp_path, f"{LR}.type", "(did you mean 'loguniform'?)")


def test_parameter_without_type(seed, tmp_path):
    tunable(seed, "learning_rate", {"low": 1e-5, "high": 1e-2})
    only_problem(seed, tmp_path, f"{LR}.type", "required but missing")


@pytest.mark.parametrize("kind,low,high", [
    ("uniform", 0.5, 0.1), ("uniform", 0.1, 0.1), ("loguniform", 1e-2, 1e-5),
    ("int", 8, 1), ("int", 4, 4), ("float", 1.0, -1.0),
])
def test_low_must_be_below_high(seed, tmp_path, kind, low, high):
    tunable(seed, "learning_rate", {"type": kind, "low": low, "high": high})
    only_problem(seed, tmp_path, LR, f"low ({low}) must be less than high ({high})")


def test_low_at_or_above_high_from_yaml_strings(seed, tmp_path):
    seed["tuning"]["tunable_training_params"]["learning_rate"] = yaml.safe_load(
        "{type: loguniform, low: 1e-2, high: 1e-5}")
    only_problem(seed, tmp_path, LR, "low (0.01) must be less than high (1e-05)")


@pytest.mark.parametrize("spec", [
    {"type": "loguniform", "low": 0, "high": 1e-2},
    {"type": "loguniform", "low": -1e-5, "high": 1e-2},
    {"type": "float", "low": 0.0, "high": 1.0, "log": True},
    {"type": "int", "low": 0, "high": 64, "log": True},
])
def test_log_scale_needs_positive_low(seed, tmp_path, spec):
    tunable(seed, "learning_rate", spec)
    only_problem(seed, tmp_path, f"{LR}.low", "a log-scaled parameter needs low > 0")


@pytest.mark.parametrize("bound,value", [("low", 1.5), ("high", 8.5)])
def test_int_bounds_must_be_integers(seed, tmp_path, bound, value):
    spec = {"type": "int", "low": 1, "high": 8, bound: value}
    tunable(seed, "gradient_accumulation_steps", spec)
    only_problem(seed, tmp_path, f"tuning.tunable_training_params.gradient_accumulation_steps.{bound}",
                 f"{value!r} is not an integer")


def test_int_bounds_written_as_whole_floats_are_integers(seed, tmp_path):
    tunable(seed, "gradient_accumulation_steps", {"type": "int", "low": 1.0, "high": 8.0})
    param = load_tune_config(seed, tmp_path).tuning.space[1]
    assert (param.low, param.high) == (1, 8) and type(param.low) is int


@pytest.mark.parametrize("value", ["abc", True, [1], None])
def test_bounds_must_be_numbers(seed, tmp_path, value):
    tunable(seed, "learning_rate", {"type": "uniform", "low": value, "high": 1.0})
    message = "required but missing" if value is None else f"{value!r} is not a number"
    only_problem(seed, tmp_path, f"{LR}.low", message)


@pytest.mark.parametrize("spec", [
    {"type": "int", "low": 1, "high": 8, "step": 1.5},
    {"type": "int", "low": 1, "high": 8, "step": 0},
    {"type": "uniform", "low": 0.0, "high": 1.0, "step": -0.1},
])
def test_step_must_be_positive(seed, tmp_path, spec):
    tunable(seed, "learning_rate", spec)
    only_problem(seed, tmp_path, f"{LR}.step", f"{spec['step']!r} is not a positive")


def test_log_must_be_a_boolean(seed, tmp_path):
    tunable(seed, "learning_rate", {"type": "float", "low": 1e-5, "high": 1e-2, "log": "yes please"})
    only_problem(seed, tmp_path, f"{LR}.log", "is not true or false")


@pytest.mark.parametrize("choices", [[], None])
def test_categorical_needs_choices(seed, tmp_path, choices):
    spec = {"type": "categorical"} if choices is None else {"type": "categorical", "choices": choices}
    tunable(seed, "optimizer", spec)
    only_problem(seed, tmp_path, "tuning.tunable_training_params.optimizer.choices",
                 "needs a non-empty list of choices")


def test_categorical_choices_must_be_scalars(seed, tmp_path):
    tunable(seed, "lora_target_modules", {"type": "categorical", "choices": [["q_proj"], "all-linear"]},
            group="peft")
    only_problem(seed, tmp_path, "tuning.tunable_peft_params.lora_target_modules.choices[0]",
                 "['q_proj'] is not a scalar")


@pytest.mark.parametrize("choices", [[8, 16, 8], [1, True], [0, False, None], [2, 2.0]])
def test_categorical_choices_must_differ(seed, tmp_path, choices):
    # Optuna finds a choice by ==, so it could never hand back `true` from [1, true].
    tunable(seed, "lora_alpha", {"type": "categorical", "choices": choices}, group="peft")
    only_problem(seed, tmp_path, "tuning.tunable_peft_params.lora_alpha.choices",
                 "lists the same choice twice")


@pytest.mark.parametrize("kind,key,suggestion", [
    ("categorical", "choice", "choices"),
    ("uniform", "hgh", "high"),
    ("int", "setp", "step"),
])
def test_unknown_key_in_a_parameter(seed, tmp_path, kind, key, suggestion):
    spec = {"categorical": {"type": "categorical", "choices": [1, 2]},
            "uniform": {"type": "uniform", "low": 0.0, "high": 1.0},
            "int": {"type": "int", "low": 1, "high": 4}}[kind]
    tunable(seed, "weight_decay", {**spec, key: 1})
    only_problem(seed, tmp_path, f"tuning.tunable_training_params.weight_decay.{key}",
                 f"not a field of a {kind} parameter", f"(did you mean '{suggestion}'?)")


def test_loguniform_takes_no_step(seed, tmp_path):
    tunable(seed, "learning_rate", {"type": "loguniform", "low": 1e-5, "high": 1e-2, "step": 1e-5})
    only_problem(seed, tmp_path, f"{LR}.step", "not a field of a loguniform parameter")


# -- parameter names --------------------------------------------------------------------------

@pytest.mark.parametrize("section,name,suggestion", [
    ("tunable_training_params", "learning_rat", "learning_rate"),
    ("fixed_training_params", "max_stpes", "max_steps"),
    ("fixed_training_params", "optimiser", "optimizer"),
])
def test_unknown_training_parameter(seed, tmp_path, section, name, suggestion):
    value = {"type": "uniform", "low": 0.1, "high": 0.2} if section.startswith("tunable") else 1
    seed["tuning"][section][name] = value
    only_problem(seed, tmp_path, f"tuning.{section}.{name}",
                 "unknown training parameter", f"(did you mean '{suggestion}'?)")


@pytest.mark.parametrize("section,name,suggestion", [
    ("tunable_peft_params", "lora_rr", "lora_r"),
    ("fixed_peft_params", "lora_target_module", "lora_target_modules"),
    ("fixed_peft_params", "lora_dropuot", "lora_dropout"),
])
def test_unknown_peft_parameter(seed, tmp_path, section, name, suggestion):
    value = {"type": "categorical", "choices": [4, 8]} if section.startswith("tunable") else 1
    seed["tuning"][section] = {name: value}
    only_problem(seed, tmp_path, f"tuning.{section}.{name}",
                 "unknown PEFT parameter", f"(did you mean '{suggestion}'?)")


def test_training_parameter_in_the_peft_section_is_unknown(seed, tmp_path):
    seed["tuning"]["fixed_peft_params"] = {"learning_rate": 1e-4}
    only_problem(seed, tmp_path, "tuning.fixed_peft_params.learning_rate", "unknown PEFT parameter")


def test_dataset_kwargs_cannot_be_set(seed, tmp_path):
    fixed(seed, "dataset_kwargs", {"skip_prepare_dataset": False})
    only_problem(seed, tmp_path, "tuning.fixed_training_params.dataset_kwargs", "cannot be set")


@pytest.mark.parametrize("name,said", [("output_dir", "each trial writes to <tuning.output_dir>/trial_<i>"),
                                       ("logging_dir", "each trial logs to")])
def test_oumis_output_and_logging_dirs_are_replaced_by_the_trials_with_a_notice(seed, tmp_path, name, said):
    # Every Oumi training config sets output_dir; oumi tune replaces it with the trial's folder.
    fixed(seed, name, "output/smollm135m.fft")
    tune = load_tune_config(seed, tmp_path)
    assert name not in tune.tuning.training_args
    assert f"tuning.fixed_training_params.{name}: replaced: {said}" in "\n".join(tune.notices)


def test_unsupported_trainer_type(seed, tmp_path):
    fixed(seed, "trainer_type", "TRL_DPO")
    only_problem(seed, tmp_path, "tuning.fixed_training_params.trainer_type",
                 "'TRL_DPO' is not supported", "'TRL_SFT'")


def test_trainer_type_cannot_be_tuned(seed, tmp_path):
    del seed["tuning"]["fixed_training_params"]["trainer_type"]
    tunable(seed, "trainer_type", {"type": "categorical", "choices": ["TRL_SFT", "SFT"]})
    only_problem(seed, tmp_path, "tuning.tunable_training_params.trainer_type", "cannot be tuned")


def test_unsupported_peft_method(seed, tmp_path):
    fixed(seed, "peft_method", "prefix_tuning", group="peft")
    only_problem(seed, tmp_path, "tuning.fixed_peft_params.peft_method", "is not supported")


def test_quantisation_cannot_be_tuned(seed, tmp_path):
    tunable(seed, "q_lora", {"type": "categorical", "choices": [True, False]}, group="peft")
    only_problem(seed, tmp_path, "tuning.tunable_peft_params.q_lora",
                 "cannot be tuned; set it in tuning.fixed_peft_params")


@pytest.mark.parametrize("tunable_name,fixed_name", [
    ("learning_rate", "learning_rate"),
    ("optimizer", "optim"),
    ("optim", "optimizer"),
    ("warmup_ratio", "warmup_steps"),
])
def test_a_parameter_both_fixed_and_tunable_is_tuned_as_in_oumi(seed, tmp_path, tunable_name, fixed_name):
    # Oumi's tune.py merges {**fixed, **suggested}: the tuned value wins; the fixed one is unused.
    tunable(seed, tunable_name, {"type": "categorical", "choices": ["adamw_torch", "sgd"]}
            if "optim" in tunable_name else {"type": "uniform", "low": 1e-4, "high": 1e-2})
    fixed(seed, fixed_name, "sgd" if "optim" in fixed_name else 1e-3)
    tune = load_tune_config(seed, tmp_path)
    target = {"optimizer": "optim", "warmup_ratio": "warmup_steps"}.get(tunable_name, tunable_name)
    assert target not in tune.tuning.training_args
    assert [p.target for p in tune.tuning.space if p.name == tunable_name] == [target]
    assert (f"tuning.fixed_training_params.{fixed_name}: unused: tuning.tunable_training_params."
            f"{tunable_name} is tuned, and the tuned value wins (as in oumi tune)") in tune.notices


def test_a_peft_parameter_both_fixed_and_tunable_is_tuned(seed, tmp_path):
    tunable(seed, "lora_r", {"type": "categorical", "choices": [4, 8]}, group="peft")
    fixed(seed, "r", 16, group="peft")
    tune = load_tune_config(seed, tmp_path)
    assert "r" not in tune.tuning.lora_args
    assert any(n.startswith("tuning.fixed_peft_params.r: unused: tuning.tunable_peft_params.lora_r")
               for n in tune.notices)


def test_both_fixed_and_tunable_even_when_the_tunable_spec_is_bad(seed, tmp_path):
    tunable(seed, "optimizer", {"type": "categorical", "choices": []})
    fixed(seed, "optim", "sgd")
    only_problem(seed, tmp_path, "tuning.tunable_training_params.optimizer.choices", "non-empty")


@pytest.mark.parametrize("order", [("warmup_ratio", "warmup_steps"), ("warmup_steps", "warmup_ratio")])
def test_warmup_steps_takes_precedence_over_warmup_ratio(seed, tmp_path, order):
    for name in order:
        fixed(seed, name, {"warmup_ratio": 0.1, "warmup_steps": 5}[name])
    tune = load_tune_config(seed, tmp_path)
    assert tune.tuning.training_args["warmup_steps"] == 5
    assert ("tuning.fixed_training_params.warmup_ratio: unused: tuning.fixed_training_params.warmup_steps "
            "is given and takes precedence (as in Oumi and transformers)") in tune.notices


def test_same_parameter_tuned_under_two_names(seed, tmp_path):
    tunable(seed, "optimizer", {"type": "categorical", "choices": ["adamw_torch", "sgd"]})
    tunable(seed, "optim", {"type": "categorical", "choices": ["adafactor"]})
    only_problem(seed, tmp_path, "tuning.tunable_training_params.optim",
                 "is the same parameter as tuning.tunable_training_params.optimizer")


def test_same_parameter_fixed_under_two_names(seed, tmp_path):
    fixed(seed, "lora_r", 8, group="peft")
    fixed(seed, "r", 16, group="peft")
    only_problem(seed, tmp_path, "tuning.fixed_peft_params.r",
                 "is the same parameter as tuning.fixed_peft_params.lora_r")


# -- objectives and the tuner --------------------------------------------------------------------

def test_metrics_and_directions_lengths_must_match(seed, tmp_path):
    seed["tuning"]["evaluation_metrics"] = ["eval_loss", "eval_mean_token_accuracy"]
    seed["tuning"]["evaluation_direction"] = ["minimize", "maximize", "maximize"]
    only_problem(seed, tmp_path, "tuning.evaluation_direction",
                 "has 3 directions for 2 evaluation_metrics")


@pytest.mark.parametrize("direction", [["maximize"], "maximize"])
def test_a_single_direction_applies_to_every_metric(seed, tmp_path, direction):
    seed["tuning"]["evaluation_metrics"] = ["eval_mean_token_accuracy", "eval_entropy", "eval_num_tokens"]
    seed["tuning"]["evaluation_direction"] = direction
    tune = load_tune_config(seed, tmp_path).tuning
    assert tune.directions == ["maximize", "maximize", "maximize"]
    assert tune.metrics == ["eval_mean_token_accuracy", "eval_entropy", "eval_num_tokens"]


def test_a_single_metric_name_is_a_list_of_one(seed, tmp_path):
    seed["tuning"]["evaluation_metrics"] = "eval_loss"
    assert load_tune_config(seed, tmp_path).tuning.metrics == ["eval_loss"]


@pytest.mark.parametrize("direction", ["max", "maximise", "MINIMIZE", "descending"])
def test_direction_must_be_minimize_or_maximize(seed, tmp_path, direction):
    seed["tuning"]["evaluation_metrics"] = ["eval_loss", "eval_mean_token_accuracy"]
    seed["tuning"]["evaluation_direction"] = ["minimize", direction]
    only_problem(seed, tmp_path, "tuning.evaluation_direction[1]",
                 f"{direction!r} is not a direction", "minimize or maximize")


def test_metric_named_twice(seed, tmp_path):
    seed["tuning"]["evaluation_metrics"] = ["eval_loss", "eval_loss"]
    only_problem(seed, tmp_path, "tuning.evaluation_metrics", "names a metric twice")


def test_empty_directions_reported_once(seed, tmp_path):
    seed["tuning"]["evaluation_direction"] = []
    only_problem(seed, tmp_path, "tuning.evaluation_direction", "should be non-empty")


@pytest.mark.parametrize("sampler,suggestion", [
    ("TPESampeler", " (did you mean 'TPESampler'?)"),
    ("randomsampler", " (did you mean 'RandomSampler'?)"),
    ("SimulatedAnnealing", ""),
])
def test_unknown_sampler(seed, tmp_path, sampler, suggestion):
    seed["tuning"]["tuner_sampler"] = sampler
    only_problem(seed, tmp_path, "tuning.tuner_sampler",
                 f"unknown sampler {sampler!r}{suggestion}", "TPESampler, RandomSampler, GPSampler")


def test_random_sampler_is_accepted(seed, tmp_path):
    seed["tuning"]["tuner_sampler"] = "RandomSampler"
    assert load_tune_config(seed, tmp_path).tuning.sampler == "RandomSampler"


@pytest.mark.parametrize("tuner", ["RAY", "HYPEROPT"])
def test_unknown_tuner_type(seed, tmp_path, tuner):
    seed["tuning"]["tuner_type"] = tuner
    only_problem(seed, tmp_path, "tuning.tuner_type", f"unknown tuner type {tuner!r}", "OPTUNA")


def test_tuner_type_is_case_insensitive(seed, tmp_path):
    seed["tuning"]["tuner_type"] = "optuna"
    load_tune_config(seed, tmp_path)


@pytest.mark.parametrize("n", [0, -3])
def test_n_trials_at_least_one(seed, tmp_path, n):
    seed["tuning"]["n_trials"] = n
    only_problem(seed, tmp_path, "tuning.n_trials", f"must be at least 1, got {n}")


def test_n_trials_must_be_an_integer(seed, tmp_path):
    seed["tuning"]["n_trials"] = "ten"
    only_problem(seed, tmp_path, "tuning.n_trials", "'ten' is not of type 'integer'")


# -- custom metrics -----------------------------------------------------------------------------

def with_custom_metric(raw: dict, function: str) -> dict:
    raw["tuning"]["custom_eval_metrics"] = [{"name": "custom_metric", "function": function}]
    raw["tuning"]["evaluation_metrics"] = ["eval_loss", "custom_metric"]
    raw["tuning"]["evaluation_direction"] = ["minimize", "maximize"]
    return raw


def test_custom_metric_module_missing(seed, tmp_path):
    with_custom_metric(seed, "no_such_metrics_module.compute_custom_metric")
    only_problem(seed, tmp_path, "tuning.custom_eval_metrics[0].function",
                 "cannot import module 'no_such_metrics_module'", "ModuleNotFoundError")


def test_custom_metric_function_missing(seed, tmp_path):
    (tmp_path / "cfg_metrics_without_fn.py").write_text("def something_else():\n    return 1\n")
    with_custom_metric(seed, "cfg_metrics_without_fn.compute_custom_metric")
    only_problem(seed, tmp_path, "tuning.custom_eval_metrics[0].function",
                 "module 'cfg_metrics_without_fn' has no function 'compute_custom_metric'")


def test_custom_metric_module_that_fails_to_import(seed, tmp_path):
    (tmp_path / "cfg_metrics_broken.py").write_text("import no_such_dependency_xyz\n")
    with_custom_metric(seed, "cfg_metrics_broken.compute")
    only_problem(seed, tmp_path, "tuning.custom_eval_metrics[0].function",
                 "cannot import module 'cfg_metrics_broken'", "no_such_dependency_xyz")


def test_custom_metric_not_a_callable(seed, tmp_path):
    (tmp_path / "cfg_metrics_constant.py").write_text("THRESHOLD = 0.5\n")
    with_custom_metric(seed, "cfg_metrics_constant.THRESHOLD")
    only_problem(seed, tmp_path, "tuning.custom_eval_metrics[0].function", "has no function 'THRESHOLD'")


def test_custom_metric_function_needs_a_module(seed, tmp_path):
    with_custom_metric(seed, "compute_custom_metric")
    only_problem(seed, tmp_path, "tuning.custom_eval_metrics[0].function", "is not 'module.function'")


def test_custom_metric_defined_twice(seed, tmp_path):
    seed["tuning"]["custom_eval_metrics"] = [{"name": "m", "function": "os.getcwd"},
                                             {"name": "m", "function": "os.getpid"}]
    only_problem(seed, tmp_path, "tuning.custom_eval_metrics[1].name", "'m' is defined twice")


# -- model and data -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["data/missing.jsonl", "./data", "/nonexistent/dir/rows.json",
                                  "a/b/c"])
def test_local_dataset_path_must_exist(seed, tmp_path, name):
    seed["data"]["train"]["datasets"][0]["dataset_name"] = name
    only_problem(seed, tmp_path, "data.train.datasets[0].dataset_name", "local dataset", "does not exist")


def test_local_dataset_must_be_a_data_file(seed, tmp_path):
    (tmp_path / "notes.txt").write_text("not data\n")
    seed["data"]["validation"]["datasets"][0]["dataset_name"] = "notes.txt"
    only_problem(seed, tmp_path, "data.validation.datasets[0].dataset_name",
                 "is not a json, jsonl, csv or parquet file")


@pytest.mark.parametrize("split", ["train[90%", "train[a:b]", "train90%:]", "train[:10%%]",
                                   "train[1:2:3]", "[:10%]", ""])
def test_malformed_split(seed, tmp_path, split):
    seed["data"]["train"]["datasets"][0]["split"] = split
    problem = only_problem(seed, tmp_path, "data.train.datasets[0].split")
    assert ("is not a split" in problem) or ("should be non-empty" in problem), problem


@pytest.mark.parametrize("split", ["train", "validation[:10%]", "train[90%:]", "train[10:200]",
                                   "train[10%:20%]", "train[ :10% ]"])
def test_well_formed_split(seed, tmp_path, split):
    seed["data"]["validation"]["datasets"][0]["split"] = split
    resolved = load_tune_config(seed, tmp_path).data.validation[0]
    assert resolved.split == split.replace(" ", "")


def test_missing_local_model_directory(seed, tmp_path):
    seed["model"]["model_name"] = "./models/tiny"
    only_problem(seed, tmp_path, "model.model_name", "local path", "does not exist")


def test_local_model_directory_resolves_against_base_dir(seed, tmp_path):
    shutil.copytree(TINY_MODEL, tmp_path / "models" / "tiny")
    seed["model"]["load_pretrained_weights"] = False
    seed["model"]["model_name"] = "models/tiny"
    assert load_tune_config(seed, tmp_path).model.model_name == str(tmp_path / "models" / "tiny")


@pytest.mark.parametrize("dtype,resolved", [("bf16", "bfloat16"), ("fp32", "float32"), ("auto", "auto")])
def test_dtype_aliases(seed, tmp_path, dtype, resolved):
    seed["model"]["torch_dtype_str"] = dtype
    assert load_tune_config(seed, tmp_path).model.torch_dtype_str == resolved


def test_unknown_dtype(seed, tmp_path):
    seed["model"]["torch_dtype_str"] = "int4"
    only_problem(seed, tmp_path, "model.torch_dtype_str", "'int4' is not one of")


# -- QLoRA ---------------------------------------------------------------------------------------

def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda_available(), reason="checks the error raised where no CUDA GPU is visible")
def test_qlora_needs_cuda(seed, tmp_path):
    fixed(seed, "q_lora", True, group="peft")
    fixed(seed, "lora_target_modules", ["q_proj", "v_proj"], group="peft")
    only_problem(seed, tmp_path, "tuning.fixed_peft_params.q_lora", "needs a CUDA GPU",
                 "set q_lora: false")


def test_qlora_false_alone_trains_the_full_model_as_in_oumi(seed, tmp_path):
    # Oumi's SmolLM recipe: fixed_peft_params: {q_lora: false} and no use_peft: a full fine-tune.
    fixed(seed, "q_lora", False, group="peft")
    fixed(seed, "use_bnb_nested_quant", False, group="peft")
    tune = load_tune_config(seed, tmp_path)
    assert tune.tuning.quantization == {"q_lora": False, "bnb_4bit_use_double_quant": False}
    assert tune.tuning.lora_args == {} and tune.tuning.use_peft is False
    assert not any("use_peft" in notice for notice in tune.notices)
    fixed(seed, "use_peft", True)
    assert load_tune_config(seed, tmp_path).tuning.use_peft is True


@pytest.mark.parametrize("use_peft,expected,said", [
    (None, True, "tuning.fixed_training_params.use_peft: not set, and LoRA parameters are given: "
                 "snaketune trains LoRA (Oumi would train the full model and ignore them)"),
    (False, False, "tuning.fixed_peft_params: unused: use_peft is false, so the full model is trained"),
    (True, True, None),
])
def test_use_peft_is_the_lora_switch_and_lora_parameters_without_it_are_said(seed, tmp_path, use_peft, expected, said):
    fixed(seed, "lora_r", 8, group="peft")
    if use_peft is not None:
        fixed(seed, "use_peft", use_peft)
    tune = load_tune_config(seed, tmp_path)
    assert tune.tuning.use_peft is expected
    assert "use_peft" not in tune.tuning.training_args
    if said:
        assert any(n.startswith(said) for n in tune.notices), tune.notices
    else:
        assert not any("use_peft" in n for n in tune.notices)


# -- shape: unknown keys and missing sections ------------------------------------------------------

@pytest.mark.parametrize("where,key,path,suggestion", [
    ((), "tunings", "tunings", "tuning"),
    (("model",), "torch_dtype", "model.torch_dtype", "torch_dtype_str"),
    (("data",), "validaton", "data.validaton", "validation"),
    (("data", "train"), "dataset", "data.train.dataset", "datasets"),
    (("data", "train", "datasets", 0), "splits", "data.train.datasets[0].splits", "split"),
    (("tuning",), "n_trails", "tuning.n_trails", "n_trials"),
    (("tuning",), "evaluation_directions", "tuning.evaluation_directions", "evaluation_direction"),
])
def test_unknown_key_suggests_the_closest(seed, tmp_path, where, key, path, suggestion):
    node = seed
    for part in where:
        node = node[part]
    node[key] = "x"
    only_problem(seed, tmp_path, path, "unknown key", f"(did you mean '{suggestion}'?)")


def test_unknown_key_in_a_custom_metric(seed, tmp_path):
    seed["tuning"]["custom_eval_metrics"] = [{"name": "m", "function": "os.getcwd", "functon": "x"}]
    only_problem(seed, tmp_path, "tuning.custom_eval_metrics[0].functon",
                 "unknown key", "(did you mean 'function'?)")


def test_unknown_key_far_from_any_name(seed, tmp_path):
    seed["model"]["flux_capacitor"] = True
    assert only_problem(seed, tmp_path, "model.flux_capacitor", "unknown key") == \
        "model.flux_capacitor: unknown key"


@pytest.mark.parametrize("remove,path", [
    (("model",), "model"),
    (("data",), "data"),
    (("data", "validation"), "data.validation"),
    (("data", "train", "datasets"), "data.train.datasets"),
    (("model", "model_name"), "model.model_name"),
    (("data", "train", "datasets", 0, "dataset_name"), "data.train.datasets[0].dataset_name"),
])
def test_missing_required_section(seed, tmp_path, remove, path):
    node = seed
    for part in remove[:-1]:
        node = node[part]
    del node[remove[-1]]
    problems = problems_of(seed, tmp_path)
    problem_at(problems, path, "required but missing")
    assert len(problems) == 1, problems


def test_empty_dataset_list(seed, tmp_path):
    seed["data"]["train"]["datasets"] = []
    only_problem(seed, tmp_path, "data.train.datasets", "should be non-empty")


# -- all problems at once -------------------------------------------------------------------------

ALL_WRONG_YAML = """
model:
  model_name: "HuggingFaceTB/SmolLM2-135M-Instruct"
  torch_dtype_str: "bfloat16"
data:
  train:
    datasets:
      - dataset_name: "train.jsonl"
        split: "train[90%"
  validation:
    datasets:
      - dataset_name: "data/validation.jsonl"
        split: "train[:10%]"
tuning:
  n_trails: 10
  tunable_training_params:
    learning_rate: {type: loguniform, low: 0, high: 1e-2}
    learning_rat: {type: uniform, low: 0.0, high: 0.1}
    warmup_ratio: {type: uniform, low: 0.3, high: 0.0}
    optimizer: {type: categorical, choices: []}
  fixed_training_params:
    optim: sgd
  tunable_peft_params:
    lora_rr: {type: categorical, choices: [4, 8]}
  evaluation_metrics: ["eval_loss", "eval_accuracy"]
  evaluation_direction: ["minimize", "maximise"]
  tuner_type: RAY
  tuner_sampler: "TPESampeler"
  custom_eval_metrics:
    - {name: eval_accuracy, function: no_such_metrics_module.accuracy}
"""


def test_all_problems_are_reported_at_once(alpaca_jsonl, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_tune_config(yaml.safe_load(ALL_WRONG_YAML), tmp_path)
    problems = info.value.problems
    expected = {
        "tuning.n_trails": "(did you mean 'n_trials'?)",
        "tuning.tunable_training_params.learning_rate.low": "needs low > 0",
        "tuning.tunable_training_params.learning_rat": "(did you mean 'learning_rate'?)",
        "tuning.tunable_training_params.warmup_ratio": "must be less than high",
        "tuning.tunable_training_params.optimizer.choices": "non-empty",
        "tuning.tunable_peft_params.lora_rr": "(did you mean 'lora_r'?)",
        "tuning.evaluation_direction[1]": "'maximise' is not a direction",
        "tuning.tuner_type": "unknown tuner type 'RAY'",
        "tuning.tuner_sampler": "(did you mean 'TPESampler'?)",
        "tuning.custom_eval_metrics[0].function": "cannot import module 'no_such_metrics_module'",
        "data.train.datasets[0].split": "is not a split",
        "data.validation.datasets[0].dataset_name": "does not exist",
    }
    for path, fragment in expected.items():
        problem_at(problems, path, fragment)
    assert len(problems) == len(expected), problems
    message = str(info.value)
    assert f"({len(expected)} problem(s))" in message
    assert all(f"  - {p}" in message for p in problems)


def test_shape_problems_come_with_the_other_problems(seed, tmp_path):
    seed["tuning"]["n_trials"] = "ten"       # a schema problem: checks past it cannot use n_trials
    seed["tuning"]["n_trails"] = 10          # a schema problem
    tunable(seed, "learning_rate", {"type": "loguniform", "low": 0, "high": 1e-2})
    tunable(seed, "learning_rat", {"type": "uniform", "low": 0.0, "high": 0.1})
    seed["tuning"]["evaluation_direction"] = ["max"]
    problems = problems_of(seed, tmp_path)
    problem_at(problems, "tuning.n_trials", "is not of type 'integer'")
    problem_at(problems, "tuning.n_trails", "unknown key")
    problem_at(problems, f"{LR}.low", "needs low > 0")
    problem_at(problems, "tuning.tunable_training_params.learning_rat", "unknown training parameter")
    problem_at(problems, "tuning.evaluation_direction[0]", "'max' is not a direction")
    assert len(problems) == 5, problems


def test_shape_problems_alone(seed, tmp_path):
    del seed["model"]
    seed["tuning"]["n_trails"] = 3
    seed["data"]["train"]["datasets"][0]["splt"] = "train"
    problems = problems_of(seed, tmp_path)
    problem_at(problems, "model", "required but missing")
    problem_at(problems, "tuning.n_trails", "(did you mean 'n_trials'?)")
    problem_at(problems, "data.train.datasets[0].splt", "(did you mean 'split'?)")
    assert len(problems) == 3, problems


# -- each concept checks its own section, usable alone -------------------------------------------

def test_each_concept_checks_its_section_alone(alpaca_jsonl, tmp_path):
    from snaketune import data, gpu, metrics, model

    entries, problems = data.resolve_entries(
        [{"dataset_name": "train.jsonl", "split": "train[ :2]"}, {"dataset_name": "gone.jsonl", "split": "x["}],
        "data.train.datasets", tmp_path)
    assert entries == [data.DatasetParams(dataset_name=str(alpaca_jsonl), split="train[:2]", subset=None, local=True,
                                          sample_count=None, shuffle=None, seed=None)]
    assert [p.split(": ")[0] for p in problems] == ["data.train.datasets[1].split",
                                                    "data.train.datasets[1].dataset_name"]
    assert metrics.resolve_objectives(["eval_loss", "eval_f1"], ["minimize"]) == (
        ["eval_loss", "eval_f1"], ["minimize", "minimize"], [])
    settings, problems, _ = gpu.resolve_section(
        {"tuning": {"trials_per_gpu": 1, "gpus_per_trial": 2, "gpu_devices": [0], "gpu_lease_dir": "leases"}},
        tmp_path, {}, False)
    assert settings.devices == ["0"] and settings.lease_dir == str(tmp_path / "leases")
    assert problems == ["tuning.gpus_per_trial: 2 GPUs per trial, but tuning.gpu_devices lists only 1"]
    section, problems, _ = model.resolve_section(
        {"model": {"model_name": "./missing", "torch_dtype_str": "bf16", "gguf_file": None}, "tuning": {"seed": 7}},
        tmp_path, {}, False)
    assert section.torch_dtype_str == "bfloat16" and section.seed == 7
    assert problems == [f"model.model_name: local path {tmp_path / 'missing'} does not exist"]



# -- a shape the schema refuses does not hide the problems found beside it -----------------------

@pytest.mark.parametrize("broken, where", [
    ({"tunable_peft_params": [1]}, "tuning.tunable_peft_params"),
    ({"fixed_peft_params": "abc"}, "tuning.fixed_peft_params"),
    ({"custom_eval_metrics": [{"name": "a", "function": "nomod.f"}, 3]}, "tuning.custom_eval_metrics[1]"),
    ({"enqueue_trials": [{"learnig_rate": 0.1}, 7]}, "tuning.enqueue_trials[1]"),
])
def test_a_shape_problem_keeps_the_other_problems(seed, tmp_path, broken, where):
    seed["tuning"]["tunable_training_params"]["learnig_rate"] = {"type": "float", "low": 0.1, "high": 1}
    seed["tuning"].update(broken)
    seed["data"]["train"]["datasets"].append(5)
    problems = problems_of(seed, tmp_path)
    problem_at(problems, where)  # the schema's
    problem_at(problems, "data.train.datasets[1]")  # the schema's
    problem_at(problems, "tuning.tunable_training_params.learnig_rate", "did you mean 'learning_rate'")
    if "custom_eval_metrics" in broken:
        problem_at(problems, "tuning.custom_eval_metrics[0].function", "cannot import module 'nomod'")
    if "enqueue_trials" in broken:
        problem_at(problems, "tuning.enqueue_trials[0].learnig_rate", "not a tunable parameter")


# -- the typed resolved config ----------------------------------------------------------------------

def test_the_resolved_config_is_typed_and_frozen(alpaca_jsonl, tmp_path):
    import dataclasses

    from snaketune import config, data, generation, gpu, metrics, model, space

    (tmp_path / "typed_metrics.py").write_text("def tokens(**kwargs):\n    return 1.0\n")
    raw = yaml.safe_load(SEED_TUNE_YAML)
    raw["tuning"] = yaml.safe_load(SEED_SNIPPETS_TUNING_YAML)
    raw["tuning"]["custom_eval_metrics"] = [{"name": "custom_metric", "function": "typed_metrics.tokens"},
                                            {"name": "eval_accuracy", "function": "typed_metrics.tokens"}]
    tune = load_tune_config(raw, tmp_path)
    assert isinstance(tune, config.TuningConfig) and isinstance(tune.tuning, config.TuningParams)
    assert isinstance(tune.model, model.ModelParams) and tune.model.torch_dtype_str == "bfloat16"
    assert isinstance(tune.data, data.DataParams)
    assert all(isinstance(e, data.DatasetParams) for e in tune.data.train + tune.data.validation)
    assert tune.data.train[0].local is True and tune.data.train[0].split == "train[90%:]"
    assert isinstance(tune.tuning.gpu, gpu.DeviceSettings) and tune.tuning.gpu.gpus_per_trial == 1
    assert isinstance(tune.generation, generation.GenerationParams) and tune.generation.max_new_tokens == 256
    assert tune.tuning.custom_eval_metrics[0] == metrics.CustomMetric("custom_metric", "typed_metrics.tokens")
    assert tune.tuning.custom_eval_metrics[0].function == "typed_metrics.tokens"
    assert tune.tuning.layout.journal == tmp_path / "tuning_output" / "study.journal"
    # Each parameter holds its Optuna distribution, built once at parse time.
    for param in tune.tuning.space:
        assert isinstance(param, space.Parameter)
        assert space.distributions(tune.tuning.space)[param.name] is param.distribution
    for section, field in ((tune, "model"), (tune.model, "seed"), (tune.tuning, "metrics"),
                           (tune.tuning.gpu, "devices"), (tune.data.train[0], "split")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(section, field, None)


def test_a_section_is_read_by_attribute_and_written_as_a_dict_of_its_fields(seed, tmp_path):
    tune = load_tune_config(seed, tmp_path)
    assert list(tune.as_dict()) == ["model", "data", "tuning", "generation", "lm_eval", "notices"]
    assert tune.model.as_dict()["model_max_length"] == tune.model.model_max_length == 2048
    assert tune.tuning.as_dict()["metrics"] is tune.tuning.metrics
    assert "layout" not in tune.tuning.as_dict()  # a property, not a field
    with pytest.raises(TypeError):
        tune.tuning["metrics"]  # no mapping view: fields are attributes


def test_every_process_resolves_the_same_config_from_the_yaml(seed, tmp_path):
    """A job (and each data-parallel rank) resolves the config again from the YAML's dict, as
    JSON carries it, without the checks the main process made: the result is the same config."""
    import json

    main = load_tune_config(seed, tmp_path)
    job = load_tune_config(json.loads(json.dumps(seed)), tmp_path, validated=True)
    assert job == main and job.tuning.space == main.tuning.space
    assert [p.distribution for p in job.tuning.space] == [p.distribution for p in main.tuning.space]


# -- YAML and types the schema lets through (issue 14, F) -----------------------------------------

@pytest.mark.parametrize("path, value", [
    ("tuning.n_trials", 3.0),  # the input: a TypeError in common.smk naming no field
    ("tuning.seed", 42.0),  # the input: every trial failed on a numpy cast
    ("tuning.report_every_steps", 10.0),
    ("tuning.gpus_per_trial", 1.0),
    ("model.model_max_length", 512.0),
])
def test_a_whole_float_is_not_an_integer(seed, tmp_path, path, value):
    section, key = path.split(".")
    seed[section][key] = value
    problem_at(problems_of(seed, tmp_path), path, f"{value} is not of type 'integer'")


DUPLICATED = {
    # the input: two tunable_training_params blocks; the first block's parameter was dropped
    "blocks": ("tuning:\n  tunable_training_params:\n    learning_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-3}\n"
               "  n_trials: 2\n  tunable_training_params:\n    warmup_ratio: {type: uniform, low: 0.0, high: 0.2}\n",
               "'tunable_training_params' is given twice (lines 2 and 5)"),
    "a bound": ("tuning:\n  tunable_training_params:\n    learning_rate: {type: loguniform, low: 1.0e-5, low: 1.0e-3, high: 1.0e-2}\n",
                "'low' is given twice (lines 3 and 3)"),
    "a dataset entry": ("data:\n  train:\n    datasets:\n      - dataset_name: a.jsonl\n        dataset_name: b.jsonl\n",
                        "'dataset_name' is given twice (lines 4 and 5)"),
}


@pytest.mark.parametrize("case", DUPLICATED)
def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path, case):
    from snaketune.validate import read_tune_yaml

    text, fragment = DUPLICATED[case]
    path = tmp_path / "tune.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_tune_yaml(path)
    assert info.value.problems == [f"{path}: key {fragment}; YAML would keep only the last: merge them into one"]


@pytest.mark.parametrize("missing", ["data", "model", "gguf"])
def test_a_job_takes_the_users_files_as_checked_where_it_cannot_see_them(tmp_path, missing):
    """A job whose files a storage plugin moves runs on a machine without the user's data files or
    local model (it reads the prepared ones): with the config validated by the run's main process,
    a local path missing there is no problem; the main process itself still refuses it."""
    from workflow_helpers import tiny_config, write_reverse_words

    config = tiny_config()
    if missing == "data":
        config["data"]["train"]["datasets"][0]["dataset_name"] = "./gone/data.jsonl"
    elif missing == "model":
        config["model"]["model_name"] = "./gone/model"
    else:
        config["model"]["gguf_file"] = "./gone/model.Q8_0.gguf"
    write_reverse_words(tmp_path / "data.jsonl")
    with pytest.raises(ConfigError, match="gone"):
        load_tune_config(config, tmp_path)
    job = load_tune_config(config, tmp_path, validated=True)
    assert job.tuning.n_trials == config["tuning"]["n_trials"]  # the job has its config


def test_a_local_models_folder_is_copied_into_the_study_where_jobs_cannot_see_it(tmp_path):
    """prepare_model(copy_local=True): a pretrained model in a local folder is copied beside
    source.json (a storage plugin then moves it to every job), and read from there."""
    from snaketune.model import prepare_model, read_source
    from workflow_helpers import tiny_config, write_reverse_words

    import numpy
    from safetensors.numpy import save_file

    local = tmp_path / "my_model"  # a local pretrained model: the tiny Llama's files and a weights file
    shutil.copytree(TINY_MODEL, local)
    save_file({"weight": numpy.zeros(2, dtype=numpy.float32)}, str(local / "model.safetensors"))
    config = tiny_config()
    config["model"].update(model_name=str(local), load_pretrained_weights=True)
    write_reverse_words(tmp_path / "data.jsonl")
    model = load_tune_config(config, tmp_path).model
    in_place = prepare_model(model, tmp_path / "in_place" / "source.json")
    assert (in_place["kind"], in_place["path"]) == ("reference", str(local))
    copied = prepare_model(model, tmp_path / "copied" / "source.json", copy_local=True)
    assert copied["kind"] == "local_copy" and copied["copied_from"] == [str(local)]
    assert sorted(p.name for p in (tmp_path / "copied").iterdir()) == sorted(
        [p.name for p in local.iterdir()] + ["source.json"])
    moved = tmp_path / "elsewhere"  # the folder as another machine has it
    shutil.copytree(tmp_path / "copied", moved)
    assert read_source(moved / "source.json")["path"] == str(moved.resolve())
