# Before any trial: every configuration the search can draw, built and stepped once by TRL, PEFT
# and transformers on a shrunken copy of the model (snaketune.preflight). A refused value stops the
# run here, by its YAML path; the record is kept, so a re-run or a grown study does not pay again.


rule preflight:
    input:
        model=model_input(),
        data=data_input(),
    output:
        str(LAYOUT.preflight_record),
    params:
        checks=preflight_fingerprint,
    log:
        str(LAYOUT.rule_log("preflight")),
    # Its wall time beside a trial's (bench/preflight.py).
    benchmark:
        str(LAYOUT.rule_benchmark("preflight"))
    threads: all_cores
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/preflight.py"
