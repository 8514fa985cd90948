# Two commands on a fresh machine: `make run` serves tenure, `make test` runs every test.
# Each makes its own virtualenv in .venv first (Python 3.11+). `make run PORT=8001` picks a port.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Schemathesis checks the API from outside (tests/web/test_schemathesis.py), in a virtualenv of its own.
ST_VENV ?= .venv-schemathesis
# bench/peers.py measures tenure beside Huey and RQ, installed only in a virtualenv of their own.
BENCH_VENV ?= .venv-bench

.PHONY: run worker test lint bench bench-peers bench-sweep clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	touch $@

$(BENCH_VENV)/bin/.installed: bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r bench/requirements.txt
	touch $@

$(ST_VENV)/bin/.installed: tests/schemathesis.txt
	$(PYTHON) -m venv $(ST_VENV)
	$(ST_VENV)/bin/python -m pip install --quiet -r tests/schemathesis.txt
	touch $@

# Bytecode first: where PYTHONDONTWRITEBYTECODE is set, an editable install compiles tenure's modules at
# every start (0.15 s of a worker's); compileall writes them anyway, and skips what is up to date.
run: $(BIN)/.installed
	$(BIN)/python -m compileall -q service web migrations
	$(BIN)/tenure serve $(if $(PORT),--port $(PORT))

worker: $(BIN)/.installed
	$(BIN)/python -m compileall -q service web migrations
	$(BIN)/tenure worker

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint $(ST_VENV)/bin/.installed
	TENURE_SCHEMATHESIS=$(abspath $(ST_VENV))/bin/st $(BIN)/pytest

bench: $(BIN)/.installed
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/isolation.py
	$(BIN)/python bench/fragment.py
	$(BIN)/python bench/loop_stall.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/idle.py
	$(BIN)/python bench/retention.py
	$(BIN)/python bench/pickup.py
	$(BIN)/python bench/pollers.py
	$(BIN)/python bench/async_tasks.py
	$(BIN)/python bench/durability.py
	$(BIN)/python bench/time.py
	$(BIN)/python bench/flow.py
	$(BIN)/python bench/startup.py

# Needs Redis on 127.0.0.1:6379 (db 13 is flushed; BENCH_REDIS picks another). About 6 min; ARGS=--quick: under 1.
bench-peers: $(BIN)/.installed $(BENCH_VENV)/bin/.installed
	$(BENCH_VENV)/bin/python bench/peers.py $(ARGS)

# The size and concurrency sweep: figures from tenure's venv, the plot from matplotlib in the bench venv.
bench-sweep: $(BIN)/.installed $(BENCH_VENV)/bin/.installed
	TENURE_PYTHON=$(abspath $(BIN))/python $(BENCH_VENV)/bin/python bench/sweep.py $(ARGS)

clean:
	rm -rf $(VENV) $(ST_VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
