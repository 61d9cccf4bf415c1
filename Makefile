# One place for every command: `make demo` runs the demo, `make test` runs every test.
# Both build what they need first (a virtualenv, the Better Auth server's Node packages,
# and for the browser test Debian's chromium), so they work on a fresh machine.
# `make ci` is everything CI runs: `make test` plus the strict docs build, the release check
# and the compatibility matrix (.ci/run runs them in four lanes at once).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SERVER := examples/better-auth-server
# The Better Auth lines of the compatibility matrix, each a small npm project with a lockfile.
BETTER_AUTH_LINES := 1.5 1.6 1.7
# How every virtualenv here gets the package and its development dependencies.
DEV_INSTALL := -e . --group dev --group mcp

.PHONY: demo test lint check venv node chromium redis clean bench bench-http \
	docs docs-build release-check matrix matrix-py3.12 matrix-py3.13 matrix-lowest ci

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(DEV_INSTALL)
	touch $@

venv: $(VENV)/.installed

$(SERVER)/node_modules/.package-lock.json: $(SERVER)/package-lock.json
	cd $(SERVER) && npm ci --no-audit --no-fund --loglevel=error

$(SERVER)/versions/%/node_modules/.package-lock.json: $(SERVER)/versions/%/package-lock.json
	cd $(SERVER)/versions/$* && npm ci --no-audit --no-fund --loglevel=error

node: $(SERVER)/node_modules/.package-lock.json \
	$(BETTER_AUTH_LINES:%=$(SERVER)/versions/%/node_modules/.package-lock.json)

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The Redis tests start their own redis-server (Debian's) on a free loopback port.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing Debian's redis-server for the Redis tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: venv node chromium redis lint
	# coverage starts before pytest, so the package's pytest plugin is measured from its import
	$(VENV)/bin/coverage run -m pytest -p no:cacheprovider
	$(VENV)/bin/coverage report

# The documentation site: `make docs` serves it with live reload, `make docs-build` builds
# it as CI does (strict: a broken link or a docstring warning fails).
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve -a 127.0.0.1:8001

docs-build: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# sdist and wheel built, twine check, the wheel smoke-tested in a clean virtualenv.
release-check: venv
	RELEASE_PYTHON=$(PY) .ci/release-check

# The compatibility matrix: the fast suite on the other Pythons (pyenv's) and on the lowest
# allowed dependency versions; `make test` is the full suite on $(PYTHON), newest versions.
matrix: matrix-py3.12 matrix-py3.13 matrix-lowest

matrix-py3.12 matrix-py3.13:
	DEV_INSTALL="$(DEV_INSTALL)" .ci/fast-suite $(@:matrix-py%=%)

# Without the mcp group: the MCP SDK needs newer anyio, httpx and pyjwt than the lowest bounds.
matrix-lowest:
	DEV_INSTALL="-e . --group dev" .ci/fast-suite 3.11 .ci/constraints-lowest.txt

# Everything CI runs, one after the other (.ci/run overlaps them).
ci: test docs-build release-check matrix

demo: venv
	$(PY) examples/demo/run.py

bench: venv
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) bench/micro.py
	$(PY) bench/asgi.py

# Needs wrk (Debian: apt-get install -y wrk); about 6 minutes.
bench-http: venv
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) bench/http_load.py

clean:
	rm -rf $(VENV) .matrix site $(SERVER)/node_modules $(SERVER)/versions/*/node_modules \
	  .coverage .mypy_cache .ruff_cache
