import os
import sys

from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.model import read_source  # noqa: E402
from snaketune.preflight import PreflightError, run  # noqa: E402

try:
    run(tune, read_source(snakemake.input.model), os.path.dirname(snakemake.input.data),  # noqa: F821
        snakemake.output[0], threads=snakemake.threads)  # noqa: F821
except PreflightError as error:  # the problems, whole, as the log's last lines (results.py prints them)
    print(f"\n{error}", file=sys.stderr, flush=True)
    sys.exit(1)
