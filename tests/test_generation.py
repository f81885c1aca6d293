"""Generation metrics: the `generation:` section's checks, batched generation, and real studies
that optimise exact_match and prune with Optuna's WilcoxonPruner on per-row scores."""

import json

import pandas as pd
import pytest
from optuna.trial import TrialState
from workflow_helpers import (
    TINY_MODEL,
    load_study,
    run_snakemake,
    tiny_config,
    write_config,
    write_constant_answer,
    write_reverse_words,
)

from snaketune import generation
from snaketune.config import ConfigError
from snaketune.validate import load_tune_config
from snaketune.layout import StudyLayout, read_loss_curve


def problems_of(config, workdir) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_tune_config(config, workdir)
    return error.value.problems


def answers(**tuning) -> dict:
    return tiny_config(evaluation_metrics=["exact_match"], evaluation_direction=["maximize"], **tuning)


@pytest.fixture
def workdir(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


# -- parse time ------------------------------------------------------------------------------


def test_generation_metrics_are_objectives_with_their_settings_in_the_definition(workdir):
    config = answers()
    config["generation"] = {"max_new_tokens": 16, "num_samples": 5, "batch_size": 2}
    tune = load_tune_config(config, workdir)
    assert tune.uses_generation and tune.generation.max_new_tokens == 16
    assert tune.generation.use_sampling is False and tune.generation.use_cache is True  # greedy, KV cache
    # What changes the answers is part of the study's definition; the batch size is not.
    assert tune.definition["generation"]["max_new_tokens"] == 16
    assert tune.definition["generation"]["num_samples"] == 5
    assert "batch_size" not in tune.definition["generation"]
    # A study without generation metrics keeps the definition it had, whatever the section says.
    plain = tiny_config()
    plain["generation"] = {"max_new_tokens": 16}
    tune = load_tune_config(plain, workdir)
    assert "generation" not in tune.definition
    assert any(n.startswith("generation: unused: no generation metric") for n in tune.notices)


@pytest.mark.parametrize("section, expected", [
    ({"use_sampling": True}, "generation.temperature: 0 with use_sampling: true samples nothing"),
    ({"max_new_tokens": 0}, "generation.max_new_tokens: 0 is less than the minimum of 1"),
    ({"frequency_penalty": 0.5}, "generation.frequency_penalty: 0.5: transformers' generate has no such option"),
    ({"exclude_prompt_from_response": False}, "generation.exclude_prompt_from_response: false"),
    ({"top_p": 1.5, "use_sampling": True, "temperature": 0.7}, "generation.top_p: 1.5 is greater than the maximum"),
    ({"max_tokens": 8}, "generation.max_tokens: unknown key (did you mean 'max_new_tokens'?)"),
    # the tiny model's config: max_position_embeddings 2048, for a prompt and its answer together
    ({"max_new_tokens": 2048}, "generation.max_new_tokens: 2048 tokens, but the model has 2048 positions"),
])
def test_bad_generation_settings_are_refused_by_path(workdir, section, expected):
    config = answers()
    config["generation"] = section
    assert any(p.startswith(expected) for p in problems_of(config, workdir)), problems_of(config, workdir)


def test_greedy_decoding_says_which_sampling_settings_go_unused(workdir):
    config = answers()
    config["generation"] = {"temperature": 0.7, "top_p": 0.9, "tool_choice": "auto"}
    notices = load_tune_config(config, workdir).notices
    assert "generation.temperature: unused: decoding is greedy (set use_sampling: true to sample)" in notices
    assert "generation.top_p: unused: decoding is greedy (set use_sampling: true to sample)" in notices
    assert "generation.tool_choice: unused: a trial's model is offered no tools" in notices


def test_learning_curves_without_a_pruner_go_with_an_objective_computed_after_training(workdir):
    for first, kind in (("rougeL", "a generation metric"), ("accuracy", "a custom metric")):
        (workdir / "task_metric.py").write_text("def accuracy(**kwargs):\n    return 1.0\n")
        tune = load_tune_config(tiny_config(evaluation_metrics=[first], evaluation_direction=["maximize"],
                                            report_every_steps=1, custom_eval_metrics=[
                                                {"name": "accuracy", "function": "task_metric.accuracy"}]), workdir)
        assert tune.tuning.report_every_steps == 1
        assert (f"tuning.report_every_steps: the evaluations every 1 steps are recorded in each trial's loss "
                f"curve only (eval_loss in logs/loss_curve.csv); the trial's value, {first!r}, is {kind}, "
                "computed once after training") in tune.notices


@pytest.mark.parametrize("tuning, expected", [
    # Wilcoxon's steps are validation rows: only a generation metric has per-row scores.
    ({"pruner": "wilcoxon"}, "tuning.pruner: wilcoxon compares trials row by row on per-example scores"),
    # Other pruners need a value at each training evaluation, which generation does not give.
    ({"evaluation_metrics": ["rougeL"], "evaluation_direction": ["maximize"], "pruner": "percentile",
      "report_every_steps": 1},
     "tuning.evaluation_metrics[0]: 'rougeL' is a generation metric, computed once after training"),
    ({"evaluation_metrics": ["math_answer"], "evaluation_direction": ["maximize"], "pruner": "wilcoxon",
      "resume_pruned": True}, "tuning.resume_pruned: the wilcoxon pruner stops a trial while it generates"),
    ({"evaluation_metrics": ["exact_mach"], "evaluation_direction": ["maximize"]},
     "tuning.evaluation_metrics[0]: 'exact_mach' is not produced by SFT evaluation"),
    ({"evaluation_metrics": ["exact_match"], "evaluation_direction": ["maximize"],
      "custom_eval_metrics": [{"name": "exact_match", "function": "os.getcwd"}]},
     "tuning.custom_eval_metrics[0].name: 'exact_match' is a built-in generation metric"),
])
def test_generation_metrics_with_pruners_and_names_are_checked(workdir, tuning, expected):
    problems = problems_of(tiny_config(**tuning), workdir)
    assert any(p.startswith(expected) for p in problems), problems
    if "exact_mach" in expected:
        assert any("did you mean 'exact_match'" in p for p in problems), problems


def test_plain_text_validation_rows_have_no_answer_to_score(workdir):
    with open(workdir / "text.jsonl", "w") as f:
        for i in range(10):
            f.write(json.dumps({"text": f"row {i}"}) + "\n")
    config = answers()
    config["data"]["validation"]["datasets"] = [{"dataset_name": "text.jsonl"}]
    problems = problems_of(config, workdir)
    assert any(p.startswith("data.validation.datasets[0]: plain-text rows ('text') have no prompt") for p in problems)


# -- generation itself -------------------------------------------------------------------------


def test_batched_left_padded_generation_answers_as_one_prompt_at_a_time(tmp_path):
    """Prompts of different lengths in one batch (left padding, KV cache) give the answers each
    gives alone: a right-padded batch would not (checked when this test was written)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    config = AutoConfig.from_pretrained(TINY_MODEL)
    config.initializer_range = 1.0  # varied answers (the default init repeats one token)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    questions = ["Hi", "What is the capital of France, and why is it so famous among tourists?", "2+2?",
                 "Tell me a story about a cat."]
    rows = [{"prompt": tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                     add_generation_prompt=True), "completion": "Paris"}
            for q in questions] + [{"prompt": "", "completion": "no prompt: not generated for"}]
    outputs = {}
    for batch_size in (1, 4):
        params = generation.GenerationParams(
            max_new_tokens=6, batch_size=batch_size, num_samples=None, use_sampling=False, temperature=0.0,
            top_p=None, min_p=0.0, num_beams=1, stop_strings=None, stop_token_ids=None, seed=None,
            use_cache=True, skip_special_tokens=True)
        path = tmp_path / f"generations_{batch_size}.jsonl"
        produced, pruned = generation.evaluate_generation(model, tokenizer, rows, params, seed=1,
                                                          objective="exact_match", out_path=path)
        assert pruned is None and produced["generation_rows"] == 4
        assert produced["generation_new_tokens"] == 24 and produced["exact_match"] == 0.0
        outputs[batch_size] = {r["row"]: r["output"] for r in map(json.loads, path.read_text().splitlines())}
    assert sorted(outputs[1]) == [0, 1, 2, 3]
    assert all(outputs[1].values()) and len(set(outputs[1].values())) == 4
    assert outputs[4] == outputs[1]


def tiny_generation_params(**changed) -> "generation.GenerationParams":
    settings = dict(max_new_tokens=6, batch_size=4, num_samples=None, use_sampling=False, temperature=0.0,
                    top_p=None, min_p=0.0, num_beams=1, stop_strings=None, stop_token_ids=None, seed=None,
                    use_cache=True, skip_special_tokens=True)
    return generation.GenerationParams(**{**settings, **changed})


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_a_prompt_past_the_models_positions_is_cut_from_the_left(tmp_path, architecture):
    """A prompt that with its answer would pass the model's positions keeps its last positions −
    max_new_tokens tokens (lm-eval's rule for a context) and is answered as those tokens alone.
    With absolute position embeddings (GPT-2) the whole prompt failed the trial (an index past
    the embedding table); with rotary ones (Llama) it was answered past its positions."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2Config

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    special = dict(eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    if architecture == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                            initializer_range=1.0, **special)
    else:
        config = AutoConfig.from_pretrained(TINY_MODEL, max_position_embeddings=64, initializer_range=1.0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    question = "Count on: " + " ".join(str(k) for k in range(40))
    rows = [{"prompt": tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                     add_generation_prompt=True), "completion": "41"}
            for q in (question, "Hi")]
    ids = tokenizer(rows[0]["prompt"], add_special_tokens=False)["input_ids"]
    assert len(ids) > 64 > len(tokenizer(rows[1]["prompt"], add_special_tokens=False)["input_ids"]) + 6
    path = tmp_path / "generations.jsonl"
    produced, _ = generation.evaluate_generation(model, tokenizer, rows, tiny_generation_params(), seed=1,
                                                 objective="exact_match", out_path=path)
    written = {r["row"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert produced["generation_rows"] == 2 and produced["generation_prompts_cut"] == 1
    assert [written[0]["prompt_tokens_cut"], written[1]["prompt_tokens_cut"]] == [len(ids) - 58, 0]
    assert written[0]["prompt"] == rows[0]["prompt"]  # the record keeps the whole prompt
    with torch.inference_mode():  # the last 58 tokens alone, with no padding beside them
        alone = model.generate(torch.tensor([ids[-58:]]), max_new_tokens=6, do_sample=False,
                               pad_token_id=tokenizer.pad_token_id)[0, 58:].tolist()
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    alone = alone[:next((k for k, t in enumerate(alone) if t in stops), len(alone))]
    assert written[0]["output"] == tokenizer.decode(alone, skip_special_tokens=True).strip()
    # An answer that alone fills the positions leaves no room for a prompt: said, by its name.
    with pytest.raises(ValueError, match="generation.max_new_tokens: 64 tokens, but the model has 64 positions"):
        generation.evaluate_generation(model, tokenizer, rows, tiny_generation_params(max_new_tokens=64),
                                       seed=1, objective="exact_match", out_path=path)


def test_the_same_rows_are_drawn_for_every_trial():
    assert generation.selected_rows(range(8), None, seed=42) == list(range(8))
    drawn = generation.selected_rows(range(100), 10, seed=42)
    assert drawn == generation.selected_rows(range(100), 10, seed=42) and len(set(drawn)) == 10
    assert drawn == sorted(drawn) and drawn != generation.selected_rows(range(100), 10, seed=43)
    assert generation.selected_rows(range(5), 10, seed=42) == list(range(5))  # a cap above the rows: all
    # Drawn among the rows with a prompt: num_samples rows are answered, not fewer.
    assert len(generation.selected_rows(range(0, 100, 2), 10, seed=42)) == 10


# -- real studies ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wilcoxon_study(tmp_path_factory):
    """A study on exact_match (answers that are always "yes"), pruned by Wilcoxon on per-row scores:
    a learning rate that learns the answer, then one that does not, one job at a time."""
    workdir = tmp_path_factory.mktemp("wilcoxon")
    write_constant_answer(workdir / "data.jsonl")  # 32 training rows, 8 validation rows
    config = answers(n_trials=2, pruner="wilcoxon",
                     enqueue_trials=[{"learning_rate": 1e-2}, {"learning_rate": 1e-4}])
    # 30 steps at a constant 1e-2 learn the answer (24 do, 20 do not: the margin is 6 steps).
    config["tuning"]["fixed_training_params"].update(max_steps=30, lr_scheduler_type="constant")
    config["generation"] = {"max_new_tokens": 4, "batch_size": 2, "num_samples": 6}
    write_config(workdir, config)
    run = run_snakemake(workdir, cores=1)
    return workdir / "tuning_output", run


@pytest.mark.workflow
def test_a_study_optimises_exact_match_and_keeps_every_answer(wilcoxon_study):
    out, run = wilcoxon_study
    layout = StudyLayout(out)
    learnt, _ = load_study(out).trials
    assert learnt.state == TrialState.COMPLETE and learnt.params["learning_rate"] == 1e-2
    assert learnt.value == 1.0  # every answer right
    rows = [json.loads(line) for line in layout.trial(learnt.user_attrs["slot"]).generations.read_text().splitlines()]
    # The same 6 of the 8 validation rows in every trial, each with its prompt as training formatted it.
    assert sorted(r["row"] for r in rows) == generation.selected_rows(range(8), 6, seed=42)
    assert all(r["output"] == "yes" and r["reference"] == "yes" and r["score"] == 1.0 for r in rows)
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") for r in rows)
    assert set(rows[0]["scores"]) == {"exact_match", "contains_answer", "math_answer", "rougeL"}
    table = pd.read_csv(layout.results_csv).set_index("number")
    assert table.loc[learnt.number, "exact_match"] == 1.0 and table.loc[learnt.number, "rougeL"] == 1.0
    assert table.loc[learnt.number, "generation_rows"] == 6
    assert json.loads(layout.best_record(1).read_text())["values"] == {"exact_match": 1.0}
    assert table.loc[1 - learnt.number, "exact_match"] == 0.0  # the pruned one: its mean over 4 rows
    best_page = layout.report_page("best").read_text()
    assert "Best answers (logs/generations.jsonl)" in best_page and "<pre>yes</pre>" in best_page
    # The untrained model answered the same rows (rule baseline), scored the same way: what tuning gained.
    baseline = json.loads(layout.baseline.metrics.read_text())
    assert baseline["exact_match"] == 0.0 and baseline["generation_rows"] == 6
    answered = [json.loads(line) for line in layout.baseline.generations.read_text().splitlines()]
    assert sorted(r["row"] for r in answered) == generation.selected_rows(range(8), 6, seed=42)
    assert json.loads(layout.best_record(1).read_text())["base_model_values"] == {"exact_match": 0.0}
    assert "the base model, untrained: exact_match" in best_page
    assert "the base model, untrained, on the same 6 rows: exact_match=0 (tuning_output/baseline/logs/" \
        "generations.jsonl)" in run.stdout


@pytest.mark.workflow
def test_wilcoxon_prunes_a_trial_worse_row_by_row_before_it_answers_every_row(wilcoxon_study):
    out, run = wilcoxon_study
    layout = StudyLayout(out)
    learnt, slow = load_study(out).trials
    assert slow.state == TrialState.PRUNED and slow.params["learning_rate"] == 1e-4
    # Reported per row (the row index as the step), paired with the best trial's rows: after 4 rows
    # all worse, the one-sided signed-rank p-value is 1/16 < 0.1 (WilcoxonPruner's default).
    rows = {step: value for step, value in slow.intermediate_values.items() if step < 8}
    assert set(rows) < set(generation.selected_rows(range(8), 6, seed=42))
    assert len(rows) == 4 and set(rows.values()) == {0.0}
    assert sorted(learnt.intermediate_values) == generation.selected_rows(range(8), 6, seed=42)
    # Its value is its mean over the rows it answered, reported last at a step past every row (8).
    assert max(slow.intermediate_values) == 8 and slow.value == slow.intermediate_values[8] == 0.0
    assert slow.user_attrs["pruned_reason"].startswith("pruned after 4 of 6 rows: exact_match=0 over those rows")
    assert len(layout.trial(slow.user_attrs["slot"]).generations.read_text().splitlines()) == 4  # it stopped generating there
    assert slow.user_attrs["metrics"]["generation_rows"] == 4
    assert "trial 1 PRUNED" in run.stderr + run.stdout
    assert "at step" not in next(line for line in (run.stderr + run.stdout).splitlines() if "trial 1 PRUNED" in line)


def readme_example(marker: str, workdir):
    """The manual's YAML block after `<!-- marker -->`, over the tiny config, resolved."""
    import textwrap

    import yaml

    from workflow_helpers import manual_text

    text = manual_text()
    block = yaml.safe_load(textwrap.dedent(text.split(f"<!-- {marker} -->")[1].split("```yaml")[1].split("```")[0]))
    config = tiny_config()
    config["tuning"].update(block.pop("tuning"))
    config.update(block)  # its other sections (generation:, lm_eval:)
    return load_tune_config(config, workdir)


def test_readme_generation_example_is_valid(workdir):
    tune = readme_example("generation-example", workdir)
    assert tune.tuning.metrics == ["math_answer"] and tune.tuning.pruner == "wilcoxon"
    assert tune.generation.num_samples == 200 and tune.notices == []


# -- the GSM8K-format task -----------------------------------------------------------------------


def test_word_problems_are_gsm8k_rows_whose_every_step_is_right():
    import re

    from snaketune import scoring, word_problems

    train, validation = word_problems.generate(n_train=140, n_validation=35, seed=3)
    assert len(train) == 140 and len(validation) == 35
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in validation}
    step = re.compile(r"(\d+) ([x+\-/]) (\d+) = \$?(\d+)")
    ops = {"x": lambda a, b: a * b, "+": lambda a, b: a + b, "-": lambda a, b: a - b, "/": lambda a, b: a / b}
    for row in train + validation:
        *lines, last = row["output"].splitlines()
        answer = int(last.removeprefix("#### "))
        assert last == f"#### {answer}" and answer >= 0
        for line in lines:  # every calculation of the solution holds
            a, op, b, result = step.search(line).groups()
            assert ops[op](int(a), int(b)) == int(result), line
        assert step.search(lines[-1]).group(4) == str(answer)  # the last step gives it
        assert scoring.math_answer(row["output"], row["output"]) == 1.0
        assert scoring.math_answer(f"The answer is {answer + 1}.", row["output"]) == 0.0
    # Every template, in turn, in both splits.
    assert len({r["instruction"].split()[1] for r in validation}) > 1


def test_the_shipped_word_problems_are_what_the_script_writes(tmp_path):
    from snaketune import word_problems
    from workflow_helpers import REPO

    word_problems.main([str(tmp_path)])
    for split in ("train", "validation"):
        assert (tmp_path / f"{split}.jsonl").read_text() == (REPO / "config" / "word_problems" / f"{split}.jsonl").read_text()


@pytest.mark.workflow
def test_the_word_problems_study_runs_on_answer_accuracy(tmp_path):
    """config/word_problems.yaml, as shipped but on the tiny model and a few steps: each trial and
    the base model answer the same GSM8K-format questions, scored by math_answer."""
    import shutil

    import yaml

    from workflow_helpers import REPO

    shutil.copytree(REPO / "config" / "word_problems", tmp_path / "config" / "word_problems")
    config = yaml.safe_load((REPO / "config" / "word_problems.yaml").read_text())
    config["model"] = tiny_config()["model"]
    # report_every_steps without a pruner: eval_loss curves, while the value is the answers' score.
    config["tuning"].update(n_trials=1, report_every_steps=1)
    config["tuning"]["fixed_training_params"].update(max_steps=2)
    config["generation"].update(max_new_tokens=8, num_samples=4)
    write_config(tmp_path, config)
    run = run_snakemake(tmp_path)
    assert "the evaluations every 1 steps are recorded in each trial's loss curve only" in run.stderr
    layout = StudyLayout(tmp_path / "word_problems_output")
    assert [row["step"] for row in read_loss_curve(layout.trial(0).loss_curve, "eval_loss")] == [1, 2]
    (trial,) = load_study(tmp_path / "word_problems_output", "word_problems").trials
    assert trial.intermediate_values == {}  # an eval_loss is no math_answer
    table = pd.read_csv(layout.results_csv)
    assert table.loc[0, "state"] == "COMPLETE" and table.loc[0, "generation_rows"] == 4
    assert table.loc[0, "math_answer"] == json.loads(layout.trial(0).metrics.read_text())["values"]["math_answer"]
    answered = [json.loads(line) for line in layout.trial(0).generations.read_text().splitlines()]
    assert all(r["reference"].splitlines()[-1].startswith("#### ") for r in answered)
    assert json.loads(layout.baseline.metrics.read_text())["generation_rows"] == 4
    assert "the base model, untrained, on the same 4 rows: math_answer=" in run.stdout


# -- lm-evaluation-harness tasks ---------------------------------------------------------------------


def write_yes_task(folder, rows: int = 6):
    """An lm-eval task of our own on local data (the hub is unreachable here): answer "yes"."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "yes_rows.jsonl", "w") as f:
        for i in range(rows):
            f.write(json.dumps({"question": f"Is {i} plus {i + 1} a number?", "answer": "yes"}) + "\n")
    (folder / "yes_task.yaml").write_text(
        "task: yes_task\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'yes_rows.jsonl'}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 4\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")
    return folder


@pytest.mark.parametrize("tuning, lm_eval, expected", [
    ({"evaluation_metrics": ["lm_eval:yes_taks/exact_match"]}, {"include_path": "tasks"},
     "tuning.evaluation_metrics[0]: lm-eval has no task 'yes_taks' (did you mean 'yes_task'?)"),
    ({"evaluation_metrics": ["lm_eval:yes_task"]}, {"include_path": "tasks"},
     "tuning.evaluation_metrics[0]: 'lm_eval:yes_task' is not lm_eval:<task>/<metric>"),
    ({"evaluation_metrics": ["lm_eval:yes_task/exact_match"]}, {"include_path": "no_such_folder"},
     "lm_eval.include_path: "),
    ({"evaluation_metrics": ["lm_eval:yes_task/exact_match"], "pruner": "median", "report_every_steps": 1},
     {"include_path": "tasks"},
     "tuning.evaluation_metrics[0]: 'lm_eval:yes_task/exact_match' is an lm-eval metric, computed once after"),
])
def test_lm_eval_objectives_are_checked_before_any_job(workdir, tuning, lm_eval, expected):
    write_yes_task(workdir / "tasks")
    config = tiny_config(evaluation_direction=["maximize"], **tuning)
    config["lm_eval"] = lm_eval
    problems = problems_of(config, workdir)
    assert any(p.startswith(expected) for p in problems), problems


def test_lm_eval_metric_names_are_checked_against_the_tasks_yaml_before_any_job(workdir):
    """Each metric of each task as lm-eval keys its results (`<metric>,<filter>`), read from the
    task's YAML at parse time, not after a trial has trained. One config (lm-eval indexes its
    14,000 tasks in seconds each time)."""
    write_yes_task(workdir / "tasks")
    config = tiny_config(evaluation_metrics=["lm_eval:yes_task/accuracy", "lm_eval:yes_task/exact_match,strict-match",
                                             "lm_eval:gsm8k/exact_match", "lm_eval:gsm8k/exact_macth,strict-match",
                                             "lm_eval:yes_task/exact_match,none", "lm_eval:gsm8k/exact_match,flexible-extract"],
                         evaluation_direction=["maximize"] * 6)
    config["lm_eval"] = {"include_path": "tasks"}
    problems = [p for p in problems_of(config, workdir) if p.startswith("tuning.evaluation_metrics[")]
    assert problems == [
        "tuning.evaluation_metrics[0]: lm-eval's task 'yes_task' has no metric 'accuracy'; it gives exact_match,none",
        "tuning.evaluation_metrics[1]: lm-eval's task 'yes_task' has no filter 'strict-match'; it gives "
        "exact_match,none",
        "tuning.evaluation_metrics[2]: lm-eval's task 'gsm8k' gives 'exact_match' under 2 filters: name one, e.g. "
        "'lm_eval:gsm8k/exact_match,strict-match' (it gives exact_match,strict-match, exact_match,flexible-extract)",
        "tuning.evaluation_metrics[3]: lm-eval's task 'gsm8k' has no metric 'exact_macth' (did you mean "
        "'exact_match'?); it gives exact_match,strict-match, exact_match,flexible-extract",
    ], problems


def test_lm_eval_scores_a_lora_model_as_it_is_in_memory(tmp_path):
    """lm-eval's HFLM takes the trial's model object (LoRA adapters on), and every metric of the
    task comes back under lm_eval:<task>/<metric>,<filter>, the objective under its own name."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from snaketune import lm_harness

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    model = get_peft_model(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY_MODEL)),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    settings = lm_harness.LmEvalParams(include_path=str(write_yes_task(tmp_path / "tasks")), limit=3,
                                       num_fewshot=None, batch_size=2, apply_chat_template=True)
    produced = lm_harness.evaluate(model, tokenizer, settings, ["lm_eval:yes_task/exact_match", "eval_loss"], seed=1)
    assert produced == {"lm_eval:yes_task/exact_match,none": 0.0, "lm_eval:yes_task/exact_match": 0.0}
    with pytest.raises(KeyError, match="no metric 'accuracy'; it gave exact_match,none"):
        lm_harness.evaluate(model, tokenizer, settings, ["lm_eval:yes_task/accuracy"], seed=1)


@pytest.mark.workflow
def test_a_study_tunes_on_an_lm_eval_task(tmp_path):
    write_constant_answer(tmp_path / "data.jsonl")
    write_yes_task(tmp_path / "tasks")
    config = tiny_config(n_trials=1, evaluation_metrics=["lm_eval:yes_task/exact_match"],
                         evaluation_direction=["maximize"], enqueue_trials=[{"learning_rate": 1e-2}])
    config["tuning"]["fixed_training_params"].update(max_steps=30, lr_scheduler_type="constant")  # as wilcoxon_study
    config["lm_eval"] = {"include_path": "tasks", "apply_chat_template": True, "batch_size": 3}
    write_config(tmp_path, config)
    run = run_snakemake(tmp_path)
    layout = StudyLayout(tmp_path / "tuning_output")
    (trial,) = load_study(tmp_path / "tuning_output").trials
    assert trial.state == TrialState.COMPLETE and trial.value == 1.0  # it learnt to answer "yes"
    assert trial.user_attrs["metrics"]["lm_eval:yes_task/exact_match,none"] == 1.0
    assert json.loads(layout.baseline.metrics.read_text())["lm_eval:yes_task/exact_match"] == 0.0
    assert "the base model, untrained: lm_eval:yes_task/exact_match=0" in run.stdout
    assert pd.read_csv(layout.results_csv).loc[0, "lm_eval:yes_task/exact_match"] == 1.0


def test_readme_lm_eval_example_is_valid(workdir):
    tune = readme_example("lm-eval-example", workdir)  # gsm8k is in lm-eval's registry (no data fetched)
    assert tune.uses_lm_eval and tune.lm_eval.num_fewshot == 5 and tune.lm_eval.limit == 200
    assert tune.definition["lm_eval"] == {"include_path": None, "limit": 200, "num_fewshot": 5,
                                          "apply_chat_template": False}


def test_scores_of_answers_are_maximized_unless_written_otherwise(workdir):
    config = tiny_config(evaluation_metrics=["exact_match", "eval_loss"])
    del config["tuning"]["evaluation_direction"]
    tune = load_tune_config(config, workdir)
    assert tune.tuning.directions == ["maximize", "minimize"]
    assert any(n.startswith("tuning.evaluation_direction: not given; exact_match maximized") for n in tune.notices)
    config["tuning"]["evaluation_direction"] = ["minimize"]
    tune = load_tune_config(config, workdir)
    assert tune.tuning.directions == ["minimize", "minimize"]  # as written, said
    assert "tuning.evaluation_direction[0]: minimizes exact_match, a score where higher is better; write " \
        "maximize unless you mean it" in tune.notices


def test_a_changed_generation_setting_is_refused_once_a_trial_finished(workdir):
    from snaketune.study import definition_conflicts, open_study

    config = answers(n_trials=1)
    config["generation"] = {"max_new_tokens": 8}
    tune = load_tune_config(config, workdir)
    study = open_study(tune.tuning, 0, definition=tune.definition)
    trial = study.ask()
    study.tell(trial, 1.0)
    assert definition_conflicts(tune.tuning, tune.definition) == []
    config["generation"] = {"max_new_tokens": 16, "batch_size": 2}
    changed = load_tune_config(config, workdir)
    problems = definition_conflicts(changed.tuning, changed.definition)
    assert len(problems) == 1 and problems[0].startswith("generation: ") and "max_new_tokens" in problems[0]
    assert "batch_size" not in problems[0]  # greedy: the batch size changes only the speed


def test_a_base_model_that_cannot_be_scored_leaves_the_reason_not_a_failed_run(workdir):
    tune = load_tune_config(answers(), workdir)
    produced = generation.evaluate_base_model(tune, {"kind": "reference", "path": str(workdir / "gone"),
                                                     "tokenizer_path": str(workdir / "gone")},
                                              workdir / "no_data", workdir / "baseline")
    assert set(produced) == {"error"} and produced["error"]
    assert json.loads((workdir / "baseline" / "metrics.json").read_text()) == produced
