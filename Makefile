# The project's one entry point. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

readme: install  ## regenerate the README's contract and configuration sections
	$(BIN)/python -m service.commands.readme

.PHONY: readme install test test-unit test-integration demo lint typecheck schema asyncapi-check bench bench-quick services clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.txt -e '.[dev]'
	touch $(STAMP)

services:  ## make sure RabbitMQ and PostgreSQL answer (installs and starts them if absent)
	bash .ci/services

test: install services  ## the whole suite (unit, integration, e2e) with branch coverage
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest tests --cov --cov-report=term


test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install services
	$(BIN)/python -m pytest tests/integration tests/e2e

demo: install services  ## the service against the sandbox, on sample calls, with a summary
	$(BIN)/dialer demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: install
	$(BIN)/mypy

schema: install  ## write JSON Schemas and asyncapi.yaml to generated/
	$(BIN)/dialer schema --out generated

asyncapi-check: schema  ## validate the AsyncAPI document with the standard npm parser
	bash .ci/node
	bash .ci/asyncapi-check generated/asyncapi.yaml

bench: install services  ## every benchmark variant, interleaved over 5 rounds; a table and var/bench/latest.json
	$(BIN)/python -m bench

bench-quick: install services  ## the same variants with tiny counts: a smoke check, nothing timed is asserted
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache generated var
