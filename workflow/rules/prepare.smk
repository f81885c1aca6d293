# Work done once per study: the model as a directory on disk, the data tokenized.


rule prepare_model:
    output:
        str(LAYOUT.model_source),
    params:
        made_from=prepared_model_from,
    log:
        str(LAYOUT.rule_log("prepare_model")),
    threads: all_cores
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/prepare_model.py"


rule prepare_data:
    input:
        model=str(LAYOUT.model_source),
    output:
        str(LAYOUT.data_summary),
    params:
        made_from=prepared_data_from,
    log:
        str(LAYOUT.rule_log("prepare_data")),
    threads: all_cores
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/prepare_data.py"
