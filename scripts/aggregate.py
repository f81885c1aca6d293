import json

from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.results import aggregate  # noqa: E402

output = snakemake.output  # noqa: F821
aggregate(tune, model_source=json.loads(open(snakemake.input.model).read()),  # noqa: F821
          results_csv=output.results_csv, best_record=output.best_record,
          best_model=output.get("best_model"), pareto_front=output.get("pareto_front"))
