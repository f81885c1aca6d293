import json
import os

from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.train import run_trial  # noqa: E402

run_trial(
    tune,
    slot=int(snakemake.wildcards.i),  # noqa: F821
    trial_dir=os.path.dirname(snakemake.output[0]),  # noqa: F821
    model_source=json.loads(open(snakemake.input.model).read()),  # noqa: F821
    data_dir=os.path.dirname(snakemake.input.data),  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
