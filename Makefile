# ls-active-yolo: every set-up step lives here, so `make demo` and `make test` work on a
# fresh machine. Virtual environments are created once and reused (stamp files).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
LS_VENV := .venv-ls
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LS_STAMP := $(LS_VENV)/.installed
LABEL_STUDIO_VERSION ?= 1.23.2
PYTEST_ARGS ?=

.PHONY: install install-ls system-deps test lint demo serve bench clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Label Studio lives in its own environment: its pins differ from the backend's.
install-ls: $(LS_STAMP)

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet label-studio==$(LABEL_STUDIO_VERSION)
	touch $@

# Debian packages the tests use for real (a browser for the UI check).
system-deps:
	@bash scripts/system-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check backend strategies devkit tests benchmarks
	$(VENV)/bin/mypy strategies

test: $(STAMP) $(LS_STAMP) system-deps
	$(MAKE) lint
	$(PY) -m pytest --durations=30 $(PYTEST_ARGS)

serve: $(STAMP)
	$(VENV)/bin/ls-active-yolo serve

demo: $(STAMP) $(LS_STAMP)
	$(PY) -m devkit.demo

bench: $(STAMP)
	$(PY) -m benchmarks.predict_overhead

clean:
	rm -rf $(VENV) $(LS_VENV) .demo test-output
