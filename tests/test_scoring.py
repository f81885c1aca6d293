"""The built-in generation metrics on hand-written outputs, edge cases included."""

import pytest

from snaketune import scoring

GSM8K_REFERENCE = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                   "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")


@pytest.mark.parametrize("output, reference, expected", [
    ("Paris", "Paris", 1.0),
    ("  paris. ", "Paris", 1.0),  # case, punctuation, surrounding whitespace
    ("New   York,\nNY", "new york ny", 1.0),  # whitespace runs, punctuation inside
    ("Paris is the capital", "Paris", 0.0),  # trailing text is not an exact match
    ("", "Paris", 0.0),  # empty output
    ("", "", 1.0),
    ("...", "", 1.0),  # only punctuation: empty once normalised
    ("Pariss", "Paris", 0.0),
    ("35", "3.5", 0.0),  # a decimal point is not punctuation
    ("3.5.", "3.5", 1.0),
    ("Café — «oui»", "café oui", 1.0),  # punctuation of any script
])
def test_exact_match(output, reference, expected):
    assert scoring.exact_match(output, reference) == expected


@pytest.mark.parametrize("output, reference, expected", [
    ("The capital of France is Paris.", "paris", 1.0),
    ("PARIS", "Paris", 1.0),
    ("The capital is Lyon.", "Paris", 0.0),
    ("", "Paris", 0.0),  # empty output
    ("anything", "", 0.0),  # an empty reference is not in every output
    ("", "", 1.0),
    ("The answer is 14", "4", 0.0),  # whole words only
    ("yesterday", "yes", 0.0),
    ("So it is 4.", "4", 1.0),
])
def test_contains_answer(output, reference, expected):
    assert scoring.contains_answer(output, reference) == expected


@pytest.mark.parametrize("output, expected", [
    ("48 + 24 = 72, so she sold 72 clips.", 1.0),  # several numbers: the last one counts
    ("She sold 72 clips, and 5 more next year.", 0.0),  # trailing text with a later number
    ("#### 72\nI hope this helps, 5 stars!", 1.0),  # the #### marker wins over later numbers
    ("The answer is 72.00", 1.0),  # the same value written otherwise
    ("The answer is $\\boxed{72}$", 1.0),
    ("The answer is 27", 0.0),
    ("", 0.0),  # empty output
    ("I do not know.", 0.0),  # no number at all
])
def test_math_answer_takes_the_final_answer_of_a_gsm8k_reference(output, expected):
    assert scoring.math_answer(output, GSM8K_REFERENCE) == expected


@pytest.mark.parametrize("output, reference, expected", [
    ("It costs 1,000 dollars", "1000", 1.0),  # thousands separator
    ("so x = \\frac{1}{2}", "0.5", 1.0),  # a fraction against a decimal
    ("-3.5", "#### -3.50", 1.0),
    ("3.5", "#### -3.5", 0.0),  # the sign matters
    ("42", "no number here", 0.0),  # a reference without an answer scores nothing right
])
def test_math_answer_compares_values(output, reference, expected):
    assert scoring.math_answer(output, reference) == expected


def test_rouge_l():
    assert scoring.rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS "cat sat on mat" (4 of 6 words each way): F = 2/3
    assert scoring.rouge_l("a cat sat on a mat", "the cat sat on the mat") == pytest.approx(2 / 3)
    assert scoring.rouge_l("", "the cat") == 0.0  # empty output
    assert scoring.rouge_l("dogs bark", "the cat") == 0.0
    assert scoring.rouge_l("кошка сидит", "кошка сидит") == 1.0  # words of any script


def test_score_row_gives_every_metric():
    scores = scoring.score_row("The answer is 72.", GSM8K_REFERENCE)
    assert set(scores) == set(scoring.GENERATION_METRICS)
    assert scores["math_answer"] == 1.0 and scores["exact_match"] == 0.0
    assert all(0.0 <= v <= 1.0 for v in scores.values())
