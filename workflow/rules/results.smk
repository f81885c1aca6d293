# The table of trials, the best trial (or the Pareto front) and the best model, from the journal.


rule aggregate:
    input:
        model=out("prepared_model/source.json"),
        trials=trial_metrics(),
    output:
        aggregate_outputs(),
    log:
        out("logs/aggregate.log"),
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/aggregate.py"


onsuccess:
    from snaketune.results import print_summary

    print_summary(TUNING)


# A failed trial stops `aggregate` from running; the table is written from the journal anyway.
onerror:
    from snaketune.results import aggregate_after_failure

    aggregate_after_failure(TUNE)
