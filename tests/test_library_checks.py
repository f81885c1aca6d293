"""Parse-time checks that ask the libraries (TRL, PEFT, transformers, the hub) what they will do
with a config's values, so that what would fail inside every trial is refused before any job, by
its YAML path (issue 14, kind A)."""

import json
import shutil
import sys

import pytest

from conftest import CACHED_DATASET_ID, CACHED_MODEL_ID, CACHED_REVISION
from snaketune.config import ConfigError
from snaketune.validate import load_tune_config
from workflow_helpers import TINY_MODEL, tiny_config, write_reverse_words


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


def problems_of(config: dict, workdir) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_tune_config(config, workdir)
    return info.value.problems


def the_problem(config: dict, workdir, path: str, *fragments: str) -> str:
    problems = problems_of(config, workdir)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: "), problems
    for fragment in fragments:
        assert fragment in problems[0], (fragment, problems[0])
    return problems[0]


def with_fixed(config: dict, group: str = "training", **values) -> dict:
    config["tuning"].setdefault(f"fixed_{group}_params", {}).update(values)
    return config


def tuning_only(**tunable) -> dict:
    """The tiny config tuning only `tunable` (training parameters), nothing fixed but max_steps."""
    config = tiny_config(tunable_training_params=tunable)
    config["tuning"]["fixed_training_params"] = {"max_steps": 3}
    return config


# -- values of the wrong type for the field they set ------------------------------------------------

@pytest.mark.parametrize("config,path,fragment", [
    # issue input: a fixed integer written as a float
    (with_fixed(tiny_config(), max_steps=3.0), "tuning.fixed_training_params.max_steps",
     "3.0 (float) does not fit SFTConfig.max_steps, which takes an integer"),
    # issue input: a categorical mixing types for an integer field
    (tuning_only(per_device_train_batch_size={"type": "categorical", "choices": [2, "4"]}),
     "tuning.tunable_training_params.per_device_train_batch_size.choices[1]",
     "'4' (str) does not fit SFTConfig.per_device_train_batch_size, which takes an integer"),
    # a flag written as a string
    (with_fixed(tiny_config(), gradient_checkpointing="false"), "tuning.fixed_training_params.gradient_checkpointing",
     "'false' (str) does not fit SFTConfig.gradient_checkpointing, which takes true or false"),
    # a float range for an integer field: its bounds are floats
    (tuning_only(gradient_accumulation_steps={"type": "uniform", "low": 1, "high": 4}),
     "tuning.tunable_training_params.gradient_accumulation_steps.low", "takes an integer"),
    # a LoRA rank choice written as a float (Oumi's lora_r is LoraConfig.r)
    (tiny_config(tunable_peft_params={"lora_r": {"type": "categorical", "choices": [4, 8.5]}}),
     "tuning.tunable_peft_params.lora_r.choices[1]", "8.5 (float) does not fit LoraConfig.r"),
])
def test_a_value_of_the_wrong_type_for_its_field_is_refused(workdir, config, path, fragment):
    problems = problems_of(config, workdir)
    assert any(p.startswith(f"{path}: ") and fragment in p for p in problems), problems


# -- what SFTConfig and LoraConfig refuse, at the fixed values and every corner of the space -------

def test_sftconfig_refusing_fixed_values_names_the_field(workdir):
    # issue input: SFTConfig's own ValueError, before any job
    config = with_fixed(tiny_config(), load_best_model_at_end=True, save_strategy="epoch")
    the_problem(config, workdir, "tuning.fixed_training_params.load_best_model_at_end",
                "SFTConfig refuses these values", "requires the save and eval strategy to match")


def test_an_unknown_optimizer_is_refused_under_its_oumi_name(workdir):
    config = with_fixed(tiny_config(), optimizer="adamw_nonsense")
    the_problem(config, workdir, "tuning.fixed_training_params.optimizer",
                "adamw_nonsense is not a valid OptimizerNames", "adamw_torch")


def test_a_choice_sftconfig_refuses_is_named_with_the_tunable_parameter(workdir):
    config = tuning_only(lr_scheduler_type={"type": "categorical", "choices": ["linear", "sometimes"]})
    the_problem(config, workdir, "tuning.tunable_training_params.lr_scheduler_type",
                "SFTConfig refuses lr_scheduler_type='sometimes'", "is not a valid SchedulerType")


# LoRA targets, dropout bounds, model_kwargs and freeze_layers are the preflight's: PEFT and
# from_pretrained judge them on a shrunken copy of the model (tests/test_preflight.py).


# -- the model: weights, config, chat template ------------------------------------------------------

def test_a_local_model_without_weights_is_refused_when_its_weights_are_to_be_loaded(workdir):
    # issue input: every trial failed with the same traceback; now refused by model.model_name
    config = tiny_config()
    config["model"]["load_pretrained_weights"] = True
    the_problem(config, workdir, "model.model_name", f"{TINY_MODEL} has no weights",
                "load_pretrained_weights: false")


def test_a_local_model_with_weights_is_accepted(workdir):
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = workdir / "model"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY_MODEL)).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TINY_MODEL / name, model_dir / name)
    config = tiny_config()
    config["model"].update(model_name="model", load_pretrained_weights=True)
    assert load_tune_config(config, workdir).model.model_name == str(model_dir)


def test_a_folder_that_is_not_a_model_is_refused(workdir):
    (workdir / "not_a_model").mkdir()
    config = tiny_config()
    config["model"]["model_name"] = "./not_a_model"
    the_problem(config, workdir, "model.model_name", "has no config.json")


@pytest.fixture
def base_model(workdir):
    """The tiny model with its chat template removed: a base model's tokenizer."""
    path = workdir / "base-model"
    shutil.copytree(TINY_MODEL, path)
    (path / "chat_template.jinja").unlink()
    return path


def test_a_tokenizer_without_chat_template_is_refused_for_chat_rows(workdir, base_model):
    # issue input: transformers' "Cannot use chat template functions" in every trial
    config = tiny_config()
    config["model"]["model_name"] = str(base_model)
    the_problem(config, workdir, "model.model_name", "has no chat template", "model.tokenizer_name")


def test_a_tokenizer_name_without_chat_template_is_refused_by_its_own_path(workdir, base_model):
    config = tiny_config()
    config["model"]["tokenizer_name"] = str(base_model)
    the_problem(config, workdir, "model.tokenizer_name", f"the tokenizer of {base_model} has no chat template")


def test_plain_text_rows_need_no_chat_template(workdir, base_model):
    (workdir / "text.jsonl").write_text("".join(json.dumps({"text": f"row {i} " * 5}) + "\n" for i in range(10)))
    config = tiny_config(data_file="text.jsonl")
    config["model"]["model_name"] = str(base_model)
    assert load_tune_config(config, workdir).model.model_name == str(base_model)


def test_messages_rows_in_a_json_array_need_the_chat_template(workdir, base_model):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 5
    (workdir / "chat.json").write_text(json.dumps(rows))
    config = tiny_config(data_file="chat.json")
    config["model"]["model_name"] = str(base_model)
    the_problem(config, workdir, "model.model_name", "has no chat template")


# -- objectives ------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric,suggestion", [
    ("eval_accuracy", "did you mean 'eval_mean_token_accuracy'?"),  # issue input (and Oumi's guide)
    ("eval_bleu", "tuning.custom_eval_metrics"),
    ("loss", "did you mean 'eval_loss'?"),
])
def test_an_objective_evaluation_never_produces_is_refused(workdir, metric, suggestion):
    the_problem(tiny_config(evaluation_metrics=[metric]), workdir, "tuning.evaluation_metrics[0]",
                f"{metric!r} is not produced by SFT evaluation", suggestion)


@pytest.mark.parametrize("metric", ["eval_mean_token_accuracy", "train_loss", "eval_entropy"])
def test_objectives_training_and_evaluation_produce_are_accepted(workdir, metric):
    assert load_tune_config(tiny_config(evaluation_metrics=[metric]), workdir).tuning.metrics == [metric]


def test_a_custom_metric_is_a_known_objective(workdir):
    (workdir / "task_metrics.py").write_text("def accuracy(**kwargs):\n    return 1.0\n")
    config = tiny_config(evaluation_metrics=["eval_accuracy"], evaluation_direction=["maximize"],
                         custom_eval_metrics=[{"name": "eval_accuracy", "function": "task_metrics.accuracy"}])
    assert load_tune_config(config, workdir).tuning.metrics == ["eval_accuracy"]


# -- hub ids: reachable, or in the local cache -------------------------------------------------------

@pytest.mark.parametrize("where,path", [
    ("model", "model.model_name"),  # issue input: prepare_model retried for ~45 s
    ("tokenizer", "model.tokenizer_name"),
    ("data", "data.train.datasets[0].dataset_name"),  # issue input: prepare_data likewise
])
def test_a_hub_id_that_cannot_be_reached_nor_is_cached_is_refused(workdir, monkeypatch, where, path):
    for switch in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(switch, raising=False)  # the hub is asked, and cannot be reached from here
    config = tiny_config()
    if where == "model":
        config["model"]["model_name"] = "someone/not-cached-model"
    elif where == "tokenizer":
        config["model"]["tokenizer_name"] = "someone/not-cached-model"
    else:
        config["data"]["train"]["datasets"][0]["dataset_name"] = "someone/not-cached-data"
    the_problem(config, workdir, path, "the Hugging Face hub cannot be reached from here",
                "nor is it in the local cache")


def test_a_hub_id_is_refused_at_once_when_the_hub_is_switched_off(workdir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tiny_config()
    config["model"]["model_name"] = "someone/not-cached-model"
    the_problem(config, workdir, "model.model_name", "the hub is switched off here (HF_HUB_OFFLINE)")


def test_hub_ids_in_the_local_cache_are_accepted_offline(workdir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tiny_config()
    config["model"] = {"model_name": CACHED_MODEL_ID, "model_max_length": 128}
    config["data"]["validation"]["datasets"][0]["dataset_name"] = CACHED_DATASET_ID
    tune = load_tune_config(config, workdir)
    assert tune.model.model_name == CACHED_MODEL_ID and tune.data.validation[0].local is False


# -- model.model_revision and model.model_kwargs: the model a trial loads is the one checked --------
# The cached hub id has two layers on main, one on branch CACHED_REVISION, where its tokenizer has
# no chat template (the tiny config's Alpaca rows need one: the local tokenizer gives it).

def hub_model(**fields) -> dict:
    config = tiny_config()
    config["model"] = {"model_name": CACHED_MODEL_ID, "tokenizer_name": str(TINY_MODEL), "model_max_length": 128,
                       **fields}
    return config


@pytest.mark.parametrize("fields,refused", [
    ({}, False),
    ({"model_revision": CACHED_REVISION}, True),
    ({"model_revision": CACHED_REVISION, "tokenizer_kwargs": {"local_files_only": True}}, True),
    ({"model_revision": "main", "tokenizer_kwargs": {"local_files_only": True}}, False),
])
def test_the_tokenizers_chat_template_is_looked_for_at_the_revision(workdir, monkeypatch, fields, refused):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = hub_model(tokenizer_name=None, **fields)
    if refused:
        the_problem(config, workdir, "model.model_name", "has no chat template")
    else:
        assert load_tune_config(config, workdir).model.tokenizer_name is None


@pytest.mark.parametrize("revision", ["v9.9", "2" * 40, "refs/pr/1"])
def test_a_revision_not_in_the_cache_is_refused_by_path_when_the_hub_is_off(workdir, monkeypatch, revision):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    the_problem(hub_model(model_revision=revision), workdir, "model.model_revision",
                f"{CACHED_MODEL_ID!r} at revision {revision!r}", "not in the local cache")


@pytest.mark.parametrize("fields,problem", [
    ({"model_name": str(TINY_MODEL)}, "point model_name at the hub id"),  # local model and tokenizer
    # (the GGUF file is missing too: refused as well, beside)
    ({"model_name": str(TINY_MODEL), "gguf_file": "model.gguf"}, "point tokenizer_name (model_name is not read"),
    ({"tokenizer_kwargs": {"revision": "main"}}, "model.tokenizer_kwargs.revision: set model.model_revision instead"),
    ({"model_kwargs": {"revision": "main"}}, "model.model_kwargs.revision: set model.model_revision instead"),
    ({"model_name": str(TINY_MODEL), "tokenizer_name": CACHED_MODEL_ID}, None),  # the tokenizer's hub id takes it
])
def test_a_revision_that_would_do_nothing_or_is_set_twice_is_refused(workdir, monkeypatch, fields, problem):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = hub_model(model_revision="main", load_pretrained_weights=False, **fields)
    if problem:
        assert any(problem in p for p in problems_of(config, workdir)), problems_of(config, workdir)
    else:
        assert load_tune_config(config, workdir).model.model_revision == "main"


@pytest.mark.parametrize("fields,layers,intermediate", [
    ({}, 2, 64),
    ({"model_revision": CACHED_REVISION}, 1, 64),
    ({"model_kwargs": {"intermediate_size": 16}}, 2, 16),  # as the trials' from_pretrained will build it
])
def test_random_initial_weights_are_built_as_the_trials_load_the_model(workdir, monkeypatch, fields, layers,
                                                                      intermediate):
    from snaketune.model import load_model, prepare_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tune = load_tune_config(hub_model(load_pretrained_weights=False, **fields), workdir)
    source = prepare_model(tune.model, workdir / "model" / "source.json")
    saved = json.loads((workdir / "model" / "config.json").read_text())
    assert (saved["num_hidden_layers"], saved["intermediate_size"]) == (layers, intermediate)
    model = load_model(source, tune.model)  # what a trial does: the saved weights fit
    assert model.config.intermediate_size == intermediate


# -- parameters that would be accepted and do nothing (issue 14, kind B) ---------------------------

@pytest.mark.parametrize("name,value,fragment", [
    ("packing", True, "trained unpacked"),  # issue input
    ("truncation_mode", "keep_end", "keeping their start"),  # issue input
    ("dataset_text_field", "content", "'text' column"),
    ("completion_only_loss", False, "the loss is on the answers only"),
    ("shuffle_dataset", True, "already shuffles"),
])
def test_a_dataset_preparation_field_that_would_do_nothing_is_refused(workdir, name, value, fragment):
    the_problem(with_fixed(tiny_config(), **{name: value}), workdir,
                f"tuning.fixed_training_params.{name}", f"{value!r} would do nothing here", fragment)


@pytest.mark.parametrize("name,value", [("packing", False), ("truncation_mode", "keep_start"),
                                        ("completion_only_loss", True)])
def test_a_dataset_preparation_field_asking_for_what_is_done_anyway_is_accepted(workdir, name, value):
    assert load_tune_config(with_fixed(tiny_config(), **{name: value}), workdir).tuning.training_args[name] == value


@pytest.mark.parametrize("name,spec", [
    ("max_length", {"type": "categorical", "choices": [16, 128]}),  # issue input: 16 and 128 trained alike
    ("max_seq_length", {"type": "int", "low": 16, "high": 128}),  # Oumi's name for it
    ("packing", {"type": "categorical", "choices": [True, False]}),  # issue input
])
def test_a_tunable_parameter_that_changes_tokenization_is_refused(workdir, name, spec):
    the_problem(tuning_only(**{name: spec}), workdir, f"tuning.tunable_training_params.{name}",
                "cannot be tuned")


@pytest.mark.parametrize("tunable,fixed,epochs_path", [
    ({}, {"num_train_epochs": 3, "max_steps": 3}, "tuning.fixed_training_params.num_train_epochs"),  # issue input
    ({"num_train_epochs": {"type": "int", "low": 1, "high": 3}}, {"max_steps": 3},
     "tuning.tunable_training_params.num_train_epochs"),
    ({"max_steps": {"type": "int", "low": 2, "high": 4}}, {"num_train_epochs": 2},
     "tuning.fixed_training_params.num_train_epochs"),
])
def test_epochs_under_max_steps_are_said_to_have_no_effect_naming_both(workdir, tunable, fixed, epochs_path):
    config = tiny_config(tunable_training_params=tunable)
    config["tuning"]["fixed_training_params"] = fixed
    notices = load_tune_config(config, workdir).notices
    assert any(n.startswith(f"{epochs_path}: has no effect: ") and "max_steps is set" in n for n in notices), notices


def test_epochs_without_max_steps_train_by_epochs_without_a_notice(workdir):
    config = tiny_config()
    config["tuning"]["fixed_training_params"] = {"num_train_epochs": 1, "max_steps": -1}
    assert load_tune_config(config, workdir).notices == []
