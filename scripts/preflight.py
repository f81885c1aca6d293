import sys

from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.model import read_source  # noqa: E402
from snaketune.preflight import PreflightError, run  # noqa: E402

try:
    layout = tune.tuning.layout  # where this job's files are (rule_setup.job_config)
    run(tune, read_source(layout.model_source), layout.data_summary.parent, layout.preflight_record,
        threads=snakemake.threads)  # noqa: F821
except PreflightError as error:  # the problems, whole, as the log's last lines (results.py prints them)
    print(f"\n{error}", file=sys.stderr, flush=True)
    sys.exit(1)
