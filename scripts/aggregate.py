from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.model import read_source  # noqa: E402
from snaketune.results import aggregate  # noqa: E402

output = snakemake.output  # noqa: F821
layout = tune.tuning.layout  # where this job's files are (rule_setup.job_config)
one_objective = len(tune.tuning.metrics) == 1  # the best model is built (in best_model/, declared or not)
aggregate(tune.tuning, tune.model, model_source=read_source(layout.model_source),
          results_csv=output.results_csv, best_record=output.best_record,
          best_model_record=layout.best_model_record if one_objective else None,
          pareto_front=output.get("pareto_front"))
