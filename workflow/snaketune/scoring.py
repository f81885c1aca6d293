"""Built-in generation metrics: the score of one generated output against its reference answer.

Each scorer takes (output, reference), two strings, and returns a float in [0, 1]; a trial's
metric is the mean over the validation rows it generated for (snaketune.generation). The names
are what `tuning.evaluation_metrics` accepts:

- `exact_match`: 1.0 when output and reference are equal once normalised (`normalize`: case,
  punctuation and runs of whitespace ignored), else 0.0.
- `contains_answer`: 1.0 when the normalised reference occurs in the normalised output as whole
  words (an answer inside a sentence), else 0.0.
- `math_answer`: 1.0 when the output's final answer equals the reference's (`final_answer`: the
  text after GSM8K's `####` marker, else the last number or `\\boxed{}` expression), compared as
  mathematical values by `math-verify` (so 3.50 = 3.5, 1,000 = 1000, \\frac{1}{2} = 0.5).
- `rougeL`: ROUGE-L F-measure (longest common subsequence of words), by Google's `rouge-score`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

GSM8K_MARKER = "####"


_DECIMAL_POINT = re.compile(r"(?<=\d)[.,](?=\d)")


def normalize(text: str) -> str:
    """Lower case, punctuation (any script's) removed except a point or comma between digits
    (3.5 stays 3.5), whitespace runs as one space, stripped.

    By hand: `evaluate`'s exact_match has such options, but it loads its metric script from the
    Hugging Face hub, which a cluster node often cannot reach; the rule is a few lines."""
    kept = _DECIMAL_POINT.sub(lambda m: "\0" if m.group() == "." else "\1", text.lower())
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in kept)
    return " ".join(text.replace("\0", ".").replace("\1", ",").split())


def exact_match(output: str, reference: str) -> float:
    return float(normalize(output) == normalize(reference))


def contains_answer(output: str, reference: str) -> float:
    wanted = normalize(reference)
    # Whole words: "4" is not in "14", "yes" not in "yesterday". An empty reference is in every
    # output: score it as exact_match does (only an empty output).
    return float(f" {wanted} " in f" {normalize(output)} ") if wanted else exact_match(output, reference)


def final_answer(text: str) -> str:
    """The part of `text` that holds its final answer: what follows the last `####` (GSM8K's
    answer marker, up to the end of that line) when there is one, else the whole text, of which
    math-verify takes the last number or `\\boxed{}` expression."""
    if GSM8K_MARKER in text:
        after = text.rsplit(GSM8K_MARKER, 1)[1].strip()
        return after.splitlines()[0] if after else ""
    return text


MATH_TIMEOUT_SECONDS = 5  # a parse or comparison taking longer scores the row 0 (math-verify's default)


def math_answer(output: str, reference: str) -> float:
    import threading

    from math_verify import parse, verify

    # math-verify times out with SIGALRM, which only the main thread (a trial job's) may set.
    limit = MATH_TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None
    gold = parse(final_answer(reference), parsing_timeout=limit)
    if not gold:
        return 0.0  # nothing to compare with: the row cannot be scored as right
    answer = parse(final_answer(output), parsing_timeout=limit)
    return float(bool(answer) and verify(gold, answer, timeout_seconds=limit))


class _Words:
    """rouge-score's tokenizer interface over Unicode words: its default keeps only [a-z0-9], so
    text in another script scored 0 against an exact copy."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Words())


def rouge_l(output: str, reference: str) -> float:
    return float(_rouge().score(reference, output)["rougeL"].fmeasure)


SCORERS = {
    "exact_match": exact_match,
    "contains_answer": contains_answer,
    "math_answer": math_answer,
    "rougeL": rouge_l,
}
GENERATION_METRICS = tuple(SCORERS)


def score_row(output: str, reference: str) -> dict[str, float]:
    """Every built-in metric of one row: {name: score in [0, 1]} (scoring is cheap once the
    output is generated, so a trial records all of them, whichever is the objective)."""
    return {name: scorer(output, reference) for name, scorer in SCORERS.items()}

