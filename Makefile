# zonewatch — the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-unit bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "zonewatch needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Run the whole pipeline on the bundled sample logs (embedded broker, DuckDB, Teams receiver).
demo: install
	$(BIN)/zonewatch demo

## Unit and integration tests (integration tests start one embedded broker per session,
## or use KAFKA_BOOTSTRAP_SERVERS when it is set).
test: install
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m "not integration"

## Benchmarks print figures and ratios against baselines measured in the same run.
bench: install
	$(BIN)/python bench/run_all.py

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy zonewatch connectors correlator console
	$(BIN)/lint-imports
	$(BIN)/zonewatch rules check rules/
	$(BIN)/zonewatch rules generate --zones rules/zones.yaml --check

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var demo-out .pytest_cache .mypy_cache .ruff_cache
