"""Shared first lines of every rule script: find the package, send output to the rule's log,
read the validated tune config (its output_dir where this job's files are), and lease the job's
device(s)."""

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

# Importing this module finds the package. In a source checkout it is the one beside these scripts
# (workflow/snaketune), installed or not, as in common.smk; a wheel carries the scripts inside the
# installed package (snaketune/_workflow/scripts), which is imported as installed.
CHECKOUT_PACKAGE_PARENT = Path(__file__).resolve().parent.parent / "workflow"
if (CHECKOUT_PACKAGE_PARENT / "snaketune").is_dir() and str(CHECKOUT_PACKAGE_PARENT) not in sys.path:
    sys.path.insert(0, str(CHECKOUT_PACKAGE_PARENT))


def start(snakemake):
    """Send the rule's output to its log; returns the resolved config (`job_config`'s)."""
    send_output_to_log(snakemake)
    return job_config(snakemake)[0]


def send_output_to_log(snakemake) -> None:
    if snakemake.log:
        Path(snakemake.log[0]).parent.mkdir(parents=True, exist_ok=True)
        log = open(snakemake.log[0], "a", buffering=1)
        sys.stdout = sys.stderr = log
        os.dup2(log.fileno(), 1)  # native libraries (torch, tokenizers) write to fd 1/2 directly
        os.dup2(log.fileno(), 2)
    # OMP/MKL/OPENBLAS_NUM_THREADS need no setting here: Snakemake runs a `script:` through its
    # shell(), which sets them (and GOTO/VECLIB/NUMEXPR) from the rule's `threads:`
    # (snakemake/shell.py, 9.27.1), so trials side by side do not oversubscribe the cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def job_config(snakemake):
    """The resolved config (`config.TuningConfig`) as this job sees the study, and whether a
    storage plugin moves the job's files: then tuning.output_dir is the local copy Snakemake gave
    the job (layout.local_output_dir), where its inputs were retrieved and its outputs are stored
    from, so every path the job derives from the layout is one Snakemake moves. Imports no torch."""
    from snaketune.layout import local_output_dir
    from snaketune.validate import load_tune_config

    # Jobs run in the workflow's working directory, where relative config paths resolve.
    tune = load_tune_config(snakemake.config, base_dir=os.getcwd(), validated=True)
    job_paths = list(snakemake.output) or list(snakemake.log)
    local = local_output_dir(tune.tuning.output_dir, job_paths[0]) if job_paths else Path(tune.tuning.output_dir)
    if local == Path(tune.tuning.output_dir):
        return tune, False
    return dataclasses.replace(tune, tuning=dataclasses.replace(tune.tuning, output_dir=str(local))), True


@contextlib.contextmanager
def leased_devices(snakemake, files, gpus: int | None = None):
    """Lease the job's device(s) for the block: yields (gpu.DeviceSettings, gpu.trial_devices' lease).

    `files` is the job's `layout.TrialFiles` (the lease is recorded in its devices.json);
    `gpus` overrides tuning.gpus_per_trial (the baseline takes one). Call it before `start`, so that
    CUDA_VISIBLE_DEVICES is set before anything initialises CUDA, and a wait for a free GPU is
    reported on Snakemake's console (the log is not redirected yet)."""
    from snaketune import gpu
    from snaketune.validate import load_gpu_settings

    settings = load_gpu_settings(snakemake.config, base_dir=os.getcwd())
    if gpus is not None:
        settings = dataclasses.replace(settings, gpus_per_trial=gpus)
    with gpu.trial_devices(settings, files.devices, holder={"trial_dir": str(files.dir.resolve())},
                           log=lambda message: print(message, file=sys.stderr, flush=True)) as devices:
        yield settings, devices
