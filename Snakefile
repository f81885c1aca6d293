# snaketune: hyperparameter tuning for LLM fine-tuning.
#   snakemake --cores N [--resources gpu=M] [--configfile my_tune.yaml]
# Without --configfile the embedded default (config/tune.yaml) runs.


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/preflight.smk"
include: "workflow/rules/trials.smk"
include: "workflow/rules/results.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        results_outputs(),
        rules.report.output,
        # Every slot is a target of its own: a grown n_trials then runs its new slots even where
        # Snakemake has no record of the old input set (--rerun-triggers mtime, a moved study).
        # Through `aggregate` alone, an up-to-date trials_results.csv would hide the missing slots.
        trial_metrics(),
    default_target: True
