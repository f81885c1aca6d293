"""The manual builds: `mkdocs build --strict` (what `make docs` runs) fails on a broken link or
anchor, a page left out of the nav, or any other warning; the README is its landing page."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from workflow_helpers import REPO

pytestmark = pytest.mark.system


def test_the_manual_builds_strict_with_the_readme_as_its_landing_page(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    index = (site / "index.html").read_text()
    assert "Tune on your own data" in index  # the README, not docs/index.md's stand-in
    assert 'href="config/' in index and "docs/config.md" not in index  # its links into docs/, as the site's
    assert (site / "img" / "report.png").is_file() and "img/report.png" in (site / "watching" / "index.html").read_text()
