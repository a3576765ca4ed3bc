# ferry: `make example` migrates the bundled example catalogue; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup zoo example test clean

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

test: setup
	$(PY) -m pytest

clean:
	rm -rf exports .ferry mlflow.db mlartifacts zoo/*/
