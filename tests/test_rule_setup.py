"""scripts/rule_setup.py relies on Snakemake for the BLAS/OpenMP thread variables of a `script:`
job: this runs the installed Snakemake on a one-rule Snakefile and checks it sets them."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.workflow  # starts Snakemake (on a one-rule Snakefile)


def test_snakemake_sets_thread_variables_for_a_script_job_from_its_threads(tmp_path):
    (tmp_path / "Snakefile").write_text(textwrap.dedent("""
        rule probe:
            output: "env.json"
            threads: 3
            script: "probe.py"
    """))
    (tmp_path / "probe.py").write_text(textwrap.dedent("""
        import json, os
        names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        json.dump({n: os.environ.get(n) for n in names}, open(snakemake.output[0], "w"))
    """))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "4", "-q"], cwd=tmp_path, env=env,
                   check=True, capture_output=True)
    assert json.loads((tmp_path / "env.json").read_text()) == {
        "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3"}
