# Set-up and everyday commands. `make test` and `make demo` work on a fresh machine: they create .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup system-deps test demo experiment bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# Debian's chromium for the browser test of the review app (root on CI and the dev machines).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: setup system-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/pipeline manifest import-eg1800 ../shared/data/eg1800 --out manifests/eg1800.csv
	$(VENV)/bin/pipeline manifest validate manifests/eg1800.csv

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
