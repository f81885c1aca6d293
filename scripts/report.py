from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.report import write_report  # noqa: E402

output = snakemake.output  # noqa: F821
tuning = tune.tuning
write_report(tuning.output_dir, tuning.study_name, tuning.metrics,
             results_csv=snakemake.input.results_csv,  # noqa: F821
             best_record=snakemake.input.best_record, plots=list(output.plots),  # noqa: F821
             pages={"interactive": output.interactive, "trials": output.trials, "best": output.best},
             url=tuning.storage)
