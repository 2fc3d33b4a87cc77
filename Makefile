# kubedbt developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
# Go builds and tests the launcher (images/launcher); it may not be on PATH.
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
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
	$(BIN)/ruff check operator tests examples bench images/project
	$(BIN)/ruff format --check operator tests examples bench images/project
	$(BIN)/mypy
	$(BIN)/mypy --strict images/project/build.py
	$(BIN)/lint-imports
	@# Collecting imports every test module, so one that needs the cluster breaks here, not later.
	$(BIN)/pytest --collect-only -q tests >/dev/null

.PHONY: test-unit
test-unit: venv dbt-venv ## Tests of the pure code and the uploader on real dbt output (no cluster)
	cd images/launcher && $(GO) vet ./... && $(GO) test ./...
	KUBEDBT_DBT=$(DBT_VENV)/bin/dbt $(BIN)/pytest tests/unit
	$(BIN)/pytest tests/cli -m "not cluster"

.PHONY: golden
golden: venv ## Rewrite the golden manifests after a deliberate rendering change
	$(BIN)/pytest tests/unit/test_render.py tests/unit/test_readme.py --update-golden

# --- the local cluster (tests/cluster/*.sh) ---
CLUSTER_STATE ?= /var/lib/kubedbt-cluster
export KUBECONFIG ?= $(CLUSTER_STATE)/admin.kubeconfig

.PHONY: cluster-up
cluster-up: ## Build (once, cached) and start the local Kubernetes cluster
	tests/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove its state (binaries and images stay cached)
	tests/cluster/down.sh

.PHONY: cluster-status
cluster-status: ## Show the local cluster's components and node
	tests/cluster/status.sh

.PHONY: images
images: ## Build every images/*/Dockerfile and import the images into the cluster
	tests/cluster/images.sh

# The variables reach the script through the environment ("$${PROJECT:-}" is expanded by the
# shell, never spliced into this recipe by make), so no value given here is run as shell code.
.PHONY: project-image
project-image: venv ## Your dbt project as an image on kubedbt/dbt: PROJECT=dir IMAGE=name:tag
	@$(BIN)/python images/project/build.py --project "$${PROJECT:-}" --image "$${IMAGE:-}" \
	  --base "$${BASE:-kubedbt/dbt:dev}" --namespace "$${NAMESPACE:-kubedbt-demo}" \
	  --sidecar-image "$${SIDECAR_IMAGE:-kubedbt/sidecar:dev}" \
	  --profile-conn-id "$${PROFILE_CONN_ID:-}" \
	  --ignore-checks "$${IGNORE_CHECKS:-}" --keep-dbt-packages "$${KEEP_DBT_PACKAGES:-}"

.PHONY: demo
demo: venv ## Local cluster, images, Airflow, then the example DAG run by Airflow on DuckDB
	$(MAKE) airflow-up
	$(MAKE) images
	examples/demo/run.sh

# --- a real Airflow deployment on this host (tests/airflow/airflow.sh) ---

.PHONY: airflow-up
airflow-up: venv ## PostgreSQL and Airflow's four components on this host (cluster up first)
	$(MAKE) cluster-up
	tests/airflow/airflow.sh up

.PHONY: airflow-down
airflow-down: ## Stop the Airflow deployment and remove its state and namespace
	tests/airflow/airflow.sh down

.PHONY: airflow-status
airflow-status: ## Show the Airflow deployment's processes and health
	tests/airflow/airflow.sh status

HELM ?= $(CLUSTER_STATE)/bin/helm
export HELM

.PHONY: helm-lint
helm-lint: ## helm lint --strict and the chart's template tests (no cluster needed, helm built)
	$(HELM) lint --strict helm/kubedbt
	$(BIN)/pytest tests/helm -m "not cluster"

.PHONY: test-cluster
test-cluster: venv ## Smoke tests, dry runs, sidecar round trip, chart, kubectl dbt (cluster up, images)
	KUBEDBT_REQUIRE_CLUSTER=1 $(BIN)/pytest tests/cluster tests/helm
	KUBEDBT_REQUIRE_CLUSTER=1 $(BIN)/pytest tests/cli -m cluster

.PHONY: test-e2e
test-e2e: venv ## DAGs through Airflow on the local cluster with the real images (cluster up, images built)
	KUBEDBT_REQUIRE_CLUSTER=1 $(BIN)/pytest tests/e2e

.PHONY: test-deployment
test-deployment: venv ## Fault tests on the real Airflow deployment (cluster up, images built)
	$(MAKE) airflow-up
	KUBEDBT_REQUIRE_CLUSTER=1 $(BIN)/pytest tests/deployment --durations=0

# --- the benchmark (bench/run.py): kubedbt's trigger against the cncf KubernetesJobTrigger ---
RUNS ?= 1000

.PHONY: bench
bench: venv ## kubedbt vs cncf's KubernetesJobTrigger, RUNS waiting runs each on kwok (cluster up)
	PYTHONPATH=. $(BIN)/python -m bench.run --runs $(RUNS)

.PHONY: bench-smoke
bench-smoke: venv ## The benchmark at 20 runs per system; fails unless every run is seen to succeed
	PYTHONPATH=. $(BIN)/python -m bench.run --runs 20 --wait-seconds 30 --check

.PHONY: test
test: lint test-unit ## Everything CI runs: lint, unit, cluster, end-to-end and fault tests
	$(MAKE) cluster-up
	status=0; \
	$(MAKE) images && $(MAKE) test-cluster && $(MAKE) bench-smoke && $(MAKE) test-e2e \
	  && $(MAKE) test-deployment \
	  || status=$$?; \
	$(MAKE) cluster-down; \
	exit $$status
