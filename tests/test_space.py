"""snaketune.space: search-space entries from a tune.yaml, sampled by a real Optuna study."""

import math
import sys

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from snaketune import names, space
from snaketune.config import ConfigError
from snaketune.validate import load_tune_config

N_TRIALS = 30

# Every kind of parameter the seed document names, with step and log variants.
SPACE_YAML = """
tunable_training_params:
  learning_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-2}
  lr_scheduler_type: {type: categorical, choices: ["linear", 3, 0.5, true, null]}
  gradient_accumulation_steps: {type: int, low: 1, high: 8}
  per_device_train_batch_size: {type: int, low: 2, high: 20, step: 3}
  max_steps: {type: int, low: 1, high: 1024, log: true}
  warmup_ratio: {type: uniform, low: 0.0, high: 0.3, step: 0.05}
  weight_decay: {type: float, low: 0.0, high: 0.1}
  max_grad_norm: {type: float, low: 1.0e-2, high: 1.0e+1, log: true}
tunable_peft_params:
  lora_r: {type: categorical, choices: [4, 8, 16, 32]}
  lora_dropout: {type: uniform, low: 0.0, high: 0.1}
"""


def base_config(tuning: dict) -> dict:
    return {
        "model": {"model_name": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "data": {"train": {"datasets": [{"dataset_name": "train.jsonl"}]},
                 "validation": {"datasets": [{"dataset_name": "train.jsonl", "split": "train[:2]"}]}},
        "tuning": tuning,
    }


@pytest.fixture(autouse=True)
def _quiet_optuna_and_restore_sys_path(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


@pytest.fixture
def resolved_space() -> list[dict]:
    # The space alone (names and space own it): lr_scheduler_type's mixed choices show how Optuna
    # keeps each choice's type; a whole config would refuse them for SFTConfig's string field.
    params = names.resolve_parameters({"tunable_peft_params": {}, "fixed_training_params": {},
                                       "fixed_peft_params": {}, **yaml.safe_load(SPACE_YAML)})
    resolved, problems = space.resolve_conditions(params.space)
    assert not params.problems and not problems
    return resolved


@pytest.fixture
def by_name(resolved_space) -> dict:
    return {param.name: param for param in resolved_space}


@pytest.fixture
def sampled(resolved_space) -> tuple[optuna.Study, list[dict]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    values = []
    for _ in range(N_TRIALS):
        trial = study.ask()
        values.append(space.suggest(trial, resolved_space))
        study.tell(trial, 0.0)
    return study, values


def same_choice(value, choices) -> bool:
    """`value` is one of `choices` with its own type: True is not 1, 0.5 is not '0.5'."""
    return any(type(value) is type(choice) and value == choice for choice in choices)


def on_grid(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return math.isclose(k, round(k), abs_tol=1e-9)


def test_resolved_entries(by_name):
    assert by_name["learning_rate"].as_dict() == {
        "name": "learning_rate", "group": "training", "target": "learning_rate",
        "type": "float", "low": 1e-5, "high": 1e-2, "step": None, "log": True}
    assert by_name["lr_scheduler_type"].choices == ("linear", 3, 0.5, True, None)
    assert by_name["gradient_accumulation_steps"].as_dict() == {
        "name": "gradient_accumulation_steps", "group": "training",
        "target": "gradient_accumulation_steps", "type": "int", "low": 1, "high": 8, "step": 1,
        "log": False}
    assert (by_name["per_device_train_batch_size"].step, by_name["max_steps"].log) == (3, True)
    assert by_name["warmup_ratio"].type == "float" and by_name["warmup_ratio"].step == 0.05
    assert by_name["lora_r"].target == "r" and by_name["lora_r"].group == "peft"


def test_distributions_match_the_entries(resolved_space):
    d = space.distributions(resolved_space)
    assert list(d) == [param.name for param in resolved_space]
    assert d["learning_rate"] == FloatDistribution(1e-5, 1e-2, log=True)
    assert d["lr_scheduler_type"] == CategoricalDistribution(["linear", 3, 0.5, True, None])
    assert d["gradient_accumulation_steps"] == IntDistribution(1, 8)
    assert d["per_device_train_batch_size"] == IntDistribution(2, 20, step=3)
    assert d["max_steps"] == IntDistribution(1, 1024, log=True)
    assert d["warmup_ratio"] == FloatDistribution(0.0, 0.3, step=0.05)
    assert d["weight_decay"] == FloatDistribution(0.0, 0.1)
    assert d["max_grad_norm"] == FloatDistribution(1e-2, 1e1, log=True)
    assert d["lora_r"] == CategoricalDistribution([4, 8, 16, 32])
    assert type(d["lora_dropout"]) is FloatDistribution


def test_suggested_values_stay_in_bounds_on_the_grid_with_the_right_type(sampled, by_name):
    _, values = sampled
    assert len(values) == N_TRIALS
    for row in values:
        assert set(row) == set(by_name)
        for name, value in row.items():
            param = by_name[name]
            if param.type == "categorical":
                assert same_choice(value, param.choices), (name, value)
                continue
            if param.type == "int":
                assert type(value) is int, (name, value)
            else:
                assert type(value) is float, (name, value)
            assert param.low <= value <= param.high, (name, value)
            if param.step is not None:
                assert on_grid(value, param.low, param.step), (name, value)


def test_sampling_covers_the_space(sampled, by_name):
    _, values = sampled
    for name in ("lr_scheduler_type", "lora_r"):
        seen = [row[name] for row in values]
        for choice in by_name[name].choices:
            assert any(type(v) is type(choice) and v == choice for v in seen), (name, choice, seen)
    # The log scale reaches the lowest decade; a uniform draw over [1e-5, 1e-2] almost never does.
    assert min(row["learning_rate"] for row in values) < 1e-4
    assert len({row["per_device_train_batch_size"] for row in values}) > 3


def test_the_study_records_what_suggest_returned(sampled, resolved_space):
    study, values = sampled
    distributions = space.distributions(resolved_space)
    for trial, row in zip(study.trials, values):
        assert trial.params == row
        assert all(type(trial.params[k]) is type(v) for k, v in row.items())
        assert trial.distributions == distributions


def test_a_rerun_trial_gets_its_parameters_back(sampled, resolved_space):
    study, values = sampled
    study.enqueue_trial(values[4])
    trial = study.ask()
    assert space.suggest(trial, resolved_space) == values[4]


def test_split_by_group_uses_hugging_face_names(resolved_space, sampled):
    _, values = sampled
    training, peft = space.split_by_group(resolved_space, values[0])
    assert set(peft) == {"r", "lora_dropout"}
    assert peft["r"] == values[0]["lora_r"]
    assert "lora_r" not in training and "learning_rate" in training
    assert len(training) + len(peft) == len(values[0])


def test_tpe_sampler_suggests_from_the_same_space(resolved_space, by_name):
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3))
    for i in range(6):
        trial = study.ask()
        row = space.suggest(trial, resolved_space)
        study.tell(trial, float(i))
        assert by_name["max_steps"].low <= row["max_steps"] <= by_name["max_steps"].high
        assert same_choice(row["lr_scheduler_type"], by_name["lr_scheduler_type"].choices)


# -- invalid steps on a log scale -----------------------------------------------------------------

@pytest.mark.parametrize("spec", [
    {"type": "int", "low": 1, "high": 64, "log": True, "step": 2},
    {"type": "float", "low": 1e-3, "high": 1.0, "log": True, "step": 0.1},
    {"type": "uniform", "low": 1e-3, "high": 1.0, "log": True, "step": 0.1},
])
def test_log_scale_with_a_step_is_an_error(alpaca_jsonl, tmp_path, spec):
    tuning = {"tunable_training_params": {"max_steps": spec}}
    with pytest.raises(ConfigError) as info:
        load_tune_config(base_config(tuning), tmp_path)
    assert info.value.problems == [
        "tuning.tunable_training_params.max_steps.step: cannot be combined with log scale "
        "(Optuna samples log scales without a step)"]


def test_int_log_scale_with_step_one_is_fine(alpaca_jsonl, tmp_path):
    tuning = {"tunable_training_params": {"max_steps": {"type": "int", "low": 1, "high": 64,
                                                        "log": True, "step": 1}}}
    param = load_tune_config(base_config(tuning), tmp_path).tuning.space[0]
    assert param.distribution == IntDistribution(1, 64, log=True, step=1)


def test_int_step_must_be_whole(alpaca_jsonl, tmp_path):
    tuning = {"tunable_training_params": {"max_steps": {"type": "int", "low": 1, "high": 64,
                                                        "step": 2.5}}}
    with pytest.raises(ConfigError) as info:
        load_tune_config(base_config(tuning), tmp_path)
    assert info.value.problems == ["tuning.tunable_training_params.max_steps.step: "
                                   "2.5 is not a positive integer"]


# -- a resolved parameter holds its distribution ----------------------------------------------------

def test_a_resolved_parameter_holds_its_distribution_and_is_written_as_a_plain_dict(resolved_space):
    import copy
    import dataclasses
    import json
    import pickle

    for param in resolved_space:
        assert space.distributions([param])[param.name] is param.distribution  # built once, at parse time
        written = json.loads(json.dumps(param.as_dict()))  # the journal's study definition
        assert space.Parameter.from_dict(written) == param
        assert space.Parameter.from_dict(written).distribution == param.distribution
        for again in (copy.deepcopy(param), pickle.loads(pickle.dumps(param))):
            assert again == param and again.distribution == param.distribution
        with pytest.raises(dataclasses.FrozenInstanceError):
            param.low = 0  # the distribution it holds is built from these fields once


def test_optuna_has_the_last_word_on_a_parameter(monkeypatch):
    # A value the checks before Optuna let through (here injected) is refused by Optuna's
    # constructor, its message prefixed with the parameter's YAML path.
    path = "tuning.tunable_training_params.learning_rate"
    monkeypatch.setattr(space, "check_spec", lambda path, spec: (
        {"type": "float", "low": 0.0, "high": 1.0, "step": None, "log": True}, []))
    param, problems = space.parameter(path, "learning_rate", "training", "learning_rate", {})
    assert param is None and len(problems) == 1
    assert problems[0].startswith(f"{path}: Optuna refused it: ") and "low" in problems[0]
