# The commands of the README. Each builds its own virtual environment, so a fresh machine with
# Python 3.11+ needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test test-all reproduce lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e .
	touch $@

# the cluster extra too: the suite sends a sweep through submitit's local executor
$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e ".[test,cluster]"
	touch $@

## make demo: run the default experiment (experiments/truncation.toml) into runs/
demo: $(VENV)/.installed-run
	$(BIN)/gflow run experiments/truncation.toml

## make test: install the test extra and run the CPU test suite (slow and GPU tests deselected;
## at most 8 minutes and 2 GB on a 2-core machine)
test: $(VENV)/.installed-test
	$(BIN)/ruff check gflow_jax tests benchmarks
	$(BIN)/python -m pytest -m "not slow and not gpu" -q -n 2 --dist loadgroup

## make test-all: every CPU test, the slow ones included (every documented command run as written)
test-all: $(VENV)/.installed-test
	$(BIN)/ruff check gflow_jax tests benchmarks
	$(BIN)/python -m pytest -m "not gpu" -q

## make reproduce: re-run the experiment behind every figure of the docs and check its numbers
reproduce: $(VENV)/.installed-run
	$(BIN)/gflow reproduce

lint: $(VENV)/.installed-test
	$(BIN)/ruff check gflow_jax tests benchmarks
	$(BIN)/ruff format --check gflow_jax tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
