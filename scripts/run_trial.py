import os
import sys
from pathlib import Path

import rule_setup  # noqa: E402,F401 (first: in a source checkout it puts the package on sys.path)
from snaketune import gpu  # noqa: E402
from snaketune.validate import load_gpu_settings  # noqa: E402
from snaketune.layout import StudyLayout, TrialFiles  # noqa: E402
from snaketune.study import hold_trial_share  # noqa: E402

# The device(s) first: CUDA_VISIBLE_DEVICES must be set before anything initialises CUDA.
# A wait for a free GPU is reported on Snakemake's console (the log is not redirected yet).
files = TrialFiles(Path(snakemake.output[0]).parent)  # noqa: F821
trial_dir = files.dir
slot = int(snakemake.wildcards.i)  # noqa: F821
# Held until this job ends, even should its snakemake die first: no new run takes the study meanwhile.
TRIALS_LOCK = hold_trial_share(StudyLayout(trial_dir.parent))
settings = load_gpu_settings(snakemake.config, base_dir=os.getcwd())  # noqa: F821
with gpu.trial_devices(settings, files.devices, holder={"trial_dir": str(trial_dir.resolve())},
                       log=lambda message: print(message, file=sys.stderr, flush=True)) as devices:
    tune = rule_setup.start(snakemake)  # noqa: F821
    from snaketune.model import read_source
    from snaketune.train import run_trial

    record = devices.record
    print(f"snaketune: trial slot {slot} on CUDA_VISIBLE_DEVICES={record['cuda_visible_devices']!r}"
          + (f" (SLURM job {record['slurm_job_id']})" if "slurm_job_id" in record else ""), flush=True)
    arguments = dict(
        slot=slot,
        trial_dir=str(trial_dir),
        model_source=read_source(snakemake.input.model),  # noqa: F821
        data_dir=os.path.dirname(snakemake.input.data),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        user_attrs=record,
    )
    if settings.gpus_per_trial > 1:
        from snaketune.distributed import launch_data_parallel

        # The ranks resolve the config again from the YAML's dict (one process, one config).
        launch_data_parallel({"config": snakemake.config, "base_dir": os.getcwd(), **arguments},  # noqa: F821
                             settings.gpus_per_trial, files.launch_spec, pass_fds=devices.fds)
    else:
        from snaketune.study import RepeatedFailure

        try:
            run_trial(tune, **arguments)
        except RepeatedFailure as error:  # said in one line: its cause is in another trial's log
            sys.exit(f"snaketune: {error}")
