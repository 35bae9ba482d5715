# The two set-up commands (see README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check soak lock lint typecheck unit bench bench-tools bench-proxy bench-buffer bench-telemetry \
	bench-sql bench-backfill bench-rest-copy bench-diff bench-cli bench-admin clean loadtest browser-tools \
	json-server

# Dependencies come from the lock (exact versions, hashes checked); the project itself is installed
# editable on top, without resolving anything again.
$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# Re-resolve the locks after a change to pyproject.toml's dependencies (needs PyPI): requirements.lock
# for the image, requirements-dev.lock (with the dev extra) for make test, CI and benchmarks.
lock:
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock && $(VENV)-lock/bin/pip install -q pip-tools
	$(VENV)-lock/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
	  --no-emit-find-links -o requirements.lock pyproject.toml
	$(VENV)-lock/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
	  --no-emit-find-links --extra dev -o requirements-dev.lock pyproject.toml
	rm -rf $(VENV)-lock

demo: $(STAMP)
	$(BIN)/cutover demo

# Lint, types and the suite side by side (the suite mostly waits on servers and processes, mypy takes a
# core for most of a minute); each one's output is printed whole when it ends.
test: $(STAMP)
	$(MAKE) --no-print-directory -j3 --output-sync=target lint typecheck unit

# The edit-test loop's fast tier (under a minute): lint, types and the tests that start no server, proxy
# or worker (`integration` is marked by fixture in tests/conftest.py) and are not slow, fault, browser or load.
check: $(STAMP) lint typecheck
	$(BIN)/pytest -m "not slow and not fault and not browser and not load and not integration and not soak"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# `python -m pytest`, not the pytest script: a process the code under test spawns (the shadow process of
# every proxy a test starts) first re-runs its parent's main script, which would import pytest there.
unit: $(STAMP) browser-tools json-server
	$(BIN)/python -m pytest

# The 60 s adversity run of replay against json-server-like backends (20 writers, 5 worker SIGKILLs, a
# 10 s Redis pause); `make test` runs its 20 s variant. Prints the counts (lost, duplicated, divergent).
# And the end-to-end migration of three tenants of 50,000 records each (`make test`: 10,200 each), and a
# 30 s outage of the mirror under the worker (`make test`: 10 s).
soak: $(STAMP) json-server
	$(BIN)/pytest -m soak -s

# json-server 0.17 itself (Node.js and npm), locked in tests/support/json-server: the REST copy's tests
# against the backend whose PUT does not create and whose list is a bare array.
json-server:
	test -x tests/support/json-server/node_modules/.bin/json-server || \
	  npm ci --prefix tests/support/json-server --no-audit --no-fund --loglevel=error

# The status page's end-to-end test drives headless Chromium (Debian packages); installed when missing.
browser-tools:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -q && apt-get install -y -q chromium chromium-driver)

# Benchmarks are not tests: they install nginx and wrk (their reference server and load generator) and
# take minutes. Figures go to BENCHMARKS.md with the command, machine and date.
bench-tools:
	command -v nginx >/dev/null && command -v wrk >/dev/null || \
	  (apt-get update -q && apt-get install -y -q nginx wrk)

bench: bench-proxy bench-buffer bench-sql bench-backfill bench-rest-copy bench-telemetry bench-diff bench-cli \
	bench-admin

bench-proxy: $(STAMP) bench-tools
	$(BIN)/python loadtests/bench_proxy.py --write BENCHMARKS.md --workers 2

bench-buffer: $(STAMP) bench-tools
	$(BIN)/python benchmarks/micro_intent.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/bench_buffer.py --write BENCHMARKS.md

# Starts the demo set-up (old/new services, proxy, worker), runs the read-heavy then the write-heavy
# locust profile (15 s each, one tenant per phase) and prints the verdict against loadtests/budgets.yaml.
loadtest: $(STAMP)
	$(BIN)/python -m loadtests.run_loadtest --demo --profile all --run-time 15s

bench-telemetry: $(STAMP) bench-tools
	$(BIN)/python benchmarks/micro_telemetry.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/bench_telemetry.py --write BENCHMARKS.md

# SQL classification: pure sqlglot vs sqlglot[c], each in a throw-away venv (needs PyPI).
bench-sql: $(STAMP)
	$(BIN)/python benchmarks/bench_sql.py --write BENCHMARKS.md

bench-backfill: $(STAMP)
	$(BIN)/python benchmarks/bench_backfill.py --baseline 909f4fd --write BENCHMARKS.md

# The REST copy against a minimal aiohttp loop between the same two fast in-memory HTTP services.
bench-rest-copy: $(STAMP)
	$(BIN)/python benchmarks/bench_rest_copy.py --write BENCHMARKS.md

# A command's start-up to its first query, against the tree before the CLI's imports were made lazy.
bench-cli: $(STAMP)
	$(BIN)/python benchmarks/bench_cli.py --baseline 909f4fd --write BENCHMARKS.md

# The data plane's latency while the admin API (same process, same event loop) lists 200,000 tenants.
bench-admin: $(STAMP) bench-tools
	$(BIN)/python benchmarks/bench_admin.py --write BENCHMARKS.md

bench-diff: $(STAMP) bench-tools
	$(BIN)/python benchmarks/bench_diff.py --serving --write BENCHMARKS.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
