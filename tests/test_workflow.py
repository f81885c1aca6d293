"""The real Snakefile, run by Snakemake, on a tiny random Llama: studies end to end."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from postgres_server import assert_password_kept, assert_study_kept_in
from snaketune.layout import StudyLayout, TrialFiles
from workflow_helpers import REPO, load_study, run_cli, run_snakemake, tiny_config, write_config, write_reverse_words

pytestmark = pytest.mark.workflow


@pytest.fixture
def workdir(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


def assert_trial_files(trial_dir):
    assert TrialFiles(trial_dir).params.exists()
    assert list(trial_dir.glob("checkpoint-*")), f"no checkpoint in {trial_dir}"
    assert TrialFiles(trial_dir).log.stat().st_size > 0
    curve = pd.read_csv(TrialFiles(trial_dir).loss_curve_csv)
    assert len(curve) >= 3 and curve["loss"].notna().any()
    metrics = json.loads(TrialFiles(trial_dir).metrics.read_text())
    assert metrics["state"] == "COMPLETE"
    return metrics


# Custom metrics that give no finite value (issue input: a NaN non-objective metric vanished from
# metrics.json, the CSV and the journal; two more of the kind: infinity, and a dict's NaN key).
NAN_METRICS = ("def nothing_to_score(**kwargs):\n    return float('nan')\n"
               "def unbounded(**kwargs):\n    return float('inf')\n"
               "def several(**kwargs):\n    return {'several': 1.0, 'ratio': float('nan')}\n")


@pytest.fixture(scope="module")
def single_objective_study(tmp_path_factory):
    """(workdir, config, Snakemake's result) of one finished study that the single-objective tests
    share: 3 trials, a tunable batch size, and the custom metrics of NAN_METRICS."""
    workdir = tmp_path_factory.mktemp("single_objective")
    write_reverse_words(workdir / "data.jsonl")
    (workdir / "nan_metrics.py").write_text(NAN_METRICS)
    config = tiny_config(custom_eval_metrics=[
        {"name": "exact", "function": "nan_metrics.nothing_to_score"},
        {"name": "perplexity_bound", "function": "nan_metrics.unbounded"},
        {"name": "several", "function": "nan_metrics.several"}])
    config["tuning"]["tunable_training_params"]["per_device_train_batch_size"] = {
        "type": "categorical", "choices": [2, 4]}
    del config["tuning"]["fixed_training_params"]["per_device_train_batch_size"]
    write_config(workdir, config)
    return workdir, config, run_snakemake(workdir)


def test_single_objective_study(single_objective_study):
    workdir, config, result = single_objective_study
    out = workdir / "tuning_output"

    table = pd.read_csv(StudyLayout(out).results_csv)
    assert len(table) == 3
    for column in ("number", "state", "datetime_start", "datetime_complete", "duration",
                   "params_learning_rate", "params_per_device_train_batch_size", "eval_loss",
                   "eval_mean_token_accuracy", "trial_dir", "trained_steps", "trained_tokens"):
        assert column in table.columns, column
    assert "values_0" not in table.columns and "value" not in table.columns
    assert set(table["state"]) == {"COMPLETE"}
    assert table["params_learning_rate"].between(1e-4, 1e-1).all()

    study = load_study(out)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:
        metrics = assert_trial_files(StudyLayout(out).trial(trial.user_attrs["slot"]).dir)
        assert metrics["values"]["eval_loss"] == pytest.approx(trial.value)
        # TRL's model card names the base model the user gave (a local folder here), not "None".
        card = (StudyLayout(out).trial(trial.user_attrs["slot"]).dir / "README.md").read_text()
        assert f"fine-tuned version of `{config['model']['model_name']}` (a local model)" in card

    best = json.loads(StudyLayout(out).best_trial.read_text())
    assert best["number"] == study.best_trial.number
    assert best["values"]["eval_loss"] == pytest.approx(table["eval_loss"].min())
    assert f"best trial {best['number']}" in result.stdout + result.stderr

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(StudyLayout(out).best_model)
    assert model.config.hidden_size == 32
    # A full fine-tune's best model is the best trial's saved model and tokenizer, byte for byte,
    # without what Trainer keeps only to resume (no optimizer state to ship).
    best_model, checkpoint = StudyLayout(out).best_model, Path(best["checkpoint"])
    assert (best_model / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()
    assert (best_model / "tokenizer_config.json").exists()
    assert not {"optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin"} & {
        p.name for p in best_model.iterdir()}


def test_multi_objective_study_with_custom_metric(workdir, storage):
    (workdir / "my_metrics.py").write_text(
        "def answer_tokens(*, model, tokenizer, eval_dataset, trial_dir, **kwargs):\n"
        "    assert (trial_dir / 'params.json').exists()\n"
        "    return sum(len(t) for t in tokenizer(list(eval_dataset['completion']))['input_ids'])"
        " / len(eval_dataset)\n"
        "\n"
        "def lr_score(*, metrics, **kwargs):\n"
        "    return {'lr_score': -metrics['eval_loss'], 'unused_extra': 1.0}\n"
    )
    config = tiny_config(
        n_trials=2,  # (was 4: the assertions hold for any number of trials; a front of one or two)
        evaluation_metrics=["eval_loss", "lr_score"],
        evaluation_direction=["minimize", "maximize"],
        custom_eval_metrics=[
            {"name": "answer_tokens", "function": "my_metrics.answer_tokens"},
            {"name": "lr_score", "function": "my_metrics.lr_score"},
        ],
        tuner_sampler="RandomSampler",
        storage=storage,  # on the journal (None), and on PostgreSQL
    )
    write_config(workdir, config)
    run = run_snakemake(workdir)
    out = workdir / "tuning_output"
    assert_study_kept_in(storage, out)

    table = pd.read_csv(StudyLayout(out).results_csv)
    assert len(table) == 2
    assert {"eval_loss", "lr_score", "answer_tokens", "unused_extra"} <= set(table.columns)
    assert (table["lr_score"] == -table["eval_loss"]).all()
    assert (table["answer_tokens"] > 0).all()
    front = pd.read_csv(StudyLayout(out).pareto_front)
    best = json.loads(StudyLayout(out).best_trials.read_text())
    study = load_study(out)
    assert sorted(front["number"]) == sorted(t.number for t in study.best_trials)
    assert sorted(t["number"] for t in best["trials"]) == sorted(front["number"])
    assert not StudyLayout(out).best_trial.exists()
    metrics = json.loads(StudyLayout(out).trial(0).metrics.read_text())
    assert set(metrics["values"]) == {"eval_loss", "lr_score"}
    # The readers find the study from its folder alone, wherever it is kept.
    status = run_cli(workdir, "status", "tuning_output")
    assert "2 trial(s)" in status.stdout and "eval_loss" in status.stdout, status.stdout
    exported = run_cli(workdir, "export", "tuning_output")
    assert sorted(pd.read_csv(io.StringIO(exported.stdout))["number"]) == sorted(table["number"])
    best_cli = run_cli(workdir, "best", "tuning_output")
    assert all(f"trial {n}" in best_cli.stdout for n in front["number"]), best_cli.stdout
    assert_password_kept(storage, workdir, run, status, exported, best_cli)


def test_lora_study_merges_best_model(workdir):
    config = tiny_config(
        n_trials=2,
        tunable_peft_params={"lora_r": {"type": "categorical", "choices": [2, 4]}},
        fixed_peft_params={"lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"]},
    )
    write_config(workdir, config)
    run_snakemake(workdir)
    out = workdir / "tuning_output"

    table = pd.read_csv(StudyLayout(out).results_csv)
    assert set(table["params_lora_r"]) <= {2, 4}
    for slot in range(2):
        checkpoint = next(StudyLayout(out).trial(slot).dir.glob("checkpoint-*"))
        adapter = json.loads((checkpoint / "adapter_config.json").read_text())
        assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
        assert adapter["lora_alpha"] == 8
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(StudyLayout(out).best_model)
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_objective_not_produced_fails_the_trial_listing_metrics(workdir):
    # A custom metric returning a dict without its own name: known only once it has run.
    (workdir / "dict_metric.py").write_text("def scores(**kwargs):\n    return {'bleu': 1.0, 'chrf': 2.0}\n")
    write_config(workdir, tiny_config(n_trials=1, evaluation_metrics=["eval_bleu"],
                                      custom_eval_metrics=[{"name": "eval_bleu", "function": "dict_metric.scores"}]))
    result = run_snakemake(workdir, check=False)
    assert result.returncode != 0
    log = StudyLayout(workdir / "tuning_output").trial(0).log.read_text()
    assert "eval_bleu" in log and "eval_loss" in log and "metrics produced" in log
    study = load_study(workdir / "tuning_output")
    assert study.trials[0].state == TrialState.FAIL
    assert "eval_bleu" in study.trials[0].user_attrs["fail_reason"]


@pytest.mark.parametrize("change,named", [
    (lambda c: c["tuning"]["fixed_training_params"].update(load_best_model_at_end=True, save_strategy="epoch"),
     "tuning.fixed_training_params.load_best_model_at_end: SFTConfig refuses"),
    # (LoRA targets the model lacks are the preflight's, after the model is prepared: test_preflight.py)
    (lambda c: c["tuning"].update(tuner_sampler="BruteForceSampler"),
     "tuning.tuner_sampler: BruteForceSampler cannot sample tuning.tunable_training_params.learning_rate"),
    (lambda c: c["tuning"].update(evaluation_metrics=["eval_accuracy"]),
     "tuning.evaluation_metrics[0]: 'eval_accuracy' is not produced by SFT evaluation"),
    (lambda c: c["model"].update(load_pretrained_weights=True), "model.model_name: "),
])
def test_what_the_libraries_would_refuse_is_refused_by_a_dry_run_in_seconds(workdir, change, named):
    config = tiny_config()
    change(config)
    write_config(workdir, config)
    started = time.time()
    result = run_snakemake(workdir, "--dry-run", check=False)
    print(f"refused in {time.time() - started:.1f} s")
    assert result.returncode != 0 and named in result.stdout + result.stderr
    assert "Building DAG" not in result.stdout + result.stderr  # refused at parse time
    assert not (workdir / "tuning_output").exists()  # no journal


def test_a_failure_every_trial_would_meet_stops_after_two_trials_and_says_what_to_fix(workdir):
    # The same error for any parameters (here a custom metric that cannot find its file): two
    # trials show it; the other slots do not start, and the end message does not say "re-run".
    (workdir / "task_metric.py").write_text(
        "from pathlib import Path\n"
        "def accuracy(**kwargs):\n"
        "    return float(Path('answers.txt').read_text())\n")
    config = tiny_config(n_trials=3, tuner_sampler="RandomSampler",  # (was 4: one slot left unstarted is enough)
                         custom_eval_metrics=[{"name": "accuracy", "function": "task_metric.accuracy"}])
    write_config(workdir, config)
    profile = ("--workflow-profile", str(REPO / "workflow" / "profiles" / "default"))  # keep-going
    result = run_snakemake(workdir, *profile, "--cores", "1", check=False)
    console = result.stdout + result.stderr
    assert result.returncode != 0
    study = load_study(workdir / "tuning_output")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert "failed with the same error for different parameters" in console
    assert "FileNotFoundError" in console and "answers.txt" in console
    assert "Running again as it is would fail the same way (and 1 slot(s) were not started" in console
    assert "Run the same command again to re-run" not in console
    # Fixed: the same command runs the two failed trials with their parameters, and the rest.
    (workdir / "answers.txt").write_text("0.5")
    run_snakemake(workdir, *profile, "--cores", "1")
    study = load_study(workdir / "tuning_output")
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 3


def test_dry_run_lists_exactly_n_trial_jobs(workdir):
    write_config(workdir, tiny_config(n_trials=5))
    result = run_snakemake(workdir, "-n", "--quiet", "rules")
    counts = dict(line.split()[:2] for line in result.stdout.splitlines()
                  if line.strip() and line.split()[0] in {"trial", "aggregate", "all"})
    assert counts == {"trial": "5", "aggregate": "1", "all": "1"}
    assert not (workdir / "tuning_output").exists()


def test_bad_config_fails_before_any_job_or_journal(workdir):
    config = tiny_config(n_trials=0)
    config["tuning"]["tunable_training_params"]["learning_rate"]["low"] = -1
    write_config(workdir, config)
    result = run_snakemake(workdir, check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "tuning.n_trials" in message
    assert "tuning.tunable_training_params.learning_rate.low" in message
    assert not (workdir / "tuning_output").exists()


@pytest.mark.parametrize("change, named", [
    # Snakemake reads --configfile keeping the last of a key given twice: the first block is lost.
    (lambda text: text + "  tunable_training_params:\n    warmup_ratio: {type: uniform, low: 0.0, high: 0.2}\n",
     "key 'tunable_training_params' is given twice"),
    (lambda text: text.replace("n_trials: 3", "n_trials: 3.0"), "tuning.n_trials: 3.0 is not of type 'integer'"),
    (lambda text: text + "  seed: 42.0\n", "tuning.seed: 42.0 is not of type 'integer'"),
])
def test_yaml_the_schema_let_through_is_refused_by_a_dry_run(workdir, change, named):
    text = yaml.safe_dump(tiny_config(), sort_keys=False)
    (workdir / "tune.yaml").write_text(change(text))
    result = run_snakemake(workdir, "--dry-run", check=False)
    assert result.returncode != 0 and named in result.stdout + result.stderr
    assert "Building DAG" not in result.stdout + result.stderr  # refused at parse time
    assert not (workdir / "tuning_output").exists()


STORAGE_PLUGIN = ("--shared-fs-usage", "none", "--default-storage-provider", "fs", "--default-storage-prefix")


@pytest.mark.parametrize("config, options, said", [
    # no storage plugin to move the files of jobs that share no file system
    ({}, ("--shared-fs-usage", "none"), "snaketune: --shared-fs-usage without input-output needs a storage plugin"),
    # the study as a journal file, which each job would write in its own copy
    ({}, (*STORAGE_PLUGIN, "remote"), "tuning.storage: a run whose files a storage plugin moves"),
])  # (pausing pruned trials, refused too, needs a database: tests/test_layout.py asks check.file_movement_problems)
def test_a_run_its_jobs_files_cannot_reach_is_refused_before_any_job(workdir, config, options, said):
    """What a storage plugin cannot move (docs/scale-out.md) is refused at parse time, by its path."""
    write_config(workdir, tiny_config(**config))
    run = run_snakemake(workdir, "-n", *options, check=False)
    assert run.returncode != 0 and said in run.stderr, run.stderr
    assert "docs/scale-out.md" in run.stderr
    assert not (workdir / "tuning_output").exists() and not (workdir / "remote").exists()


@pytest.mark.system
def test_a_study_whose_jobs_share_no_file_gets_every_file_it_needs_through_the_storage_plugin(tmp_path, postgres_url):
    """--shared-fs-usage none with Snakemake's fs storage plugin (what the Kubernetes and cloud
    executors imply), the study in PostgreSQL. The run is split over working directories as over
    machines' local disks: the first prepares the model and data (and runs the preflight), the
    second the trials, the third aggregate and report, the fourth grows the study. A job there
    finds nothing but what the storage plugin retrieved, so any file a rule does not declare (the
    prepared model's weights, a trial's checkpoint, its learning curve) is missing; only the main
    process's own files (its config, lock and storage record) stay in output_dir."""
    import shutil

    if shutil.which("rsync") is None:
        if os.environ.get("CI"):
            pytest.fail("rsync is needed here (Snakemake's fs storage plugin copies with it)")
        pytest.skip("rsync is not installed (Snakemake's fs storage plugin copies with it)")
    remote, study = tmp_path / "remote", tmp_path / "study"
    config = tiny_config(storage=postgres_url, n_trials=2, output_dir=str(study))
    storage_options = (*STORAGE_PLUGIN, str(remote))
    runs = []

    def on_machine(name: str, *until: str) -> str:
        machine = tmp_path / name
        machine.mkdir()
        write_reverse_words(machine / "data.jsonl")  # the user's files, where the main process runs
        write_config(machine, config)
        # the last one as docs/scale-out.md tells users to, growing the study
        runs.append(run_snakemake(machine, *until, *storage_options) if until else
                    run_cli(machine, "tune", "-c", "tune.yaml", "tuning.n_trials=3", "--", *storage_options))
        return runs[-1].stdout + runs[-1].stderr

    prepared = on_machine("first", "--until", "preflight")
    assert "localrule prepare_model" in prepared and "localrule prepare_data" in prepared  # beside the user's files
    trained = on_machine("second", "--until", "trial")
    assert "prepare_model" not in trained and "rule preflight" not in trained  # taken from the storage
    assert trained.count("rule trial:") == 2
    aggregated = on_machine("third", "--until", "report")
    assert "rule trial:" not in aggregated and "rule aggregate:" in aggregated and "rule report:" in aggregated
    stored = remote / str(study).lstrip("/")
    assert list(pd.read_csv(stored / "trials_results.csv")["state"]) == ["COMPLETE", "COMPLETE"]
    assert json.loads((stored / "best_model" / "snaketune_trial.json").read_text())["trial_number"] in (0, 1)
    assert (stored / "best_model" / "model.safetensors").stat().st_size > 0
    assert (stored / "report" / "learning_curves.png").exists()
    for slot in (0, 1):
        assert_trial_files(stored / f"trial_{slot}")
    # The main process keeps its own files where it runs; every job's file is in the storage only.
    assert sorted(p.name for p in study.iterdir()) == ["run.lock", "storage.json", "study.json", "tune.merged.yaml"]
    assert f"were stored by the storage plugin under {remote}" in aggregated

    grown = on_machine("fourth")
    assert grown.count(" started in trial_") == 1 and "trial 2 started in trial_2/" in grown  # the new slot only
    assert len(pd.read_csv(stored / "trials_results.csv")) == 3
    assert sorted(t.state for t in load_study(study).trials) == [TrialState.COMPLETE] * 3
    assert_password_kept(postgres_url, tmp_path, *runs)


def test_snakemake_lint_is_clean(tmp_path):
    result = run_snakemake(tmp_path, "--lint", configfile=None)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_embedded_default_dry_run_from_another_directory(tmp_path):
    """No --configfile: the default study (real SmolLM2 GGUF, demo data) is planned as 6+ trials."""
    result = run_snakemake(tmp_path, "-n", "--quiet", "rules", configfile=None)
    counts = dict(line.split()[:2] for line in result.stdout.splitlines()
                  if line.strip() and line.split()[0] in {"prepare_model", "prepare_data", "trial"})
    assert counts["prepare_model"] == "1" and counts["prepare_data"] == "1"
    assert int(counts["trial"]) >= 6


def test_a_dry_run_says_what_the_config_adjusted(workdir):
    config = tiny_config(tuner_sampler="GridSampler")
    del config["tuning"]["n_trials"]
    config["tuning"]["tunable_training_params"] = {
        "max_grad_norm": {"type": "uniform", "low": 0.5, "high": 2.25, "step": 0.5}}
    write_config(workdir, config)
    result = run_snakemake(workdir, "--dry-run")
    assert ("snaketune: notice: tuning.tunable_training_params.max_grad_norm: high 2.25 is not low + a "
            "multiple of step 0.5; Optuna samples up to 2.0") in result.stderr
    assert result.stdout.count("rule trial:") == 4  # the grid 0.5, 1.0, 1.5, 2.0


@pytest.mark.parametrize("where,field", [
    ("fixed_training_params", "max_length"),  # issue input: 16 and 128 tokenized alike (46-token rows)
    ("fixed_training_params", "max_seq_length"),  # Oumi's name for it
    ("model", "model_max_length"),
])
def test_rows_are_cut_to_the_configured_max_length_when_tokenized(workdir, where, field):
    config = tiny_config()
    section = config["model"] if where == "model" else config["tuning"]["fixed_training_params"]
    section[field] = 41  # rows are 44 tokens; the answer starts at token 39
    write_config(workdir, config)
    summary = StudyLayout(workdir / "tuning_output").data_summary
    run_snakemake(workdir, "--cores", "2", str(summary))  # prepare_model and prepare_data only
    prepared = json.loads(summary.read_text())
    assert prepared["train"]["max_tokens"] == 41 and prepared["validation"]["max_tokens"] == 41
    from datasets import load_from_disk

    tokenized = load_from_disk(str(summary.parent / "tokenized"))
    assert max(len(ids) for ids in tokenized["train"]["input_ids"]) == 41


def test_a_metric_without_a_finite_value_is_recorded_as_missing_with_why(single_objective_study):
    # The custom metrics of NAN_METRICS, in the shared single-objective study.
    out = single_objective_study[0] / "tuning_output"
    expected = {"exact": "nan is not a finite number (custom metric nan_metrics.nothing_to_score returned it)",
                "perplexity_bound": "inf is not a finite number (custom metric nan_metrics.unbounded returned it)",
                "ratio": "nan is not a finite number"}
    assert load_study(out).trials[0].user_attrs["missing_metrics"] == expected
    assert json.loads(StudyLayout(out).trial(0).metrics.read_text())["missing_metrics"] == expected
    table = pd.read_csv(StudyLayout(out).results_csv)
    assert {"exact", "perplexity_bound", "ratio"} <= set(table.columns)
    assert table[["exact", "perplexity_bound", "ratio"]].isna().all(axis=None)
    assert table.loc[0, "several"] == 1.0
    assert table.loc[0, "missing_metrics"].startswith("exact: nan is not a finite number")
