"""Where a study's files live under its `tuning.output_dir`, named once, and how they are read and
written safely.

Every rule output (`workflow/rules/*.smk`), every reader (CLI, summary, report, bench, tests) and
every writer takes its paths from here:

    <output_dir>/
      study.journal              the Optuna journal: the one record of every trial
      study.journal.torn         records a crash or a full disk cut short, moved out of the journal
                                 (and lines that were not records: `snaketune recover`)
      study.json                 the study's identity (id, name, objectives), also in the journal
      storage.json               where the study is kept when not in study.journal (tuning.storage
                                 as written: a database URL without its password)
      run.lock                   held by the run in progress (flock), naming it
      trials.lock                held (shared) by each running trial job
      claim.lock                 held while a trial job checks the budget and creates its trial
      tune.merged.yaml           the config the last run ran with (`snaketune tune`: overrides applied)
      budget.json                the study's budget (rule budget): a change re-runs the skipped slots
      prepared_model/source.json where trials load the model from (rule prepare_model)
      data/summary.json          the tokenized data's row and token counts (rule prepare_data)
      data/tokenized/            the tokenized train and validation sets
      trial_<slot>/              one trial slot: params.json, checkpoint-*/, logs/, metrics.json
                                 (its trial's whole journal record: a journal can be rebuilt from them)
      baseline/                  with a generation or lm-eval metric: the untrained model's metrics.json and
                                 logs/generations.jsonl, on the trials' rows (rule baseline)
      trials_results.csv         every trial (rule aggregate)
      best_trial.json            one objective: the best trial, and best_model/ (LoRA merged in)
      best_trials.json, pareto_front.csv     several objectives: the Pareto-optimal trials
      report/                    plots and pages (rule report)
      report.html                the Snakemake report (`snaketune report`), one page of all of it
      logs/<rule>.log            the log of each once-per-study rule
"""

from __future__ import annotations

import json
import os
import math
import re
from dataclasses import dataclass
from pathlib import Path

# Hugging Face Trainer's checkpoint directories (transformers.trainer_utils.PREFIX_CHECKPOINT_DIR).
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
REPORT_PAGES = {"interactive": "plots.html", "trials": "trials.html", "best": "best_trial.html"}


@dataclass(frozen=True)
class TrialFiles:
    """The files of trial slot i: `<output_dir>/trial_<i>/`. `dir` may hold Snakemake's `{i}`."""

    dir: Path

    @property
    def params(self) -> Path:
        """Written when the trial's parameters are known: {trial_number, slot, attempt, params}."""
        return self.dir / "params.json"

    @property
    def metrics(self) -> Path:
        """Written last, when the slot is done (the file Snakemake tracks)."""
        return self.dir / "metrics.json"

    def read_metrics(self) -> dict:
        """metrics.json as a dict; {} while there is none (not finished, or never run)."""
        try:
            return json.loads(self.metrics.read_text())
        except (OSError, ValueError):
            return {}

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def log(self) -> Path:
        """The trial job's log (stdout and stderr of training)."""
        return self.logs / "trial.log"

    @property
    def loss_curve(self) -> Path:
        """One JSON object per Trainer log line, appended live (read with `read_loss_curve`)."""
        return self.logs / "loss_curve.jsonl"

    @property
    def loss_curve_csv(self) -> Path:
        """The finished curve as a table (step, epoch, loss, grad_norm, learning_rate, eval_loss)."""
        return self.logs / "loss_curve.csv"

    @property
    def generations(self) -> Path:
        """One JSON object per validation row answered (snaketune.generation): row, prompt,
        reference, output, score (of the first generation objective) and scores (every built-in
        metric); only when a generation metric is an objective."""
        return self.logs / "generations.jsonl"

    @property
    def benchmark(self) -> Path:
        """Snakemake's `benchmark:` file of the trial job (wall time, memory, CPU)."""
        return self.logs / "benchmark.tsv"

    @property
    def devices(self) -> Path:
        """The devices the trial leased, and when it released them (snaketune.gpu)."""
        return self.logs / "devices.json"

    @property
    def launch_spec(self) -> Path:
        """The arguments handed to the data-parallel ranks (gpus_per_trial > 1)."""
        return self.logs / "launch.json"

    def checkpoints(self) -> list[Path]:
        """Every `checkpoint-<step>/` folder of the slot, whole or not, newest (highest step) first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found, reverse=True)]

    def last_checkpoint(self) -> str | None:
        """The newest whole `checkpoint-<step>/` (`checkpoint_problem`), or None.

        Written by hand rather than with `transformers.trainer_utils.get_last_checkpoint`, which
        returns a directory cut short by a kill, or one whose weights a lost node left cut short.
        (It also keeps transformers out of `snaketune status`.)
        """
        return next((str(p) for p in self.checkpoints() if is_complete_checkpoint(p)), None)

    def set_aside(self, checkpoint: str | Path) -> Path:
        """Move a checkpoint that cannot be resumed out of the way, kept: `damaged-checkpoint-<step>`
        (a name neither Trainer's checkpoint rotation nor a resume matches; `-2`, ... if taken)."""
        checkpoint = Path(checkpoint)
        target = checkpoint.with_name(f"damaged-{checkpoint.name}")
        n = 1
        while target.exists():
            n += 1
            target = checkpoint.with_name(f"damaged-{checkpoint.name}-{n}")
        checkpoint.rename(target)
        return target

    def checkpoint(self, step: int) -> Path:
        """`checkpoint-<step>/`, whether or not it exists."""
        return self.dir / f"checkpoint-{step}"


# Trainer's TrainerState as saved in each checkpoint, written last.
TRAINER_STATE = "trainer_state.json"


def checkpoint_problem(path: str | Path) -> str | None:
    """What keeps a `checkpoint-<step>/` folder from being resumed, or None when it is whole: the
    one rule for a whole checkpoint. Trainer writes trainer_state.json last, so a save a kill cut
    short lacks it; a node lost mid-write can also leave a file cut short behind a trainer_state.json
    that made it to disk. So each file a resume reads is opened as its library opens it, reading
    only what shows it whole: a `.safetensors` file's header and its size (safetensors' own
    `safe_open` refuses a file its header does not cover, as a resume would); a torch.save archive
    (`.pt`, `.pth`, `.bin`: optimizer, scheduler, RNG state, training arguments) by its zip
    directory, which is written at its end. Milliseconds, whatever the model's size."""
    path = Path(path)
    try:
        json.loads((path / TRAINER_STATE).read_text())
    except FileNotFoundError:
        return f"it has no {TRAINER_STATE} (Trainer writes it last: the save did not finish)"
    except (OSError, ValueError) as e:
        return f"its {TRAINER_STATE} cannot be read ({_one_line(e)})"
    for file in sorted(path.iterdir()):
        if file.suffix == ".safetensors":
            problem = _safetensors_problem(file)
        elif file.suffix in (".pt", ".pth", ".bin"):
            problem = _torch_archive_problem(file)
        else:
            continue
        if problem:
            return f"its {file.name} {problem}"
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError) as e:
            return f"its {index.name} cannot be read ({_one_line(e)})"
        missing = sorted(name for name in shards if not (path / name).is_file())
        if missing:
            return f"its weights shard(s) {', '.join(missing)} are missing"
    return None


def _safetensors_problem(file: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="numpy"):
            return None
    except (SafetensorError, OSError) as e:
        return f"is cut short or damaged (safetensors: {_one_line(e)})"


def _torch_archive_problem(file: Path) -> str | None:
    import zipfile

    with open(file, "rb") as f:
        if f.read(2) != b"PK":  # not torch.save's zip format (a legacy pickle): nothing to read cheaply
            return None
    try:
        zipfile.ZipFile(file).close()
        return None
    except (zipfile.BadZipFile, OSError) as e:
        return f"is cut short or damaged (its zip directory: {_one_line(e)})"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether a `checkpoint-<step>/` folder can be resumed whole (`checkpoint_problem` is None)."""
    return checkpoint_problem(path) is None


def read_trainer_state(checkpoint: str | Path) -> dict:
    """A checkpoint's trainer_state.json (global_step, max_steps, log_history, ...), or {} when it
    cannot be read."""
    try:
        return json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@dataclass(frozen=True)
class StudyLayout:
    """Every path of one study, under `output_dir` (the resolved `tuning.output_dir`)."""

    output_dir: Path

    def __post_init__(self):
        object.__setattr__(self, "output_dir", Path(self.output_dir))

    @property
    def journal(self) -> Path:
        return self.output_dir / "study.journal"

    @property
    def run_lock(self) -> Path:
        """The study's run lock (locks.hold_study): held by the run in progress, names it."""
        return self.output_dir / "run.lock"

    @property
    def trials_lock(self) -> Path:
        """Held shared by each running trial job (locks.hold_trial_share)."""
        return self.output_dir / "trials.lock"

    @property
    def claim_lock(self) -> Path:
        """Held by a trial job while it checks the budget and creates its trial (scheduler.claim_trial)."""
        return self.output_dir / "claim.lock"

    @property
    def identity(self) -> Path:
        """study.json: which study this folder's trials belong to (study id, name, objectives), as
        its journal also records; what tells a lost, emptied or swapped journal (snaketune.recovery)."""
        return self.output_dir / "study.json"

    @property
    def storage_record(self) -> Path:
        """storage.json: where the study is kept when not in the journal here (tuning.storage as
        written, and the study's name: storage.record_storage)."""
        return self.output_dir / "storage.json"

    def replaced_journal(self, stamp: str) -> Path:
        """Where `snaketune recover` keeps a journal it replaced with one rebuilt from the trial folders."""
        return self.output_dir / f"study.journal.replaced-{stamp}"

    @property
    def torn_records(self) -> Path:
        """Journal records cut short by a crash or a full disk, moved out of the journal."""
        return self.output_dir / "study.journal.torn"

    @property
    def merged_config(self) -> Path:
        return self.output_dir / "tune.merged.yaml"

    @property
    def budget_record(self) -> Path:
        """tuning.budget and timeout_minutes as the trials last ran under them (rule budget)."""
        return self.output_dir / "budget.json"

    @property
    def model_source(self) -> Path:
        """Written last by prepare_model; the prepared model (if converted) lives beside it."""
        return self.output_dir / "prepared_model" / "source.json"

    @property
    def data_summary(self) -> Path:
        """Written last by prepare_data; the tokenized sets live beside it (`tokenized/`)."""
        return self.output_dir / "data" / "summary.json"

    @property
    def preflight_record(self) -> Path:
        """Written last by rule preflight: every configuration of the covering set built and
        stepped (snaketune.preflight); trials and the baseline start only once it exists."""
        return self.output_dir / "preflight.json"

    def rule_log(self, rule: str) -> Path:
        return self.output_dir / "logs" / f"{rule}.log"

    def rule_benchmark(self, rule: str) -> Path:
        """Snakemake's `benchmark:` file of a once-per-study rule: its wall time, memory and CPU."""
        return self.output_dir / "logs" / f"{rule}.benchmark.tsv"

    def trial(self, slot: int | str) -> TrialFiles:
        """Slot `slot`'s files; `trial("{i}")` gives the rule's wildcard paths."""
        return TrialFiles(self.output_dir / f"trial_{slot}")

    @property
    def baseline(self) -> TrialFiles:
        """The base model's answers before any training, scored as the trials' are (rule baseline,
        with a generation metric): `metrics.json`, `logs/generations.jsonl`, `logs/devices.json`."""
        return TrialFiles(self.output_dir / "baseline")

    @property
    def results_csv(self) -> Path:
        return self.output_dir / "trials_results.csv"

    @property
    def best_trial(self) -> Path:
        return self.output_dir / "best_trial.json"

    @property
    def best_trials(self) -> Path:
        return self.output_dir / "best_trials.json"

    @property
    def pareto_front(self) -> Path:
        return self.output_dir / "pareto_front.csv"

    @property
    def best_model(self) -> Path:
        return self.output_dir / "best_model"

    @property
    def best_model_record(self) -> Path:
        """best_model/snaketune_trial.json: which trial and checkpoint the best model was built
        from; rule aggregate's output for the model (written with it, last)."""
        return self.best_model / "snaketune_trial.json"

    def best_record(self, n_objectives: int) -> Path:
        """best_trial.json for one objective, best_trials.json (the Pareto front) for several."""
        return self.best_trial if n_objectives == 1 else self.best_trials

    def results(self, n_objectives: int) -> list[Path]:
        """What rule aggregate writes besides the best model: the table and the best trial(s)."""
        if n_objectives == 1:
            return [self.results_csv, self.best_trial]
        return [self.results_csv, self.pareto_front, self.best_trials]

    @property
    def snakemake_report(self) -> Path:
        """The Snakemake report of the study, one self-contained page (`snaketune report`)."""
        return self.output_dir / "report.html"

    @property
    def report_dir(self) -> Path:
        return self.output_dir / "report"

    def plot(self, kind: str, metric: str | None = None) -> Path:
        """A static plot: `report/<kind>.png`, or `report/<kind>_<metric>.png` per objective."""
        # A metric name may hold what a file name cannot (lm_eval:gsm8k/exact_match).
        return self.report_dir / (f"{kind}_{re.sub(r'[^A-Za-z0-9_.,-]', '_', metric)}.png" if metric
                                  else f"{kind}.png")

    def report_page(self, key: str) -> Path:
        """A page of the report: key is one of REPORT_PAGES (interactive, trials, best)."""
        return self.report_dir / REPORT_PAGES[key]

    def unusable_because(self) -> str | None:
        """Why `output_dir` cannot hold a study, or None.

        A study writes, replaces and deletes files there (best_model/, trials_results.csv,
        trial_*/), so it must be a folder of the study's own: new, empty, or holding a study
        (its journal, its study.json, or the run lock a first run takes before anything else). A file system's
        root, a folder right under it (/tmp, /home, ...) and the home directory are never one.
        """
        path = self.output_dir.resolve()
        if _is_system_folder(path):
            return (f"{path} is a system folder or the home directory, never a study's own; name a "
                    f"folder of its own, e.g. {_own_folder_for(path)}")
        if path.exists() and not path.is_dir():
            return f"{path} is a file, not a folder"
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
            return (f"{existing} cannot be written to ("
                    + ("it is on a read-only file system" if read_only else "no write permission for this user")
                    + "); a study writes its journal, trials and results there: choose a folder you can "
                    "write to (`snaketune status`, `best` and `export` read a study where it is)")
        if path.is_dir() and not any(p.exists() for p in (self.journal, self.run_lock, self.identity, self.storage_record)):
            # Hidden files (.gitkeep, .DS_Store) and config files (a tune.yaml kept with its
            # results) are never written by a study: they may be there.
            entries = sorted(p.name for p in path.iterdir()
                             if not p.name.startswith(".") and not (p.is_file() and p.suffix in (".yaml", ".yml")))
            if entries:
                shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
                return (f"{path} already holds files ({shown}) but no snaketune study (no "
                        f"{self.journal.name}); a study writes and replaces files there (best_model/, "
                        "trials_results.csv, trial_*/): choose a new or empty folder")
        return None

    def find_trial_dirs(self) -> list[Path]:
        """The trial slot directories that exist, in slot order."""
        found = [p for p in self.output_dir.glob("trial_*") if p.name[len("trial_"):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len("trial_"):]))


def local_output_dir(output_dir: str | Path, job_path: str | Path) -> Path:
    """Where a job finds and writes the study's files: `output_dir` itself, or, where a Snakemake
    storage plugin moves the job's files (--default-storage-provider: jobs that share no file
    system), the local copy of it that Snakemake gives the job: its inputs retrieved there, its
    outputs stored from there (`.snakemake/storage/<provider>/<prefix>/<output_dir>`).

    `job_path` is one of the job's own output paths as Snakemake passes it (a file or folder under
    output_dir, or its local copy). Snakemake maps every path of a rule the same way, so the part
    of `job_path` before output_dir is the job's prefix. Raises ValueError for a path that is
    neither under output_dir nor a copy of a path there."""
    output_dir = Path(output_dir)
    job = Path(os.path.abspath(job_path))
    if job == output_dir or output_dir in job.parents:
        return output_dir
    tail = output_dir.parts[1:]  # without the root: a storage prefix holds the absolute path below it
    for start in range(len(job.parts) - len(tail), 0, -1):
        if job.parts[start:start + len(tail)] == tail:
            return Path(*job.parts[:start + len(tail)])
    raise ValueError(f"{job_path} is not a path of the study in {output_dir}, nor a copy of one")


def _is_system_folder(path: Path) -> bool:
    """A file system's root, a folder right under it (/tmp, /home, ...), the home directory or
    one above it: never a study's own folder (StudyLayout.unusable_because)."""
    home = Path.home().resolve()
    return path.parent == path or path.parent == Path(path.anchor) or path == home or path in home.parents


def _own_folder_for(path: Path) -> Path:
    """A folder to suggest instead of the system folder `path` that is itself accepted: a
    tuning_output/ under it, else under the working directory, else under the home directory."""
    for base in (path, Path.cwd().resolve(), Path.home().resolve()):
        candidate = base / "tuning_output"
        if not _is_system_folder(candidate):
            return candidate
    return Path.home().resolve() / "snaketune" / "tuning_output"


def trial_dir(trial, layout: StudyLayout | None = None) -> Path | None:
    """The folder of `trial` (an Optuna FrozenTrial or Trial: its user_attrs are read) in the study
    at `layout`, wherever the study now lives (a moved or copied study): its slot's folder. A trial
    made outside a slot: the folder it recorded (relative to output_dir). Without `layout`: the
    folder as recorded."""
    slot = trial.user_attrs.get("slot")
    if layout is not None and slot is not None:
        return layout.trial(slot).dir
    recorded = trial.user_attrs.get("trial_dir")
    if not recorded:
        return None
    return layout.output_dir / recorded if layout is not None else Path(recorded)


# A trial's user attribute: its intermediate values are per-row scores of its generated answers,
# by validation row (generation.evaluate_generation, for the wilcoxon pruner), not a training curve
# (study.step_reports). Here, low, because the trial job writes it and the study's readers read it.
ROW_REPORTS_ATTR = "reported_rows"


def write_text(path: str | Path, text: str) -> None:
    """Write `text` atomically: a reader (or a crash) never sees half a file, and two processes
    writing the same file at once each replace it whole (a temporary file of its own each)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: str | Path, data) -> None:
    """Write `data` as JSON atomically (write_text)."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(frame, path: str | Path) -> None:
    """Write a pandas DataFrame as CSV atomically: a full disk never leaves a cut table in place
    of the previous one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        frame.to_csv(tmp, index=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def checkpoint_step(path: str | Path) -> int:
    """The training step a `checkpoint-<step>/` folder was saved at."""
    match = _CHECKPOINT.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint-<step> folder")
    return int(match.group(1))


def read_loss_curve(path: str | Path, key: str | None = None) -> list[dict]:
    """The rows of a trial's `logs/loss_curve.jsonl`, oldest first.

    A half-written last line (the trial is running) is skipped. With `key`, only rows that have a
    finite number under `key` and a `step`. A missing file gives [].
    """
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if key is not None:
            value = row.get(key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and "step" in row):
                continue
        rows.append(row)
    return rows
