# berth: the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config.toml
MODELS_DIR ?= models

.PHONY: run test check install models tiny-models clean bench

run: $(STAMP) models
	$(VENV)/bin/berth serve --config $(CONFIG)

test: $(STAMP)
	$(VENV)/bin/ruff check server engines tui tests bench
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

check: $(STAMP)
	$(VENV)/bin/ruff check server engines tui tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

install: $(STAMP)

# torch first, pinned: 2.13.0 is the CPU build on the machine's disk; any other
# version downloads a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,models]'
	touch $(STAMP)

# The offline models of the default config: real MiniLM weights, a tiny random chat model.
models: $(STAMP)
	$(PY) -m engines.prepare --models-dir $(MODELS_DIR)

# Tiny RANDOM-weight stand-ins of every catalog model under their real ids (garbage
# answers): try every route offline. Never overwrites real weights.
tiny-models: $(STAMP)
	$(PY) -m engines.prepare --models-dir $(MODELS_DIR) --tiny all

bench: $(STAMP)
	$(PY) bench/router_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
