"""Builds the wheel with the workflow files inside the package (everything else is in pyproject.toml).

The repository keeps Snakemake's layout: Snakefile, workflow/rules, workflow/schemas,
workflow/profiles, workflow/report, scripts/, config/ and envs/ at the top, beside the package in
workflow/snaketune. A wheel carries them as package data under snaketune/_workflow/, in that same
layout, so the Snakefile's `include:` and the rules' `script:`, `conda:` and caption paths resolve
unchanged; `snaketune.resources` finds them there.

Hand-written because setuptools' package data must lie inside the package's own directory, and
these files lie above it: a `build_py` that also copies them is the smallest way to map them in.
"""

from glob import glob
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLE = Path("snaketune", "_workflow")  # snaketune.resources.BUNDLE, inside the package

WORKFLOW_FILES = (  # globs relative to the repository root
    "Snakefile",
    "workflow/rules/*.smk",
    "workflow/schemas/*.yaml",
    "workflow/profiles/*/*.yaml",
    "workflow/report/*.rst",
    "scripts/*.py",
    "config/*.yaml",
    "config/demo_data/*.jsonl",
    "config/word_problems/*.jsonl",
    "envs/*.yaml",
)


def workflow_files() -> list[str]:
    return sorted(path for pattern in WORKFLOW_FILES for path in glob(pattern) if Path(path).is_file())


class build_py_with_workflow(build_py):
    """build_py, plus the workflow files copied to <build_lib>/snaketune/_workflow/.

    An editable install builds nothing here (setuptools' own build_py returns at once too): it
    imports the package from the checkout, where `snaketune.resources` finds the files in place.
    """

    def run(self):
        super().run()
        if self.editable_mode:
            return
        for source, target in zip(workflow_files(), self.workflow_outputs()):
            self.mkpath(str(Path(target).parent))
            self.copy_file(source, target)

    def workflow_outputs(self) -> list[str]:
        return [str(Path(self.build_lib, BUNDLE, path)) for path in workflow_files()]

    def get_outputs(self, include_bytecode=True):
        extra = [] if self.editable_mode else self.workflow_outputs()
        return super().get_outputs(include_bytecode) + extra

    def get_source_files(self):  # what `sdist` packs: a wheel built from the sdist has them too
        return super().get_source_files() + workflow_files()


setup(cmdclass={"build_py": build_py_with_workflow})
