# snaketune: hyperparameter tuning for LLM fine-tuning.
#   snakemake --cores N [--resources gpu=M] [--configfile my_tune.yaml]
# Without --configfile the embedded default (config/tune.yaml) runs.


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/trials.smk"
include: "workflow/rules/results.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        results_outputs(),
        rules.report.output,
    default_target: True
