"""Shared test setup: the package importable from workflow/, and a tiny local dataset."""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

import workflow_helpers

WORKFLOW_DIR = Path(__file__).resolve().parent.parent / "workflow"
if str(WORKFLOW_DIR) not in sys.path:
    sys.path.insert(0, str(WORKFLOW_DIR))

# The hub ids tests write (the seed's model and a hub dataset) as a Hugging Face cache holds them:
# the hub is unreachable here, and a cached id is what a config may use offline. The model is the
# tiny Llama (config and tokenizer), on its default branch and on branch CACHED_REVISION, where it
# has one layer (two on main) and its tokenizer no chat template. Built once per machine; its path
# goes to every process the tests start (HF_HOME), before anything imports huggingface_hub.
CACHED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CACHED_REVISION = "one-layer"
CACHED_DATASET_ID = "yahma/alpaca-cleaned"


def _hf_home() -> Path:
    home = Path(tempfile.gettempdir()) / f"snaketune-tests-hf-home-{os.getuid()}-v3"
    if home.is_dir():
        return home
    building = Path(tempfile.mkdtemp(prefix="hf-home-", dir=tempfile.gettempdir()))
    repo = building / "hub" / ("models--" + CACHED_MODEL_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    for branch, commit, layers in (("main", "0" * 40, 2), (CACHED_REVISION, "1" * 40, 1)):
        shutil.copytree(WORKFLOW_DIR.parent / "tests" / "assets" / "tiny-llama", repo / "snapshots" / commit)
        config = json.loads((repo / "snapshots" / commit / "config.json").read_text())
        (repo / "snapshots" / commit / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
        if branch != "main":
            (repo / "snapshots" / commit / "chat_template.jinja").unlink()
        (repo / "refs" / branch).write_text(commit)
    (building / "hub" / ("datasets--" + CACHED_DATASET_ID.replace("/", "--")) / "snapshots").mkdir(parents=True)
    try:
        building.rename(home)  # atomic: parallel test workers build it at once
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
    return home


os.environ["HF_HOME"] = str(_hf_home())


@pytest.fixture
def alpaca_jsonl(tmp_path) -> Path:
    """`tmp_path/train.jsonl`: twenty Alpaca-format rows, a local dataset a config can point at (a
    split of 10% of it selects rows, as one of 4 rows would not)."""
    path = tmp_path / "train.jsonl"
    rows = [{"instruction": f"Add {i} and {i}.", "input": "", "output": str(2 * i)} for i in range(20)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# The modules whose tests run whole studies, in the order `make test` starts them: those that
# mostly wait first (test_slurm on SLURM's polling, test_interrupt on training to start and stop,
# test_wheel on pip), so the other worker's CPU work fills their waits; then longest first (by
# their time in a full run, 2 cores), so no long module runs alone at the end while the other
# worker idles. `make test` hands whole modules to its workers (pytest-xdist --dist loadscope) in
# this order: the Makefile passes --no-loadscope-reorder, since xdist >= 3.6 otherwise starts the
# modules with the most tests first, which put test_slurm last (a 2-minute idle tail). A module
# with workflow or system tests that is not listed comes after these, before the unit modules.
# Within a module the order is kept (test_readme runs the README in order).
LONGEST_FIRST = ("test_slurm.py", "test_interrupt.py", "test_wheel.py", "test_workflow.py", "test_generation.py",
                 "test_failures.py", "test_nothing_lost.py", "test_readme.py", "test_preflight.py", "test_resume.py",
                 "test_search.py", "test_gpu.py", "test_cli.py", "test_report.py", "test_oumi_format.py")
LAYERS = frozenset({"workflow", "system"})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Tell the workflow helpers the running test's layer before its fixtures (a module-scoped study
    starts in its first test's setup), so that starting a study from an unmarked test fails."""
    workflow_helpers.RUNNING_TEST_MARKERS = frozenset(mark.name for mark in item.iter_markers()) & LAYERS


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    slow = {item.path.name for item in items if any(m.name in LAYERS for m in item.iter_markers())}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank) + (item.path.name not in slow)))


# A real PostgreSQL server (tests/postgres_server.py), one per test process, started on first use;
# each test that asks for `postgres_url` gets a database of its own on it.
@pytest.fixture(scope="session")
def postgres_server():
    import postgres_server as servers

    reason = servers.missing_reason()
    if reason:
        if os.environ.get("CI"):  # CI installs and runs everything: a missing server is a failure there
            pytest.fail(f"PostgreSQL is needed here: {reason}")
        pytest.skip(reason)
    server = servers.PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """A new empty database's URL as a tune.yaml writes it (its password a ${VAR} of the environment)."""
    import hashlib

    return postgres_server.new_database("t_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20])


@pytest.fixture(params=["journal", pytest.param("postgresql", marks=pytest.mark.system)])
def storage(request):
    """tuning.storage of a study a test runs on each storage: None (the file journal) or a new
    PostgreSQL database's URL. The PostgreSQL run is a system test (it needs the server)."""
    return None if request.param == "journal" else request.getfixturevalue("postgres_url")

