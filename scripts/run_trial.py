import os
import sys

import rule_setup  # noqa: E402,F401 (first: in a source checkout it puts the package on sys.path)
from snaketune.locks import hold_trial_share  # noqa: E402

# Before anything imports torch (the device lease sets CUDA_VISIBLE_DEVICES first): the config as
# this job sees the study, its output_dir where the job's files are (rule_setup.job_config).
tune, moved = rule_setup.job_config(snakemake)  # noqa: F821
slot = int(snakemake.wildcards.i)  # noqa: F821
files = tune.tuning.layout.trial(slot)
# Held until this job ends, even should its snakemake die first: no new run takes the study meanwhile.
TRIALS_LOCK = hold_trial_share(tune.tuning.layout, tune.tuning.storage, tune.tuning.study_name)
with rule_setup.leased_devices(snakemake, files) as (settings, devices):  # noqa: F821
    rule_setup.send_output_to_log(snakemake)  # noqa: F821
    from snaketune.model import read_source
    from snaketune.train import run_trial

    record = devices.record
    print(f"snaketune: trial slot {slot} on CUDA_VISIBLE_DEVICES={record['cuda_visible_devices']!r}"
          + (f" (SLURM job {record['slurm_job_id']})" if "slurm_job_id" in record else ""), flush=True)
    arguments = dict(
        slot=slot,
        trial_dir=str(files.dir),
        model_source=read_source(tune.tuning.layout.model_source),
        data_dir=str(tune.tuning.layout.data_summary.parent),
        threads=snakemake.threads,  # noqa: F821
        user_attrs=record,
        # Where a storage plugin moves the files, this job may not see the data files the study's
        # definition hashes: the run's main process recorded the definition (common.smk's onstart).
        defines_study=not moved,
    )
    if settings.gpus_per_trial > 1:
        from snaketune.distributed import launch_data_parallel

        # The ranks resolve the config again from the YAML's dict (one process, one config).
        launch_data_parallel({"config": snakemake.config, "base_dir": os.getcwd(),  # noqa: F821
                              "output_dir": tune.tuning.output_dir, **arguments},
                             settings.gpus_per_trial, files.launch_spec, pass_fds=devices.fds)
    else:
        from snaketune.study import RepeatedFailure

        try:
            run_trial(tune, **arguments)
        except RepeatedFailure as error:  # said in one line: its cause is in another trial's log
            sys.exit(f"snaketune: {error}")
