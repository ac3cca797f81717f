# utimesh developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install utimesh with its dev extras

demo: $(STAMP) ## Run the demo: start the triage service and assess sample patients through it
	$(BIN)/utimesh demo

test: $(STAMP) ## Run the test suite (slow suites excluded)
	$(BIN)/python -m pytest

# The release gate (EVALUATION.md): offline agents, thresholds in libs/utimesh/evaluation/gate.toml,
# tolerances against the checked-in baseline. Seconds, not minutes.
eval: $(STAMP) ## Release gate: gold, adversarial, regression and Q&A datasets on the offline provider
	$(BIN)/utimesh eval -d gold -d adversarial -d regression -d qa --gate \
		--baseline libs/utimesh/evaluation/baselines/offline.json

protos: $(STAMP) ## Regenerate libs/utimesh/**/v1 from protos/
	$(BIN)/python protos/generate.py

lint: $(STAMP) ## ruff, mypy --strict, buf lint, generated-code freshness
	$(BIN)/ruff check libs services tests protos gateway mesh
	$(BIN)/ruff format --check libs services tests protos gateway mesh
	$(BIN)/mypy libs/utimesh services gateway mesh
	$(BIN)/python protos/generate.py --check
	$(BIN)/python -m gateway.openapi --check
	$(BIN)/python -m mesh.k8s --check
	PYTHON=$(BIN)/python bash protos/lint.sh

# Every benchmark runs even if an earlier one reports errors; the target fails if any did.
bench: $(STAMP) ## Benchmarks (triage engine and gRPC, consultations through the mesh and the job queue); prints tables
	rc=0; \
	$(BIN)/python -m tests.bench.bench_triage || rc=1; \
	$(BIN)/python -m tests.bench.bench_consult || rc=1; \
	$(BIN)/python -m tests.bench.bench_report || rc=1; \
	$(BIN)/python -m tests.bench.bench_evidence || rc=1; \
	$(BIN)/python -m tests.bench.bench_edge || rc=1; \
	$(BIN)/python -m tests.bench.bench_queue || rc=1; \
	exit $$rc

clean: ## Remove caches (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -name __pycache__ -prune -exec rm -rf {} +

.PHONY: help install demo test eval protos lint bench clean
