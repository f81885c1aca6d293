"""Every shell block of the README and of the manual (docs/*.md), run as written, in order.

The pages run in the manual's order (README.md, then docs/ as mkdocs.yml's nav lists them), each
block in its page's order. A block runs each of its commands in one working directory that holds
`my_tune.yaml` and `tune.yaml` (the same tiny study, 2 and 3 trials) and its data, with the set-up
environment's programs on the PATH (what `. .venv/bin/activate` gives); `/path/to/snaketune` is
this checkout. The HTML comment right above a block says how it is checked, when it is not simply
run:

    <!-- readme-test: fresh -->              run in an empty directory of its own, outside the
                                             checkout, holding only the files its page shows
                                             before it (`file` below)
    <!-- readme-test: continue -->           run in the directory of its page's last `fresh`
                                             block, after it (a ```python block with this or
                                             `fresh` is run too, by `python -c`)
    <!-- readme-test: file NAME -->          above a fence that is not shell (```yaml, ```csv):
                                             its text is the file NAME that the page's next
                                             `fresh` block finds in its directory, as shown,
                                             except a YAML file's `model:` section, which becomes
                                             the tiny test model's (tests/assets/tiny-llama,
                                             random weights: seconds a trial on a CPU)
    <!-- readme-test: until-stopped -->      each command runs until stopped (--watch, a server,
                                             tail -f): it must still run after a few seconds,
                                             having printed something, and is then stopped
    <!-- readme-test: syntax REASON -->      not runnable here (a cluster, GPUs, hours): checked
                                             by `bash -n` and for programs that exist

A new shell block without a comment is run, so a command added to a page is tested from then on.
The blocks depend on the ones before them (a study, then its status): run the module on one
worker (`make test` hands whole modules to its workers: `--dist loadscope`).
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
DOCS = REPO / "docs"
PLACEHOLDER = "/path/to/snaketune"
FENCE = re.compile(r"^\s*```(\w*)\s*$")
DIRECTIVE = re.compile(r"^\s*<!-- readme-test: (?P<mode>fresh|continue|until-stopped|syntax|file)(?P<reason>[^>]*)-->\s*$")
SHELL = ("bash", "sh", "shell")


def pages() -> list[Path]:
    """README.md, then the manual's pages in the order of mkdocs.yml's nav, then any page it leaves out."""
    import yaml

    def listed(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from (listed(value) if isinstance(value, list) else [value])

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text()).get("nav") or []
    ordered = [DOCS / name for name in listed(nav)]
    return [README, *ordered, *sorted(set(DOCS.glob("*.md")) - set(ordered))]


@dataclass(frozen=True)
class Block:
    page: str  # relative to the checkout: README.md, docs/cli.md
    line: int  # of the opening fence, 1-based
    mode: str  # run, fresh, continue, until-stopped or syntax
    reason: str
    commands: tuple[str, ...]
    language: str = "bash"  # or python (run whole, by `python -c`)
    files: tuple[tuple[str, str], ...] = ()  # (name, text) of the `file` fences before a fresh block

    def __str__(self):
        return f"{self.page}:{self.line}"


def shell_blocks(text: str, page: str = "README.md") -> list[Block]:
    """A page's ```bash blocks, each with its mode and its commands (continued lines joined,
    comment-only lines dropped); ```python blocks marked `fresh` or `continue`; and the `file`
    fences each block is given."""
    lines = text.splitlines()
    blocks, files, i = [], [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start, language = i, match.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        i = end + 1
        directive = DIRECTIVE.match(lines[start - 1]) if start else None
        mode = directive.group("mode") if directive else "run"
        reason = (directive.group("reason") or "").strip() if directive else ""
        body = lines[start + 1:end]
        if mode == "file":
            assert language not in SHELL and reason, f"{page}:{start + 1}: `file NAME` names a file shown in a non-shell fence"
            files.append((reason, "\n".join(body) + "\n"))
            continue
        if language == "python" and mode in ("fresh", "continue"):
            blocks.append(Block(page, start + 1, mode, reason, ("\n".join(body),), "python", tuple(files)))
            files = []
            continue
        if language not in SHELL:
            continue  # output shown to the reader, YAML, Python
        commands, current = [], ""
        for raw in body:
            current += raw.rstrip()
            if current.endswith("\\"):
                current = current[:-1] + " "
                continue
            if current.strip() and not current.strip().startswith("#"):
                commands.append(current.strip())
            current = ""
        blocks.append(Block(page, start + 1, mode, reason, tuple(commands), "bash", tuple(files)))
        files = []
    assert not files, f"{page}: `file` fences after its last block: no block uses {[name for name, _ in files]}"
    return blocks


BLOCKS = [block for path in pages() for block in shell_blocks(path.read_text(), str(path.relative_to(REPO)))]


def test_the_pages_have_their_blocks_and_each_names_how_it_is_checked():
    assert BLOCKS and all(block.commands for block in BLOCKS)
    fresh_pages = set()
    for block in BLOCKS:
        if block.mode == "syntax":
            assert block.reason, f"{block}: say why it is not run"
        if block.files:
            assert block.mode == "fresh", f"{block}: the files shown before it are written for a `fresh` block only"
        if block.mode == "fresh":
            fresh_pages.add(block.page)
        if block.mode == "continue":
            assert block.page in fresh_pages, f"{block}: `continue` follows a `fresh` block of its page"
    # The two commands a newcomer starts with stay the README's first block.
    first = BLOCKS[0]
    assert first.page == "README.md"
    assert [command.split()[:2] for command in first.commands[:2]] == [["make", "demo"], ["make", "test"]]
    # The README's quickstart runs as written, in a directory of its own: its data and tune.yaml,
    # then `snaketune check -c tune.yaml` and `snaketune tune -c tune.yaml`.
    quickstart = next(block for block in BLOCKS if block.page == "README.md" and block.mode == "fresh")
    assert {name for name, _ in quickstart.files} >= {"tune.yaml"}
    assert [c.split("#")[0].strip() for c in quickstart.commands] == ["snaketune check -c tune.yaml",
                                                                       "snaketune tune -c tune.yaml"]


def test_every_relative_link_of_the_readme_names_a_file_of_the_checkout():
    """GitHub shows the README's links into docs/ as they are; the manual's own links are checked by
    `mkdocs build --strict` (tests/test_docs.py), where the README is the landing page."""
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link for link in links if not re.match(r"^[a-z]+:|^#", link)]
    assert local
    for link in local:
        assert (REPO / link.split("#")[0]).exists(), f"README.md links to {link}, which is not in the checkout"


def with_tiny_model(name: str, text: str) -> str:
    """A file the page shows, as its block finds it: a YAML file's `model:` section becomes the
    tiny test model's (everything else as shown)."""
    import yaml

    if not name.endswith((".yaml", ".yml")):
        return text
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^model:\s*(#.*)?$", line)), None)
    if start is None:
        return text
    end = next((j for j in range(start + 1, len(lines)) if re.match(r"^[^\s#]", lines[j])), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # keep the blank lines before the next section
    tiny = yaml.safe_dump({"model": tiny_config()["model"]}, sort_keys=False)
    swapped = "".join(lines[:start]) + tiny + "".join(lines[end:])
    shown, written = yaml.safe_load(text), yaml.safe_load(swapped)
    assert {k: v for k, v in shown.items() if k != "model"} == {k: v for k, v in written.items() if k != "model"}
    return swapped


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


@pytest.fixture(scope="module")
def fresh_dirs() -> dict[str, Path]:
    """Each page's last `fresh` directory, where its `continue` blocks run."""
    return {}


@pytest.mark.system
@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_readme_block(block, sandbox, fresh_dirs, tmp_path):
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
    workdir = sandbox
    if block.mode == "fresh":
        workdir = fresh_dirs[block.page] = tmp_path / "fresh"  # empty, outside the checkout
        workdir.mkdir()
        for name, text in block.files:
            (workdir / name).write_text(with_tiny_model(name, text))
    elif block.mode == "continue":
        if block.page not in fresh_dirs:
            pytest.fail(f"{block}: continues the `fresh` block before it, which has not run here")
        workdir = fresh_dirs[block.page]
    if block.language == "python":
        result = subprocess.run(["python", "-c", block.commands[0]], cwd=workdir, env=env, capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, f"{block} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        return
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


@pytest.mark.system
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


@pytest.mark.system
def test_the_readme_quickstart_left_what_it_promises(fresh_dirs):
    """After the README's quickstart: the study of its tune.yaml, the best model, best.yaml."""
    import pandas as pd
    import yaml

    workdir = fresh_dirs.get("README.md")
    assert workdir is not None, "the README's quickstart did not run here"
    shown = yaml.safe_load((workdir / "tune.yaml").read_text())
    out = workdir / "tuning_output"
    table = pd.read_csv(out / "trials_results.csv")
    assert len(table) == shown["tuning"]["n_trials"] and set(table["state"]) == {"COMPLETE"}
    assert (out / "best_trial.json").is_file() and (out / "best_model" / "config.json").is_file()
    assert (out / "best_model" / "tokenizer.json").is_file()  # what the README's Python loads
    best = yaml.safe_load((workdir / "best.yaml").read_text())
    assert "learning_rate" in best["training"] and "lora_r" in best["peft"]
