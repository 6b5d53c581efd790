# Set-up and everyday commands. `make test` and `make demo` work on a fresh machine: they create .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# CVAT's format library, without its pins (see the formats extra in pyproject.toml); its runtime needs are there.
DATUMARO := datumaro==1.13.12

.PHONY: setup system-deps test demo experiment bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "$(DATUMARO)"
	touch $@

# Debian's chromium for the browser test of the review app (root on CI and the dev machines).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# ruff (pyflakes, isort; settings in pyproject.toml) first: an unused or unsorted import fails the build.
test: setup system-deps
	$(PY) -m ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The offline quick start: packaged photos + shipped weights through every stage, unattended (no ../shared).
demo: setup
	$(VENV)/bin/pipeline run configs/quickstart.toml --auto-accept 0.5

# SINet vs SINet+ on EG1800 (needs ../shared/data, or SINET_SHARED): the run, then docs/experiment.md.
experiment: setup
	$(VENV)/bin/pipeline run configs/experiment.toml
	$(PY) bench/experiment.py runs/experiment --docs docs

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
