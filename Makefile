# runcast: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint redis-server clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Tests and benchmarks start their own redis-server; install it when the machine has none.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server"; \
	  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null; }

demo: install
	$(VENV)/bin/runcast demo

test: install redis-server
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install redis-server
	$(PY) -m benchmarks

lint: install
	$(VENV)/bin/ruff check streaming tasks api tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
