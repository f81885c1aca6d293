"""Generation throughput: snaketune's batched generation against a plain `model.generate` loop.

Both answer the same validation rows of the default study (config/tune.yaml: SmolLM2-135M-Instruct
converted by the prepare_model rule, the demo task's prompts as prepare_data formatted them) with
greedy decoding and the same max_new_tokens, on this machine's CPU:

- snaketune: `generation.evaluate_generation` (batches of --batch-size prompts, left padding, the
  KV cache, eval mode, inference mode), as a trial runs it;
- plain loop: one `model.generate(**tokenizer(prompt))` per row, the loop a user writes by hand.

The arms alternate, --repeats times each; the medians are compared. Tokens are the answers' tokens
as the plain loop generated them (up to its end-of-sequence token), the same work for both arms
when they give the same answers, which is checked and reported (greedy decoding in float32).

    python bench/generation.py [--rows 48] [--max-new-tokens 48] [--batch-size 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import REPO, append_results, run_snakemake

from snaketune.validate import load_tune_config, read_default_tune_yaml
from snaketune.layout import StudyLayout


def prepared(workdir: Path):
    """The default study's model and validation rows, prepared by the workflow's own rules."""
    config = read_default_tune_yaml(REPO)
    config["tuning"]["output_dir"] = "study"
    layout = StudyLayout(workdir / "study")
    run_snakemake(workdir, config, str(layout.model_source), str(layout.data_summary))
    return load_tune_config(config, workdir, validated=True), layout


def plain_loop(model, tokenizer, rows, max_new_tokens: int) -> tuple[list[str], int]:
    """(answers, answer tokens): one generate call per row, as a user writes it."""
    import torch

    answers, tokens = [], 0
    with torch.no_grad():
        for row in rows:
            encoded = tokenizer(row["prompt"], return_tensors="pt", add_special_tokens=False)
            out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            answer = out[0, encoded["input_ids"].shape[1]:]
            tokens += len(answer)
            answers.append(tokenizer.decode(answer, skip_special_tokens=True).strip())
    return answers, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48, help="validation rows answered (the demo task has 48)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "generation")
    args = parser.parse_args()

    import torch

    from snaketune import data, generation, model
    from snaketune.model import read_source

    torch.set_num_threads(args.threads)
    tune, layout = prepared(args.workdir)
    source = read_source(layout.model_source)
    tokenizer = model.load_tokenizer(source, tune.model)
    lm = model.load_model(source, tune.model)
    lm.eval()
    validation = data.load_prepared(layout.data_summary.parent)["validation"]
    rows = [validation[i] for i in range(min(args.rows, len(validation)))]
    params = generation.GenerationParams(**{**tune.generation.as_dict(), "max_new_tokens": args.max_new_tokens,
                                            "batch_size": args.batch_size, "num_samples": None})
    out_path = args.workdir / "generations.jsonl"

    seconds = {"snaketune": [], "plain": []}
    for _ in range(args.repeats):
        began = time.perf_counter()
        expected, tokens = plain_loop(lm, tokenizer, rows, args.max_new_tokens)
        seconds["plain"].append(time.perf_counter() - began)
        began = time.perf_counter()
        generation.evaluate_generation(lm, tokenizer, rows, params, seed=tune.tuning.seed,
                                       objective="exact_match", out_path=out_path)
        seconds["snaketune"].append(time.perf_counter() - began)
    ours = {r["row"]: r["output"] for r in map(json.loads, out_path.read_text().splitlines())}
    same = sum(ours[i] == answer for i, answer in enumerate(expected))
    median = {arm: statistics.median(values) for arm, values in seconds.items()}
    line = {arm: f"{median[arm]:.1f} s, {tokens / median[arm]:.1f} tokens/s, {len(rows) / median[arm]:.2f} rows/s"
            for arm in median}
    print(json.dumps({"seconds": seconds, "tokens": tokens, "same_answers": same}, indent=1))
    append_results(
        "Generation throughput (SmolLM2-135M-Instruct, CPU)", "generation.py",
        [f"{len(rows)} validation rows of the demo task, greedy, at most {args.max_new_tokens} new tokens, "
         f"{tokens} answer tokens in all, {args.threads} threads; median of {args.repeats} alternating runs.",
         "",
         "| arm | time, throughput |",
         "|---|---|",
         f"| plain `model.generate` loop, one row at a time | {line['plain']} |",
         f"| snaketune (batches of {args.batch_size}, left padding, KV cache) | {line['snaketune']} |",
         "",
         f"snaketune / plain loop throughput: **{median['plain'] / median['snaketune']:.2f}x**; "
         f"the same answer on {same} of {len(rows)} rows."])


if __name__ == "__main__":
    main()
