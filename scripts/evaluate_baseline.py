import os
from pathlib import Path

import rule_setup  # noqa: E402,F401 (first: in a source checkout it puts the package on sys.path)
from snaketune.layout import TrialFiles  # noqa: E402

# One device, as the rule declares (a data-parallel trial's gpus_per_trial is for training).
files = TrialFiles(Path(snakemake.output[0]).parent)  # noqa: F821
with rule_setup.leased_devices(snakemake, files, gpus=1):  # noqa: F821
    tune = rule_setup.start(snakemake)  # noqa: F821
    import torch

    from snaketune.generation import evaluate_base_model
    from snaketune.model import read_source

    torch.set_num_threads(snakemake.threads)  # noqa: F821
    evaluate_base_model(tune, read_source(snakemake.input.model), os.path.dirname(snakemake.input.data),  # noqa: F821
                        files.dir)
