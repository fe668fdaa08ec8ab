# Local development tasks. Everything runs from a private virtualenv in .venv.
#
#   make install   create .venv and install hotlink (editable) with test extras
#   make lint      ruff + mypy (configured in pyproject.toml)
#   make test      lint, then the whole test suite
#   make test-fast the test suite without tests marked slow
#   make demo      run the live hot-patching demo
#   make bench     run every benchmark (benchmarks/run.py), write benchmarks/results.json and plot_*.png (BENCH_ARGS=--quick)
#   make dist      build the sdist and the wheel into dist/

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The stamp lives inside the venv: deleting .venv forces a reinstall, and a
# change to pyproject.toml (dependencies, entry points) triggers one too.
# Source edits need no reinstall (editable install).
STAMP  := $(VENV)/.hotlink-install.stamp

PYTEST_ARGS ?=
BENCH_ARGS  ?=

.PHONY: all install lint test test-fast demo bench dist clean

all: test

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test,display]'
	touch $@

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q tests -m "not slow" $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/hotlink demo

bench: install
	$(PY) benchmarks/run.py $(BENCH_ARGS)

dist: install
	$(PY) -m build --outdir dist .

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
