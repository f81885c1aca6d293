"""The `snaketune` command: tune (the real workflow, overrides, dry run), status, best, export."""

from __future__ import annotations

import json
import os
import re

import pandas as pd
import pytest
import yaml

from snaketune import cli
from snaketune.layout import StudyLayout
from workflow_helpers import (load_study, make_journal_with_every_state, run_cli, tiny_config,
                              write_config, write_reverse_words)


# ---------------------------------------------------------------------------------------------
# Fast: overrides, profiles, status on a hand-made journal


def test_overrides_are_read_as_yaml_and_create_missing_mappings():
    config = {"tuning": {"n_trials": 3, "fixed_training_params": {"max_steps": 3}}}
    merged = cli.apply_overrides(config, [
        "tuning.n_trials=20", "tuning.fixed_training_params.bf16=true", "tuning.study_name=exp 1",
        "tuning.tunable_peft_params.lora_r={type: categorical, choices: [4, 8]}",
    ])
    assert merged["tuning"]["n_trials"] == 20
    assert merged["tuning"]["fixed_training_params"] == {"max_steps": 3, "bf16": True}
    assert merged["tuning"]["study_name"] == "exp 1"
    assert merged["tuning"]["tunable_peft_params"]["lora_r"]["choices"] == [4, 8]
    assert config["tuning"]["n_trials"] == 3  # the input is not changed


@pytest.mark.parametrize("override", ["tuning.n_trials", "=3", "tuning..n_trials=3", "tuning.n_trials.x=1"])
def test_bad_override_names_itself(override):
    with pytest.raises(cli.CliError, match=re.escape(repr(override))):
        cli.apply_overrides({"tuning": {"n_trials": 3}}, [override])


def test_profiles_map_to_the_repository(tmp_path, monkeypatch):
    assert cli.profile_args(None) == ["--workflow-profile", str(cli.PROFILES_DIR / "default")]
    (tmp_path / "default").mkdir()
    (tmp_path / "slurm").mkdir()
    monkeypatch.setattr(cli, "PROFILES_DIR", tmp_path)
    assert cli.profile_args("slurm") == ["--workflow-profile", str(tmp_path / "slurm")]
    command = cli.snakemake_command(tmp_path / "t.yaml", None, 2, "slurm", True, ["--quiet"])
    assert "--cores" not in command  # a cluster profile decides the jobs
    assert command[-3:] == ["--resources=gpu=2", "--dry-run", "--quiet"]
    assert command[command.index("-s") + 1] == str(cli.SNAKEFILE)
    with pytest.raises(cli.CliError, match="unknown profile 'nope'.*default, slurm"):
        cli.profile_args("nope")


@pytest.mark.parametrize("cores, gpus, profile, dry_run, extra", [
    ("all", 2, None, False, []),                             # --gpus right before the targets
    ("4", 2, "default", True, []),
    (None, 1, "slurm", False, ["--rerun-incomplete"]),
    ("2", None, None, False, ["--keep-going"]),
])
def test_targets_after_the_double_dash_reach_snakemake_as_targets(tmp_path, cores, gpus, profile, dry_run, extra):
    """`snaketune tune ... -- TARGET...` (e.g. one slot's metrics.json): no option of the command
    snaketune builds may take the targets as its own values (`--resources gpu=2 t` would)."""
    from snakemake.cli import parse_args

    targets = ["study/trial_0/metrics.json", str(tmp_path / "study" / "trial_1" / "metrics.json")]
    command = cli.snakemake_command(tmp_path / "t.yaml", cores, gpus, profile, dry_run, [*extra, *targets])
    _, parsed = parse_args(command[command.index("snakemake") + 1:])
    assert parsed.targets == targets
    assert parsed.configfile == [tmp_path / "t.yaml"]
    if gpus is not None:
        assert parsed.resources["gpu"].value == gpus


def test_snakefile_is_found_from_the_package():
    assert cli.SNAKEFILE.is_file()
    assert (cli.SNAKEFILE.parent / "workflow" / "snaketune" / "cli.py").is_file()


def test_path_prints_where_the_workflow_files_are(capsys):
    assert cli.main(["path"]) == 0
    assert capsys.readouterr().out == f"{cli.SNAKEFILE}\n"
    assert cli.main(["path", "profiles"]) == 0
    assert capsys.readouterr().out == f"{cli.PROFILES_DIR}\n"
    assert cli.main(["path", "workflow"]) == 0
    assert capsys.readouterr().out == f"{cli.SNAKEFILE.parent}\n"


def test_status_counts_every_state_and_shows_running_progress(tmp_path, capsys):
    out = tmp_path / "tuning_output"
    make_journal_with_every_state(out)
    config = write_config(tmp_path, {"tuning": {"n_trials": 6, "evaluation_metrics": ["eval_loss"],
                                                "fixed_training_params": {"max_steps": 10}}})
    assert cli.main(["status", str(out), "-c", str(config)]) == 0
    text = capsys.readouterr().out
    assert "5 of 6 trial(s) started" in text
    header, _, counts = text.splitlines()[1:4]
    assert header.split() == ["done", "running", "failed", "pruned"]
    assert counts.split() == ["2", "1", "1", "1"]
    assert "best so far: eval_loss=0.9 (trial 1 in trial_1/, learning_rate=" in text
    running = text.split("running\n", 1)[1].splitlines()
    assert running[0].split() == ["trial", "dir", "step", "loss", "elapsed", "eta"]
    row = running[2].split()
    assert row[:4] == ["4", "trial_4/", "4/10", "0.75"]
    assert row[5] != "-"  # an ETA


@pytest.mark.parametrize(("tuning", "slots"), [
    ({"budget": {"trained_steps": 80}}, 8),  # 80 steps pay for 8 trials of max_steps 10
    ({"budget": {"trained_steps": 80}, "pruner": "successive_halving", "report_every_steps": 5}, 16),
    ({}, 10),  # Oumi's default n_trials
    ({"n_trials": 7, "budget": {"trained_steps": 80}}, 7),  # written: the cap
])
def test_status_counts_the_slots_the_run_created_when_n_trials_is_not_written(tmp_path, capsys, tuning, slots):
    """`N of M trial(s)`: M as the run resolved n_trials (a budget's slots, the default), which
    the YAML alone does not say; status is given no config here, as a user types it."""
    from snaketune.validate import load_tune_config
    from snaketune.study import open_study

    config = tiny_config(**{"fixed_training_params": {"max_steps": 10}, **tuning})
    if "n_trials" not in tuning:
        del config["tuning"]["n_trials"]
    write_reverse_words(tmp_path / "data.jsonl")
    resolved = load_tune_config(config, tmp_path, validated=True).tuning  # valid: no TRL checks
    open_study(resolved).ask()  # as a trial job of the run opens it and asks
    assert cli.main(["status", resolved.output_dir]) == 0
    assert f"1 of {slots} trial(s) started" in capsys.readouterr().out


def test_status_without_a_journal_says_so(tmp_path, capsys):
    assert cli.main(["status", str(tmp_path)]) == 1
    assert "no journal at" in capsys.readouterr().err


def test_status_of_a_study_still_preparing_says_which_step(tmp_path, capsys):
    from snaketune.locks import hold_study

    layout = StudyLayout(tmp_path / "tuning_output")
    layout.output_dir.mkdir()
    layout.merged_config.write_text("tuning: {}\n")  # what `snaketune tune` writes first
    assert cli.main(["status", str(layout.output_dir)]) == 0
    stopped = capsys.readouterr().out
    assert "no trial yet, and no run is on it: the last run stopped at preparing the model" in stopped
    assert "snaketune tune -c" in stopped
    from snaketune.locks import hold_launch

    launch = hold_launch(layout)  # `snaketune tune` started it; Snakemake has no run lock yet
    try:
        assert cli.main(["status", str(layout.output_dir)]) == 0
        assert "no trial yet; preparing the model" in capsys.readouterr().out
    finally:
        os.close(launch)
    fd = hold_study(layout)  # a run on it, past the model, writing the data
    try:
        layout.model_source.parent.mkdir()
        layout.model_source.write_text("{}")
        assert cli.main(["status", str(layout.output_dir)]) == 0
        assert "no trial yet; preparing the data (reading and tokenizing" in capsys.readouterr().out
        layout.data_summary.parent.mkdir(parents=True, exist_ok=True)
        layout.data_summary.write_text("{}")
        assert cli.main(["status", str(layout.output_dir)]) == 0
        assert "the preflight (building and stepping" in capsys.readouterr().out
    finally:
        os.close(fd)


def test_a_dry_run_summary_tells_each_slots_fate(tmp_path):
    from snaketune.summary import dry_run_summary

    layout = StudyLayout(tmp_path / "tuning_output")
    make_journal_with_every_state(layout.output_dir)  # slots 0-4: complete, complete, fail, pruned, running
    for slot in (0, 1, 3):
        layout.trial(slot).metrics.write_text("{}")
    checkpoint = layout.trial(4).checkpoint(2)
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    text = dry_run_summary(layout, 7, "snaketune")
    assert text.splitlines()[0].endswith(": 3 finished (kept), 1 to resume from their last checkpoint, "
                                         "1 to run again with their parameters, 2 new")
    assert "to resume from their last checkpoint: trial_4 (checkpoint-2)" in text
    assert "to run again with their parameters: trial_2 (trial 2, FAIL)" in text


@pytest.mark.workflow
def test_tune_refuses_a_missing_config(tmp_path):
    result = run_cli(tmp_path, "tune", "-c", "nope.yaml", check=False)
    assert result.returncode == 2 and "no such config file: nope.yaml" in result.stderr


# ---------------------------------------------------------------------------------------------
# Answers before Snakemake: the config is checked in-process, and a refused one writes nothing


@pytest.mark.workflow
def test_a_refused_config_is_answered_before_snakemake_starts_and_writes_nothing(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    config = tiny_config()
    config["tunning"] = config.pop("tuning")  # a top-level typo
    write_config(tmp_path, config)
    result = run_cli(tmp_path, "tune", "-c", "tune.yaml", check=False)
    assert result.returncode == 1
    assert "tunning: unknown key (did you mean 'tuning'?)" in result.stderr
    assert "snaketune: snakemake" not in result.stderr  # refused before Snakemake was started
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "tuning_output").exists()  # no output_dir, run.lock or tune.merged.yaml


@pytest.mark.workflow
@pytest.mark.parametrize("text, where, what", [
    ("model:\n\tmodel_name: x\n", "tune.yaml:2:1:", "not tabs"),
    ("model:\n  model_name: [x\n", "tune.yaml:3:1:", "expected ',' or ']'"),
    ("model:\n  a: 1\n b: 2\n", "tune.yaml:3:2:", "line 1, column 1"),
    ("tuning:\n  n_trials: 3\n  study_name: 'x\n", "tune.yaml:", "quoted scalar"),
])
def test_yaml_that_does_not_parse_is_named_by_file_line_and_column(tmp_path, text, where, what):
    (tmp_path / "tune.yaml").write_text(text)
    for command in ("check", "tune"):
        result = run_cli(tmp_path, command, "-c", "tune.yaml", check=False)
        assert result.returncode == 1, result.stderr
        assert where in result.stderr and what in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "tuning_output").exists()


@pytest.mark.workflow
@pytest.mark.parametrize("mistake", ["typo", "range", "columns", "unknown_name"])
def test_a_mistake_no_ml_library_judges_is_answered_without_importing_one(tmp_path, mistake):
    """The seconds of an answer are the imports: a schema, search-space, data-column or unknown-name
    mistake is refused before torch, TRL, PEFT or transformers is imported (bench/config_answer.py
    times it). Unknown names are judged from SFTConfig's and LoraConfig's fields kept per version."""
    write_reverse_words(tmp_path / "data.jsonl")
    (tmp_path / "qa.csv").write_text("question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(20)))
    config = tiny_config("qa.csv" if mistake == "columns" else "data.jsonl")
    if mistake == "typo":
        config["tunning"] = config.pop("tuning")
    elif mistake == "range":
        config["tuning"]["tunable_training_params"]["learning_rate"].update(low=1e-2, high=1e-4)
    elif mistake == "unknown_name":
        config["tuning"]["tunable_training_params"]["learning_rat"] = (
            config["tuning"]["tunable_training_params"].pop("learning_rate"))
    write_config(tmp_path, config)
    run_cli(tmp_path, "check", "-c", "tune.yaml", check=False)  # the first run fills the fields cache
    probe = ("import sys; from snaketune import cli; status = cli.main(['check', '-c', 'tune.yaml']); "
             "print(status, sorted(m for m in ('torch', 'trl', 'peft', 'transformers') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(cli.SNAKEFILE.parent / "workflow")}
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.stdout.split("\n")[-2] == "1 []", result.stdout + result.stderr
    assert "Invalid tune config" in result.stderr


@pytest.mark.workflow
def test_a_config_accepted_before_is_checked_again_without_importing_the_libraries(tmp_path):
    """A re-run (how failed trials are re-run) checks the config again: the answers TRL, PEFT and
    transformers gave to the same arguments and tokenizer files are kept in the user's cache, so
    they are not imported to ask again. A changed value is asked; a refusal is never kept."""
    import subprocess
    import sys

    write_reverse_words(tmp_path / "data.jsonl")
    config = tiny_config("data.jsonl")
    env = {**os.environ, "PYTHONPATH": str(cli.SNAKEFILE.parent / "workflow"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    probe = ("import sys; from snaketune import cli; status = cli.main(['check', '-c', 'tune.yaml']); "
             "print(status, sorted(m for m in ('torch', 'trl', 'peft', 'transformers') if m in sys.modules))")

    def check(**fixed) -> str:
        config["tuning"]["fixed_training_params"].update(fixed)
        write_config(tmp_path, config)
        result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
        return result.stdout.split("\n")[-2]

    asked = "0 ['peft', 'torch', 'transformers', 'trl']"
    assert check() == asked
    assert check() == "0 []"
    assert check(weight_decay=0.1) == asked  # another value: asked again
    assert check() == "0 []"
    refused = "1 ['peft', 'torch', 'transformers', 'trl']"
    assert check(lr_scheduler_type="no_such_schedule") == refused
    assert check() == refused  # a refusal is asked every time


@pytest.mark.workflow
def test_check_accepts_a_config_and_writes_nothing(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    write_config(tmp_path, tiny_config(n_trials=5))
    result = run_cli(tmp_path, "check", "-c", "tune.yaml", "tuning.study_name=checked")
    assert "tune.yaml is accepted: study 'checked'" in result.stdout
    assert "5 trial(s) over 1 parameter(s) (learning_rate)" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "tune.yaml"]
    refused = run_cli(tmp_path, "check", "-c", "tune.yaml", "tuning.n_trials=0", check=False)
    assert refused.returncode == 1 and "tuning.n_trials" in refused.stderr


@pytest.mark.workflow
def test_a_dry_run_lists_the_overridden_budget_writes_nothing_and_checks_once(tmp_path):
    """A dry run plans the overridden n_trials with the default profile and writes nothing; its
    notices are printed once: by `snaketune tune`'s check, not again by Snakemake's parse (which
    trusts the token for exactly the config text it is given)."""
    write_reverse_words(tmp_path / "data.jsonl")
    config = tiny_config()
    config["data"]["test"] = {"datasets": [{"dataset_name": "data.jsonl", "split": "train"}]}
    write_config(tmp_path, config)
    result = run_cli(tmp_path, "tune", "-c", "tune.yaml", "--dry-run", "--cores", "1", "tuning.n_trials=5")
    assert re.search(r"^trial\s+5$", result.stdout, re.M), result.stdout
    assert "--workflow-profile" in result.stderr  # the default profile
    assert not (tmp_path / "tuning_output").exists()
    assert result.stderr.count("notice: data.test: unused") == 1, result.stderr


# ---------------------------------------------------------------------------------------------
# One tiny study run through the CLI, shared by the tests below


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli_study")
    write_reverse_words(workdir / "data.jsonl")
    write_config(workdir, tiny_config(n_trials=4))
    result = run_cli(workdir, "tune", "-c", "tune.yaml", "--cores", "2", "--gpus", "2", "tuning.n_trials=2",
                     "tuning.study_name=cli")
    return workdir, result


@pytest.mark.workflow
def test_tune_runs_the_study_with_the_override(study_dir):
    workdir, result = study_dir
    out = workdir / "tuning_output"
    assert len(pd.read_csv(StudyLayout(out).results_csv)) == 2  # tuning.n_trials=2 beat the file's 4
    assert len(load_study(out, "cli").trials) == 2
    merged = yaml.safe_load((StudyLayout(out).merged_config).read_text())
    assert merged["tuning"]["n_trials"] == 2
    assert (out / "report" / "optimization_history.png").stat().st_size > 0
    assert "snaketune: study 'cli'" in result.stdout + result.stderr


@pytest.mark.workflow
def test_the_console_shows_each_trial_start_and_end_in_short_lines(study_dir):
    """What a run shows: a line when each trial starts (its folder and parameters) and when it
    ends (state, time, objective), in lines a terminal shows whole; Snakemake's job blocks quiet."""
    workdir, result = study_dir
    console = result.stdout + result.stderr
    study = load_study(workdir / "tuning_output", "cli")
    assert len(study.trials) == 2
    for trial in study.trials:
        folder = f"trial_{trial.user_attrs['slot']}/"
        started = f"snaketune: trial {trial.number} started in {folder}: learning_rate={trial.params['learning_rate']:.4g}"
        ended = re.search(rf"^snaketune: trial {trial.number} COMPLETE in \d+s \({folder}\): "
                          rf"eval_loss={trial.value:.4g}(, best so far)?$", console, re.M)
        assert started in console.splitlines(), console
        assert ended, console
        assert console.index(started) < ended.start()
    too_long = [line for line in console.splitlines() if len(line) > 300]
    assert not too_long, too_long
    assert "localrule trial:" not in console and "    resources: " not in console  # quiet: rules
    # The summary prints the best trial once, beside its folder, and says where the report is.
    assert console.count(f"best trial {study.best_trial.number} (trial_{study.best_trial.user_attrs['slot']}/)") == 1
    assert "`snaketune report " in console


@pytest.mark.workflow
def test_a_refused_rerun_leaves_the_config_the_study_ran_with(study_dir):
    """A change the study cannot take (max_steps, once trials finished) is refused before
    anything is written: tune.merged.yaml and `export --as-config` still say what the study ran."""
    workdir, _ = study_dir
    merged = StudyLayout(workdir / "tuning_output").merged_config
    before = merged.read_text()
    refused = run_cli(workdir, "tune", "-c", "tune.yaml", "tuning.n_trials=2", "tuning.study_name=cli",
                      "tuning.fixed_training_params.max_steps=20", check=False)
    assert refused.returncode == 1 and "max_steps" in refused.stderr, refused.stderr
    assert "snaketune: snakemake" not in refused.stderr
    assert merged.read_text() == before
    exported = yaml.safe_load(run_cli(workdir, "export", "tuning_output", "--as-config").stdout)
    assert exported["training"]["max_steps"] == 3


@pytest.mark.workflow
def test_a_dry_run_of_a_grown_study_ends_with_what_its_slots_would_do(study_dir):
    workdir, _ = study_dir
    result = run_cli(workdir, "tune", "-c", "tune.yaml", "--dry-run", "tuning.n_trials=5", "tuning.study_name=cli")
    summary = result.stdout.rstrip().splitlines()[-1]
    assert summary == "snaketune: of 5 trial slot(s) in tuning_output: 2 finished (kept), 3 new", result.stdout


@pytest.mark.workflow
def test_status_of_a_finished_study(study_dir):
    workdir, _ = study_dir
    text = run_cli(workdir, "status", "tuning_output").stdout
    assert "2 of 2 trial(s) started" in text
    assert text.splitlines()[3].split() == ["2", "0", "0", "0"]
    assert "best so far: eval_loss=" in text


@pytest.mark.workflow
def test_best_prints_the_best_trial_and_model(study_dir):
    workdir, _ = study_dir
    best = json.loads(StudyLayout(workdir / "tuning_output").best_trial.read_text())
    text = run_cli(workdir, "best", "tuning_output").stdout
    assert f"best trial {best['number']}: eval_loss={best['values']['eval_loss']:.4g}" in text
    assert f"learning_rate={best['params']['learning_rate']:.4g}" in text
    assert f"best model: {best['best_model']}" in text


@pytest.mark.workflow
def test_export_as_config_fills_in_the_best_parameters(study_dir):
    workdir, _ = study_dir
    best = json.loads(StudyLayout(workdir / "tuning_output").best_trial.read_text())
    run_cli(workdir, "export", "tuning_output", "--as-config", "-o", "best.yaml")  # YAML: the default
    config = yaml.safe_load((workdir / "best.yaml").read_text())
    assert config["training"]["learning_rate"] == pytest.approx(best["params"]["learning_rate"])
    assert config["training"]["max_steps"] == 3  # fixed parameters kept
    assert config["model"]["model_name"] == tiny_config()["model"]["model_name"]
    assert "tuning" not in config and set(config) >= {"model", "data", "training"}


@pytest.mark.workflow
@pytest.mark.parametrize("fmt", ["csv", "json", "yaml"])
def test_export_results(study_dir, fmt):
    workdir, _ = study_dir
    text = run_cli(workdir, "export", "tuning_output", "--format", fmt).stdout
    table = pd.read_csv(StudyLayout(workdir / "tuning_output").results_csv)
    if fmt == "csv":
        assert text == table.to_csv(index=False)
        return
    records = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    assert [r["number"] for r in records] == list(table["number"])
    assert [r["eval_loss"] for r in records] == pytest.approx(list(table["eval_loss"]))


# -- a user's file the command cannot use: one line, exit 1, no traceback -------------------------

def test_an_unwritable_output_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "tuning_output"
    make_journal_with_every_state(out)
    capsys.readouterr()  # Optuna's log of the journal's making
    assert cli.main(["export", str(out), "-o", str(tmp_path / "missing" / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("snaketune: ") and "missing/x.csv" in err and "Traceback" not in err


def test_a_hand_edited_best_trial_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "tuning_output"
    make_journal_with_every_state(out)
    StudyLayout(out).best_trial.write_text('{"x": ')
    capsys.readouterr()  # Optuna's log of the journal's making
    assert cli.main(["best", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("snaketune: ") and "Traceback" not in err


def test_status_shows_a_running_trials_nan_loss(tmp_path, capsys):
    out = tmp_path / "tuning_output"
    make_journal_with_every_state(out)
    with open(StudyLayout(out).trial(4).loss_curve, "a") as f:
        f.write('\n{"step": 5, "loss": NaN}\n')  # after the line cut short, a diverging step
    assert cli.main(["status", str(out)]) == 0
    row = capsys.readouterr().out.split("running\n", 1)[1].splitlines()[2].split()
    assert row[2:4] == ["5", "nan"]


@pytest.mark.parametrize("argv,expected", [
    (["--tuning.n_trials", "5"], ["tuning.n_trials=5"]),  # oumi tune's override syntax
    (["--model.model_name=x", "--cores", "2"], ["model.model_name=x", "--cores", "2"]),
    (["tuning.seed=3", "--tuning.study_name", "s", "-n"], ["tuning.seed=3", "tuning.study_name=s", "-n"]),
])
def test_oumis_dotted_options_are_overrides(argv, expected):
    assert cli.dotted_options(argv) == expected


@pytest.mark.workflow
def test_oumis_override_syntax_sets_the_config_of_a_dry_run(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    write_config(tmp_path, tiny_config(n_trials=3))
    result = run_cli(tmp_path, "tune", "-c", "tune.yaml", "--dry-run", "--cores", "1", "--tuning.n_trials", "5")
    assert re.search(r"^trial\s+5$", result.stdout, re.M), result.stdout
