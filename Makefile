# dspex: `make demo` and `make test` do all set-up on a fresh machine (Python 3.11, Debian).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.PHONY: install demo test check lint proto test-deps bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,dashboard,metrics,otel,ray,tune]'
	touch $@

demo: install
	$(BIN)/dspex demo

# Everything the tests need beyond Python packages: a real redis-server on loopback, Node.js
# with the protocol conformance client's npm packages (tests/protocol/node, project-local),
# and libfaketime for the clock-skew fault tests (tests/faults).
test-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || { \
	  echo "installing libfaketime (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfaketime >/dev/null; }
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing nodejs and npm (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	cd tests/protocol/node && npm ci --no-audit --no-fund --loglevel=error
	@# the dashboard's browser tests drive Debian's headless Chromium (Playwright, no download)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: install
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	@if [ -f scripts/gen_protos.py ]; then $(PY) scripts/gen_protos.py --check; fi

test: install test-deps lint
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/dspex bench --json

proto: install
	$(PY) scripts/gen_protos.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
