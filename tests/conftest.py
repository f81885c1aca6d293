"""Shared test setup: the package importable from workflow/, and a tiny local dataset."""

import json
import sys
from pathlib import Path

import pytest

WORKFLOW_DIR = Path(__file__).resolve().parent.parent / "workflow"
if str(WORKFLOW_DIR) not in sys.path:
    sys.path.insert(0, str(WORKFLOW_DIR))


@pytest.fixture
def alpaca_jsonl(tmp_path) -> Path:
    """`tmp_path/train.jsonl`: four Alpaca-format rows, a local dataset a config can point at."""
    path = tmp_path / "train.jsonl"
    rows = [{"instruction": f"Add {i} and {i}.", "input": "", "output": str(2 * i)} for i in range(4)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
