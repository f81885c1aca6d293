"""snaketune.errors: the base exception every concept's error derives from, and "did you mean"."""

import pytest

from snaketune import errors, gpu
from snaketune.config import ConfigError
from snaketune.metrics import MissingObjectiveError
from snaketune.row_formats import DataError


def test_closest():
    assert errors.closest("n_trails", ["n_trials", "seed"]) == " (did you mean 'n_trials'?)"
    assert errors.closest("flux_capacitor", ["n_trials", "seed"]) == ""


@pytest.mark.parametrize("error,builtin", [
    (ConfigError(["tuning.n_trials: must be at least 1, got 0"]), ValueError),
    (gpu.LeaseError("a trial needs 2 GPU(s)"), RuntimeError),
    (DataError("data.train: no usable rows"), ValueError),
    (MissingObjectiveError("evaluation did not produce eval_f1"), RuntimeError),
])
def test_every_project_error_is_a_snaketune_error_and_keeps_its_builtin(error, builtin):
    assert isinstance(error, errors.SnaketuneError) and isinstance(error, builtin)
