import rule_setup  # noqa: E402,F401 (first: in a source checkout it puts the package on sys.path)

# Before anything imports torch (the device lease sets CUDA_VISIBLE_DEVICES first).
tune, _ = rule_setup.job_config(snakemake)  # noqa: F821
layout = tune.tuning.layout  # where this job's files are
files = layout.baseline
# One device, as the rule declares (a data-parallel trial's gpus_per_trial is for training).
with rule_setup.leased_devices(snakemake, files, gpus=1):  # noqa: F821
    rule_setup.send_output_to_log(snakemake)  # noqa: F821
    import torch

    from snaketune.generation import evaluate_base_model
    from snaketune.model import read_source

    torch.set_num_threads(snakemake.threads)  # noqa: F821
    evaluate_base_model(tune, read_source(layout.model_source), layout.data_summary.parent, files.dir)
