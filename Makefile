# Two commands do all the set-up on a fresh machine:
#   make demo   virtualenv + install, demo data if data/ is empty, dvc repro, CV, per-step and test scores
#   make test   virtualenv + install, the whole test suite (CI runs this)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test quick-test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	@if [ -z "$$(ls -A data 2>/dev/null)" ]; then $(BIN)/cloudcli demo-data data; fi
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc metrics show metrics/cv.json
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc metrics show metrics/stages
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc metrics show metrics/tune.json metrics/test.json

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

quick-test: install  # skips the slow end-to-end tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check cloudcli tests
	$(BIN)/ruff format --check cloudcli tests

clean:
	rm -rf artifacts metrics .pytest_cache
