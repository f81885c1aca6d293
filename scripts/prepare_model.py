from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.model import prepare_model  # noqa: E402

prepare_model(tune.model, snakemake.output[0])  # noqa: F821
