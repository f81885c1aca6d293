"""One trial: claim a slot in the journal, train with TRL's SFTTrainer, evaluate, tell the result.

Files a trial writes under `<output_dir>/trial_<i>/` (named in snaketune.layout.TrialFiles):
`params.json` first, `checkpoint-*/` while training (the last one is always saved), `logs/` (the
train log and the loss curve as data), and `metrics.json` last: Snakemake tracks that file, so it
only exists for a finished trial.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import signal
import sys
import time
from pathlib import Path

from snaketune import data as datasets_
from snaketune import generation, gpu, lm_harness, recovery, scheduler, scoring, strategy
from snaketune import metrics as custom_metrics
from snaketune import model as models
from snaketune import space as search_space
from snaketune import study as studies
from snaketune.config import TuningConfig, TuningParams
from snaketune.database import beating
from snaketune.errors import describe_error
from snaketune.layout import StudyLayout, TrialFiles, checkpoint_problem, checkpoint_step, write_json
from snaketune.names import OUMI_TRAINING_DEFAULTS, PREPARED_DATA_FIELDS, oumi_value
from snaketune.storage import storage_of, trial_id_of

LOSS_CURVE_FIELDS = ("step", "epoch", "loss", "grad_norm", "learning_rate", "eval_loss")


class NothingLeftToTrain(Exception):
    """The checkpoint a trial resumes from is at the Trainer's last step (`global_step ==
    max_steps`): its model is the trial's final one (train_and_evaluate's RefuseTrainingPastTheEnd)."""


def run_trial(tune: TuningConfig, slot: int, trial_dir: str | Path, model_source: dict, data_dir: str | Path,
              threads: int = 1, user_attrs: dict | None = None, before_training=None,
              defines_study: bool = True) -> dict:
    """Run slot `slot` of the study; returns what metrics.json holds.

    `user_attrs` are recorded on the trial (its devices and SLURM job: snaketune.gpu).
    `defines_study=False`: the study's definition (`TuningConfig.definition`, which hashes the
    local data files) is left as the run recorded it, for a job that may not see those files (its
    files moved by a storage plugin).
    `before_training(params, resume_from)` is called once the parameters are known (data-parallel
    rank 0 sends them to the other ranks: snaketune.distributed).
    """
    trial_dir = Path(trial_dir)
    files = TrialFiles(trial_dir)
    files.logs.mkdir(parents=True, exist_ok=True)
    tuning = tune.tuning
    study = studies.open_study(tuning, slot, definition=tune.definition if defines_study else None)
    repeated = studies.repeated_failure(study, single_point=not tuning.space)
    if repeated:
        # No trial is asked for: nothing is told, and the slot runs once the cause is fixed.
        raise studies.RepeatedFailure(f"trial_{slot} not started: {repeated}")
    try:
        trial, finished = scheduler.claim_trial(study, slot, tuning)
    except scheduler.SlotSkipped as skipped:  # not a failure: the job succeeds, the CSV says so
        studies.skip_slot(study, slot, str(skipped))
        result = {"trial_number": None, "slot": slot, "state": "SKIPPED", "reason": str(skipped)}
        write_json(files.metrics, result)
        return result
    if finished is not None:  # done in an earlier run whose metrics.json was removed: no retraining
        result = trial_summary(finished, tuning.metrics, trial_dir)
        write_json(files.metrics, result)
        return result

    # torch only now: a slot skipped, or a trial finished before, is decided in a second (no 2 s import).
    import torch

    torch.set_num_threads(max(1, threads))
    # Relative to output_dir: a moved or copied study still finds it (study.trial_dir).
    trial.set_user_attr("trial_dir", trial_dir.name)
    for key, value in (user_attrs or {}).items():
        trial.set_user_attr(key, value)
    # SIGTERM (Snakemake stopping, a scheduler's kill) becomes an exception so the trial is told FAIL.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # A database storage keeps the trial's heartbeat (database.beating): a trial whose process
    # stops beating is failed by the next slot that starts (scheduler.claim_trial), not left RUNNING.
    with beating(storage_of(study), trial_id_of(study, trial.number)):
        started = time.time()
        try:
            params = search_space.suggest(trial, tuning.space)
            resume_from = resume_point(trial, trial_dir, params, tuning.layout)
            if resume_from is None and trial.user_attrs.get("paused_checkpoint"):
                # Deleted or damaged since the slot claimed it: the same parameters from step 0, counted whole.
                print(f"snaketune: trial {trial.number}: the checkpoint of paused trial "
                      f"{trial.user_attrs['promoted_from']} ({trial.user_attrs['paused_checkpoint']}) is gone, "
                      "and no whole one before it is left; training its parameters from step 0", file=sys.stderr)
                trial.set_user_attr("paused_checkpoint", None)
            # With the distributions, enough to make this attempt's trial again should the journal be
            # lost before it is told (recovery.folder_trials).
            write_json(files.params, {"trial_number": trial.number, "slot": slot,
                                      "attempt": trial.user_attrs.get("attempt", 1), "params": params,
                                      "distributions": recovery.parameter_record(trial)})
            if resume_from:
                trial.set_user_attr("resumed_from", resume_from)
            if before_training is not None:
                before_training(params, resume_from)
            produced, stopped = train_and_evaluate(tune, params, trial_dir, model_source, data_dir,
                                                   trial=trial, resume_from=resume_from)
            values = None if stopped else custom_metrics.objective_values(produced, tuning.metrics)
        except BaseException as e:
            reason = "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else describe_error(e, trial_dir)
            try:
                trial.set_user_attr("fail_reason", reason[:2000])
                study.tell(trial, state=studies.TrialState.FAIL)
            except Exception as journal_error:  # e.g. the journal's disk is the full one
                print(f"snaketune: trial {trial.number} failed ({reason[:500]}), and the journal could not "
                      f"record it ({describe_error(journal_error)}); it stays RUNNING there, and the next "
                      "run re-runs it", file=sys.stderr)
            raise
        trial.set_user_attr("metrics", {k: v for k, v in produced.items() if _is_finite_number(v)})
        missing = missing_metrics(produced, tuning.custom_eval_metrics)
        if missing:  # the journal has no NaN: the metric is recorded as missing, with why
            trial.set_user_attr("missing_metrics", missing)
        trial.set_user_attr("wall_seconds", round(time.time() - started, 3))
        if stopped:
            # Pruned or diverged: a result, not a crash (the same parameters would stop the same way),
            # so the job succeeds and the slot is not re-run.
            trial.set_user_attr("fail_reason" if stopped.startswith("diverged") else "pruned_reason", stopped)
            pruned = stopped.startswith("pruned") or tuning.on_divergence == "prune"
            if pruned:  # Optuna's samplers read a pruned trial's constraints too
                studies.record_constraints(trial, tuning.constraints, trial.user_attrs["metrics"], completed=False)
            frozen = study.tell(trial, state=studies.TrialState.PRUNED if pruned else studies.TrialState.FAIL)
        else:
            studies.record_constraints(trial, tuning.constraints, trial.user_attrs["metrics"], completed=True)
            frozen = study.tell(trial, values)
    result = trial_summary(frozen, tuning.metrics, trial_dir)
    write_json(files.metrics, result)
    return result


def resume_point(trial, trial_dir: Path, params: dict, layout: StudyLayout) -> str | None:
    """The checkpoint this attempt of `trial` resumes from: the slot's newest whole one, if an
    earlier attempt with these same parameters left one; else, for a paused trial the slot resumes
    (`paused_checkpoint`), the newest whole one the paused trial saved up to where it stopped; else
    None (step 0). Each newer checkpoint passed over because it cannot be resumed
    (layout.checkpoint_problem) is set aside, kept (`TrialFiles.set_aside`), and said in the trial
    log and in the trial's `set_aside_checkpoints` (the end-of-run summary lists them)."""
    files = TrialFiles(trial_dir)
    if files.params.exists() and json.loads(files.params.read_text()).get("params") == params:
        own = _newest_whole(trial, files.checkpoints(), layout)
        if own:
            return own
    relative = trial.user_attrs.get("paused_checkpoint")
    if not relative:
        return None
    paused = layout.output_dir / relative
    before = [c for c in TrialFiles(paused.parent).checkpoints() if checkpoint_step(c) <= checkpoint_step(paused)]
    return _newest_whole(trial, before, layout)


def _newest_whole(trial, checkpoints: list[Path], layout: StudyLayout) -> str | None:
    """The first whole checkpoint of `checkpoints` (newest first), setting aside each one before it."""
    for checkpoint in checkpoints:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        moved = TrialFiles(checkpoint.parent).set_aside(checkpoint)
        where = lambda path: str(path.relative_to(layout.output_dir))  # noqa: E731
        print(f"snaketune: trial {trial.number}: {where(checkpoint)} cannot be resumed: {problem}; "
              f"set aside as {where(moved)} (kept: delete it once you no longer need it)", file=sys.stderr, flush=True)
        trial.set_user_attr("set_aside_checkpoints", [*trial.user_attrs.get("set_aside_checkpoints", []),
                                                      {"checkpoint": where(checkpoint), "moved_to": where(moved),
                                                       "problem": problem}])
    return None


def missing_metrics(produced: dict, custom: list) -> dict[str, str]:
    """{metric: why it has no value} for each metric produced as NaN or infinite (a custom metric
    that found nothing to score, an evaluation on no tokens)."""
    by = {entry.name: entry.function for entry in custom}
    return {name: f"{value} is not a finite number"
                  + (f" (custom metric {by[name]} returned it)" if name in by else "")
            for name, value in produced.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value)}


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_summary(frozen, metrics: list[str], trial_dir: Path) -> dict:
    return {
        "trial_number": frozen.number,
        "state": frozen.state.name,
        "values": dict(zip(metrics, frozen.values or [])),
        "metrics": frozen.user_attrs.get("metrics", {}),
        "missing_metrics": frozen.user_attrs.get("missing_metrics", {}),
        "params": frozen.params,
        "trial_dir": str(trial_dir),
        "last_checkpoint": TrialFiles(trial_dir).last_checkpoint(),
        "trial": recovery.trial_record(frozen),  # the trial's whole journal record (recovery)
    }


def build_training_args(tuning: TuningParams, max_length: int, tuned: dict, trial_dir: Path,
                        overrides: dict | None = None):
    """SFTConfig from fixed + sampled training parameters, with what snaketune must set itself
    (`max_length`: `TuningConfig.max_length`, which the data was cut to). `overrides` win over
    everything (the preflight's one step: snaketune.preflight.STEP_OVERRIDES)."""
    import torch
    from trl import SFTConfig

    tuned = {k: oumi_value(k, v) for k, v in tuned.items()}  # a sampled choice as Oumi translates it
    # TRL reads the dataset-preparation fields only while it prepares rows, which prepare_data has
    # done (names.PREPARED_DATA_FIELDS: only values asking for what it does are accepted). Passed
    # on, TRL would check them against prepared rows: assistant_only_loss=True refuses them as
    # "not conversational", though every assistant turn already carries the loss.
    user = {k: v for k, v in {**tuning.training_args, **tuned}.items()
            if k != "trainer_type" and k not in PREPARED_DATA_FIELDS}
    defaults = {
        **OUMI_TRAINING_DEFAULTS,
        "seed": tuning.seed,
        "max_length": max_length,
        "report_to": "none",
        "save_total_limit": 1,  # the last checkpoint is all a resume or the best model needs
        "logging_steps": 1,
        "logging_nan_inf_filter": False,  # a NaN loss must show as NaN to be caught (StopOnDivergence)
    }
    if tuning.report_every_steps:
        # Evaluate during training: each evaluation is reported to the journal (and the pruner).
        defaults.update(eval_strategy="steps", eval_steps=tuning.report_every_steps)
    if not torch.cuda.is_available():
        # TRL turns on bf16 mixed precision by default, which a CPU runs slowly or not at all.
        defaults.update(use_cpu=True, bf16=False, fp16=False)
    if user.get("dataloader_num_workers") == "auto":
        # Oumi's estimate (estimate_dataloader_num_workers): 2 per GPU, at most 8 and a quarter of
        # the CPU threads this trial has.
        user["dataloader_num_workers"] = min(2, 8, int(torch.get_num_threads() * 0.25))
    if not user.get("dataloader_num_workers"):
        user.pop("dataloader_prefetch_factor", None)  # transformers refuses it without workers
    arguments = {**defaults, **user, **(overrides or {})}
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(SFTConfig)}:
        # transformers 5.2x renamed gradient_checkpointing(_kwargs), Oumi's and TRL's name, to
        # activation_checkpointing(_kwargs) (the old name warns that it goes in v6): the same setting.
        for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                         ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if old in arguments:
                arguments.setdefault(new, arguments.pop(old))
    return SFTConfig(
        **arguments,
        output_dir=str(trial_dir),
        # prepare_data tokenized the rows once for the whole study (input_ids + labels).
        dataset_kwargs={"skip_prepare_dataset": True},
    )


def build_lora_config(lora_args: dict, tuned_peft: dict):
    """LoraConfig from the fixed (tuning.lora_args) and sampled PEFT arguments."""
    from peft import LoraConfig

    kwargs = {**lora_args, **{k: oumi_value(k, v) for k, v in tuned_peft.items()}}
    kwargs.pop("peft_method", None)
    kwargs.setdefault("task_type", "CAUSAL_LM")
    return LoraConfig(**kwargs)


def build_trainer(tune: TuningConfig, params: dict, trial_dir: Path, model_source: dict, train_dataset,
                  eval_dataset, callbacks: list = (), overrides: dict | None = None, loaded=None):
    """The `SFTTrainer` of one configuration, and its tokenizer, built as every trial builds them:
    `SFTConfig` from the fixed and sampled (`params`, {name: value}) training arguments, the model
    `model_source` (a prepare_model source.json dict) names loaded with the model: section's options,
    `LoraConfig` when LoRA is on, the prepared rows. A checkpoint of the last step is always saved
    (SaveLastStep). `overrides` are SFTConfig arguments that win (the preflight's single step);
    `loaded`, (model, tokenizer) as load_model and load_tokenizer gave them, is used instead of
    loading again (the preflight loads once for many configurations).
    Raises what TRL, PEFT and transformers raise for values they refuse."""
    from transformers import TrainerCallback
    from trl import SFTTrainer

    class SaveLastStep(TrainerCallback):
        """Always checkpoint the final step: the best model and resumes start from it."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = True

    tuning = tune.tuning
    tuned_training, tuned_peft = search_space.split_by_group(tuning.space, params)
    args = build_training_args(tuning, tune.max_length, tuned_training, trial_dir, overrides)
    if loaded is not None:
        model, tokenizer = loaded
    else:
        tokenizer = models.load_tokenizer(model_source, tune.model)
        # Quantisation options are fixed (validate.py refuses to tune them) and apply to loading.
        model = models.load_model(model_source, tune.model, quantization=tuning.quantization)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=build_lora_config(tuning.lora_args, tuned_peft) if tuning.use_peft else None,
        callbacks=[*callbacks, SaveLastStep()],
    )
    return trainer, tokenizer


def train_and_evaluate(tune: TuningConfig, params: dict, trial_dir: Path, model_source: dict, data_dir,
                       trial=None, resume_from: str | None = None) -> tuple[dict, str | None]:
    """Train and evaluate one configuration: (metrics produced, why it diverged or None)."""
    from transformers import TrainerCallback

    tuning = tune.tuning
    prepared = datasets_.load_prepared(data_dir)
    files = TrialFiles(trial_dir)

    class LossCurve(TrainerCallback):
        """Appends every log line to logs/loss_curve.jsonl as it happens (live progress).

        Each line carries its wall-clock time: with TRL's cumulative num_tokens that gives the
        trial's training throughput as it ran (bench/gpu_throughput.py).
        """

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:  # data parallel: one rank writes the curve
                return
            with open(files.loss_curve, "a") as f:
                f.write(json.dumps({"step": state.global_step, "max_steps": state.max_steps,
                                    "time": round(time.time(), 3), **(logs or {})}) + "\n")

    class StopOnDivergence(TrainerCallback):
        """Stops at the first non-finite loss or gradient norm.

        Reads the raw values: HF's logging_nan_inf_filter would log a NaN loss as 0.0, so it is
        turned off (build_training_args).
        """

        reason = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            for key in ("loss", "grad_norm"):
                value = logs.get(key)
                if isinstance(value, (int, float)) and not math.isfinite(value):
                    self.reason = f"diverged: {key} is {value} at step {state.global_step}"
                    control.should_training_stop = True
                    return

    class ReportAndPrune(TrainerCallback):
        """Reports each intermediate evaluation of the objective to the trial and asks the pruner.

        The pruner compares it with every other trial in the journal, whichever process ran them.
        A pruned trial stops at once with a checkpoint of where it stopped.
        """

        reason = None

        def __init__(self):
            self.reported = set()
            self.vectors = {}  # several objectives: {str(step): [value per objective]}
            self.pareto = None  # pruner: pareto's (pruner, trial id), made at its first report
            self.started = time.time()

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.time()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if trial is not None and len(tuning.metrics) > 1:
                self.report_vector(args, state, control, metrics or {})
                return
            objective = tuning.metrics[0]
            value = (metrics or {}).get(objective)
            # Optuna keeps intermediate values for single-objective studies only.
            if trial is None or not _is_finite_number(value):
                return
            if state.global_step not in self.reported:
                self.reported.add(state.global_step)
                trial.report(float(value), state.global_step)
            if state.global_step < state.max_steps and trial.should_prune():
                self.reason = f"pruned at step {state.global_step}: {objective}={value:.4g}"
                control.should_training_stop = True
                control.should_save = True

        def report_vector(self, args, state, control, evaluated: dict) -> None:
            """Several objectives: records them at this step (strategy.INTERMEDIATE_VECTORS_ATTR: the
            evaluation's, and the training's so far) and asks pruner: pareto (strategy.ParetoPruner)."""
            tokens = [e["num_tokens"] for e in state.log_history if "num_tokens" in e]
            so_far = {"train_runtime": time.time() - self.started, "trained_steps": state.global_step - start_step,
                      "epoch": state.epoch, "trained_tokens": tokens[-1] if tokens else None,
                      custom_metrics.PEAK_MEMORY: gpu.peak_memory_gib(args.device)}
            vector = [evaluated.get(name, so_far.get(name)) for name in tuning.metrics]
            if not all(_is_finite_number(v) for v in vector) or state.global_step in self.reported:
                return
            self.reported.add(state.global_step)
            self.vectors[str(state.global_step)] = [float(v) for v in vector]
            trial.set_user_attr(strategy.INTERMEDIATE_VECTORS_ATTR, self.vectors)
            if tuning.pruner != "pareto" or state.global_step >= state.max_steps:
                return
            if self.pareto is None:  # once per trial: the pruner, and the trial's id in the storage
                self.pareto = (strategy.make_pruner(tuning), trial_id_of(trial.study, trial.number))
            pruner, trial_id = self.pareto
            if pruner.prune(trial.study, storage_of(trial.study).get_trial(trial_id)):
                shown = ", ".join(f"{name}={v:.4g}" for name, v in zip(tuning.metrics, vector))
                self.reason = f"pruned at step {state.global_step}: {shown} (Pareto-dominated)"
                control.should_training_stop = True
                control.should_save = True

    class LastEvaluation(TrainerCallback):
        """Keeps the newest evaluation and its step: with eval_steps dividing max_steps, training
        has just evaluated the final model, and evaluating it again would only cost time."""

        step, metrics = None, None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.step, self.metrics = state.global_step, dict(metrics or {})

    class RefuseTrainingPastTheEnd(TrainerCallback):
        """Stops `Trainer.train` before its first step when the checkpoint it resumed from leaves
        no step to train (raises NothingLeftToTrain).

        transformers' Trainer checks max_steps only after a step (DefaultFlowCallback.on_step_end):
        resumed at `global_step == max_steps` part-way through an epoch (10 steps of 8-step epochs,
        or 1.5 epochs), it skips the epoch's trained batches and trains the next one, a step past
        the end (`global_step 11, max_steps 10`); resumed at an epoch's end it trains none. No
        control flag is read before that step, so the callback raises, once the Trainer has loaded
        the checkpoint's weights and state and computed this run's max_steps (from max_steps, or
        from the epochs, the data and the batch size). A checkpoint past max_steps (saved under a
        longer max_steps or more epochs) is not this configuration's: ValueError.
        """

        def on_train_begin(self, args, state, control, **kwargs):
            if state.global_step > state.max_steps:
                raise ValueError(
                    f"{resume_from}, the checkpoint this trial resumes from, is at step {state.global_step}, "
                    f"past the trial's last step {state.max_steps} (tuning.fixed_training_params changed "
                    "since it was saved): delete it to train these parameters from step 0")
            if state.global_step == state.max_steps:
                raise NothingLeftToTrain(state.global_step)

    start_step = checkpoint_step(resume_from) if resume_from else 0
    divergence, pruning, last_evaluation = StopOnDivergence(), ReportAndPrune(), LastEvaluation()
    trainer, tokenizer = build_trainer(tune, params, trial_dir, model_source, prepared["train"],
                                       prepared["validation"],
                                       callbacks=[LossCurve(), divergence, pruning, last_evaluation,
                                                  RefuseTrainingPastTheEnd()])
    try:
        train_output_metrics = trainer.train(resume_from_checkpoint=resume_from).metrics
    except NothingLeftToTrain:
        # The checkpoint is the trial's final model (an attempt killed before it told its result
        # saved it): the Trainer has loaded it, and it is evaluated as it is, as outside training.
        trainer.is_in_train = False
        train_loss = logged_train_loss(trainer.state.log_history)
        train_output_metrics = {"epoch": trainer.state.epoch,
                                **({"train_loss": train_loss} if train_loss is not None else {})}
    name_base_model_in_card(trial_dir, tune.model.model_name)
    write_loss_curve(trainer.state.log_history, files.loss_curve_csv)
    # What this attempt spent, for tuning.budget: the steps since the checkpoint it resumed from
    # (earlier attempts counted theirs), and tokens (TRL counts them from 0 in each Trainer).
    tokens = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
    steps = trainer.state.global_step - start_step
    trained = {**train_output_metrics, "trained_steps": steps,
               **({"trained_tokens": int(tokens[-1]) if steps else 0} if tokens else {})}

    def measured(produced: dict, stopped: str | None) -> tuple[dict, str | None]:
        """What it produced with its peak memory until now (tuning.constraints), and why it stopped."""
        return {**produced, custom_metrics.PEAK_MEMORY: gpu.peak_memory_gib(trainer.args.device)}, stopped

    if divergence.reason or pruning.reason:
        return measured(trained, divergence.reason or pruning.reason)
    if last_evaluation.step == trainer.state.global_step:
        final_evaluation = last_evaluation.metrics
    else:
        final_evaluation = trainer.evaluate()  # on_evaluate reports it too
    produced = {**trained, **final_evaluation}
    if not _is_finite_number(produced.get("eval_loss", 0.0)):
        return measured(produced, f"diverged: eval_loss is {produced['eval_loss']}")
    if tune.uses_generation and trainer.is_world_process_zero():  # data parallel: rank 0 answers
        objective = next(m for m in tuning.metrics if m in scoring.GENERATION_METRICS)
        with custom_metrics.evaluation_time_limit(tuning.evaluation_timeout_minutes,
                                                  f"the generation metrics ({objective}, ...)"):
            answered, pruned = generation.evaluate_generation(
                trainer.model, tokenizer, prepared["validation"], tune.generation, seed=tuning.seed,
                objective=objective, out_path=files.generations, trial=trial,
                prune=tuning.pruner == "wilcoxon" and objective == tuning.metrics[0])
        produced.update(answered)
        if pruned:
            return measured(produced, pruned)
    if tune.uses_lm_eval and trainer.is_world_process_zero():
        tasks = ", ".join(m for m in tuning.metrics if m.startswith(lm_harness.PREFIX))
        with custom_metrics.evaluation_time_limit(tuning.evaluation_timeout_minutes, f"lm-eval ({tasks})"):
            produced.update(lm_harness.evaluate(trainer.model, tokenizer, tune.lm_eval, tuning.metrics, tuning.seed))
    if tuning.custom_eval_metrics:
        trainer.model.eval()
        produced.update(custom_metrics.compute_custom_metrics(
            tuning.custom_eval_metrics, timeout_minutes=tuning.evaluation_timeout_minutes,
            model=trainer.model, tokenizer=tokenizer,
            eval_dataset=prepared["validation"], trial_dir=trial_dir, metrics=produced))
    return measured(produced, None)


def logged_train_loss(log_history: list[dict]) -> float | None:
    """The mean training loss over every step in `log_history` (Trainer's `state.log_history`:
    entries with `step` and, every logging_steps, the mean `loss` since the last one), each logged
    value weighted by the steps it covers: Trainer's `train_loss` of a run that trained them all.
    None when no loss was logged."""
    total, last = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) > last:
            total += entry["loss"] * (entry["step"] - last)
            last = entry["step"]
    return total / last if last else None


def name_base_model_in_card(trial_dir: Path, model_name: str) -> None:
    """Name the model the user gave (`model.model_name`) as the base in TRL's model card
    (`trial_dir/README.md`).

    TRL names the base from the loaded model's path, and none for a local folder, which trials
    always load (the study's prepared copy), so the card said "a fine-tuned version of
    [None](https://huggingface.co/None)". Only the card is changed: the adapter's own
    `base_model_name_or_path` stays the prepared copy, the weights it was trained on.
    """
    card = Path(trial_dir) / "README.md"
    try:
        text = card.read_text()
    except OSError:
        return
    unnamed = "[None](https://huggingface.co/None)"
    if unnamed in text:
        named = (f"`{model_name}` (a local model)" if Path(model_name).exists()
                 else f"[{model_name}](https://huggingface.co/{model_name})")
        card.write_text(text.replace(unnamed, named))


def write_loss_curve(log_history: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_CURVE_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for entry in log_history:
            if any(k in entry for k in ("loss", "eval_loss")):
                writer.writerow(entry)
