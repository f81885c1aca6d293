"""Generation metrics: a trial's model answers the validation prompts, each answer is scored
(snaketune.scoring), and the mean of each score becomes a metric of the trial.

The `generation:` section of tune.yaml takes the names of Oumi's GenerationParams (its inference
and evaluation configs' `generation:`), plus `num_samples` (Oumi's EvaluationTaskParams name): how
many validation rows are generated for. Every trial generates for the same rows, each row's prompt
as training formatted it (the chat template up to the answer, with the generation prompt:
data.tokenize_row), batched with left padding and the KV cache, in eval mode, on the trial's device.

A prompt that with max_new_tokens would pass the model's positions is cut from the left (its end,
where the question and the generation prompt are, is kept), as lm-eval cuts a context.

A trial writes `trial_<i>/logs/generations.jsonl` (one line per row: row, prompt, reference,
output, score: of the first generation objective, scores: every built-in metric,
prompt_tokens_cut). With `tuning.pruner:
wilcoxon` it reports each row's score to the journal with the row's index as the step, and asks
Optuna's WilcoxonPruner after each batch whether it is worse than the best trial with significance
(paired by row); a pruned trial stops generating there.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

from snaketune import data, lm_harness, metrics, model, scoring
from snaketune.errors import describe_error
from snaketune.layout import ROW_REPORTS_ATTR, TrialFiles, write_json
from snaketune.model import position_limit
from snaketune.records import Record, section

# Oumi's GenerationParams fields transformers' generate has no counterpart for (they belong to
# its API engines) and their values that change nothing: any other value is refused.
UNSUPPORTED = {"frequency_penalty": 0.0, "presence_penalty": 0.0, "logit_bias": {}, "guided_decoding": None}
# Oumi's fields for tool calls: no tools are offered to a trial's model.
UNUSED = ("tool_choice", "parallel_tool_calls")


@section
class GenerationParams(Record):
    """The resolved `generation:` section (the schema fills the defaults)."""

    max_new_tokens: int  # tokens generated per answer at most
    batch_size: int  # prompts per generate() call
    num_samples: int | None  # validation rows generated for (the same rows in every trial); None: all
    use_sampling: bool  # False: greedy decoding (Oumi's default)
    temperature: float  # with use_sampling only
    top_p: float | None  # with use_sampling only
    min_p: float  # with use_sampling only
    num_beams: int
    stop_strings: list[str] | None  # an answer ends at the first of these (kept in the output)
    stop_token_ids: list[int] | None  # ends an answer, besides the tokenizer's end-of-sequence
    seed: int | None  # of sampling; None: the study's seed
    use_cache: bool  # the KV cache (on by default here; Oumi's default is off)
    skip_special_tokens: bool  # dropped from the decoded output

    def generate_kwargs(self) -> dict:
        """The keyword arguments of transformers' `generate` (and `GenerationConfig`) these
        settings stand for; the sampling knobs only when sampling, where greedy decoding ignores them."""
        kwargs = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                  "do_sample": self.use_sampling, "use_cache": self.use_cache}
        if self.use_sampling:
            kwargs.update(temperature=self.temperature, min_p=self.min_p or None,
                          **({"top_p": self.top_p} if self.top_p is not None else {}))
        if self.stop_strings:
            kwargs["stop_strings"] = list(self.stop_strings)
        return kwargs

    def result_settings(self) -> dict:
        """What changes the answers (and so the metrics): the study's definition records it, so a
        change is refused once a trial finished. Not the KV cache, nor (greedy) the batch size."""
        settings = {**self.generate_kwargs(), "num_samples": self.num_samples,
                    "stop_token_ids": self.stop_token_ids, "skip_special_tokens": self.skip_special_tokens}
        settings.pop("use_cache")  # the same answers, faster
        if self.use_sampling:  # the random stream is drawn per batch: the batch size changes samples
            settings.update(seed=self.seed, batch_size=self.batch_size)
        return settings


def resolve_section(cfg: dict, base: Path, written: dict, ask: bool) -> tuple[GenerationParams, list[str], list[str]]:
    """`generation:` of a schema-filled config `cfg`: (settings, problems, notices), each as
    'yaml.path: what'; the shape every section resolver has (`base` and `ask` are unused: the
    library is asked later, by library_problems). Without a generation metric among
    tuning.evaluation_metrics the section is unused, which a notice says when the user wrote some of
    it (the keys under `generation:` in `written`, the config before the schema's defaults)."""
    raw = cfg["generation"]
    uses_generation = any(name in scoring.GENERATION_METRICS for name in cfg["tuning"]["evaluation_metrics"])
    given = set(written["generation"]) if isinstance(written.get("generation"), dict) else set()
    problems, notices = [], []
    for key, neutral in UNSUPPORTED.items():
        if key in raw and raw[key] != neutral and raw[key] is not None:
            problems.append(f"generation.{key}: {raw[key]!r}: transformers' generate has no such option "
                            f"(Oumi applies it in its API engines only); remove it")
    for key in UNUSED:
        if key in raw:
            notices.append(f"generation.{key}: unused: a trial's model is offered no tools")
    if raw.get("exclude_prompt_from_response") is False:
        problems.append("generation.exclude_prompt_from_response: false: the metrics score the answer "
                        "alone, without the prompt; remove it")
    params = GenerationParams.from_fields(raw)
    if params.use_sampling and not params.temperature:
        problems.append("generation.temperature: 0 with use_sampling: true samples nothing (temperature 0 "
                        "is greedy decoding): set a temperature above 0, e.g. 0.7, or use_sampling: false")
    if not params.use_sampling:
        for key in ("top_p", "min_p"):
            if key in given and raw[key] not in (None, 0.0):
                notices.append(f"generation.{key}: unused: decoding is greedy (set use_sampling: true to "
                               "sample)")
        for key in ("temperature", "seed"):
            if raw.get(key):
                notices.append(f"generation.{key}: unused: decoding is greedy (set use_sampling: true to "
                               "sample)")
    if not uses_generation and given - {"exclude_prompt_from_response"}:
        notices.append(f"generation: unused: no generation metric ({', '.join(scoring.GENERATION_METRICS)}) "
                       "is in tuning.evaluation_metrics")
    return params, problems, notices


def evaluate_base_model(tune, model_source: dict, data_dir: str | Path, out_dir: str | Path) -> dict:
    """The untrained model's generation metrics on the rows the trials answer, and its lm-eval
    metrics (rule baseline): what tuning gained is the best trial's against these. Writes
    `out_dir/logs/generations.jsonl`, then `out_dir/metrics.json` last (the rule's output); returns
    the metrics. A failure (out of memory, an lm-eval error) is recorded as {"error": why} rather
    than raised: the study's results do not wait on this comparison (delete the folder to retry).
    `tune` is the resolved config (config.TuningConfig), `model_source` the prepared model's
    source.json dict."""

    files = TrialFiles(Path(out_dir))
    files.dir.mkdir(parents=True, exist_ok=True)
    try:
        with metrics.evaluation_time_limit(tune.tuning.evaluation_timeout_minutes, "the base model's evaluation"):
            produced = _score_base_model(tune, model_source, data_dir, files)
    except Exception as error:  # noqa: BLE001 (a comparison only: it must not keep the study's results back)
        produced = {"error": describe_error(error)[:2000]}
        print(f"snaketune: the base model could not be scored: {produced['error']}", file=sys.stderr)
    write_json(files.metrics, produced)
    return produced


def _score_base_model(tune, model_source: dict, data_dir, files) -> dict:
    import torch

    tokenizer = model.load_tokenizer(model_source, tune.model)
    lm = model.load_model(model_source, tune.model, quantization=tune.tuning.quantization)
    if torch.cuda.is_available() and lm.device.type == "cpu":  # the device the rule leased
        lm = lm.to("cuda")
    produced = {}
    if tune.uses_generation:
        rows = data.load_prepared(data_dir)["validation"]
        objective = next(m for m in tune.tuning.metrics if m in scoring.GENERATION_METRICS)
        produced, _ = evaluate_generation(lm, tokenizer, rows, tune.generation, seed=tune.tuning.seed,
                                          objective=objective, out_path=files.generations)
    if tune.uses_lm_eval:
        produced.update(lm_harness.evaluate(lm, tokenizer, tune.lm_eval, tune.tuning.metrics, tune.tuning.seed))
    return produced


def selected_rows(candidates, num_samples: int | None, seed: int) -> list[int]:
    """The validation rows (indices, ascending) every trial generates for, among `candidates` (the
    indices of the rows with a prompt): all of them, or `num_samples` drawn with the study's seed
    (the same rows in every trial, so that trials' scores compare row by row)."""
    candidates = sorted(candidates)
    if num_samples is None or num_samples >= len(candidates):
        return candidates
    return sorted(random.Random(seed).sample(candidates, num_samples))


def prompt_token_limit(model, max_new_tokens: int) -> int | None:
    """Tokens a prompt may keep so that it and its answer fit the model's positions
    (model.position_limit of its config) less max_new_tokens, as lm-eval's Hugging Face model cuts
    a context to its max_length less max_gen_toks. None when the config names no limit. A prompt
    past it would fail in the trial (absolute position embeddings have no row for it) or be
    answered past what the model was trained on (rotary ones). Raises ValueError when
    max_new_tokens alone fills the positions (checked at parse time too: library_checks.model_problems)."""
    positions = position_limit(model.config)
    if positions is None:
        return None
    if max_new_tokens >= positions:
        raise ValueError(f"generation.max_new_tokens: {max_new_tokens} tokens, but the model has "
                         f"{positions} positions for a prompt and its answer together: lower it")
    return positions - max_new_tokens


def evaluate_generation(model, tokenizer, rows, params: GenerationParams, *, seed: int,
                        objective: str | None, out_path: Path, trial=None, prune: bool = False
                        ) -> tuple[dict[str, float], str | None]:
    """Generate an answer to each selected row of `rows` (the prepared validation set: `prompt`,
    `completion`) and score it; returns (metrics, why it was pruned or None).

    metrics: the mean of each built-in metric (scoring.SCORERS) over the rows generated for, and
    `generation_rows`, `generation_new_tokens`, `generation_seconds`, `generation_tokens_per_second`,
    `generation_prompts_cut` (prompts longer than prompt_token_limit, cut from the left: the end,
    with the question and the generation prompt, is kept).
    `objective`: the built-in metric written as each row's `score` and reported to `trial` (the
    first objective), or None. `prune`: report each row's score with its row index as the step and
    ask the trial's pruner (Optuna's WilcoxonPruner) after each batch; a pruned trial reports its
    mean over the rows answered last, at step len(rows), so that Optuna gives it that value; the order of the rows is then
    shuffled per trial, as that pruner's documentation advises (an early stop would otherwise
    always judge the same first rows).
    Raises ValueError when no selected row has a prompt (plain-text rows).
    """
    import torch

    indices = selected_rows([i for i in range(len(rows)) if rows[i]["prompt"]], params.num_samples, seed)
    if not indices:
        raise ValueError("generation: no validation row has a prompt to answer (plain-text rows have none): "
                         "give data.validation rows with an answer (Alpaca, chat, prompt/completion)")
    if prune and trial is not None:
        random.Random(f"{seed}-{trial.number}").shuffle(indices)
    else:  # longest first: less padding per batch, and an out-of-memory error shows at once
        indices.sort(key=lambda i: -len(rows[i]["prompt"]))
    if tokenizer.pad_token_id is None:  # model.load_tokenizer gives one; a custom caller may not
        tokenizer.pad_token = tokenizer.eos_token
    limit = prompt_token_limit(model, params.max_new_tokens)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # answers start after the prompts
    truncation_side, tokenizer.truncation_side = tokenizer.truncation_side, "left"  # keep the prompt's end
    kwargs = params.generate_kwargs()
    if params.stop_strings:
        kwargs["tokenizer"] = tokenizer  # generate needs it to find the strings
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    if params.stop_token_ids:
        kwargs["eos_token_id"] = eos + [t for t in params.stop_token_ids if t not in eos]
    stops = {*kwargs.get("eos_token_id", eos), *([tokenizer.pad_token_id] if tokenizer.pad_token_id is not None else [])}
    if params.use_sampling:
        torch.manual_seed(params.seed if params.seed is not None else seed)

    if prune and trial is not None:
        trial.set_user_attr(ROW_REPORTS_ATTR, True)
    was_training = model.training
    model.eval()
    scores: dict[str, list[float]] = {name: [] for name in scoring.SCORERS}
    new_tokens, seconds, reason, cut = 0, 0.0, None, 0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w") as out, torch.inference_mode():
        for start in range(0, len(indices), params.batch_size):
            batch = indices[start:start + params.batch_size]
            # The prompts are chat-template text already (special tokens included), as training saw them.
            prompts = [rows[i]["prompt"] for i in batch]
            lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
            encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                                truncation=limit is not None, max_length=limit).to(model.device)
            began = time.perf_counter()
            generated = model.generate(**encoded, pad_token_id=tokenizer.pad_token_id, **kwargs)
            seconds += time.perf_counter() - began
            answers = generated[:, encoded["input_ids"].shape[1]:]
            for i, answer, length in zip(batch, answers, lengths):
                prompt_cut = max(0, length - limit) if limit is not None else 0
                cut += bool(prompt_cut)
                # An answer ends at its first end-of-sequence (or pad) token; what follows is padding.
                ends = [k for k, token in enumerate(answer.tolist()) if token in stops]
                answer = answer[:ends[0]] if ends else answer
                new_tokens += len(answer) + bool(ends)
                output = tokenizer.decode(answer, skip_special_tokens=params.skip_special_tokens).strip()
                row_scores = scoring.score_row(output, rows[i]["completion"])
                for name, value in row_scores.items():
                    scores[name].append(value)
                out.write(json.dumps({"row": i, "prompt": rows[i]["prompt"], "reference": rows[i]["completion"],
                                      "output": output, "score": row_scores.get(objective),
                                      "scores": row_scores, "prompt_tokens_cut": prompt_cut}) + "\n")
                if prune and trial is not None:
                    trial.report(row_scores[objective], i)
            out.flush()
            done = start + len(batch)
            if prune and trial is not None and done < len(indices) and trial.should_prune():
                mean = statistics.fmean(scores[objective])
                # Optuna gives a pruned trial the value it reported last, by step: the mean over the
                # rows answered, at a step past every row index (never paired with another trial's row).
                trial.report(mean, len(rows))
                reason = (f"pruned after {done} of {len(indices)} rows: {objective}={mean:.4g} over those "
                          "rows (Wilcoxon signed-rank test against the best trial)")
                break
            print(f"snaketune: generated {done}/{len(indices)} answers", file=sys.stderr, flush=True)
    tokenizer.padding_side, tokenizer.truncation_side = padding_side, truncation_side  # as custom metrics expect
    if cut:
        print(f"snaketune: generation: {cut} of {len(scores[next(iter(scores))])} prompts were longer than "
              f"{limit} tokens (the model's positions less generation.max_new_tokens) and were cut from "
              "the left", file=sys.stderr, flush=True)
    if was_training:
        model.train()
    produced = {name: statistics.fmean(values) for name, values in scores.items()}
    produced.update(generation_rows=len(scores[next(iter(scores))]), generation_new_tokens=new_tokens,
                    generation_seconds=round(seconds, 3),
                    generation_tokens_per_second=round(new_tokens / seconds, 2) if seconds else 0.0,
                    generation_prompts_cut=cut)
    return produced, reason
