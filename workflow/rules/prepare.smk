# Work done once per study: the model as a directory on disk, the data tokenized.


rule prepare_model:
    output:
        out("prepared_model/source.json"),
    log:
        out("logs/prepare_model.log"),
    threads: max(1, workflow.cores)
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/prepare_model.py"


rule prepare_data:
    input:
        model=out("prepared_model/source.json"),
    output:
        out("data/summary.json"),
    log:
        out("logs/prepare_data.log"),
    threads: max(1, workflow.cores)
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/prepare_data.py"
