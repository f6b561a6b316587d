# Two commands do all the set-up on a fresh machine: `make test` and `make demo`.
# The virtualenv's Python: 3.11 or newer, found as the Lambda's is (infra/find-python.js:
# python3 if it is 3.11+, then python3.11, python3.12, ... on PATH, then pyenv's versions).
# Choose one with `make PYTHON=/path/to/python3.13 ...` (the first make creates .venv).
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell node infra/find-python.js 3.11+)
endif
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
# The Lambda runtime's Python (3.12), which compiles the package's bytecode: the plugin
# (infra/compile-bytecode.js) finds it itself (python3.12 if it runs, else pyenv's), also
# under a bare `npx sls package`; exported here for the tests and tools that ask. Without
# one, `sls package` warns and ships source only.
ifeq ($(origin LAMBDA_PYTHON),undefined)
LAMBDA_PYTHON := $(shell node infra/find-python.js 3.12)
endif
ifneq ($(strip $(LAMBDA_PYTHON)),)
export TASK_RUNNER_LAMBDA_PYTHON := $(LAMBDA_PYTHON)
endif
# `make dev`'s endpoint port: fixed, so the exports pasted in another terminal still work
# after a restart (the data does not survive one: the local stack keeps it in memory).
DEV_PORT ?= 4599

.PHONY: install test lint typecheck unit demo dev bench bench-full faults package clean

NO_PYTHON := echo "No Python 3.11 or newer found (PATH, then pyenv): install one, or run make PYTHON=/path/to/python3.x" >&2; exit 1

$(STAMP): requirements.txt requirements-dev.txt
	@test -n "$(PYTHON)" || { $(NO_PYTHON); }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

CHECKOV_STAMP := .venv-checkov/.installed
$(CHECKOV_STAMP): requirements-checkov.txt
	@test -n "$(PYTHON)" || { $(NO_PYTHON); }
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

# exec: the stack is make's own child, to which make passes a SIGTERM; --exit-with-parent
# stops it if make is killed outright. (make does not pass on a SIGINT or SIGHUP sent to
# its pid alone: Ctrl-C and a closed terminal signal the whole process group instead.)
dev: $(STAMP) $(NPM_STAMP)
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$$PATH" exec $(BIN)/python -m runner.local serve --port $(DEV_PORT) --exit-with-parent

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
