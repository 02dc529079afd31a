# Two commands do all the set-up on a fresh machine:
#   make demo   virtualenv + install, demo data if data/ is empty, the pipeline (cloudcli run: dvc repro,
#               independent stages side by side), CV, per-step and test scores
#   make test   virtualenv + install, the whole test suite (CI runs this)
# On a machine with a CUDA GPU:
#   make gpu-check   the CUDA tests (fp32, bf16, fp16 against the CPU), then benchmarks/gpu.py
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: install install-dev demo test quick-test gpu-check lint clean

install: $(STAMP)
install-dev: $(DEV)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip || echo "pip upgrade failed; going on with the venv's pip"
	@# The CUDA wheels torch pulls are several hundred MB: resume broken downloads, and retry the
	@# whole install (finished wheels come from pip's cache) before giving up.
	@for attempt in 1 2 3; do \
	  PIP_RESUME_RETRIES=20 PIP_RETRIES=10 PIP_TIMEOUT=60 $(BIN)/python -m pip install --quiet -e . && exit 0; \
	  echo "pip install failed (attempt $$attempt of 3)"; df -h . "$${TMPDIR:-/tmp}" | tail -n +2; sleep 15; \
	done; echo "torch and its CUDA wheels need about 10 GB free (the venv ~6 GB, pip's cache and temp files)"; exit 1
	touch $(STAMP)

$(DEV): $(STAMP)  # the test and lint tools on top
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV)

demo: install
	@if [ -z "$$(ls -A data 2>/dev/null)" ]; then $(BIN)/cloudcli demo-data data; fi
	PATH="$(CURDIR)/$(BIN):$$PATH" cloudcli run  # what dvc repro does, independent stages side by side (a slot per GPU, else up to 4 slots sharing the cores)
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc checkout --relink --quiet  # outputs become links to the cache: one copy on disk
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc metrics show metrics/cv.json
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc metrics show metrics/stages
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc metrics show metrics/tune.json metrics/test.json
	@echo "reports: reports/data/ (labels) and reports/predictions/ (OOF errors, overlays); dvc plots show draws them"

# One pytest-xdist worker per core, each with its share of the threads (tests/conftest.py); a test
# file stays on one worker, so its module fixtures are built once.
XDIST := -n auto --dist loadfile

test: install-dev
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

quick-test: install-dev  # skips the slow end-to-end tests
	$(BIN)/python -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

gpu-check: install-dev  # on a CUDA machine: tests/engine/test_cuda.py, then benchmarks/results/gpu.json (< 5 minutes)
	$(BIN)/python -m pytest -m cuda -rs tests/engine/test_cuda.py $(PYTEST_ARGS)
	$(BIN)/python benchmarks/gpu.py --out benchmarks/results

lint: install-dev
	$(BIN)/ruff check cloudcli tests
	$(BIN)/ruff format --check cloudcli tests

clean:
	rm -rf artifacts metrics .pytest_cache
