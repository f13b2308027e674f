# Two commands set up everything on a fresh machine:
#   make demo   creates .venv, installs smilesformer (CPU torch 2.13.0) and runs the notebook's demo
#   make test   creates .venv the same way and runs the test suite
# The public data sets are read from $SMILESFORMER_DATA; beside the project that is ../shared/data.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := $(wildcard ../shared/data)
export SMILESFORMER_DATA ?= $(if $(SHARED_DATA),$(abspath $(SHARED_DATA)),)
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test browser bench-env bench-st-env lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,explain,serve,ray,bench,notebook]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/smilesformer demo

# Chromium for the browser test (Debian packages; skipped with a reason where it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) ; } || \
	  echo "chromium not installed: the browser test will be skipped"

# chemprop for the accuracy suite, in its own environment: it pins another RDKit than ours.
CHEMPROP_VENV := .venv-chemprop
$(CHEMPROP_VENV)/.installed:
	$(PYTHON) -m venv $(CHEMPROP_VENV)
	$(CHEMPROP_VENV)/bin/pip install -q torch==2.13.0 "chemprop>=2.1,<3"
	touch $@

bench-env: $(CHEMPROP_VENV)/.installed

# simpletransformers (the seed notebook's tool) for bench_vs_simpletransformers.py: it needs transformers 4.
ST_VENV := .venv-st
$(ST_VENV)/.installed:
	$(PYTHON) -m venv $(ST_VENV)
	$(ST_VENV)/bin/pip install -q torch==2.13.0 simpletransformers "transformers>=4.40,<5"
	touch $@

bench-st-env: $(ST_VENV)/.installed

test: install browser bench-env
	$(BIN)/lint-imports  # the layers in pyproject.toml: no import cycles, no module importing upwards
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(CHEMPROP_VENV) runs .pytest_cache
