# The few commands the README names. Each installs what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# uv or pip; empty: uv where it can be had (scripts/setup)
INSTALLER ?=
STAMP := $(VENV)/.installed
# The params file run, serve and replay read; team mode: PARAMS=params.team.yaml (make team)
PARAMS ?= params.yaml
# More options for `loopline replay`, e.g. REPLAY_ARGS="--arrive-by tenure --descending"
REPLAY_ARGS ?=

# Everything runs offline: no tool of the stack may phone home.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export BENTOML_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export EVIDENTLY_DISABLE_TELEMETRY := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export DO_NOT_TRACK := 1
# Commands of the virtual environment (dvc, loopline, torchrun) come first on PATH; the
# setup that makes it runs with the PATH it was given (its python3, pip and uv).
GIVEN_PATH := $(PATH)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help setup lock prometheus chromium run test pinned lint format data ui team serve deploy replay clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv from pylock.toml with uv (pip where uv can't be had)

$(STAMP): pyproject.toml pylock.toml scripts/setup
	PATH="$(GIVEN_PATH)" VENV=$(VENV) PYTHON=$(PYTHON) INSTALLER=$(INSTALLER) scripts/setup
	touch $@

lock:  ## after a change to pyproject.toml: uv.lock, then pylock.toml and serving/requirements.txt
	PATH="$(GIVEN_PATH)" VENV=$(VENV) PYTHON=$(PYTHON) scripts/setup --lock

# $(call debian-package,PACKAGE,COMMANDS,NAME,WHAT NEEDS IT): where one of COMMANDS is
# missing, install PACKAGE with apt if this is root on Debian; otherwise one line says how.
debian-package = ( for c in $(2); do command -v $$c >/dev/null || exit 1; done ) || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $(1) >/dev/null; } || \
	echo "$(3) is not installed: sudo apt-get install $(1) ($(4))"

# Prometheus and promtool for the alerts: `make ui` runs them, the alert tests need them;
# without them the UIs start without alerts and the alert tests skip.
prometheus:
	@$(call debian-package,prometheus,prometheus promtool,Prometheus,the alerts need it)

# Chromium for the page tests (tests/e2e/conftest.py: Playwright drives it, and cannot
# download a browser of its own here); without it they skip.
chromium:
	@$(call debian-package,chromium,chromium,Chromium,the browser tests need it)

run: setup  ## the main job: fetch pinned data, run the whole pipeline (dvc repro)
	$(BIN)/loopline run --params $(PARAMS)

test: setup prometheus chromium  ## lint, format check, the import layers and the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest

pinned: run  ## make run, then fail if dvc.lock or metrics/ differ from the committed ones
	@changed="$$(git status --porcelain -- dvc.lock metrics)"; \
	if [ -n "$$changed" ]; then \
		echo "make run changed what the commit pins (same code, data and params must give the same files):"; \
		echo "$$changed"; git --no-pager diff HEAD -- dvc.lock metrics; exit 1; \
	fi; echo "dvc.lock and metrics/ are exactly the committed ones"

lint: setup  ## ruff check + format check + the import layers only
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

data: setup  ## fetch (or rebuild and verify) the raw data pinned by data.dvc
	$(BIN)/loopline data --params $(PARAMS)

ui: setup prometheus  ## the UIs: Prefect :4200, MLflow :5000, Evidently :8000, Prometheus :9090
	$(BIN)/loopline ui --params $(PARAMS)

team: setup  ## team mode: PostgreSQL, MLflow, Prefect + workers, Evidently; writes params.team.yaml
	$(BIN)/loopline up --profile team --params $(PARAMS)

serve: setup  ## serve the champion with BentoML on http://127.0.0.1:3000 (OpenAPI page at /)
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(BIN)/loopline serve --params $(PARAMS)

deploy: setup  ## serve the loop's deployments: monitor, retrain, jobs, score (needs make ui)
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(BIN)/loopline deploy --params $(PARAMS)

replay: setup  ## play unseen data (flights: Jul-Dec 2013) through the service and the loop
	$(BIN)/loopline replay --params $(PARAMS) $(REPLAY_ARGS)

clean:  ## remove pipeline outputs (not data/, not the venv)
	rm -rf artifacts .prefect
