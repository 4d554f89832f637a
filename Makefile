# One entry point for people and CI. `make up` runs the pipeline locally, `make test` tests it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install up test check bench-receiver bench-backfill clean

$(BIN)/nxcloud-connector: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[dev]'
	touch $@

install: $(BIN)/nxcloud-connector

up: install
	$(BIN)/nxcloud-connector up

test: install
	$(BIN)/pytest

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench-receiver: install
	$(BIN)/python -m bench.receiver --seconds 30

bench-backfill: install
	$(BIN)/python -m bench.backfill

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
