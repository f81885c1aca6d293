# Work done once per study: the model as a directory on disk, the data tokenized. Where a storage
# plugin moves the files, they run here (local rules), where the user's model and data files are,
# and their whole folders are what the other jobs receive.


rule prepare_model:
    output:
        model_output(),
    params:
        made_from=prepared_model_from,
    log:
        str(LAYOUT.rule_log("prepare_model")),
    localrule: MOVED_BY_STORAGE
    threads: all_cores
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/prepare_model.py"


rule prepare_data:
    input:
        model=model_input(),
    output:
        data_output(),
    params:
        made_from=prepared_data_from,
    log:
        str(LAYOUT.rule_log("prepare_data")),
    localrule: MOVED_BY_STORAGE
    threads: all_cores
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/prepare_data.py"
