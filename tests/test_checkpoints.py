"""A whole checkpoint (layout.checkpoint_problem) and where a trial resumes (train.resume_point):
a checkpoint whose weights or optimizer state a lost node left cut short is set aside, kept, and the
trial resumes from the newest whole one before it, or from step 0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from safetensors.numpy import save_file

from snaketune.layout import StudyLayout, TrialFiles, checkpoint_problem, is_complete_checkpoint
from snaketune.train import resume_point


def save_checkpoint(folder: Path, step: int, adapter: bool = False) -> Path:
    """A checkpoint as Trainer saves one, in its files' own formats: the weights (safetensors),
    the optimizer, scheduler and RNG states (torch.save), trainer_state.json last."""
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    weights = {"embed.weight": np.random.default_rng(step).random((64, 32), dtype=np.float32),
               "norm.weight": np.ones(32, dtype=np.float32)}
    save_file(weights, str(checkpoint / ("adapter_model.safetensors" if adapter else "model.safetensors")))
    torch.save({"state": {0: {"exp_avg": torch.zeros(64, 32)}}, "param_groups": [{"lr": 1e-3}]},
               checkpoint / "optimizer.pt")
    torch.save({"last_epoch": step}, checkpoint / "scheduler.pt")
    torch.save({"python": [1, 2, 3]}, checkpoint / "rng_state.pth")
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return checkpoint


def cut(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.5, 0.999])  # before, in and after the header
def test_weights_cut_short_anywhere_are_found_and_named(tmp_path, fraction):
    checkpoint = save_checkpoint(tmp_path, 10)
    weights = checkpoint / "model.safetensors"
    size = weights.stat().st_size
    assert checkpoint_problem(checkpoint) is None
    cut(weights, min(size - 1, int(size * fraction)))
    problem = checkpoint_problem(checkpoint)
    assert problem.startswith("its model.safetensors is cut short or damaged (safetensors: ")
    assert not is_complete_checkpoint(checkpoint)


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_an_optimizer_scheduler_or_rng_state_cut_short_is_found_and_named(tmp_path, name, fraction):
    checkpoint = save_checkpoint(tmp_path, 10)
    cut(checkpoint / name, int((checkpoint / name).stat().st_size * fraction))
    assert checkpoint_problem(checkpoint).startswith(f"its {name} is cut short or damaged (its zip directory: ")


def test_a_save_a_kill_cut_short_and_a_missing_shard_are_named(tmp_path):
    unfinished = save_checkpoint(tmp_path, 5)
    (unfinished / "trainer_state.json").unlink()
    assert "has no trainer_state.json" in checkpoint_problem(unfinished)
    sharded = save_checkpoint(tmp_path, 10)
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    assert checkpoint_problem(sharded) == "its weights shard(s) model-00002-of-00002.safetensors are missing"
    adapter = save_checkpoint(tmp_path, 15, adapter=True)
    assert checkpoint_problem(adapter) is None


def test_last_checkpoint_is_the_newest_whole_one(tmp_path):
    files = TrialFiles(tmp_path / "trial_0")
    for step in (5, 10, 15):
        save_checkpoint(files.dir, step)
    cut(files.checkpoint(15) / "model.safetensors", 100)
    assert files.last_checkpoint() == str(files.checkpoint(10))
    assert files.checkpoints() == [files.checkpoint(15), files.checkpoint(10), files.checkpoint(5)]


def _trial(**user_attrs):
    trial = optuna.create_study().ask()
    for key, value in user_attrs.items():
        trial.set_user_attr(key, value)
    return trial


def test_a_resume_sets_the_damaged_checkpoints_aside_and_takes_the_newest_whole_one(tmp_path, capsys):
    layout = StudyLayout(tmp_path)
    files = layout.trial(0)
    for step in (5, 10, 15, 20):
        save_checkpoint(files.dir, step)
    (files.checkpoint(20) / "trainer_state.json").unlink()  # a kill during the save
    weights = files.checkpoint(15) / "model.safetensors"
    cut(weights, weights.stat().st_size // 2)  # a node lost: trainer_state.json made it to disk
    damaged = weights.read_bytes()
    params = {"learning_rate": 0.01}
    files.params.write_text(json.dumps({"params": params}))
    trial = _trial()

    assert resume_point(trial, files.dir, params, layout) == str(files.checkpoint(10))
    assert sorted(p.name for p in files.dir.iterdir()) == [
        "checkpoint-10", "checkpoint-5", "damaged-checkpoint-15", "damaged-checkpoint-20", "params.json"]
    assert (files.dir / "damaged-checkpoint-15" / "model.safetensors").read_bytes() == damaged  # kept as it was
    aside = trial.user_attrs["set_aside_checkpoints"]
    assert [(a["checkpoint"], a["moved_to"]) for a in aside] == [
        ("trial_0/checkpoint-20", "trial_0/damaged-checkpoint-20"), ("trial_0/checkpoint-15", "trial_0/damaged-checkpoint-15")]
    assert aside[1]["problem"].startswith("its model.safetensors is cut short")
    said = capsys.readouterr().err
    assert (f"snaketune: trial {trial.number}: trial_0/checkpoint-15 cannot be resumed: its model.safetensors is cut "
            "short or damaged") in said and "set aside as trial_0/damaged-checkpoint-15 (kept" in said

    # Damaged again at the same step later: the first one set aside is not overwritten.
    save_checkpoint(files.dir, 15)
    cut(files.checkpoint(15) / "optimizer.pt", 10)
    assert resume_point(trial, files.dir, params, layout) == str(files.checkpoint(10))
    assert (files.dir / "damaged-checkpoint-15-2" / "optimizer.pt").stat().st_size == 10


def test_a_resume_with_other_parameters_or_no_whole_checkpoint_starts_at_step_0(tmp_path):
    layout = StudyLayout(tmp_path)
    files = layout.trial(0)
    save_checkpoint(files.dir, 5)
    files.params.write_text(json.dumps({"params": {"learning_rate": 0.01}}))
    assert resume_point(_trial(), files.dir, {"learning_rate": 0.02}, layout) is None
    assert files.checkpoint(5).is_dir()  # not this attempt's to judge: left as it is
    cut(files.checkpoint(5) / "model.safetensors", 8)
    assert resume_point(_trial(), files.dir, {"learning_rate": 0.01}, layout) is None
    assert (files.dir / "damaged-checkpoint-5").is_dir()


def test_a_resumed_pause_falls_back_to_the_paused_trials_newest_whole_checkpoint_before_it(tmp_path):
    layout = StudyLayout(tmp_path)
    paused = layout.trial(1)
    for step in (4, 8, 12):
        save_checkpoint(paused.dir, step)
    cut(paused.checkpoint(8) / "model.safetensors", 200)
    trial = _trial(paused_checkpoint="trial_1/checkpoint-8", promoted_from=1)
    # checkpoint-12 is after the step it paused at: never a starting point for this trial
    assert resume_point(trial, layout.trial(2).dir, {"learning_rate": 0.01}, layout) == str(paused.checkpoint(4))
    assert (paused.dir / "damaged-checkpoint-8").is_dir() and paused.checkpoint(12).is_dir()
    cut(paused.checkpoint(4) / "model.safetensors", 0)
    assert resume_point(_trial(paused_checkpoint="trial_1/checkpoint-8"), layout.trial(2).dir, {}, layout) is None
