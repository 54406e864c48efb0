# The two commands a new user runs: `make demo` and `make test`. Each builds .venv on its own.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of this exact version is on local disk here; GPU users install their own CUDA torch.
TORCH_PIN ?= torch==2.13.0
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: demo test lint install clean docs-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

# The docs name only files, commands and flags that exist, and the README's tiny example prints what it says
# (tools/docs_check.py; also part of make test).
docs-check: $(VENV)/.installed
	$(PY) tools/docs_check.py

demo: $(VENV)/.installed
	$(PY) -m trainer.experiment --out runs/demo

clean:
	rm -rf $(VENV) runs
