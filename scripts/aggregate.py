from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.model import read_source  # noqa: E402
from snaketune.results import aggregate  # noqa: E402

output = snakemake.output  # noqa: F821
aggregate(tune.tuning, tune.model, model_source=read_source(snakemake.input.model),  # noqa: F821
          results_csv=output.results_csv, best_record=output.best_record,
          best_model_record=output.get("best_model_record"), pareto_front=output.get("pareto_front"))
