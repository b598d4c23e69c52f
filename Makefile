# newsrec — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Installs go through uv (seconds instead of pip's minutes): the one on PATH, or one that `make setup`
# puts into $(VENV)/.uv from PyPI with the interpreter's pip. torch==2.13.0+cpu comes from a local
# wheel folder where the machine has one (PIP_FIND_LINKS, which uv reads as --find-links).
UV ?= $(or $(shell command -v uv 2>/dev/null),$(VENV)/.uv/bin/uv)
UV_SYNC = $(UV) pip sync $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS))

# The prod tests' local BigQuery and GCS emulators, in a venv of their own (their pins clash with
# the project's: bqemulator pins duckdb 2.0).
EMULATORS_VENV := tools/emulators/.venv

.PHONY: setup emulators demo test test-fast lint bench bench-feast-setup lock clean

setup: $(VENV)/.installed

$(VENV)/.uv/bin/uv:
	@echo "setup: installing uv from PyPI into $(VENV)/.uv"
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(VENV)/.uv uv

$(VENV)/.installed: requirements.lock pyproject.toml | $(if $(filter $(VENV)/.uv/bin/uv,$(UV)),$(UV))
	@echo "setup: syncing $(VENV) with requirements.lock ($$(grep -c '==' requirements.lock) pinned packages)"
	test -x $(BIN)/python || $(UV) venv --allow-existing --python $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV_SYNC) requirements.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --no-deps -e .
	touch $@

emulators: $(EMULATORS_VENV)/.installed

$(EMULATORS_VENV)/.installed: tools/emulators/requirements.lock | $(if $(filter $(VENV)/.uv/bin/uv,$(UV)),$(UV))
	@echo "setup: syncing $(EMULATORS_VENV) with tools/emulators/requirements.lock"
	test -x $(EMULATORS_VENV)/bin/python || $(UV) venv --python $(PYTHON) $(EMULATORS_VENV)
	VIRTUAL_ENV=$(EMULATORS_VENV) $(UV_SYNC) tools/emulators/requirements.lock
	touch $@

# `make demo DEMO_ARGS="--ui-port 3001 --api-port 8001"` when those ports are taken.
demo: setup
	$(BIN)/newsrec demo $(DEMO_ARGS)

test: setup emulators
	$(BIN)/ruff check .
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m bench

# The Feast peer of `python -m bench.ab` (bench/feast_peer.py): Feast in a venv of its own, from its
# own lock (its dependencies clash with ours), then a smoke run: load 1,000 lists, serve, look one up.
FEAST_VENV := bench/feast/.venv
bench-feast-setup: setup
	test -x $(FEAST_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(FEAST_VENV)
	VIRTUAL_ENV=$(FEAST_VENV) $(UV) pip sync --quiet bench/feast/requirements.lock
	$(BIN)/python -m bench.feast_peer feast-sqlite --users 1000

# Re-pin after editing requirements.in (uv resolves in seconds; pip's resolver takes many minutes).
lock: setup
	$(UV) pip compile requirements.in --python-version 3.11 --find-links /opt/wheels -o requirements.lock
	$(UV) pip compile tools/emulators/requirements.in --python-version 3.11 -o tools/emulators/requirements.lock

clean:
	rm -rf var dbt_project/target dbt_project/logs .pytest_cache
