"""Every third-party import of the package and its rule scripts is a declared dependency
(pyproject.toml), checked by deptry: a wheel's install then brings everything a study imports,
which is why tests/test_wheel.py may take the dependencies from this environment instead of
installing them again."""

import subprocess
import sys

from workflow_helpers import REPO


def deptry(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deptry", *map(str, paths), "--no-ansi"],
                          cwd=REPO, capture_output=True, text=True)


def test_every_import_of_the_package_and_its_scripts_is_a_declared_dependency():
    result = deptry("workflow/snaketune", "scripts")
    assert result.returncode == 0, result.stderr


def test_an_import_of_a_package_installed_only_as_another_ones_dependency_is_found(tmp_path):
    # filelock comes with torch and datasets, and is not a dependency of snaketune's own.
    (tmp_path / "uses_filelock.py").write_text("import filelock\n")
    result = deptry(tmp_path)
    assert result.returncode == 1 and "DEP003 'filelock' imported but it is a transitive dependency" in result.stderr
