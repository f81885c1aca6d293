"""Every shell block of the README, run as written, in README order, against a tiny study.

A block runs each of its commands in one working directory that holds `my_tune.yaml` and
`tune.yaml` (the same tiny study, 2 and 3 trials) and its data, with the set-up environment's programs
on the PATH (what `. .venv/bin/activate` gives); `/path/to/snaketune` is this checkout. The HTML
comment right above a block says how it is checked, when it is not simply run:

    <!-- readme-test: fresh -->              run in an empty directory of its own
    <!-- readme-test: until-stopped -->      each command runs until stopped (--watch, a server,
                                             tail -f): it must still run after a few seconds,
                                             having printed something, and is then stopped
    <!-- readme-test: syntax REASON -->      not runnable here (a cluster, GPUs, hours): checked
                                             by `bash -n` and for programs that exist

A new block without a comment is run, so a command added to the README is tested from then on.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from workflow_helpers import REPO, load_study, tiny_config, write_config, write_reverse_words

README = REPO / "README.md"
PLACEHOLDER = "/path/to/snaketune"
FENCE = re.compile(r"^\s*```(\w*)\s*$")
DIRECTIVE = re.compile(r"^<!-- readme-test: (?P<mode>fresh|until-stopped|syntax)(?P<reason>[^>]*)-->\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    mode: str  # run, fresh, until-stopped or syntax
    reason: str
    commands: tuple[str, ...]

    def __str__(self):
        return f"README.md:{self.line}"


def shell_blocks(text: str) -> list[Block]:
    """The README's ```bash blocks, each with its mode and its commands (continued lines joined,
    comment-only lines dropped)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start, language = i, match.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        i = end + 1
        if language not in ("bash", "sh", "shell"):
            continue  # output shown to the reader, YAML, Python
        directive = DIRECTIVE.match(lines[start - 1]) if start else None
        commands, current = [], ""
        for raw in lines[start + 1:end]:
            current += raw.rstrip()
            if current.endswith("\\"):
                current = current[:-1] + " "
                continue
            if current.strip() and not current.strip().startswith("#"):
                commands.append(current.strip())
            current = ""
        blocks.append(Block(start + 1, directive.group("mode") if directive else "run",
                            (directive.group("reason") or "").strip() if directive else "", tuple(commands)))
    return blocks


BLOCKS = shell_blocks(README.read_text())


def test_the_readme_has_its_blocks_and_each_names_how_it_is_checked():
    assert BLOCKS and all(block.commands for block in BLOCKS)
    for block in BLOCKS:
        if block.mode == "syntax":
            assert block.reason, f"{block}: say why it is not run"
    # The two commands a newcomer starts with stay the first block.
    assert [command.split()[:2] for command in BLOCKS[0].commands[:2]] == [["make", "demo"], ["make", "test"]]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The user's directory: a tiny study as my_tune.yaml and tune.yaml, and its data."""
    workdir = tmp_path_factory.mktemp("readme")
    write_reverse_words(workdir / "data.jsonl")
    write_config(workdir, tiny_config(n_trials=2), "my_tune.yaml")
    # The same study with a grown budget: `snaketune tune -c tune.yaml` has a trial to run.
    write_config(workdir, tiny_config(n_trials=3), "tune.yaml")
    return workdir


def environment() -> dict:
    """The set-up environment, activated: its programs (snaketune, snakemake, optuna-dashboard)
    first on the PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
            "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def as_written(command: str) -> str:
    return command.replace(PLACEHOLDER, str(REPO))


def programs(command: str) -> list[str]:
    """The programs a command line runs: the first word of each part between `;`, `|`, `&&`,
    `||` (after VAR=value prefixes), and the first word inside each `$(...)`."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    found, first = [], True
    for token in lexer:
        if token in (";", "|", "||", "&&", "&"):
            first = True
            continue
        found += re.findall(r"\$\((\S+)", token)
        if first and not re.match(r"^\w+=", token):
            found.append(token)
            first = False
    return found


def scripts(command: str) -> list[str]:
    """The repository files a command runs: `python X.py`, `bash X.sh`, a `--workflow-profile X`."""
    words = shlex.split(command, comments=True)
    found = [b for a, b in zip(words, words[1:]) if a in ("python", "bash", "--workflow-profile")
             and not b.startswith("-")]
    return [path for path in found if not Path(path).is_absolute()]


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_readme_block(block, sandbox, tmp_path):
    env = environment()
    if block.mode == "syntax":
        script = "\n".join(as_written(c) for c in block.commands)
        checked = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert checked.returncode == 0, f"{block}: {checked.stderr}"
        builtins = {"export", "cd", ".", "source"}
        for command in block.commands:
            for program in programs(as_written(command)):
                assert program in builtins or shutil.which(program, path=env["PATH"]) or \
                    (REPO / program).exists(), f"{block}: {program!r} is not a program here ({command})"
            for script in scripts(as_written(command)):  # `python bench/run.py`: the file exists
                assert (REPO / script).exists(), f"{block}: no {script} in the checkout ({command})"
        return
    workdir = tmp_path if block.mode == "fresh" else sandbox
    for command in block.commands:
        command = as_written(command)
        if block.mode == "until-stopped":
            with open(tmp_path / "output.txt", "w+") as output:
                process = subprocess.Popen(["bash", "-c", command], cwd=workdir, env=env, stdout=output,
                                           stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    deadline = time.time() + 15
                    while time.time() < deadline and process.poll() is None and output.tell() == 0:
                        time.sleep(0.5)
                        output.seek(0, os.SEEK_END)
                    time.sleep(2)
                    alive = process.poll() is None
                finally:
                    if process.poll() is None:
                        os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=30)
                output.seek(0)
                text = output.read()
            assert alive, f"{block}: `{command}` stopped by itself:\n{text[-3000:]}"
            assert text.strip() and "Traceback" not in text, f"{block}: `{command}` printed:\n{text[-3000:]}"
            continue
        result = subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, (f"{block}: `{command}` failed ({result.returncode}):\n"
                                        f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")


def test_the_readme_commands_left_what_they_promise(sandbox):
    """After every block ran: the report pages, the exported config and table, the study."""
    import yaml

    out = sandbox / "tuning_output"
    assert (out / "report.html").stat().st_size > 100_000  # snaketune report
    assert (sandbox / "report.html").stat().st_size > 100_000  # snakemake --report
    best = yaml.safe_load((sandbox / "best.yaml").read_text())  # export --as-config
    assert set(best) >= {"model", "data", "training"} and "learning_rate" in best["training"]
    # snaketune tune ran tune.yaml's grown budget: one more trial. (The config of the last run,
    # tune.merged.yaml, is my_tune.yaml's again: a later block ran that.)
    assert len(load_study(out).trials) == 3 and "my_tune.yaml" in (out / "tune.merged.yaml").read_text()
