from rule_setup import start

tune = start(snakemake)  # noqa: F821 (injected by Snakemake)
from snaketune.report import write_report  # noqa: E402

write_report(tune["tuning"])
