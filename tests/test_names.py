"""snaketune.names: Oumi's parameter names against the installed TRL, PEFT and transformers.

These fail when a library renames or drops a field the table maps to (transformers 5 dropped
`warmup_ratio`, for one), instead of every trial failing at SFTConfig(...) time.
"""

import json
import inspect

import pytest

from snaketune import names


@pytest.mark.parametrize("oumi,field", sorted(names.TRAINING_NAMES.items()))
def test_training_names_map_to_sft_config_fields(oumi, field):
    assert field in names.sft_config_fields(), f"{oumi} -> {field}: not an SFTConfig field"


@pytest.mark.parametrize("oumi,field", sorted(names.PEFT_NAMES.items()))
def test_peft_names_map_to_lora_config_fields(oumi, field):
    assert field in names.lora_config_fields(), f"{oumi} -> {field}: not a LoraConfig field"


@pytest.mark.parametrize("oumi,option", sorted(names.QUANTIZATION_NAMES.items()))
def test_quantization_names_are_bits_and_bytes_options(oumi, option):
    from transformers import BitsAndBytesConfig

    own = {"q_lora", "q_lora_bits"}  # snaketune's switches, not BitsAndBytesConfig arguments
    assert option in own or option in inspect.signature(BitsAndBytesConfig).parameters


def test_renamed_oumi_names_do_not_hide_sft_config_fields():
    fields = names.sft_config_fields()
    hidden = [oumi for oumi, field in names.TRAINING_NAMES.items() if oumi != field and oumi in fields]
    assert hidden == []


def test_renamed_oumi_names_hide_only_known_lora_config_fields():
    # Oumi's lora_bias ('none', 'all', 'lora_only') is LoraConfig.bias; PEFT's own boolean
    # lora_bias is shadowed on purpose, since tune.yaml speaks Oumi first.
    fields = names.lora_config_fields()
    hidden = {oumi for oumi, field in names.PEFT_NAMES.items() if oumi != field and oumi in fields}
    assert hidden <= {"lora_bias"}


def test_oumi_only_names_are_not_library_fields():
    assert not set(names.OUMI_ONLY_TRAINING_NAMES) & names.sft_config_fields()
    assert not set(names.OUMI_ONLY_PEFT_NAMES) & names.lora_config_fields()


def test_managed_fields_include_the_sft_config_fields_snaketune_sets():
    # output_dir and dataset_kwargs are SFTConfig fields snaketune sets for every trial.
    assert {"output_dir", "dataset_kwargs"} <= names.sft_config_fields()


@pytest.mark.parametrize("name,target", [
    ("optimizer", "optim"),
    ("optim", "optim"),
    ("enable_gradient_checkpointing", "gradient_checkpointing"),
    ("max_seq_length", "max_length"),
    ("warmup_ratio", "warmup_steps"),
    ("learning_rate", "learning_rate"),
    ("lr_scheduler_type", "lr_scheduler_type"),
    ("gradient_accumulation_steps", "gradient_accumulation_steps"),
    ("trainer_type", "trainer_type"),
])
def test_training_target(name, target):
    assert names.training_target(name) == (target, None)


@pytest.mark.parametrize("name,target", [
    ("lora_r", "r"),
    ("r", "r"),
    ("lora_target_modules", "target_modules"),
    ("target_modules", "target_modules"),
    ("lora_alpha", "lora_alpha"),
    ("lora_bias", "bias"),
    ("q_lora", "q_lora"),
    ("use_bnb_nested_quant", "bnb_4bit_use_double_quant"),
    ("peft_method", "peft_method"),
])
def test_peft_target(name, target):
    assert names.peft_target(name) == (target, None)


@pytest.mark.parametrize("name,message", [
    ("learning_rat", "unknown training parameter (did you mean 'learning_rate'?)"),
    ("optimiser", "unknown training parameter (did you mean 'optimizer'?)"),
    ("lora_r", "unknown training parameter"),
    ("dataset_kwargs", "cannot be set: data is tokenized once per study"),
])
def test_training_target_problems(name, message):
    target, problem = names.training_target(name)
    assert target is None and problem.startswith(message)


@pytest.mark.parametrize("name,message", [
    ("lora_rr", "unknown PEFT parameter (did you mean 'lora_r'?)"),
    ("lora_dropuot", "unknown PEFT parameter (did you mean 'lora_dropout'?)"),
    ("learning_rate", "unknown PEFT parameter"),
])
def test_peft_target_problems(name, message):
    target, problem = names.peft_target(name)
    assert target is None and problem.startswith(message)


def test_library_field_names_are_read_once_per_version_and_a_bad_cache_is_passed_over(tmp_path, monkeypatch):
    """An unknown training or PEFT name is answered without importing TRL: the fields of
    SFTConfig/LoraConfig are kept per library version in the user's cache."""
    from snaketune import names

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fields = names._library_fields("peft", "LoraConfig", ("peft",))
    assert {"r", "lora_alpha", "target_modules"} <= fields
    (cached,) = (tmp_path / "snaketune").glob("fields-LoraConfig-peft*.json")
    cached.write_text('["r", "only_from_the_cache"]')
    assert names._library_fields("peft", "LoraConfig", ("peft",)) == {"r", "only_from_the_cache"}
    cached.write_text('["r", "cut sh')  # a damaged cache: the class is asked again, the cache rewritten
    assert names._library_fields("peft", "LoraConfig", ("peft",)) == fields
    assert json.loads(cached.read_text()) == sorted(fields)
