import json
import os
import sys
import time
from pathlib import Path

import rule_setup  # noqa: E402,F401 (first: in a source checkout it puts the package on sys.path)
from snaketune import gpu  # noqa: E402
from snaketune.config import load_gpu_settings  # noqa: E402
from snaketune.layout import TrialFiles  # noqa: E402

# The device(s) first: CUDA_VISIBLE_DEVICES must be set before anything initialises CUDA.
# A wait for a free GPU is reported on Snakemake's console (the log is not redirected yet).
files = TrialFiles(Path(snakemake.output[0]).parent)  # noqa: F821
trial_dir = files.dir
slot = int(snakemake.wildcards.i)  # noqa: F821
settings = load_gpu_settings(snakemake.config, base_dir=os.getcwd())  # noqa: F821
lease, devices = gpu.lease_for_trial(
    settings, holder={"trial_dir": str(trial_dir.resolve())},
    log=lambda message: print(message, file=sys.stderr, flush=True))
files.logs.mkdir(parents=True, exist_ok=True)
device_record = files.devices
device_record.write_text(json.dumps(devices, indent=2))

from rule_setup import start  # noqa: E402

tune = start(snakemake)  # noqa: F821
from snaketune.train import run_trial  # noqa: E402

print(f"snaketune: trial slot {slot} on CUDA_VISIBLE_DEVICES={devices['cuda_visible_devices']!r}"
      + (f" (SLURM job {devices['slurm_job_id']})" if "slurm_job_id" in devices else ""), flush=True)
arguments = dict(
    slot=slot,
    trial_dir=str(trial_dir),
    model_source=json.loads(open(snakemake.input.model).read()),  # noqa: F821
    data_dir=os.path.dirname(snakemake.input.data),  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
    user_attrs=devices,
)
try:
    if settings["gpus_per_trial"] > 1:
        gpu.launch_data_parallel({"tune": tune, **arguments}, settings["gpus_per_trial"],
                                 files.launch_spec, lease=lease)
    else:
        run_trial(tune, **arguments)
finally:
    device_record.write_text(json.dumps({**devices, "released_at": time.time()}, indent=2))
    if lease is not None:
        lease.release()
