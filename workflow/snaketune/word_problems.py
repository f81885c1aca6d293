"""Grade-school math word problems in GSM8K's format, generated from a seed.

GSM8K itself comes from the Hugging Face hub, which a cluster node (and this project's CI) often
cannot reach; these rows have its shape instead: a question of two to four steps of arithmetic on
whole numbers, and a solution that works through them one line at a time and ends with GSM8K's
answer line, `#### <number>`. Tuning on them exercises what tuning on GSM8K does: the `math_answer`
metric reads the final number after `####` (snaketune.scoring), and a model learns to reason in
steps and to end with that line.

Rows are Alpaca-format dicts (instruction: the question, input: "", output: the solution). Run
`python -m snaketune.word_problems OUTDIR [--seed S] [--n-train N] [--n-validation M]` to write
`OUTDIR/train.jsonl` and `OUTDIR/validation.jsonl` (config/word_problems holds the default ones).
"""

from __future__ import annotations

import random

from snaketune.demo_data import command_line

NAMES = [("Natalia", "she"), ("Weng", "she"), ("Betty", "she"), ("Julie", "she"), ("Maria", "she"),
         ("James", "he"), ("Albert", "he"), ("Mark", "he"), ("Tom", "he"), ("Ken", "he"),
         ("Alexis", "she"), ("Carlos", "he"), ("Priya", "she"), ("Omar", "he")]
ITEMS = ["clips", "cookies", "stickers", "pencils", "apples", "marbles", "books", "cupcakes", "cards", "toys"]


def _who(rng: random.Random) -> tuple[str, str]:
    return rng.choice(NAMES)


def half_as_many(rng: random.Random) -> tuple[str, list[str], int]:
    name, he = _who(rng)
    items, first = rng.choice(ITEMS), 2 * rng.randint(6, 60)
    second = first // 2
    question = (f"{name} sold {first} {items} in April, and then {he} sold half as many {items} in May. "
                f"How many {items} did {name} sell altogether in April and May?")
    return question, [f"In May, {name} sold {first} / 2 = {second} {items}.",
                      f"Altogether, {name} sold {first} + {second} = {first + second} {items}."], first + second


def hourly_pay(rng: random.Random) -> tuple[str, list[str], int]:
    name, he = _who(rng)
    rate, hours, days = rng.randint(8, 25), rng.randint(2, 8), rng.randint(2, 6)
    per_day = rate * hours
    question = (f"{name} earns ${rate} an hour babysitting. {he.capitalize()} babysits for {hours} hours a day "
                f"for {days} days. How much money does {he} earn?")
    return question, [f"Each day, {name} earns {rate} x {hours} = ${per_day}.",
                      f"In {days} days, {he} earns {per_day} x {days} = ${per_day * days}."], per_day * days


def change_back(rng: random.Random) -> tuple[str, list[str], int]:
    name, he = _who(rng)
    items, count, price = rng.choice(ITEMS), rng.randint(2, 9), rng.randint(2, 12)
    cost = count * price
    bill = next(b for b in (20, 50, 100, 200) if b > cost)
    question = (f"{name} buys {count} {items} at ${price} each and pays with a ${bill} bill. "
                f"How much change does {he} get back?")
    return question, [f"The {items} cost {count} x {price} = ${cost}.",
                      f"{name} gets back {bill} - {cost} = ${bill - cost}."], bill - cost


def weeks_to_save(rng: random.Random) -> tuple[str, list[str], int]:
    name, he = _who(rng)
    weekly, weeks, saved = rng.randint(5, 30), rng.randint(2, 12), rng.randint(10, 90)
    price = saved + weekly * weeks
    thing = rng.choice(["bike", "video game", "guitar", "pair of shoes", "tablet"])
    question = (f"{name} wants a {thing} that costs ${price}. {he.capitalize()} has saved ${saved} and saves "
                f"${weekly} more each week. How many weeks will it take {name} to have enough money?")
    return question, [f"{name} still needs {price} - {saved} = ${price - saved}.",
                      f"At ${weekly} a week, that takes {price - saved} / {weekly} = {weeks} weeks."], weeks


def box_count(rng: random.Random) -> tuple[str, list[str], int]:
    name, he = _who(rng)
    items = rng.choice(ITEMS)
    boxes, per_box, given = rng.randint(2, 9), rng.randint(6, 24), rng.randint(1, 10)
    total = boxes * per_box
    bought = rng.randint(1, 15)
    question = (f"{name} has {boxes} boxes with {per_box} {items} in each box. {he.capitalize()} gives away "
                f"{given} {items} and then buys {bought} more. How many {items} does {name} have now?")
    return question, [f"{name} starts with {boxes} x {per_box} = {total} {items}.",
                      f"After giving some away, {he} has {total} - {given} = {total - given} {items}.",
                      f"After buying more, {he} has {total - given} + {bought} = {total - given + bought} {items}."
                      ], total - given + bought


def trip_distance(rng: random.Random) -> tuple[str, list[str], int]:
    name, he = _who(rng)
    speed1, hours1, speed2, hours2 = rng.randint(30, 90), rng.randint(1, 5), rng.randint(20, 70), rng.randint(1, 4)
    first, second = speed1 * hours1, speed2 * hours2
    question = (f"{name} drives at {speed1} miles per hour for {hours1} hours, then at {speed2} miles per hour "
                f"for {hours2} hours. How many miles does {he} drive in all?")
    return question, [f"First, {he} drives {speed1} x {hours1} = {first} miles.",
                      f"Then {he} drives {speed2} x {hours2} = {second} miles.",
                      f"In all, {he} drives {first} + {second} = {first + second} miles."], first + second


def share_left(rng: random.Random) -> tuple[str, list[str], int]:
    name, he = _who(rng)
    items, quarter = rng.choice(ITEMS), rng.randint(3, 30)
    total, kept_back = 4 * quarter, rng.randint(1, 3 * quarter - 1)
    friend = rng.choice([n for n, _ in NAMES if n != name])
    left = total - quarter
    question = (f"{name} has {total} {items}. {he.capitalize()} gives a quarter of them to {friend} and then "
                f"uses {kept_back} of the rest. How many {items} does {name} have left?")
    return question, [f"A quarter of {total} is {total} / 4 = {quarter} {items}.",
                      f"After giving them away, {name} has {total} - {quarter} = {left} {items}.",
                      f"After using some, {he} has {left} - {kept_back} = {left - kept_back} {items}."], left - kept_back


TEMPLATES = [half_as_many, hourly_pay, change_back, weeks_to_save, box_count, trip_distance, share_left]


def row(question: str, steps: list[str], answer: int) -> dict:
    """An Alpaca row in GSM8K's format: the solution's steps, then `#### answer`."""
    return {"instruction": question, "input": "", "output": "\n".join([*steps, f"#### {answer}"])}


def generate(n_train: int = 350, n_validation: int = 100, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train and validation rows: the templates in turn, no question in both splits."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n_train + n_validation:
        made = row(*TEMPLATES[len(rows) % len(TEMPLATES)](rng))
        if made["instruction"] not in seen:
            seen.add(made["instruction"])
            rows.append(made)
    return rows[:n_train], rows[n_train:]


def main(argv: list[str] | None = None) -> None:
    command_line(generate, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
