# The two commands of the README. Both build their own virtual environment, so a fresh machine
# with Python 3.11+ needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

## make demo: run the default experiment (experiments/truncation.toml) into runs/
demo: $(VENV)/.installed-run
	$(BIN)/gflow run experiments/truncation.toml

## make test: install the test extra and run the CPU test suite (slow and GPU tests deselected)
test: $(VENV)/.installed-test
	$(BIN)/ruff check gflow_jax tests benchmarks
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check gflow_jax tests benchmarks
	$(BIN)/ruff format --check gflow_jax tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
