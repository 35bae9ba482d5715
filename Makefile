# The two set-up commands (see README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-tools bench-proxy bench-buffer bench-diff clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cutover demo

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

# Benchmarks are not tests: they install nginx and wrk (their reference server and load generator) and
# take minutes. Figures go to BENCHMARKS.md with the command, machine and date.
bench-tools:
	command -v nginx >/dev/null && command -v wrk >/dev/null || \
	  (apt-get update -q && apt-get install -y -q nginx wrk)

bench: bench-proxy bench-buffer bench-diff

bench-proxy: $(STAMP) bench-tools
	$(BIN)/python loadtests/bench_proxy.py --write BENCHMARKS.md

bench-buffer: $(STAMP) bench-tools
	$(BIN)/python benchmarks/bench_buffer.py --write BENCHMARKS.md

bench-diff: $(STAMP) bench-tools
	$(BIN)/python benchmarks/bench_diff.py --serving --write BENCHMARKS.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
