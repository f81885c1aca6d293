import json

from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.train import run_trial  # noqa: E402

run_trial(
    tune,
    slot=int(snakemake.wildcards.i),  # noqa: F821
    trial_dir=snakemake.params.trial_dir,  # noqa: F821
    model_source=json.loads(open(snakemake.input.model).read()),  # noqa: F821
    data_dir=snakemake.params.data_dir,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
