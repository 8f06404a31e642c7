# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers for `make test`: most of the end-to-end time is waiting on subprocesses and
# I/O, so more workers than cores pays (4 was not compared with 2 or 3 on a quiet machine yet).
TEST_WORKERS ?= 4

.PHONY: serve test lint install clean bench

# An environment that sets PYTHONDONTWRITEBYTECODE (this one did) makes every process compile its
# ~1,000 modules again: each server and command a test starts, and every `chunkd` a user runs.
# `chunkd keys list` took 2.7 s of CPU that way against 1.1 s with the bytecode kept (2026-12-02).
# It is kept under the venv, never beside the sources.
serve test: export PYTHONDONTWRITEBYTECODE :=
serve test: export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# --no-compile: pip would byte-compile all ~5,000 modules of the dependencies (107 → 73 s for this
# install on a 2-core machine, 2026-12-01); Python compiles the ones a process imports on first use
# (about 1,000 for the server and the command line).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-compile -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/chunkd serve

# mypy (~30 s of CPU on a cold cache) runs while the services install, which is mostly waiting on
# downloads; its report is printed after them, and either failing fails the target.
test: $(STAMP)
	$(BIN)/ruff check src tests bench
	@log=$$(mktemp); $(BIN)/mypy >$$log 2>&1 & typing=$$!; \
	scripts/test-deps.sh; deps=$$?; \
	wait $$typing; typed=$$?; cat $$log; rm -f $$log; \
	[ $$deps -eq 0 ] && [ $$typed -eq 0 ]
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/upload_bench.py

clean:
	rm -rf $(VENV) chunkd-data .pytest_cache
