"""The project's own small instruction dataset, generated from a seed.

The default study must show, on a CPU and within a few dozen LoRA steps, that the learning rate
matters. So every row is a short templated transformation with one exact answer in a bare format
that SmolLM2-135M-Instruct does not use on its own (it answers in prose): a good learning rate
learns the format and much of the rule quickly, a small one barely moves eval_loss, a large one
diverges. Outputs are short so that rows are ~40-80 tokens with the chat template.

Rows are Alpaca-format dicts (instruction, input, output). Run
`python -m snaketune.demo_data OUTDIR [--seed S] [--n-train N] [--n-validation M]` to write
`OUTDIR/train.jsonl` and `OUTDIR/validation.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
WORDS = ["apple", "river", "silent", "green", "market", "quick", "stone", "garden", "winter", "light",
         "paper", "ocean", "simple", "night", "orange", "castle", "little", "music", "summer", "bridge",
         "golden", "forest", "open", "north", "secret", "window", "happy", "mountain", "city", "blue"]


def iso_date(rng: random.Random) -> dict:
    year, month, day = rng.randint(1950, 2049), rng.randint(1, 12), rng.randint(1, 28)
    return {"instruction": "Write the date in ISO 8601 format (YYYY-MM-DD).",
            "input": f"{MONTHS[month - 1]} {day}, {year}", "output": f"{year:04d}-{month:02d}-{day:02d}"}


def km_to_m(rng: random.Random) -> dict:
    tenths = rng.randint(1, 999)
    km = f"{tenths // 10}.{tenths % 10}" if tenths % 10 else str(tenths // 10)
    return {"instruction": "Convert the distance to meters. Answer with the number and unit only.",
            "input": f"{km} km", "output": f"{tenths * 100} m"}


def sort_numbers(rng: random.Random) -> dict:
    numbers = rng.sample(range(1, 100), rng.randint(3, 6))
    return {"instruction": "Sort the numbers in ascending order.",
            "input": ", ".join(map(str, numbers)), "output": ", ".join(map(str, sorted(numbers)))}


def url_slug(rng: random.Random) -> dict:
    words = rng.sample(WORDS, rng.randint(2, 4))
    return {"instruction": "Turn the title into a URL slug.",
            "input": " ".join(w.capitalize() for w in words), "output": "-".join(words)}


TASKS = [iso_date, km_to_m, sort_numbers, url_slug]


def generate(n_train: int = 320, n_validation: int = 48, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train and validation rows: the tasks in turn, no (instruction, input) in both splits."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n_train + n_validation:
        row = TASKS[len(rows) % len(TASKS)](rng)
        key = (row["instruction"], row["input"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    # Interleaved tasks, so both splits hold every task in the same proportions.
    return rows[:n_train], rows[n_train:]


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_splits(train: list[dict], validation: list[dict], outdir: str | Path) -> None:
    """`outdir/train.jsonl` and `outdir/validation.jsonl` (the folder made if needed)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    write_jsonl(train, outdir / "train.jsonl")
    write_jsonl(validation, outdir / "validation.jsonl")


def command_line(generate_rows, description: str, argv: list[str] | None) -> None:
    """`python -m <module> OUTDIR [--seed S] [--n-train N] [--n-validation M]` for a row generator
    `generate_rows(n_train, n_validation, seed) -> (train, validation)`; its defaults are the
    generator's own."""
    import inspect

    defaults = inspect.signature(generate_rows).parameters
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("outdir", type=Path)
    for name in ("seed", "n_train", "n_validation"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=defaults[name].default)
    args = parser.parse_args(argv)
    write_splits(*generate_rows(args.n_train, args.n_validation, args.seed), args.outdir)


def main(argv: list[str] | None = None) -> None:
    command_line(generate, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
