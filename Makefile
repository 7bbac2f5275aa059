# TensorGuard: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster
export TG_ARTIFACT_ROOT ?= $(CURDIR)/.tensorguard/artifacts

.PHONY: demo check-round ci-round test test-fast lint typecheck ui bootstrap bootstrap-services instance clean mutation

bootstrap:
	@scripts/bootstrap.sh

bootstrap-services:
	@scripts/bootstrap.sh --services

instance:
	@mkdir -p "$(DAGSTER_HOME)"
	@cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

## One full federated round on the embedded default (SQLite Dagster storage, local files).
## ROUNDS=5 runs five consecutive rounds, each from the previous global adapter.
ROUNDS ?= 1
demo: bootstrap instance
	$(PY) -m tensorguard_assets.demo --rounds $(ROUNDS)

## Re-verify the latest round on the demo instance: artifacts re-hashed, asset checks passed.
check-round: bootstrap
	$(PY) -m tensorguard_assets.check_round

## Lint, type-check, the whole test suite (starts PostgreSQL etc. itself), then a demo
## round in a scratch state directory whose asset checks are all re-verified.
## TEST_WORKERS pytest-xdist workers, each taking whole test files (a file's round fixture
## runs once); TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
test: bootstrap-services lint typecheck
	HYPOTHESIS_PROFILE=ci $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile
	$(MAKE) ci-round

## The inner loop: lint, type-check and every test not marked slow (no full rounds).
test-fast: bootstrap-services lint typecheck
	$(VENV)/bin/pytest -m "not slow"

CI_STATE := $(CURDIR)/.ci-state
ci-round: bootstrap
	rm -rf "$(CI_STATE)" && mkdir -p "$(CI_STATE)/dagster" && cp dagster.yaml "$(CI_STATE)/dagster/"
	DAGSTER_HOME="$(CI_STATE)/dagster" TG_ARTIFACT_ROOT="$(CI_STATE)/artifacts" \
	  $(PY) -m tensorguard_assets.demo > "$(CI_STATE)/demo.log" 2>&1 \
	  || { tail -50 "$(CI_STATE)/demo.log"; exit 1; }
	DAGSTER_HOME="$(CI_STATE)/dagster" TG_ARTIFACT_ROOT="$(CI_STATE)/artifacts" \
	  $(PY) -m tensorguard_assets.check_round
	DAGSTER_HOME="$(CI_STATE)/dagster" TG_ARTIFACT_ROOT="$(CI_STATE)/artifacts" \
	  $(PY) -m tensorguard_assets.secret_scan

## Mutation testing (mutmut, the `mutation` extra) of tgsp, crypto, keys, aggregation, gate and
## 2:4 checks: hours on two cores, not part of `make test`. MUTANTS='tensorguard.tgsp._paths*'
## limits it to some modules; `$(VENV)/bin/mutmut results` lists the survivors.
MUTANTS ?=
# One torch/OpenMP thread: mutmut forks its workers, and a forked thread pool can hang.
mutation: bootstrap
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[mutation]'
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/mutmut run $(if $(MUTANTS),"$(MUTANTS)")

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

## The Dagster UI on http://127.0.0.1:3000 (Ctrl-C stops it cleanly).
ui: bootstrap instance
	env --default-signal=INT,TERM $(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

clean:
	rm -rf .dagster .tensorguard
