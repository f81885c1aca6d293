"""The test layers (docs/contributing.md): a study started from a test marked neither `workflow` nor
`system` fails that test, so `make check` (the unit layer) cannot grow a Snakemake run unseen."""

import pytest

from workflow_helpers import run_cli, run_snakemake


def test_an_unmarked_test_that_starts_snakemake_or_the_cli_fails(tmp_path):
    with pytest.raises(AssertionError, match="mark the test"):
        run_snakemake(tmp_path, "--version", configfile=None)
    with pytest.raises(AssertionError, match="mark the test"):
        run_cli(tmp_path, "tune", "-c", "tune.yaml")
    assert not list(tmp_path.iterdir())  # refused before the process started


@pytest.mark.workflow
def test_a_marked_test_starts_snakemake(tmp_path):
    assert run_snakemake(tmp_path, "--version", configfile=None, cores=None).stdout.strip()
