# trial_<i>: slot i of the budget. Leases its GPU(s), asks the journal for parameters, trains,
# evaluates, tells.
from snaketune.gpu import scaled_gpu_limit

# `--resources gpu=N` means N physical GPUs. A trial declares gpu = gpus_per_trial (what SLURM's
# --gpus is asked for); when k trials share a GPU (trials_per_gpu: k), the local limit counts
# shares instead of devices: N GPUs are N*k shares. Resources are integers, so the limit is scaled
# rather than each trial asking for 1/k. The trial itself leases its device (snaketune.gpu).
GPU_SETTINGS = TUNING.gpu
GPU_LIMIT = workflow.global_resources.get("gpu")
if GPU_SETTINGS.trials_per_gpu > 1 and GPU_LIMIT is not None and isinstance(GPU_LIMIT.value, int):
    workflow.register_resource(
        "gpu", scaled_gpu_limit(GPU_LIMIT.value, GPU_SETTINGS.trials_per_gpu)
    )


rule trial:
    input:
        model=str(LAYOUT.model_source),
        data=str(LAYOUT.data_summary),
    output:
        str(TRIAL.metrics),
    log:
        str(TRIAL.log),
    # The job's wall time, memory and CPU (bench/overhead.py compares it with training time).
    benchmark:
        str(TRIAL.benchmark)
    wildcard_constraints:
        i=r"\d+",
    threads: trial_threads
    resources:
        gpu=GPU_SETTINGS.gpus_per_trial,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/run_trial.py"
