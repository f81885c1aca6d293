# The table of trials, the best trial (or the Pareto front) and the best model, from the journal.


rule aggregate:
    input:
        model=model_input(),
        trials=trial_metrics(),
        baseline=baseline_outputs(),
    output:
        **aggregate_outputs(),
    params:
        best_model=best_model_state(),
    log:
        str(LAYOUT.rule_log("aggregate")),
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/aggregate.py"


onsuccess:
    from snaketune.summary import print_summary

    stop_progress()
    print_summary(LAYOUT, TUNING.study_name, TUNING.metrics, stored_in=STORED_IN)


# A failed trial stops `aggregate` from running; the table is written from the journal anyway.
onerror:
    from snaketune.results import aggregate_after_failure

    stop_progress()
    if "fd" in RUN_LOCK:  # only a run that held the study (not one refused at its start)
        aggregate_after_failure(TUNING, stored_in=STORED_IN)
