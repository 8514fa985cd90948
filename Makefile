# Two commands on a fresh machine: `make run` serves tenure, `make test` runs every test.
# Each makes its own virtualenv in .venv first (Python 3.11+). `make run PORT=8001` picks a port.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run worker test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/tenure serve $(if $(PORT),--port $(PORT))

worker: $(BIN)/.installed
	$(BIN)/tenure worker

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: $(BIN)/.installed
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/isolation.py
	$(BIN)/python bench/fragment.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/idle.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
