"""The preflight (snaketune.preflight): every configuration the search can draw is built and stepped
by TRL, PEFT, transformers and Optuna before any trial, and a value they refuse is named by its YAML
path. The inputs of issue 32 (from public bug reports) and more of each kind.

The stepped checks run `preflight.run` on a tiny random Llama and data prepared once for the module
(seconds per configuration); two real Snakemake runs show a refusal stops the run before any trial
exists, and that chat rows with assistant_only_loss train.
"""

from __future__ import annotations

import itertools
import json

import pytest
from workflow_helpers import load_study, run_snakemake, tiny_config, write_config, write_reverse_words

from snaketune import data, preflight
from snaketune import model as models
from snaketune.config import ConfigError
from snaketune.validate import load_tune_config

_COUNTER = itertools.count()


def configured(workdir, data_file="data.jsonl", model=None, **sections) -> dict:
    """tiny_config with each `tuning` section in `sections` merged in (dicts update, others set)."""
    config = tiny_config(data_file)
    config["tuning"]["output_dir"] = f"out_{next(_COUNTER)}"
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config["tuning"].get(key), dict):
            config["tuning"][key].update(value)
        else:
            config["tuning"][key] = value
    config["model"].update(model or {})
    return config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A workdir with Alpaca rows, and its prepared models and data by model section (each
    prepared once for the module, as rules prepare_model and prepare_data do)."""
    workdir = tmp_path_factory.mktemp("preflight")
    write_reverse_words(workdir / "data.jsonl")
    return workdir, {}


def stepped(prepared, model: dict | None = None, **sections) -> dict | list[str]:
    """The preflight's record for tiny_config with `model` and the tuning `sections` merged in, or
    its problems when it refuses the config."""
    workdir, done = prepared
    tune = load_tune_config(configured(workdir, model=model, **sections), workdir)
    key = json.dumps(tune.definition, sort_keys=True)
    if key not in done:
        layout = tune.tuning.layout
        models.prepare_model(tune.model, layout.model_source)
        source = models.read_source(layout.model_source)
        data.prepare_data(tune.data, models.load_tokenizer(source, tune.model), tune.max_length,
                          layout.data_summary)
        done[key] = source, layout.data_summary.parent
    source, data_dir = done[key]
    try:
        return preflight.run(tune, source, data_dir, workdir / f"preflight_{next(_COUNTER)}.json")
    except preflight.PreflightError as error:
        return error.problems


def the_problem(problems, path: str, *fragments: str) -> str:
    assert isinstance(problems, list), f"accepted: {problems}"
    [problem] = [p for p in problems if p.startswith(f"{path}: ")] or [None]
    assert problem is not None, f"{path} not named in {problems}"
    for fragment in fragments:
        assert fragment in problem, problem
    return problem


LORA = {"use_peft": True}

# Each: the tuning sections, the YAML path the refusal names, words of the library's own message.
REFUSED = {
    # refused too late: a value whose preconditions live in another object
    "cosine_with_min_lr without lr_scheduler_kwargs (ms-swift#8172)": (
        {"fixed_training_params": {"lr_scheduler_type": "cosine_with_min_lr"}},
        "tuning.fixed_training_params.lr_scheduler_type", "min_lr"),
    "a tunable scheduler choice that needs kwargs": (
        {"tunable_training_params": {"lr_scheduler_type": {"type": "categorical",
                                                           "choices": ["linear", "cosine_with_min_lr"]}}},
        "tuning.tunable_training_params.lr_scheduler_type.choices[1]", "min_lr"),
    "a tunable scheduler's first choice that needs kwargs": (
        {"tunable_training_params": {"lr_scheduler_type": {"type": "categorical",
                                                           "choices": ["cosine_with_min_lr", "linear"]}}},
        "tuning.tunable_training_params.lr_scheduler_type.choices[0]", "min_lr"),
    "a metric for the best checkpoint evaluation never produces": (
        {"report_every_steps": 1, "fixed_training_params": {"metric_for_best_model": "eval_accuracy"}},
        "tuning.fixed_training_params.metric_for_best_model", "eval_accuracy"),
    "warmup_stable_decay without its decay steps": (
        {"fixed_training_params": {"lr_scheduler_type": "warmup_stable_decay"}},
        "tuning.fixed_training_params.lr_scheduler_type", "num_decay_steps"),
    "an optimizer whose package is not installed": (
        {"fixed_training_params": {"optimizer": "adamw_bnb_8bit"}},
        "tuning.fixed_training_params.optimizer", "bitsandbytes"),
    "GaLore without its package": (
        {"fixed_training_params": {"optim": "galore_adamw"}},
        "tuning.fixed_training_params.optim", "galore"),
    # accepted but inert: a setting the library itself warns does nothing here
    "EVA initialisation, which needs a pass over data no trial makes": (
        {"fixed_training_params": LORA, "fixed_peft_params": {"init_lora_weights": "eva"}},
        "tuning.fixed_peft_params.init_lora_weights", "eva", "plain LoRA"),
    "a LoftQ config PEFT ignores without LoftQ initialisation": (
        {"fixed_training_params": LORA, "fixed_peft_params": {"loftq_config": {"loftq_bits": 4}}},
        "tuning.fixed_peft_params.loftq_config", "will be ignored"),
    # part of a list value does nothing
    "a LoRA target list with a name that matches nothing": (
        {"fixed_training_params": LORA, "fixed_peft_params": {"lora_target_modules": ["q_proj", "typo_proj"]}},
        "tuning.fixed_peft_params.lora_target_modules", "'typo_proj'", "v_proj"),
    "a LoRA target list with a name cut short": (
        {"fixed_training_params": LORA, "fixed_peft_params": {"lora_target_modules": ["q_proj", "v_proj", "gate"]}},
        "tuning.fixed_peft_params.lora_target_modules", "'gate'", "gate_proj"),
    "modules to save with a name that matches nothing": (
        {"fixed_training_params": LORA, "fixed_peft_params": {"lora_modules_to_save": ["lm_head", "embed_tokenz"]}},
        "tuning.fixed_peft_params.lora_modules_to_save", "'embed_tokenz'"),
    "LoRA targets none of which the model has": (
        {"fixed_training_params": LORA, "fixed_peft_params": {"lora_target_modules": ["c_attn"]}},
        "tuning.fixed_peft_params.lora_target_modules", "c_attn"),
    "a tunable LoRA target choice the model lacks": (
        {"fixed_training_params": LORA, "tunable_peft_params": {"lora_target_modules": {
            "type": "categorical", "choices": ["all-linear", "Wqkv"]}}},
        "tuning.tunable_peft_params.lora_target_modules.choices[1]", "Wqkv"),
    "a LoRA dropout bound the layers refuse": (
        {"fixed_training_params": LORA, "tunable_peft_params": {"lora_dropout": {
            "type": "uniform", "low": 0.0, "high": 1.5}}},
        "tuning.tunable_peft_params.lora_dropout.high", "dropout probability has to be between 0 and 1"),
    # what from_pretrained refuses (was read from transformers' bytecode by hand)
    "a model_kwargs key from_pretrained refuses": (
        {"model": {"model_kwargs": {"disable_dropout": True}}},
        "model.model_kwargs.disable_dropout", "disable_dropout"),
    "a typo of a loading option snaketune sets": (
        {"model": {"model_kwargs": {"attn_implementaton": "eager"}}},
        "model.model_kwargs.attn_implementaton", "attn_implementaton"),
    "one bad model_kwargs key among good ones": (
        {"model": {"model_kwargs": {"intermediate_size": 16, "num_layers": 1}}},
        "model.model_kwargs.num_layers", "num_layers"),
    "a layer to freeze the model does not have": (
        {"model": {"freeze_layers": ["model.layers.7"]}},
        "model.freeze_layers", "no module named 'model.layers.7'"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_value_the_libraries_refuse_is_named_by_its_path_before_any_trial(prepared, case):
    sections, path, *fragments = REFUSED[case]
    the_problem(stepped(prepared, **sections), path, *fragments)


@pytest.mark.parametrize("model_kwargs,refused", [
    ({}, False),
    ({"num_hidden_layers": 1}, True),  # a config attribute from_pretrained applies: one layer left
])
def test_the_model_is_loaded_as_a_trial_loads_it(prepared, model_kwargs, refused):
    found = stepped(prepared, model={"freeze_layers": ["model.layers.1"], "model_kwargs": model_kwargs})
    if refused:
        the_problem(found, "model.freeze_layers", "no module named 'model.layers.1'")
    else:
        assert isinstance(found, dict), found


ACCEPTED = {
    "the base config": {},
    "completion_only_loss, which the prepared rows already do": {"fixed_training_params": {"completion_only_loss": True}},
    "LoRA targets every one of which the model has": {
        "fixed_training_params": LORA, "fixed_peft_params": {"lora_target_modules": ["q_proj", "v_proj"]}},
    "a scheduler with the kwargs it needs": {
        "fixed_training_params": {"lr_scheduler_type": "cosine_with_min_lr",
                                  "lr_scheduler_kwargs": {"min_lr_rate": 0.1}}},
    "gradient checkpointing, a field transformers renamed": {
        "fixed_training_params": {"gradient_checkpointing": True}},
    "model_kwargs from_pretrained takes (a config attribute, loading options)": {
        "model": {"model_kwargs": {"intermediate_size": 16, "low_cpu_mem_usage": True, "use_cache": False,
                                   "ignore_mismatched_sizes": True}}},
    "a layer to freeze, by its path in a deep model": {"model": {"freeze_layers": ["model.layers.1"]}},
    "fp16, a GPU's mixed precision the CPU step leaves out": {"fixed_training_params": {"fp16": True}},
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_a_configuration_the_libraries_take_passes_without_notices(prepared, case):
    record = stepped(prepared, **ACCEPTED[case])
    assert isinstance(record, dict), record
    assert record["notices"] == []
    assert record["configurations"][0]["varied"] is None


@pytest.mark.parametrize("name,value", [
    ("loss_type", "chunked_nll"),  # TRL: a deprecated alias of nll, going in v2
    ("pad_token", "<|im_end|>"),  # TRL: set the tokenizer's pad token instead, going in v2
])
def test_a_value_the_library_deprecates_is_a_notice_naming_its_path(prepared, name, value):
    record = stepped(prepared, fixed_training_params={name: value})
    assert isinstance(record, dict), record
    [notice] = record["notices"]
    assert notice.startswith(f"tuning.fixed_training_params.{name}: ") and "deprecated" in notice


def test_the_covering_set_holds_every_choice_bound_and_enqueued_trial_once(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    tune = load_tune_config(configured(
        tmp_path, tunable_training_params={"lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosine"]}},
        enqueue_trials=[{"learning_rate": 0.01, "lr_scheduler_type": "cosine"}]), tmp_path)
    points = preflight.configurations(tune.tuning)
    # Two points reach both bounds and both choices; the enqueued trial is a third.
    assert [p.values for p in points] == [{"learning_rate": 1e-4, "lr_scheduler_type": "linear"},
                                          {"learning_rate": 0.1, "lr_scheduler_type": "cosine"},
                                          {"learning_rate": 0.01, "lr_scheduler_type": "cosine"}]
    assert [p.varied for p in points] == [None, None, "tuning.enqueue_trials[0]"]
    assert [path for path, _ in points[1].changes] == [
        "tuning.tunable_training_params.learning_rate.high", "tuning.tunable_training_params.lr_scheduler_type.choices[1]"]


def test_the_covering_set_reaches_a_conditional_parameters_values_under_its_parent(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    tune = load_tune_config(configured(tmp_path, tunable_training_params={
        "lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosine", "constant"]},
        "warmup_steps": {"type": "int", "low": 0, "high": 2, "condition": {"lr_scheduler_type": ["cosine"]}}}),
        tmp_path)
    reached = {(name, value) for point in preflight.configurations(tune.tuning) for name, value in point.values.items()}
    assert {("warmup_steps", 0), ("warmup_steps", 2), ("lr_scheduler_type", "constant")} <= reached


# -- the sampler over the space, at parse time ------------------------------------------------------


def parse_problems(tmp_path, **sections) -> list[str]:
    write_reverse_words(tmp_path / "data.jsonl")
    with pytest.raises(ConfigError) as error:
        load_tune_config(configured(tmp_path, **sections), tmp_path)
    return error.value.problems


@pytest.mark.parametrize("spec", [
    {"type": "loguniform", "low": 1e-5, "high": 1e-2},  # optuna#6651
    {"type": "uniform", "low": 1e-5, "high": 1e-2},
    {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
])
def test_a_sampler_that_needs_a_finite_space_refuses_a_continuous_parameter_at_parse_time(tmp_path, spec):
    problems = parse_problems(tmp_path, tuner_sampler="BruteForceSampler",
                              tunable_training_params={"learning_rate": spec})
    the_problem(problems, "tuning.tuner_sampler", "tuning.tunable_training_params.learning_rate",
                "step must be given")


def test_a_sampler_with_what_it_needs_is_accepted(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    load_tune_config(configured(tmp_path, tuner_sampler="BruteForceSampler", tunable_training_params={
        "learning_rate": {"type": "uniform", "low": 1e-3, "high": 1e-2, "step": 1e-3}}), tmp_path)


def test_a_sampler_falling_back_for_a_parameter_is_a_notice_naming_it(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    tune = load_tune_config(configured(tmp_path, tuner_sampler="CmaEsSampler", tunable_training_params={
        "lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosine"]}}), tmp_path)
    [notice] = [n for n in tune.notices if "CmaEsSampler warns" in n]
    assert notice.startswith("tuning.tunable_training_params.lr_scheduler_type: ")
    assert "RandomSampler" in notice


# -- naming the culprit (no training: a stand-in stepper) -----------------------------------------


class FakeStepper:
    """Fails every configuration with lr_scheduler_type set (unless it is left out), and warns for
    init_lora_weights 'eva'; records what it was asked."""

    def __init__(self, tune):
        self.tune, self.asked = tune, []

    def __call__(self, values, without=None):
        self.asked.append((dict(values), without))
        tuning = preflight._without(self.tune, without).tuning
        scheduler = {**tuning.training_args, **values}.get("lr_scheduler_type")
        warnings = ["UserWarning: `init_lora_weights` is 'eva' but `eva_config` is not specified."] \
            if tuning.lora_args.get("init_lora_weights") == "eva" else []
        if scheduler == "cosine_with_min_lr":
            return preflight.Outcome(error="ValueError: One of min_lr or min_lr_rate should be set", stage="step",
                                     warnings=warnings)
        return preflight.Outcome(warnings=warnings)


def test_a_fixed_value_is_found_by_leaving_each_out_and_said_once(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    tune = load_tune_config(configured(tmp_path, fixed_training_params={
        "lr_scheduler_type": "cosine_with_min_lr", "warmup_steps": 1, "weight_decay": 0.1}), tmp_path)
    stepper = FakeStepper(tune)
    problems, notices = preflight.judge(tune, preflight.configurations(tune.tuning), stepper)
    [problem] = problems
    assert problem.startswith("tuning.fixed_training_params.lr_scheduler_type: ")
    assert "min_lr" in problem and notices == []
    # Two points, then each fixed value left out at most once.
    distinct = {json.dumps(asked, sort_keys=True, default=str) for asked in stepper.asked}
    assert len(distinct) <= 2 + len(tune.tuning.argument_paths)


def test_a_value_only_some_points_draw_is_named_by_its_choice(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    tune = load_tune_config(configured(tmp_path, tunable_training_params={"lr_scheduler_type": {
        "type": "categorical", "choices": ["linear", "cosine_with_min_lr"]}}), tmp_path)
    problems, _ = preflight.judge(tune, preflight.configurations(tune.tuning), FakeStepper(tune))
    assert [p.split(": ")[0] for p in problems] == ["tuning.tunable_training_params.lr_scheduler_type.choices[1]"]


def test_a_refused_warning_is_named_by_the_value_that_raises_it(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    tune = load_tune_config(configured(tmp_path, fixed_training_params=LORA,
                                       fixed_peft_params={"init_lora_weights": "eva", "lora_alpha": 8}), tmp_path)
    problems, notices = preflight.judge(tune, preflight.configurations(tune.tuning), FakeStepper(tune))
    assert [p.split(": ")[0] for p in problems] == ["tuning.fixed_peft_params.init_lora_weights"]


def test_the_failure_message_shows_this_runs_refusal_not_an_older_one(tmp_path, monkeypatch):
    from snaketune import results

    monkeypatch.setenv("SNAKETUNE_RUN_STARTED", "0")
    log = tmp_path / "preflight.log"
    refusal = "Preflight: 1 problem(s); no trial was started:\n  - tuning.x: refused"
    log.write_text(f"older lines\n{refusal}\n")
    assert results._preflight_problems(log) == refusal
    log.write_text(f"older lines\n{refusal}\nTraceback (most recent call last):\nRuntimeError: out of memory\n")
    assert results._preflight_problems(log) is None  # this run failed otherwise: its own error is said


def test_every_ignored_warning_says_why():
    assert all(reason.strip() for reason in preflight.IGNORED_WARNINGS.values())
    assert preflight._judged(["FutureWarning: `is_gradient_checkpointing` is deprecated"]) == ([], [])
    assert preflight._judged(["UserWarning: `flag` has no effect here"]) == (["UserWarning: `flag` has no effect here"], [])
    # a warning that names no field is not taken for a refusal of one
    assert preflight._judged(["UserWarning: the cache is ignored"]) == ([], ["UserWarning: the cache is ignored"])


def test_the_shrunken_model_keeps_the_architecture_and_vocabulary():
    from transformers import AutoConfig

    big = AutoConfig.for_model("llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                               num_attention_heads=9, num_key_value_heads=3, vocab_size=49152)
    small = preflight.shrink_config(big)
    assert type(small) is type(big) and small.vocab_size == 49152
    assert (small.num_hidden_layers, small.num_attention_heads, small.num_key_value_heads) == (2, 4, 2)
    assert small.hidden_size == 4 * preflight.SHRUNK_HEAD_DIM and small.intermediate_size == 2 * small.hidden_size
    assert big.num_hidden_layers == 30  # the original is untouched
    # As deep when values name layers by index (freeze_layers, layers_to_transform), as narrow.
    deep = preflight.shrink_config(big, keep_depth=True)
    assert (deep.num_hidden_layers, deep.hidden_size) == (30, small.hidden_size)


@pytest.mark.parametrize("model,peft,keeps", [
    ({}, {"lora_target_modules": ["q_proj", "v_proj"]}, False),
    ({}, {"lora_target_modules": "all-linear"}, False),
    ({"freeze_layers": ["model.layers.20"]}, {}, True),
    ({}, {"layers_to_transform": [20, 21]}, True),
    ({}, {"lora_target_modules": r".*layers\.2[0-9]\..*q_proj"}, True),  # a regular expression
])
def test_the_copy_keeps_every_layer_when_a_value_names_layers(tmp_path, model, peft, keeps):
    write_reverse_words(tmp_path / "data.jsonl")
    config = configured(tmp_path, model=model, fixed_training_params=LORA, fixed_peft_params=peft)
    assert preflight.names_layers(load_tune_config(config, tmp_path)) is keeps


# -- real Snakemake runs ----------------------------------------------------------------------------


CHAT_ROWS = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w},
                            {"role": "user", "content": "Again."}, {"role": "assistant", "content": w}]}
             for w in ("alpha", "beta", "gamma", "delta", "omega") * 4]


def chat_config(**fixed) -> dict:
    """One trial on CHAT_ROWS with assistant_only_loss, and the fixed training params `fixed`."""
    config = tiny_config("chat.jsonl", n_trials=1)
    config["tuning"]["fixed_training_params"].update(assistant_only_loss=True, **fixed)
    return config


@pytest.fixture(scope="module")
def chat_workdir(tmp_path_factory):
    """A workdir with chat rows that the two Snakemake tests share, in file order: the refused
    configuration first (no study there yet), then the accepted one, which reuses the model and
    data the refused run prepared (the preflight runs again). Each test also holds alone."""
    workdir = tmp_path_factory.mktemp("chat")
    (workdir / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHAT_ROWS))
    return workdir


@pytest.mark.workflow
def test_a_refused_configuration_stops_the_run_before_any_trial(chat_workdir):
    tmp_path = chat_workdir
    write_config(tmp_path, chat_config(lr_scheduler_type="cosine_with_min_lr"))
    result = run_snakemake(tmp_path, check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "tuning.fixed_training_params.lr_scheduler_type: " in out and "min_lr" in out
    assert "Run the same command again" not in out
    output_dir = tmp_path / "tuning_output"
    assert not list(output_dir.glob("trial_*"))
    journal = output_dir / "study.journal"
    assert not journal.exists() or load_study(output_dir).trials == []


@pytest.mark.workflow
def test_chat_rows_with_assistant_only_loss_train(chat_workdir):
    """huggingface/trl#4879: TRL refused the prepared rows as 'not conversational'; the loss is on
    the assistant turns already (prepare_data), so the field asks for what is done and must train.
    (In the workdir the refused configuration left: the same rows, model and data.)"""
    tmp_path = chat_workdir
    write_config(tmp_path, chat_config())
    run_snakemake(tmp_path)
    output_dir = tmp_path / "tuning_output"
    [trial] = load_study(output_dir).trials
    assert trial.state.name == "COMPLETE"
    assert json.loads((output_dir / "preflight.json").read_text())["notices"] == []


@pytest.mark.workflow
def test_a_new_study_of_accepted_configurations_reads_their_record_back(chat_workdir, tmp_path, monkeypatch):
    """The preflight's accepted record is kept in the user's cache (snaketune.preflight_cache): a
    second study of the same configurations on the same model and rows (another output_dir, its
    model and data prepared again) writes it back without stepping, and says where it came from."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the runs inherit it
    records = {}
    for output_dir in ("first", "second"):
        config = chat_config()
        config["tuning"]["output_dir"] = output_dir
        write_config(chat_workdir, config, f"{output_dir}.yaml")
        run_snakemake(chat_workdir, "--until", "preflight", configfile=f"{output_dir}.yaml")
        records[output_dir] = json.loads((chat_workdir / output_dir / "preflight.json").read_text())
    first, second = records["first"], records["second"]
    assert "accepted_before" not in first and list((tmp_path / "cache" / "snaketune" / "preflight").glob("*.json"))
    assert second["accepted_before"]["output_dir"] == str(chat_workdir / "first")
    assert second["configurations"] == first["configurations"] and second["notices"] == first["notices"]
    log = (chat_workdir / "second" / "logs" / "preflight.log").read_text()
    assert "were accepted before on the same model and rows" in log and "not stepped again" in log
