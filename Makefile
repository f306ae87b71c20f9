# Every target installs what it needs into .venv on first use (a stamp makes later calls instant).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train sweep test test-fast lint tensorboard bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/python -m segsweep.train $(ARGS)

sweep: $(STAMP)
	$(BIN)/python -m segsweep.train -m experiment=loss_comparison $(ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(ARGS)

# One pytest worker per core (pytest-xdist), a test file per worker at a time (its module fixtures run once);
# tests/conftest.py gives each worker's torch its share of the cores. ARGS="-n 0" runs them in one process.
PYTEST := $(BIN)/python -m pytest -n auto --dist loadfile --durations=15

test: $(STAMP)
	$(PYTEST) $(ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/lint-imports --no-cache

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir outputs $(ARGS)

clean:
	rm -rf outputs .pytest_cache
