"""Where a trial job's time goes: one trial of a fresh study, run by the real Snakefile, under cProfile.

cProfile is started in the job's own Python process through a `sitecustomize` module on
PYTHONPATH (Snakemake starts the rule's script itself, so there is no command line to wrap). Prints
the job's wall time split into interpreter start, imports, config, journal, model and data load,
trainer set-up, training, evaluation and checkpoint writes; the full profile is kept for
`python -m pstats` or snakeviz.

    python bench/profile_trial.py [--model tiny|smollm2] [--max-steps 40]
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
from pathlib import Path

from common import REPO, job_wall_seconds, run_snakemake
from overhead import study_config

SITECUSTOMIZE = '''
import atexit, cProfile, os, sys
if "run_trial" in " ".join(sys.argv):
    _profile = cProfile.Profile()
    _profile.enable()
    def _dump():
        _profile.disable()
        _profile.dump_stats(os.environ["SNAKETUNE_PROFILE_OUT"])
    atexit.register(_dump)
'''

# (label, function in the profile) in the order a trial runs them; "imports" is every module load.
PHASES = [
    ("config (rule_setup.start)", "rule_setup.py", "start"),
    ("journal: open study, claim trial", "scheduler.py", "claim_trial"),
    ("tokenizer load", "model.py", "load_tokenizer"),
    ("model load", "model.py", "load_model"),
    ("prepared data load", "data.py", "load_prepared"),
    ("SFTTrainer set-up", "sft_trainer.py", "__init__"),
    ("training", "trainer.py", "train"),
    ("  of which checkpoint writes", "trainer.py", "_save_checkpoint"),
    ("evaluation", "trainer.py", "evaluate"),
    ("journal: tell", "study.py", "tell"),
]


def cumulative(stats: pstats.Stats, file_suffix: str, function: str) -> float:
    return max((ct for (file, _, name), (_, _, _, ct, _) in stats.stats.items()
                if name == function and file.endswith(file_suffix)), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "profile")
    args = parser.parse_args()
    workdir = args.workdir / args.model
    shutil.rmtree(workdir, ignore_errors=True)
    config = study_config(args.model, 1, args.max_steps)
    run_snakemake(workdir, config, "--until", "prepare_data")  # and the model; not profiled
    site = workdir / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    profile = workdir / "trial.prof"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "SNAKETUNE_PROFILE_OUT": str(profile)}
    run_snakemake(workdir, config, "--until", "trial", env=env)

    job = job_wall_seconds(workdir / "study" / "trial_0")
    stats = pstats.Stats(str(profile))
    profiled = max(ct for (_, _, name), (_, _, _, ct, _) in stats.stats.items() if name == "<module>")
    imports = cumulative(stats, "_bootstrap>", "_find_and_load")
    print(f"\nOne {args.model} trial of {args.max_steps} steps: job wall {job:.1f} s\n")
    print(f"{'phase':48s} {'seconds':>8s} {'share':>6s}")
    rows = [("interpreter start + Snakemake's script preamble", job - profiled), ("imports (all modules)", imports)]
    rows += [(label, cumulative(stats, suffix, name)) for label, suffix, name in PHASES]
    for label, seconds in rows:
        print(f"{label:48s} {seconds:8.2f} {seconds / job:6.1%}")
    print("\ncProfile slows pure-Python work (imports above all) far more than torch's native kernels, so "
          "the imports' share is an upper bound; bench/overhead.py measures the overhead without a profiler. "
          "Imports triggered inside a phase count in both rows.")
    print(f"Full profile: {profile} (python -m pstats {profile})")


if __name__ == "__main__":
    main()
