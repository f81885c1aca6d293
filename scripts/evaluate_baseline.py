import dataclasses
import os
import sys
from pathlib import Path

import rule_setup  # noqa: E402,F401 (first: in a source checkout it puts the package on sys.path)
from snaketune import gpu  # noqa: E402
from snaketune.validate import load_gpu_settings  # noqa: E402
from snaketune.layout import TrialFiles  # noqa: E402

# The device first, as a trial leases it: CUDA_VISIBLE_DEVICES must be set before CUDA starts.
# One device, as the rule declares (a data-parallel trial's gpus_per_trial is for training).
files = TrialFiles(Path(snakemake.output[0]).parent)  # noqa: F821
settings = dataclasses.replace(load_gpu_settings(snakemake.config, base_dir=os.getcwd()), gpus_per_trial=1)  # noqa: F821
with gpu.trial_devices(settings, files.devices, holder={"trial_dir": str(files.dir.resolve())},
                       log=lambda message: print(message, file=sys.stderr, flush=True)):
    tune = rule_setup.start(snakemake)  # noqa: F821
    import torch

    from snaketune.generation import evaluate_base_model
    from snaketune.model import read_source

    torch.set_num_threads(snakemake.threads)  # noqa: F821
    evaluate_base_model(tune, read_source(snakemake.input.model), os.path.dirname(snakemake.input.data),  # noqa: F821
                        files.dir)
