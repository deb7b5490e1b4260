# The commands a new user needs: `make demo`, `make test` and `make demo-stack`.
# Both create the virtual environment they need on a fresh machine.
PYTHON ?= python3
PYTHON310 ?= $(firstword $(wildcard /root/.pyenv/versions/3.10*/bin/python3.10) $(shell command -v python3.10 2>/dev/null))
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: demo demo-stack test lint typecheck unit py310 clean venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[edge,cloud,dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/microplate-edge demo

# The whole system on this machine: Postgres, SeaweedFS, Mosquitto, cloud API + ingest, and an
# enrolled demo appliance syncing the sample plates (scripts/demo_stack.py). Ctrl-C stops it.
demo-stack: $(STAMP)
	$(PY) scripts/demo_stack.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# core/ and edge/ must keep working on Python 3.10 (JetPack 6): compile both and run the core
# tests there, when a 3.10 interpreter exists on this machine.
py310:
	@if [ -n "$(PYTHON310)" ]; then \
	  test -x .venv310/bin/python || $(PYTHON310) -m venv .venv310; \
	  .venv310/bin/python -m pip install -q 'pydantic>=2.7,<3' 'cryptography>=42' pytest pytest-timeout hypothesis && \
	  .venv310/bin/python -m compileall -q core edge && \
	  .venv310/bin/python -m pytest -q -p no:cacheprovider tests/core; \
	else echo "python3.10 not found: skipping the 3.10 compatibility run"; fi

test: lint typecheck py310 unit

clean:
	rm -rf $(VENV) .venv310 demo-data .pytest_cache .mypy_cache .ruff_cache
