"""The preflight's accepted records in the user's cache (snaketune.preflight_cache): one key for the
same configurations, model files and rows wherever they were prepared; a different key for any
change the step could see; none for what cannot be keyed."""

from __future__ import annotations

import json
import shutil

import pytest
from snaketune import preflight_cache


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    """A prepared model folder (weights, config, tokenizer) and prepared data folder, as rules
    prepare_model and prepare_data leave them; the user's cache in tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    study = tmp_path / "study"
    model, data = study / "prepared_model", study / "data"
    (data / "tokenized" / "train").mkdir(parents=True)
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 32}')
    (model / "tokenizer.json").write_text('{"vocab": {"a": 0}}')
    (model / "model.safetensors").write_bytes(b"weights-1")
    (data / "summary.json").write_text('{"train": {"rows": 2}}')
    (data / "tokenized" / "train" / "data-00000-of-00001.arrow").write_bytes(b"rows-1")
    (data / "tokenized" / "train" / "state.json").write_text('{"_fingerprint": "a1"}')
    return study


def key(study, fingerprint="{}"):
    model = str(study / "prepared_model")
    return preflight_cache.entry(fingerprint, {"path": model, "tokenizer_path": model, "kind": "random_init"},
                                 study / "data")


def test_a_copy_prepared_elsewhere_has_the_same_key_and_reads_the_record_back(prepared, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(prepared, other)
    # What the step never reads: the weights (a random shrunken copy is built from the config), and
    # datasets' own fingerprint, new at every prepare.
    (other / "prepared_model" / "model.safetensors").write_bytes(b"weights-2")
    (other / "data" / "tokenized" / "train" / "state.json").write_text('{"_fingerprint": "b2"}')
    assert key(prepared) == key(other) is not None

    record = {"configurations": [{"values": {"learning_rate": 0.1}, "varied": None}], "notices": []}
    preflight_cache.write(key(prepared), record)
    assert preflight_cache.read(key(other)) == record
    assert (tmp_path / "cache" / "snaketune" / key(prepared)).exists()


@pytest.mark.parametrize("change", [
    lambda study: (study / "data" / "tokenized" / "train" / "data-00000-of-00001.arrow").write_bytes(b"rows-2"),
    lambda study: (study / "data" / "summary.json").write_text('{"train": {"rows": 3}}'),
    lambda study: (study / "prepared_model" / "config.json").write_text('{"hidden_size": 64}'),
    lambda study: (study / "prepared_model" / "tokenizer.json").write_text('{"vocab": {"b": 0}}'),
    lambda study: (study / "prepared_model" / "chat_template.jinja").write_text("{{ messages }}"),
], ids=["a row", "the row counts", "the model's config", "the tokenizer", "a chat template added"])
def test_a_change_the_step_could_see_is_another_key(prepared, change):
    before = key(prepared)
    change(prepared)
    assert key(prepared) != before


def test_another_fingerprint_is_another_key_and_a_miss_reads_nothing(prepared):
    preflight_cache.write(key(prepared, json.dumps({"learning_rate": [1e-4, 1e-1]})), {"configurations": []})
    assert key(prepared, json.dumps({"learning_rate": [1e-4, 1e-2]})) != key(prepared, json.dumps({"learning_rate": [1e-4, 1e-1]}))
    assert preflight_cache.read(key(prepared, json.dumps({"learning_rate": [1e-4, 1e-2]}))) is None


def test_a_model_on_the_hub_or_an_unreadable_entry_is_not_cached(prepared):
    assert preflight_cache.entry("{}", {"path": "HuggingFaceTB/SmolLM2-135M-Instruct", "kind": "reference"},
                                 prepared / "data") is None
    assert preflight_cache.read(None) is None
    name = key(prepared)
    preflight_cache.write(name, {"configurations": []})
    (preflight_cache.user_cache.cache_dir() / name).write_text('{"configurations": [')  # cut short
    assert preflight_cache.read(name) is None
