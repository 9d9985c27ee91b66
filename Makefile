# The two set-up commands of the README: `make demo` and `make test`. Both work on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.m3w-installed

.PHONY: demo test test-mutations install system-deps lint interop-venv

$(STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the screenshot tests of the HTML views, GNU wget for the tests that build a real crawler's
# WARC (tests/wget_crawl.py); Debian packages, the machine is offline otherwise.
system-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	@command -v wget >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wget >/dev/null)

demo: $(STAMP)
	$(VENV)/bin/m3w demo --output demo-out

# OpenFlamingo's real code for the interop tests, in a venv of its own (torch 2.14.1 + torchvision, ~5.7 GB) under
# ~/.cache/m3w, shared by checkouts while tests/interop/requirements.txt is unchanged. The tests make it if missing.
interop-venv:
	PYTHON=$(PYTHON) bash tests/interop/make_venv.sh

test: $(STAMP) system-deps interop-venv
	$(PY) -m pytest -q -p no:cacheprovider -n auto --dist worksteal

# The smoke verdict's acceptance table alone (seeds 1-2, the seven partial corruptions, a real build whose canary
# pictures were rotated after writing): part of `make test`, here for work on the trainer or the verdict.
test-mutations: $(STAMP) system-deps
	$(PY) -m pytest -q -p no:cacheprovider -n auto --dist worksteal -m mutation_table tests/test_smoke_verdict.py tests/test_canaries.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
