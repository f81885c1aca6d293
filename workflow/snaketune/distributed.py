"""One trial on several GPUs: a data-parallel launch (torchrun) with a single journal client.

`tuning.gpus_per_trial: g > 1` runs a trial as g ranks, one per leased device (the lease is
snaketune.gpu's). Rank 0 alone opens the journal, claims the trial and samples its parameters, then
broadcasts them (and the checkpoint to resume from) to the other ranks, which train on them: ranks
never sample parameters of their own. Each rank is this module run by torchrun
(`python -m snaketune.distributed <spec.json>`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import snaketune
from snaketune import train
from snaketune.layout import write_json
from snaketune.validate import load_tune_config

# The directory that holds the `snaketune` package (a checkout's workflow/, or site-packages):
# the ranks import the package from where this process did.
PACKAGE_PARENT = Path(snaketune.__file__).resolve().parent.parent


def launch_data_parallel(spec: dict, nproc: int, spec_path: str | Path, pass_fds: tuple[int, ...] = ()) -> None:
    """Run one trial as `nproc` data-parallel ranks (torchrun) and wait for them.

    `spec` holds the validated tune config as the YAML has it (`config`) and the directory its
    relative paths resolve against (`base_dir`), then `train.run_trial`'s other arguments (`slot`,
    `trial_dir`, `model_source`, `data_dir`, `threads`, `user_attrs`); it is written to
    `spec_path` as JSON for the ranks, each of which resolves the config itself.
    `pass_fds` are the lease's locked descriptors (`gpu.TrialDevices.fds`): torchrun and its ranks
    hold the lease too, so were this process killed, the devices stay leased until they are gone.
    Raises RuntimeError when torchrun exits non-zero.
    """
    spec_path = Path(spec_path)
    write_json(spec_path, spec)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "snaketune.distributed", str(spec_path)]
    process = subprocess.Popen(command, env=env, pass_fds=pass_fds)
    # A kill of the job (Snakemake, a scheduler) reaches the ranks: rank 0 then tells the trial FAIL.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
    try:
        code = process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise RuntimeError(f"data-parallel trial ({nproc} ranks, torchrun) exited with {code}")


def rank_main(spec_path: str) -> None:
    """One torchrun rank of a data-parallel trial (see `launch_data_parallel`)."""
    import torch
    import torch.distributed as dist

    spec = json.loads(Path(spec_path).read_text())
    tune = load_tune_config(spec["config"], base_dir=spec["base_dir"], validated=True)
    if spec.get("output_dir"):  # the job's own copy of the study's folder (rule_setup.job_config)
        tune = replace(tune, tuning=replace(tune.tuning, output_dir=spec["output_dir"]))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # NCCL for the gradients on GPUs, gloo for the parameters (Python objects) and for CPU runs.
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    threads = max(1, int(spec["threads"]) // world)
    torch.set_num_threads(threads)
    sent = []

    def announce(params: dict) -> None:
        print(f"snaketune: rank {rank}/{world} trains {json.dumps(params, sort_keys=True)}", flush=True)

    def send(params: dict, resume_from) -> None:
        dist.broadcast_object_list([{"params": params, "resume_from": resume_from}], src=0)
        sent.append(True)
        announce(params)

    try:
        if rank == 0:
            try:
                train.run_trial(tune, slot=spec["slot"], trial_dir=spec["trial_dir"],
                                model_source=spec["model_source"], data_dir=spec["data_dir"],
                                threads=threads, user_attrs=spec["user_attrs"],
                                defines_study=spec.get("defines_study", True), before_training=send)
            finally:
                if not sent:  # finished earlier, or failed before training: the others stop too
                    dist.broadcast_object_list([None], src=0)
        else:
            box = [None]
            dist.broadcast_object_list(box, src=0)
            if box[0] is not None:
                announce(box[0]["params"])
                train.train_and_evaluate(tune, box[0]["params"], Path(spec["trial_dir"]),
                                         spec["model_source"], spec["data_dir"],
                                         resume_from=box[0]["resume_from"])
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    rank_main(sys.argv[1])
