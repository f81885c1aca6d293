from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.model import prepare_model  # noqa: E402

prepare_model(tune.model, tune.tuning.layout.model_source)  # the rule's output, or the folder it declares
