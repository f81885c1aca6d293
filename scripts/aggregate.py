import json

from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.results import aggregate  # noqa: E402

aggregate(tune, model_source=json.loads(open(snakemake.input.model).read()))  # noqa: F821
