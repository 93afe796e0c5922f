# paycore — developer workflow. `make run` and `make test` are the whole quick start.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration chaos soak lint fmt bench migrate-up clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install paycore with its dev tools

run: $(STAMP) ## the whole stack on embedded defaults (paycore up)
	$(BIN)/paycore up

test: $(STAMP) ## the full test suite (unit, integration, e2e, chaos)
	$(BIN)/pytest -n 2 --dist loadgroup -q

test-unit: $(STAMP) ## unit tests only
	$(BIN)/pytest -n 2 -q tests/unit

test-integration: $(STAMP) ## integration and end-to-end tests
	$(BIN)/pytest -n 2 --dist loadgroup -q tests/integration tests/e2e

chaos: $(STAMP) ## the chaos scenarios C1-C6 alone (a few minutes; part of `make test`)
	$(BIN)/pytest -q tests/chaos

soak: $(STAMP) ## the leak soak C6 for 30 minutes (SOAK_SECONDS=... to change)
	PAYCORE_SOAK_SECONDS=$${SOAK_SECONDS:-1800} $(BIN)/pytest -q -s -o timeout=0 tests/chaos/test_c6_soak.py

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict on src/
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

migrate-up: $(STAMP) ## apply migrations to DATABASE_URL
	$(BIN)/paycore migrate

bench: $(STAMP) ## load benchmark (writes bench/results/*.json)
	$(BIN)/paycore bench

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) .paycore
