# Two entry points for a fresh machine with only Python 3.11: `make run` (the embedded default, end to
# end) and `make test`. Both create .venv and install on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-quick lint install clean

# dvc.yaml's commands call `elborl`, so the venv's bin goes first on PATH.
run: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	$(BIN)/dvc metrics show

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The design-space benchmark (issue 6): bench/results (about an hour on 2 cores), or CI's check.
bench: $(STAMP)
	$(BIN)/python bench/design_space.py --out bench/results

bench-quick: $(STAMP)
	$(BIN)/python bench/design_space.py --quick --out build/bench-quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(STAMP)

# torch==2.13.0 first: the CPU wheel on disk. A range that 2.13 satisfies then installs nothing more.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) data/prompts data/ceiling
