# fetchfleet: `make demo` runs the whole loop offline; `make test` runs the test suite.
# Both set themselves up (virtualenv, pip, npm) on a fresh Debian machine with Python 3.11 and Node 20.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-12)

NODE_STAMP := node_modules/.installed-$(shell cat package.json package-lock.json | sha256sum | cut -c1-12)

.PHONY: setup tools media-tools demo test test-fast bench bench-smoke lint format clean

setup: $(STAMP)

# pouchdb-server (a CouchDB-protocol server) for the metadata cache tests; prebuilt, nothing compiles.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	rm -f node_modules/.installed-*
	touch $@

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

# Debian packages: ffmpeg (every node: yt-dlp merges video and audio streams with it, and
# ffprobe describes each video; the demo site builds its streams with it), wrk (the
# benchmarks' load generator; the test suite runs a smoke benchmark), chromium and
# chromium-driver (the dashboard's browser test).
MEDIA_TOOLS := ffmpeg
TOOLS := $(MEDIA_TOOLS) wrk chromium chromium-driver
APT_INSTALL = missing=$$(for package in $(1); do dpkg -s $$package >/dev/null 2>&1 || echo $$package; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; fi
tools:
	@$(call APT_INSTALL,$(TOOLS))
media-tools:
	@$(call APT_INSTALL,$(MEDIA_TOOLS))

demo: $(STAMP) media-tools
	$(BIN)/python -m demo $(DEMO_ARGS)

test: $(STAMP) $(NODE_STAMP) tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Leaves out the slow tests (the 1M-row import, fuzzing) and those that start real
# processes (e2e: servers, client nodes); CI runs everything.
test-fast: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pytest -m "not slow and not e2e" $(PYTEST_ARGS)

# All benchmarks (30-35 min on 2 cores): bench/results/latest.{json,md}. Needs PostgreSQL and Redis.
bench: $(STAMP) tools
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-smoke: $(STAMP) tools
	$(BIN)/python -m bench --smoke --output /tmp/fetchfleet-bench-smoke

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
