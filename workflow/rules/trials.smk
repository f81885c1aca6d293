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


# The budget a slot is skipped under (tuning.budget, timeout_minutes), as a file the trials take as
# input: rewritten when the budget changes (the params trigger), it re-runs the slots skipped for
# lack of budget (their metrics.json is older), and no other: for those it is ancient.
# A shell command, not a run: block, which Snakemake runs in a new process that parses this
# workflow again (3 s at every study's start, for one line of JSON).
rule budget:
    output:
        str(LAYOUT.budget_record),
    params:
        budget=budget_settings(),
    log:
        str(LAYOUT.rule_log("budget")),
    localrule: True
    conda:
        "../../envs/snaketune.yaml"
    shell:
        "printf '%s\\n' {params.budget:q} > {output:q} && "
        "printf 'the trials run under %s\\n' {params.budget:q} > {log:q}"


# With a generation or lm-eval metric: the untrained model answers what the trials answer, scored the
# same way (snaketune.generation.evaluate_base_model), so the summary shows what tuning gained.
rule baseline:
    input:
        model=model_input(),
        data=data_input(),
        preflight=preflight_input(),
    output:
        moved_folder(LAYOUT.baseline.dir, LAYOUT.baseline.metrics),
    log:
        str(LAYOUT.rule_log("baseline")),
    threads: trial_threads
    resources:
        gpu=1,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/evaluate_baseline.py"


rule trial:
    input:
        model=model_input(),
        data=data_input(),
        preflight=preflight_input(),
        budget=budget_input,
    output:
        trial_output(),
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
