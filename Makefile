# finmesh: every entry point a developer or CI needs. Each target sets up what it uses.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYSTEM ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
BUF_VERSION := 1.75.0
BUF := .build/npm/node_modules/.bin/buf
# Hardhat 2 (Node 20; Hardhat 3 needs Node 22) and solc for the chain gateway's tests, in a prefix
# of their own: an npm install --no-save into .build/npm would remove buf, and the other way round.
HARDHAT_VERSION := 2.29.1
SOLC_VERSION := 0.8.26
HARDHAT := .build/npm/hardhat/node_modules/.bin/hardhat
PROFILE ?= full
BENCH ?=

.PHONY: help venv gen gen-check lint breaking deploy-check deploy-dry-run test run demo bench system-packages kafka-libs s3proxy-libs clean

help:
	@echo "make run         start every service of PROFILE (default: full) on loopback with mTLS"
	@echo "make test        install everything and run the whole test suite on real servers"
	@echo "make gen         regenerate gen/ and docs/contracts.md from proto/"
	@echo "make lint        buf lint + buf format, ruff, mypy (strict on the kit)"
	@echo "make breaking    buf breaking against the released contracts (.ci/contracts-baseline)"
	@echo "make bench       run the benchmarks (BENCH=<name> for one)"
	@echo "make deploy-check  helm lint, helm template per profile, offline Kubernetes and Istio validation"
	@echo "make deploy-dry-run  deploy-check, then a server-side dry-run of every object on an embedded kube-apiserver (not in CI)"

$(VENV)/.installed: requirements.lock pyproject.toml gen/python/pyproject.toml
	@test -x $(PY) || $(PYTHON_SYSTEM) -m venv $(VENV)
	@$(VENV)/bin/pip install -q uv==0.13.8
	@$(UV) pip sync -q --python $(PY) requirements.lock
	@$(UV) pip install -q --python $(PY) --no-deps -e . -e gen/python
	@touch $@

venv: $(VENV)/.installed

$(BUF):
	@mkdir -p .build/npm
	@npm install --silent --no-save --no-audit --no-fund --prefix .build/npm @bufbuild/buf@$(BUF_VERSION)

$(HARDHAT):
	@mkdir -p .build/npm/hardhat
	@npm install --silent --no-save --no-audit --no-fund --prefix .build/npm/hardhat hardhat@$(HARDHAT_VERSION) solc@$(SOLC_VERSION)

gen: venv
	@$(PY) -m tools.gen

gen-check: gen
	@git add -N gen docs/contracts.md 2>/dev/null || true
	@git diff --exit-code --stat -- gen docs/contracts.md || { echo "gen/ is stale: run 'make gen' and commit"; exit 1; }

lint: venv $(BUF)
	@$(PY) -m tools.gen.deps >/dev/null
	$(BUF) lint proto
	$(BUF) format -d --exit-code proto
	$(VENV)/bin/ruff check svc gateway tools tests bench
	$(VENV)/bin/ruff format --check svc gateway tools tests bench
	$(VENV)/bin/mypy svc gateway tools bench

breaking: venv $(BUF)
	@$(PY) -m tools.gen.deps >/dev/null
	@BUF=$(BUF) PYTHON=$(PY) bash tools/contracts/breaking.sh

system-packages:
	@bash tools/ci/install-system-packages.sh

kafka-libs:
	@bash tools/kafka/fetch.sh

s3proxy-libs:
	@bash tools/s3proxy/fetch.sh

test: system-packages venv kafka-libs s3proxy-libs $(HARDHAT)
	@$(PY) -m tools.gen.deps >/dev/null
	$(PY) -m pytest

run: venv
	$(VENV)/bin/finmesh run --profile $(PROFILE)

demo: venv
	$(PY) -m tools.demo

bench: venv
	$(PY) -m bench $(BENCH)

deploy-check: venv
	@PY=$(PY) bash tools/deploy/check.sh

deploy-dry-run: venv
	@PY=$(PY) bash tools/deploy/dry-run.sh

clean:
	rm -rf $(VENV) .build .bench .pytest_cache .mypy_cache .ruff_cache
