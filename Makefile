# Two commands do all the set-up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
export SLS_TELEMETRY_DISABLED := 1
export SLS_NOTIFICATIONS_MODE := off
# Never let a stray profile point anything at real AWS.
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_REGION ?= us-east-1
# The Lambda runtime's Python (3.12), which compiles the package's bytecode
# (infra/compile-bytecode.js): python3.12 if it runs, else a pyenv 3.12. Without one,
# `sls package` warns and ships source only.
LAMBDA_PYTHON ?= $(firstword $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null) \
	$(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12))
ifneq ($(strip $(LAMBDA_PYTHON)),)
export TASK_RUNNER_LAMBDA_PYTHON := $(LAMBDA_PYTHON)
endif

.PHONY: install test lint typecheck unit demo dev bench bench-full faults package clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

CHECKOV_STAMP := .venv-checkov/.installed
$(CHECKOV_STAMP): requirements-checkov.txt
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install -q --upgrade pip
	.venv-checkov/bin/pip install -q -r requirements-checkov.txt
	touch $(CHECKOV_STAMP)

install: $(STAMP) $(NPM_STAMP) $(CHECKOV_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy runner tasks handler.py

# The quick benchmark prints its figures and reports targets, never enforces them; it runs
# before pytest so that pytest's summary is the last line.
test: install lint typecheck
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python -m bench --quick
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/pytest

# demo and dev need the venv and the npm toolchain (sls package), not the checkov venv.
demo: $(STAMP) $(NPM_STAMP)
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python -m runner.local demo

dev: $(STAMP) $(NPM_STAMP)
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python -m runner.local serve

bench: install
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python -m bench --quick

bench-full: install
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python -m bench

# The protocol simulation's long pass (make test runs a quick one): prints the fault
# matrix and writes it to tests/simulation/results/latest.txt. MODE=check fails (and
# shrinks) on anything new; MODE=hunt DEFECT=N shrinks one known defect's failure.
SEED ?= 1
EXAMPLES ?= 1000
STEPS ?= 40
MODE ?= survey
faults: $(STAMP) $(NPM_STAMP)
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python -m tests.simulation \
		$(MODE) --seed $(SEED) --examples $(EXAMPLES) --steps $(STEPS) \
		$(if $(DEFECT),--defect $(DEFECT)) $(if $(BLOB),--blob '$(BLOB)')

package: $(NPM_STAMP)
	npx sls package

clean:
	rm -rf $(VENV) .venv-checkov node_modules .serverless .pytest_cache .mypy_cache .ruff_cache
