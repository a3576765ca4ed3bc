# ferry: `make example` migrates the bundled example catalogue; `make test` runs the tests.
# `make test-fast` runs the unit tier only (pytest -m unit: no TF1 artifacts, no servers, no browser);
# `make lint` runs ruff (CI runs it before the tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# The MLflow UI test drives Debian's chromium through Playwright (which never downloads a browser).
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends chromium fonts-dejavu-core

.PHONY: setup browser zoo example test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

zoo: setup  ## write the example TF1 models (graph, checkpoint, shards) into zoo/
	$(PY) zoo/build.py

example: zoo  ## migrate specs/catalogue.yaml: SavedModels in exports/, MLflow records in mlflow.db
	$(VENV)/bin/ferry run specs/catalogue.yaml

browser: $(CHROMIUM)  ## Debian's chromium for tests/test_mlflow_ui.py; skipped when already installed

$(CHROMIUM):  # apt-get update only when the install fails (a fresh machine's empty package lists)
	$(APT_INSTALL) || { $(SUDO) apt-get update && $(APT_INSTALL); }

test: setup browser  ## the tests (tests/test_mlflow_ui.py runs a real MLflow server and a headless chromium)
	$(PY) -m pytest

test-fast: setup  ## the unit tier: pure Python/numpy/pydantic tests, well under a minute; no browser
	$(PY) -m pytest -m unit

lint: setup  ## ruff, configured in pyproject.toml
	$(VENV)/bin/ruff check .

clean:
	rm -rf exports .ferry mlflow.db mlartifacts zoo/*/
