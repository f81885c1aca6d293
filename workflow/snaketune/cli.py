"""`snaketune`: the workflow behind a command an `oumi tune` user already knows.

    snaketune tune -c tune.yaml [--cores N] [--gpus M] [--profile slurm] [--dry-run] [key=value ...]
                                [--key VALUE ...]   (oumi tune's override syntax, e.g. --tuning.n_trials 5)
    snaketune check -c tune.yaml [key=value ...]
    snaketune status <output_dir> [--watch [SECONDS]]
    snaketune best <output_dir>
    snaketune export <output_dir> [--format csv|json|yaml] [--as-config] [-o FILE]
    snaketune report <output_dir> [-o FILE]
    snaketune recover <output_dir> [-c tune.yaml]
    snaketune path [snakefile|profiles|workflow]

`tune` runs the `snakemake` command on the repository's Snakefile (and resumes a study whose last
run was killed); `report` runs `snakemake --report` with the config the study ran with; `recover`
makes a damaged journal readable again; everything else reads the study's journal and result files, so it works during a run as well as after it. `path` prints where the
workflow files are, for running snakemake directly: `snakemake -s "$(snaketune path)" ...`.

Over 500 lines because it is the whole command line: the parser and one short function per command
(`cmd_*`), each a thin layer over the package's readers and checks (summary, results, study,
validate); the run's signal handling (`run_snakemake`) is what a `tune` needs and nothing else uses.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from snaketune import resources
from snaketune.errors import SnaketuneError
from snaketune.layout import StudyLayout

SNAKEFILE = resources.snakefile()
PROFILES_DIR = resources.profiles_dir()


class CliError(SnaketuneError):
    """A problem with what the user asked for: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# tune


def parse_override(text: str) -> tuple[list[str], object]:
    """`tuning.n_trials=20` -> (["tuning", "n_trials"], 20); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise CliError(f"override {text!r} is not of the form dotted.key=value")
    return key.split("."), yaml.safe_load(value) if value != "" else None


def dotted_options(argv: list[str]) -> list[str]:
    """`oumi tune`'s override syntax as snaketune's: `--tuning.n_trials 5` and
    `--tuning.n_trials=5` become `tuning.n_trials=5` (an option with a dot in its name is a config
    key; snaketune's own options have none)."""
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        name = token[2:].partition("=")[0] if token.startswith("--") else ""
        if "." in name:
            if "=" in token:
                out.append(token[2:])
            elif i + 1 < len(argv):
                out.append(f"{name}={argv[i + 1]}")
                i += 1
            else:
                raise CliError(f"override {token} has no value (write {token} VALUE or {name}=VALUE)")
        else:
            out.append(token)
        i += 1
    return out


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """A copy of `config` with each `dotted.key=value` set (intermediate mappings created)."""
    merged = copy.deepcopy(config)
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise CliError(f"override {text!r}: {'.'.join(path[:i + 1])} is not a mapping")
            node = child
        node[path[-1]] = value
    return merged


def profile_args(profile: str | None) -> list[str]:
    """`--profile slurm` -> the repository's workflow/profiles/slurm; a path is used as given."""
    name = profile or "default"
    bundled = PROFILES_DIR / name
    if bundled.is_dir():
        return ["--workflow-profile", str(bundled)]
    if Path(name).is_dir():
        return ["--profile", str(Path(name).resolve())]
    known = sorted(p.name for p in PROFILES_DIR.iterdir() if p.is_dir())
    raise CliError(f"unknown profile {name!r}: not a directory; bundled profiles: {', '.join(known)}")


def snakemake_command(configfile: Path, cores: str | None, gpus: int | None, profile: str | None,
                      dry_run: bool, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--configfile", str(configfile)]
    command += profile_args(profile)
    if cores is not None or profile in (None, "default"):
        command += ["--cores", str(cores or "all")]
    if gpus is not None:
        # One token: `--resources` takes a list, so in two it would swallow the user's targets after `--`.
        command += [f"--resources=gpu={gpus}"]
    if dry_run:
        command += ["--dry-run"]
    return command + extra


def read_config(path: str, overrides: list[str]) -> tuple[dict, str]:
    """The tune.yaml at `path` with the command line's overrides applied, and the text of it
    Snakemake is given (a header naming the file and overrides, then the YAML). Raises CliError
    for a missing file, ConfigError for YAML that does not parse (file:line:column)."""
    if not Path(path).is_file():
        raise CliError(f"no such config file: {path}")
    from snaketune.validate import load_yaml

    merged = apply_overrides(load_yaml(path) or {}, overrides)
    header = f"# {path}" + (f" with overrides: {' '.join(overrides)}" if overrides else "")
    return merged, header + "\n" + yaml.safe_dump(merged, sort_keys=False)


def check_config(merged: dict):
    """The accepted config (check.accepted_config, against the working directory), its notices
    printed; raises ConfigError (printed by main, exit 1) before anything is written."""
    from snaketune.check import accepted_config, notice_line

    resolved = accepted_config(merged, base_dir=Path.cwd())
    for notice in resolved.notices:
        print(notice_line(notice), file=sys.stderr)
    return resolved


def cmd_check(args) -> int:
    merged, _ = read_config(args.config, args.overrides)
    resolved = check_config(merged)
    tuning = resolved.tuning
    from snaketune.summary import shown

    parameters = ", ".join(p.name for p in tuning.space) or "none"
    print(f"snaketune: {args.config} is accepted: study {tuning.study_name!r} in {shown(tuning.layout.output_dir)}, "
          f"{tuning.n_trials} trial(s) over {len(tuning.space)} parameter(s) ({parameters}), "
          f"{' and '.join(f'{m} ({d})' for m, d in zip(tuning.metrics, tuning.directions))}. "
          "When the run starts, its preflight builds and steps each edge of the search space "
          "before the first trial.")
    return 0


def cmd_tune(args) -> int:
    merged, text = read_config(args.config, args.overrides)
    # Everything the config can be refused for is asked here, in-process, before output_dir is
    # created or tune.merged.yaml rewritten: a refused run leaves the study as it was.
    resolved = check_config(merged)
    from snaketune.check import CHECKED_ENV, check_token

    os.environ[CHECKED_ENV] = check_token(text, Path.cwd())  # Snakemake's parse need not ask again
    if args.dry_run:  # a dry run writes nothing under the output directory
        handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="snaketune-", delete=False)
        handle.write(text)
        handle.close()
        configfile = Path(handle.name)
    else:  # kept beside the results: what the study ran with (`status` and `export` read it)
        layout = resolved.tuning.layout
        from snaketune.locks import (StudyInUse, hold_launch, in_use_message, launch_alive,
                                     release_stale_snakemake_locks, run_holder)

        study = (resolved.tuning.storage, resolved.tuning.study_name)  # where its locks are (a database's, or files)
        holder = run_holder(layout, *study)  # its jobs read tune.merged.yaml: never overwrite it under them
        if holder:
            raise CliError(in_use_message(layout, holder))
        if launch_alive(layout):  # one starting: Snakemake has not taken the run lock yet
            raise CliError(f"another `snaketune tune` of the study in {layout.output_dir} is starting; "
                           "wait for it (`snaketune status` follows it), or stop it first")
        # A run killed outright (SIGKILL, a power cut, the OOM killer) left Snakemake's lock, which
        # plain snakemake clears only with --unlock: nothing of the study runs, so release it here.
        try:
            released = release_stale_snakemake_locks(layout, *study)
        except StudyInUse as error:
            raise CliError(str(error)) from None
        if released:
            print(f"snaketune: the last run of the study in {layout.output_dir} was killed; released "
                  f"the Snakemake lock it left ({', '.join(p.name for p in released)} in "
                  f"{released[0].parent}) and resuming: its interrupted trials run again",
                  file=sys.stderr)
            args.snakemake_args = ["--rerun-incomplete", *args.snakemake_args]
        layout.output_dir.mkdir(parents=True, exist_ok=True)
        layout.run_lock.touch()  # the folder is the study's from now on (see unusable_because)
        configfile = layout.merged_config
        configfile.write_text(text)
        launch = hold_launch(layout)  # `status` sees the run from now on, before Snakemake's lock
    command = snakemake_command(configfile, args.cores, args.gpus, args.profile, args.dry_run,
                                args.snakemake_args)
    from snaketune.summary import shown

    echoed = ["snakemake", *(shown(arg) if arg == str(configfile) else arg for arg in command[3:])]
    print("snaketune: " + " ".join(echoed), file=sys.stderr, flush=True)
    try:
        status = run_snakemake(command)
    finally:
        if args.dry_run:
            os.unlink(configfile)
        else:
            os.close(launch)
    if stopped_by(status) and not args.dry_run:
        print(f"snaketune: the run is stopped; to continue the study, run the same command again "
              f"({shlex.join(['snaketune', *sys.argv[1:]])}): the interrupted trials run again with "
              "their parameters (from their last complete checkpoint, where they saved one), finished "
              "ones are kept", file=sys.stderr)
    if args.dry_run and status == 0:  # under Snakemake's job list: what the jobs would do
        from snaketune.summary import dry_run_summary

        print(dry_run_summary(resolved.tuning.layout, resolved.tuning.n_trials, resolved.tuning.study_name))
    return status


# ---------------------------------------------------------------------------------------------
# running snakemake

# What stops a run: Ctrl-C, `kill`, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Seconds a stopping run is given to end by itself (each trial tells the journal it was
# interrupted, Snakemake writes the table and removes its lock) before it gets SIGTERM, and then
# SIGKILL (the next run releases the lock a killed one leaves).
STOP_GRACE_S = 60.0
KILL_GRACE_S = 30.0


def run_snakemake(command: list[str], cwd: str | Path | None = None, grace_s: float = STOP_GRACE_S,
                  kill_after_s: float = KILL_GRACE_S) -> int:
    """Run `command` (snakemake) and return its exit status; or, when SIGINT, SIGTERM or SIGHUP
    reached this process (STOP_SIGNALS), stop the run, wait until every process of it has ended,
    and return 128 + that signal's number (130 for Ctrl-C).

    Snakemake runs in a process group of its own, its jobs with it, and a stop signal is passed on
    to that group as SIGINT once, however it came: a terminal's Ctrl-C reaches only this process
    (the terminal's foreground group), as does a `kill` of it alone. Left in the terminal's group,
    Snakemake and its trials would get a Ctrl-C directly but not a signal sent to this process
    alone, and passing that on too would hit them twice (a second SIGINT cuts Snakemake's
    cleanup short). On SIGINT Snakemake starts no job and waits for its running ones; each trial
    tells the journal it was interrupted and exits. A run not ended `grace_s` seconds later gets
    SIGTERM, and `kill_after_s` seconds after that SIGKILL; each further stop signal (Ctrl-C
    again) takes the next step at once. Should this process be killed outright, Snakemake gets
    SIGINT from the kernel (Linux) and starts no new job.
    """
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                for signum in STOP_SIGNALS}
    try:
        process = subprocess.Popen(command, cwd=cwd, process_group=0, preexec_fn=_interrupt_when_parent_dies())
        steps = [(signal.SIGINT, grace_s), (signal.SIGTERM, kill_after_s), (signal.SIGKILL, kill_after_s)]
        sent, sent_at, handled = 0, 0.0, 0
        while True:
            try:
                status = process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                status = None
            if not received:
                if status is not None:
                    return status
                continue
            # Stopping: done when Snakemake and every process of its group have ended.
            if status is not None:
                if not _group_alive(process.pid):
                    return 128 + received[0]
                time.sleep(0.2)
            waited = time.monotonic() - sent_at
            overdue = sent > 0 and waited > steps[sent - 1][1]
            if sent == len(steps):
                if overdue:  # SIGKILL did not end them (a process stuck in the kernel)
                    print(f"snaketune: processes of the run's group {process.pid} did not end after "
                          "SIGKILL", file=sys.stderr)
                    return 128 + received[0]
                continue
            if len(received) > handled or overdue:
                handled = len(received)
                step = steps[sent][0]
                print(_stopping_message(received[0], step, waited if overdue else None),
                      file=sys.stderr, flush=True)
                try:
                    os.killpg(process.pid, step)
                except ProcessLookupError:  # the run has just ended
                    pass
                sent, sent_at = sent + 1, time.monotonic()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stopping_message(received: int, step: int, waited: float | None) -> str:
    """A line for each step of stopping a run: `step` sent on `received`, or after `waited` s."""
    name = "Ctrl-C" if received == signal.SIGINT else signal.Signals(received).name
    if step == signal.SIGINT:
        return f"snaketune: {name}: stopping the run; its trials record where they were (Ctrl-C again to hurry it)"
    why = f"not stopped after {waited:.0f}s" if waited is not None else f"{name} again"
    action = "terminating" if step == signal.SIGTERM else "killing"
    return f"snaketune: {why}: {action} the run ({signal.Signals(step).name})"


def _group_alive(pgid: int) -> bool:
    """Whether a process of process group `pgid` is still there."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # one is, though not ours to signal
        return True
    return True


def _interrupt_when_parent_dies():
    """A `preexec_fn` that asks the kernel for SIGINT to Snakemake when this process dies
    (PR_SET_PDEATHSIG, Linux), or None elsewhere. libc is loaded here, in this process: the child
    only calls it, between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGINT)  # 1: PR_SET_PDEATHSIG


def stopped_by(status: int) -> signal.Signals | None:
    """The stop signal a `run_snakemake` status says stopped the run (128 + its number), or None."""
    return next((signum for signum in STOP_SIGNALS if status == 128 + signum), None)


def exit_as_killed_by(signum: int) -> None:
    """End this process by `signum`'s default action: a calling shell sees it killed by the
    signal ($? 130 for SIGINT) and stops too, as for any program killed by Ctrl-C (CPython does
    the same for an unhandled KeyboardInterrupt); `exit(130)` would let a shell loop go on."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    sys.exit(128 + signum)  # were the signal blocked


# ---------------------------------------------------------------------------------------------
# status, best, export


def find_tune_config(output_dir: Path, given: str | None) -> dict | None:
    """The tune config a study ran with: given with -c, or the one `snaketune tune` kept."""
    path = Path(given) if given else StudyLayout(output_dir).merged_config
    if not path.is_file():
        if given:
            raise CliError(f"no such config file: {given}")
        return None
    with open(path) as f:
        return yaml.safe_load(f) or {}


def _fixed_max_steps(config: dict | None) -> int | None:
    fixed = ((config or {}).get("tuning") or {}).get("fixed_training_params") or {}
    value = fixed.get("max_steps")
    return value if isinstance(value, int) and value > 0 else None


def _objective_names(study, config: dict | None) -> list[str]:
    """study.objective_names, with the names the tune config found beside the study gives."""
    from snaketune.study import objective_names

    return objective_names(study, ((config or {}).get("tuning") or {}).get("evaluation_metrics"))


def cmd_status(args) -> int:
    from snaketune.locks import launch_alive, run_holder
    from snaketune.study import SLOTS_ATTR, load_study
    from snaketune.summary import preparing_status, status_table

    output_dir = Path(args.output_dir)
    layout = StudyLayout(output_dir)
    config = find_tune_config(output_dir, args.config)
    tuning = (config or {}).get("tuning") or {}

    def status_text() -> str:
        started = layout.merged_config.exists() or layout.run_lock.exists()
        study = load_study(output_dir, args.study_name, missing_ok=started)
        if study is None:
            # A run began it and no trial has asked the storage yet: say which step it is at.
            return preparing_status(layout, running=run_holder(layout) is not None or launch_alive(layout))
        # n_trials as written in a config given with -c, else the slots the last run created (or,
        # in a study from before they were recorded, as its kept config writes it).
        n_trials = ((tuning.get("n_trials") if args.config else None) or study.user_attrs.get(SLOTS_ATTR)
                    or tuning.get("n_trials"))
        return status_table(study, layout, n_trials=n_trials, max_steps=_fixed_max_steps(config),
                            metrics=_objective_names(study, config))

    while True:
        text = status_text()
        if args.watch is None:
            print(text)
            return 0
        print("\033[H\033[J" + time.strftime("%H:%M:%S ") + text, flush=True)
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def _here(best: dict, layout: StudyLayout) -> dict:
    """A best record with its paths in the study where it now is (a moved or copied study keeps
    the record written where it ran)."""
    layout = StudyLayout(layout.output_dir.resolve())
    for record in best.get("trials", [best]):
        if record.get("slot") is not None:
            files = layout.trial(record["slot"])
            record["trial_dir"] = str(files.dir)
            if "checkpoint" in record:
                record["checkpoint"] = files.last_checkpoint()
        if "best_model" in record:
            record["best_model"] = str(layout.best_model)
    return best


def best_records(output_dir: Path, study_name: str | None = None) -> dict:
    """best_trial.json / best_trials.json when `aggregate` wrote them, else from the journal."""
    layout = StudyLayout(output_dir)
    for path in (layout.best_trial, layout.best_trials):
        if path.exists():
            return _here(json.loads(path.read_text()), layout)
    from snaketune.results import trial_record
    from snaketune.study import best_trials, load_study

    study = load_study(output_dir, study_name)
    names = _objective_names(study, find_tune_config(output_dir, None))
    records = [trial_record(t, names, layout) for t in best_trials(study)]
    if not records:
        raise CliError(f"no trial of the study in {output_dir} has completed yet")
    return records[0] if len(records) == 1 else {"trials": records}


def cmd_best(args) -> int:
    from snaketune.locks import holding_if_free
    from snaketune.results import finish_best_model_swap, is_saved_model
    from snaketune.summary import fmt

    output_dir = Path(args.output_dir)
    try:
        with holding_if_free(StudyLayout(output_dir)) as held:  # not while a run may be swapping it in
            settled = finish_best_model_swap(StudyLayout(output_dir)) if held else None
    except OSError as error:  # a study on a read-only copy: read as it is
        settled = f"a best-model swap a run left unfinished could not be settled here ({error})"
    if settled:
        print(f"snaketune: {settled}", file=sys.stderr)
    best = best_records(output_dir, args.study_name)
    records = best.get("trials", [best])
    if len(records) > 1 or "trials" in best:
        print(f"Pareto front: {len(records)} trial(s)")
    for record in records:
        values = ", ".join(f"{k}={fmt(v)}" for k, v in record["values"].items())
        print(f"best trial {record['number']}: {values}")
        print("  params: " + ", ".join(f"{k}={fmt(v)}" for k, v in record["params"].items()))
        if record.get("checkpoint"):
            print(f"  checkpoint: {record['checkpoint']}")
    model = best.get("best_model")
    if model:
        print(f"best model: {model}" + ("" if is_saved_model(Path(model)) else " (not written yet)"))
    return 0


def as_training_config(tune: dict, params: dict) -> dict:
    """An `oumi train`-style config (model, data, training, peft) with `params` filled in."""
    tuning = tune.get("tuning") or {}
    training = dict(tuning.get("fixed_training_params") or {})
    peft = dict(tuning.get("fixed_peft_params") or {})
    peft_names = set(tuning.get("tunable_peft_params") or {})
    for name, value in params.items():
        (peft if name in peft_names else training)[name] = value
    training.setdefault("output_dir", str(Path(tuning.get("output_dir") or "tuning_output") / "final"))
    config = {"model": copy.deepcopy(tune.get("model") or {}), "data": copy.deepcopy(tune.get("data") or {}),
              "training": training}
    if peft:
        config["peft"] = peft
    return config


def results_rows(output_dir: Path, study_name: str | None):
    """trials_results.csv as a DataFrame (from the journal when `aggregate` has not run yet)."""
    import pandas as pd

    csv = StudyLayout(output_dir).results_csv
    if csv.exists():
        return pd.read_csv(csv)
    from snaketune.results import results_table
    from snaketune.study import load_study

    study = load_study(output_dir, study_name)
    return results_table(study, _objective_names(study, find_tune_config(output_dir, None)), StudyLayout(output_dir))


def cmd_export(args) -> int:
    output_dir = Path(args.output_dir)
    args.format = args.format or ("yaml" if args.as_config else "csv")
    if args.as_config:
        tune = find_tune_config(output_dir, args.config)
        if tune is None:
            raise CliError(f"--as-config needs the study's tune config: pass it with -c (no "
                           f"{StudyLayout(output_dir).merged_config} from `snaketune tune`)")
        best = best_records(output_dir, args.study_name)
        records = best.get("trials", [best])
        if len(records) > 1:
            print(f"snaketune: {len(records)} Pareto-optimal trials; exporting trial "
                  f"{records[0]['number']} (choose another with --trial)", file=sys.stderr)
        record = records[0]
        if args.trial is not None:
            matches = [r for r in records if r["number"] == args.trial]
            if not matches:
                raise CliError(f"trial {args.trial} is not among the best: "
                               f"{', '.join(str(r['number']) for r in records)}")
            record = matches[0]
        data = as_training_config(tune, record["params"])
        comment = (f"# Training config from study in {output_dir}: trial {record['number']} "
                   f"({', '.join(f'{k}={v}' for k, v in record['values'].items())})\n")
        if args.format == "yaml":
            text = comment + yaml.safe_dump(data, sort_keys=False)
        elif args.format == "json":
            text = json.dumps(data, indent=2) + "\n"
        else:
            raise CliError("--as-config writes yaml or json, not csv")
    else:
        table = results_rows(output_dir, args.study_name)
        if args.format == "csv":
            text = table.to_csv(index=False)
        else:
            records = json.loads(table.to_json(orient="records"))
            text = (json.dumps(records, indent=2) + "\n" if args.format == "json"
                    else yaml.safe_dump(records, sort_keys=False))
    if args.output:
        Path(args.output).write_text(text)
        print(f"snaketune: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_report(args) -> int:
    """`snakemake --report` for the study in args.output_dir, with the config it ran with."""
    output_dir = Path(args.output_dir)
    layout = StudyLayout(output_dir)
    from snaketune.storage import study_storage

    if not study_storage(layout).exists():
        raise CliError(f"no study in {output_dir} (no {layout.journal.name}): run one first")
    config = find_tune_config(output_dir, args.config)
    if config is None:
        raise CliError(f"the report needs the study's tune config: pass it with -c (no "
                       f"{layout.merged_config} from its last run)")
    missing = [path for path in (layout.results_csv, layout.report_page("trials")) if not path.exists()]
    if missing:
        raise CliError(f"the study in {output_dir} has no results to report yet ({missing[0]} is written "
                       "when a run ends): let its run finish, or run it again to the end")
    # The study's folder as given here, wherever it ran from; Snakemake runs where the study last
    # ran (its relative data paths and its .snakemake records are there).
    config.setdefault("tuning", {})["output_dir"] = str(output_dir.resolve())
    from snaketune.locks import last_run

    ran_in = last_run(layout).get("cwd")
    ran_in = ran_in if ran_in and Path(ran_in).is_dir() else None
    target = (Path(args.output) if args.output else layout.snakemake_report).resolve()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="snaketune-report-") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
        handle.flush()
        command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--configfile", handle.name,
                   "--cores", "1", "--quiet", "rules", "host", "progress", "--report", str(target),
                   *args.snakemake_args]
        status = run_snakemake(command, cwd=ran_in)
    if stopped_by(status):
        return status
    if status == 0:
        print(f"snaketune: wrote {target} (open it in a browser; it needs no network)", file=sys.stderr)
    else:
        print(f"snaketune: the report could not be written (Snakemake's reason is above; it ran "
              f"in {ran_in or os.getcwd()})", file=sys.stderr)
    return status


def cmd_recover(args) -> int:
    """Make the study's journal whole again, holding the study so that no run writes meanwhile:
    lines that are not records moved aside (storage.move_aside_bad_records); then a journal that is
    missing, empty or another study's rebuilt from the trial folders (recovery.rebuild_journal)."""
    from snaketune.locks import hold_study
    from snaketune.recovery import folder_trials, journal_problem, rebuild_journal
    from snaketune.storage import move_aside_bad_records
    from snaketune.study import identity

    layout = StudyLayout(Path(args.output_dir))
    from snaketune.storage import study_storage

    store = study_storage(layout)
    if store.shared:  # its records are the database's, and its backups the server's
        raise CliError(f"the study in {layout.output_dir} is kept in the database {store.where}: "
                       "`snaketune recover` rebuilds a journal file only; restore the database from "
                       "its backup (pg_dump/pg_restore), or start a new study with a new tuning.output_dir")
    known = identity(layout) or {}
    if not layout.journal.exists() and not known and not folder_trials(layout):
        raise CliError(f"no study in {layout.output_dir} (no {layout.journal.name}, {layout.identity.name} "
                       "or trial folder with a trial's record)")
    # The study's name and objectives: study.json's; for a study from before it was kept, the config it ran with.
    tuning = ((find_tune_config(layout.output_dir, args.config) or {}).get("tuning") or {})
    study_name = known.get("study_name") or tuning.get("study_name") or tuning.get("tuning_study_name") or "snaketune"
    metrics = tuning.get("evaluation_metrics") or ["eval_loss"]
    directions = tuning.get("evaluation_direction") or ["minimize"] * len(metrics)
    held = hold_study(layout)
    try:
        done = [move_aside_bad_records(layout.journal)] if layout.journal.exists() else []
        if journal_problem(layout, study_name):
            done.append(rebuild_journal(layout, study_name, directions=directions, metric_names=metrics))
    finally:
        os.close(held)
    done = [line for line in done if line]
    for line in done:
        print(f"snaketune: {line}", file=sys.stderr)
    print(f"snaketune: the study in {layout.output_dir} reads whole again" if done
          else f"snaketune: {layout.journal} reads whole and is its trial folders' own: nothing to recover",
          file=sys.stderr)
    return 0


def cmd_path(args) -> int:
    print({"snakefile": SNAKEFILE, "profiles": PROFILES_DIR, "workflow": resources.workflow_root()}[args.what])
    return 0


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snaketune", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    tune = commands.add_parser("tune", help="run a study (the Snakemake workflow)",
                               description="Run the tuning workflow. Arguments after `--` go to snakemake.")
    tune.add_argument("-c", "--config", required=True, help="the tune.yaml")
    tune.add_argument("--cores", help="CPU cores (default: all; with a cluster profile, the profile's)")
    tune.add_argument("--gpus", type=int, help="trials to run side by side, one GPU each (--resources gpu=M)")
    tune.add_argument("--profile", help="'default', 'slurm' (the repository's profiles) or a profile directory")
    tune.add_argument("-n", "--dry-run", action="store_true", help="list the jobs, run nothing")
    tune.add_argument("overrides", nargs="*", metavar="key=value",
                      help="config overrides, e.g. tuning.n_trials=20 or, as in oumi tune, "
                           "--tuning.n_trials 20 (values read as YAML)")
    tune.set_defaults(func=cmd_tune)

    check = commands.add_parser("check", help="check a tune.yaml in seconds, run nothing",
                                description="Check a tune.yaml as `tune` does before it starts Snakemake "
                                            "(schema, search space, sampler and pruner, trial arguments, "
                                            "model, data files, an existing study's definition); write "
                                            "nothing. Exit status 1 with every problem listed.")
    check.add_argument("-c", "--config", required=True, help="the tune.yaml")
    check.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for tune")
    check.set_defaults(func=cmd_check)

    for name, func, help_ in (("status", cmd_status, "progress of a study, running or done"),
                              ("best", cmd_best, "the best trial(s) and the best model"),
                              ("export", cmd_export, "the results, or the best trial as a training config")):
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.add_argument("output_dir", help="the study's output directory (tuning.output_dir)")
        sub.add_argument("--study-name", help="the study, if the journal holds several")
        sub.set_defaults(func=func)
        if name in ("status", "export"):
            sub.add_argument("-c", "--config", help="the tune.yaml (default: the one `snaketune tune` "
                                                    "kept in <output_dir>)")
        if name == "status":
            sub.add_argument("--watch", nargs="?", type=float, const=5.0, metavar="SECONDS",
                             help="refresh every SECONDS (default 5) until Ctrl-C")
        if name == "export":
            sub.add_argument("--format", choices=("csv", "json", "yaml"),
                             help="default: csv for the table, yaml with --as-config")
            sub.add_argument("--as-config", action="store_true",
                             help="a training config (model, data, training, peft) with the best parameters")
            sub.add_argument("--trial", type=int, help="with --as-config and several objectives: which trial")
            sub.add_argument("-o", "--output", help="write here instead of stdout")

    report = commands.add_parser("report", help="write the study's Snakemake report (one HTML page)",
                                 description="Write the Snakemake report of a study: its plots, pages and "
                                             "tables, with captions, as one self-contained HTML file.")
    report.add_argument("output_dir", help="the study's output directory (tuning.output_dir)")
    report.add_argument("-c", "--config", help="the tune.yaml (default: the one `snaketune tune` kept "
                                              "in <output_dir>)")
    report.add_argument("-o", "--output", help="the report's path (default: <output_dir>/report.html; "
                                              "a .zip path writes a zipped folder instead)")
    report.set_defaults(func=cmd_report)

    recover = commands.add_parser(
        "recover", help="make a damaged journal readable again",
        description="Move each line of the study's journal that is not a record (and a last one cut short) to "
                    "study.journal.torn beside it, kept, when no later record depends on it (refuse, changing "
                    "nothing, when one does); then, if the journal is missing, empty or another study's, "
                    "rebuild it from the trial folders, keeping the one found. Refused while a run holds the study.")
    recover.add_argument("output_dir", help="the study's output directory (tuning.output_dir)")
    recover.add_argument("-c", "--config", help="the tune.yaml, for a study from before study.json was kept "
                                                "(default: the one `snaketune tune` kept in <output_dir>)")
    recover.set_defaults(func=cmd_recover)

    path = commands.add_parser("path", help="where the workflow files are (for running snakemake directly)",
                               description='Print the Snakefile\'s path (snakemake -s "$(snaketune path)" '
                                           '--configfile my_tune.yaml --cores N), the bundled profiles\' '
                                           'directory, or the directory holding both.')
    path.add_argument("what", nargs="?", choices=("snakefile", "profiles", "workflow"), default="snakefile")
    path.set_defaults(func=cmd_path)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    snakemake_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, snakemake_args = argv[:at], argv[at + 1:]
    try:
        argv = dotted_options(argv)
    except CliError as error:
        print(f"snaketune: {error}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    args.snakemake_args = snakemake_args
    try:
        status = args.func(args)
        if stopped_by(status):  # a run stopped by a signal ends as if killed by it
            exit_as_killed_by(stopped_by(status))
        return status
    except KeyboardInterrupt:  # Ctrl-C outside a run (reading a journal, checking a config)
        print("snaketune: interrupted", file=sys.stderr)
        exit_as_killed_by(signal.SIGINT)
    except CliError as error:
        print(f"snaketune: {error}", file=sys.stderr)
        return 2
    except SnaketuneError as error:  # a problem the project found and explains (no journal, ...)
        print(f"snaketune: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:  # a file of the user's: an unwritable -o, a hand-edited JSON
        print(f"snaketune: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
