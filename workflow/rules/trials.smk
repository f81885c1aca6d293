# trial_<i>: slot i of the budget. Asks the journal for parameters, trains, evaluates, tells.


rule trial:
    input:
        model=out("prepared_model/source.json"),
        data=out("data/summary.json"),
    output:
        out("trial_{i}/metrics.json"),
    log:
        out("trial_{i}/logs/trial.log"),
    wildcard_constraints:
        i=r"\d+",
    threads: trial_threads
    resources:
        gpu=1,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/run_trial.py"
