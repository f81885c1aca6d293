"""The resolved config every rule and trial reads: its types, frozen, built once per process.

`TuningConfig` (model, data, tuning, generation, lm_eval) and `TuningParams` (its `tuning:`
section) compose the section types their concepts own (`model.ModelParams`, `data.DataParams`,
`gpu.DeviceSettings`, `metrics.CustomMetric`, `generation.GenerationParams`,
`lm_harness.LmEvalParams`, `space.Parameter`); `ConfigError` is a config's problems. Any layer may
import this module: it imports only those section modules (which import no checker and nothing
above them) and the leaves (records, layout, errors, scoring). The checker that builds these
types from a tune.yaml is `snaketune.validate`, on top.
"""

from __future__ import annotations

import functools
from typing import Any

from snaketune import data, lm_harness, model, names, scoring
from snaketune.data import DataParams
from snaketune.errors import ProblemsError
from snaketune.generation import GenerationParams
from snaketune.gpu import DeviceSettings
from snaketune.layout import StudyLayout
from snaketune.lm_harness import LmEvalParams
from snaketune.metrics import Constraint, CustomMetric
from snaketune.model import ModelParams
from snaketune.records import Record, section
from snaketune.space import Parameter


class ConfigError(ProblemsError):
    """A tune.yaml with problems; `problems` lists each as 'yaml.path: what is wrong'."""

    heading = "Invalid tune config ({count} problem(s))"


# The units a compute budget (tuning.budget) is counted in.
BUDGET_UNITS = ("trained_steps", "trained_tokens", "gpu_hours")


@section
class Budget(Record):
    """tuning.budget, `{unit: amount}` in the YAML: the compute the study may spend, `amount` in
    `unit` (one of BUDGET_UNITS: optimizer steps trained, tokens trained, or device hours)."""

    unit: str
    amount: float

    def as_dict(self) -> dict:
        """The YAML's form, `{unit: amount}`."""
        return {self.unit: self.amount}


@section
class ConvergedStop(Record):
    """tuning.stop_when_converged: once `patience` trials in a row have completed without improving
    the best value by more than `min_improvement` (in the objective's unit; None: the objective's
    noise, estimated from neighbouring trials: strategy.objective_noise), the slots not yet
    started finish SKIPPED, as under a spent budget (strategy.convergence)."""

    patience: int
    min_improvement: float | None

    def as_dict(self) -> dict:
        """The YAML's form (min_improvement left out when estimated)."""
        return {"patience": self.patience, **({"min_improvement": self.min_improvement}
                                              if self.min_improvement is not None else {})}


@section
class WarmStart(Record):
    """tuning.warm_start_from: the earlier study whose finished trials this one starts from
    (snaketune.warm_start). Kept in the file journal of `output_dir` (absolute), or in the
    database of `storage` (a postgresql:// URL, as tuning.storage takes it); `study_name` names
    it (None: the one study of that output_dir). `enqueue_best`: how many of its best
    configurations that fit this study's space run first (0: none)."""

    output_dir: str | None
    storage: str | None
    study_name: str | None
    enqueue_best: int

    @property
    def where(self) -> str:
        """The earlier study as a person names it: its folder, or its name and database URL."""
        return (f"study {self.study_name!r} in {self.storage}" if self.storage
                else self.output_dir + (f" (study {self.study_name!r})" if self.study_name else ""))


@section
class TuningParams(Record):
    """The resolved `tuning:` section: the study, its search space and the trials' fixed arguments.

    Names follow Optuna and Hugging Face where the YAML's differ (`sampler` is tuning.tuner_sampler,
    `metrics` tuning.evaluation_metrics; `training_args` and `lora_args` are SFTConfig and
    LoraConfig arguments by their field names). The fields left as dicts are keyword arguments
    passed to a library's constructor as they are (sampler_kwargs, pruner_kwargs, training_args,
    lora_args, quantization), or maps keyed by name (argument_paths).
    """

    n_trials: int  # the trial budget: slots trial_0 .. trial_<n-1>
    study_name: str
    seed: int
    output_dir: str  # absolute
    sampler: str  # an optuna.samplers class name
    sampler_kwargs: dict[str, Any]  # the sampler class's keyword arguments
    pruner: str  # a key of strategy.PRUNERS ("none": no pruning)
    pruner_kwargs: dict[str, Any]  # the pruner class's, each absent key at its default (strategy.PRUNER_DEFAULTS)
    report_every_steps: int | None  # evaluate (and report to the pruner) every N steps
    # η of tuning.resume_pruned (strategy.reduction_factor): a slot resumes a pruned trial whose
    # value is among the best 1/η at its step (strategy.promotions); None: pruned trials stay stopped
    resume_pruned: int | None
    enqueue_trials: list[dict[str, Any]]  # configurations evaluated first, {parameter name: value}
    timeout_minutes: float | None
    # each evaluation after training (a custom metric, the generation metrics, lm-eval) past this
    # fails its trial, naming it (metrics.evaluation_time_limit)
    evaluation_timeout_minutes: float
    budget: Budget | None  # the compute the study may spend; None: no compute budget
    stop_when_converged: ConvergedStop | None  # skip the slots left once the study converged; None: never
    metrics: list[str]  # the objectives, in order
    directions: list[str]  # "minimize" or "maximize", one per objective
    custom_eval_metrics: list[CustomMetric]
    # limits a trial must keep to be feasible (Optuna's Trial.set_constraint; study.feasible)
    constraints: list[Constraint]
    warm_start: WarmStart | None  # the earlier study this one starts from (tuning.warm_start_from); None: cold
    space: list[Parameter]  # parents before the parameters conditioned on them
    training_args: dict[str, Any]  # fixed SFTConfig arguments
    lora_args: dict[str, Any]  # fixed LoraConfig arguments
    quantization: dict[str, Any]  # QLoRA options (q_lora, q_lora_bits, bnb_4bit_*), applied at model load
    use_peft: bool  # LoRA on: fixed_training_params.use_peft, or LoRA parameters given (names._use_peft)
    gpu: DeviceSettings
    on_divergence: str  # "fail" or "prune"
    # tuning.storage as written: a database URL whose password is a ${VAR} or comes from libpq's
    # environment (database.storage_problems); None: the file journal in output_dir
    storage: str | None
    # where each fixed argument was written: {(group, target field): YAML path}, group "training"
    # (training_args) or "peft" (lora_args); a library's complaint is reported under these
    argument_paths: dict[tuple[str, str], str]

    @property
    def layout(self) -> StudyLayout:
        """Every path of the study under `output_dir`."""
        return StudyLayout(self.output_dir)


@section
class TuningConfig(Record):
    """A validated tune.yaml (Oumi's TuningConfig: model, data, tuning), as
    `validate.load_tune_config` resolves it."""

    model: ModelParams
    data: DataParams
    tuning: TuningParams
    # how trials answer the validation prompts (tune.yaml's `generation:`); used when a generation
    # metric (scoring.GENERATION_METRICS) is an objective (`uses_generation`)
    generation: GenerationParams
    # lm-evaluation-harness options (tune.yaml's `lm_eval:`), for the lm_eval:<task>/<metric> objectives
    lm_eval: LmEvalParams
    notices: list[str]  # 'yaml.path: what was adjusted': accepted, but not quite as written

    @functools.cached_property
    def definition(self) -> dict:
        """What determines a trial's result besides its parameters, as the study records it
        (study.study_definition): the model, the data (with its content), max_length, the fixed
        training arguments that change what is learnt, the LoRA and quantisation settings.
        Computed once per config (it reads every local data file to hash it)."""
        tuning = self.tuning
        return {
            "model": model.fingerprint(self.model),
            "data": {**data.fingerprint(self.data), "max_length": self.max_length},
            "training": {k: v for k, v in tuning.training_args.items() if names.changes_results(k)},
            "peft": {"use_peft": tuning.use_peft, **tuning.lora_args, **tuning.quantization},
            # only when used: a study without generation metrics keeps the definition it had
            **({"generation": self.generation.result_settings()} if self.uses_generation else {}),
            **({"lm_eval": self.lm_eval.result_settings()} if self.uses_lm_eval else {}),
        }

    @property
    def uses_lm_eval(self) -> bool:
        """Whether trials run lm-evaluation-harness tasks: an lm_eval:<task>/<metric> is an objective."""
        return any(lm_harness.is_lm_eval_metric(name) for name in self.tuning.metrics)

    @property
    def scores_answers(self) -> bool:
        """Whether the model's answers are scored (generation or lm-eval metrics): then rule
        baseline scores the untrained model's the same way."""
        return self.uses_generation or self.uses_lm_eval

    @property
    def uses_generation(self) -> bool:
        """Whether trials generate answers: a built-in generation metric is an objective."""
        return any(name in scoring.GENERATION_METRICS for name in self.tuning.metrics)

    @property
    def max_length(self) -> int:
        """Tokens a row is cut to when the data is tokenized, and SFTConfig.max_length: the fixed
        training parameter max_length (Oumi's max_seq_length) if given, else model.model_max_length."""
        return int(self.tuning.training_args.get("max_length") or self.model.model_max_length)
