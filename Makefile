# kubedbt developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLUSTER ?= local
export CLUSTER

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# The virtual environment is rebuilt when the package's dependencies change.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Create .venv with the package and its dev tools

# dbt itself, pinned exactly as in the dbt image, for tests that need real dbt artifacts.
DBT_VENV := .venv-dbt
$(DBT_VENV)/.installed: images/dbt/requirements.txt
	$(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/pip install --quiet --upgrade pip
	$(DBT_VENV)/bin/pip install --quiet --no-deps -r images/dbt/requirements.txt
	touch $@

.PHONY: dbt-venv
dbt-venv: $(DBT_VENV)/.installed ## Create .venv-dbt with the dbt image's pinned dbt

.PHONY: lint
lint: venv ## ruff, mypy --strict and the import-linter layer contracts
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: test-unit
test-unit: venv dbt-venv ## Tests of the pure code and the uploader on real dbt output (no cluster)
	KUBEDBT_DBT=$(DBT_VENV)/bin/dbt $(BIN)/pytest tests/unit

.PHONY: golden
golden: venv ## Rewrite the golden manifests after a deliberate rendering change
	$(BIN)/pytest tests/unit/test_render.py tests/unit/test_readme.py --update-golden

.PHONY: test
test: lint test-unit ## Everything CI runs
