# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# pytest processes: most long tests wait on subprocesses and sockets, so 3 beat 2 on 2 cores.
TEST_WORKERS ?= 3

.PHONY: run test lint venv clean

$(BIN)/inboxd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/inboxd

## Run the daemon on built-in defaults against the bundled provider emulator (no API key).
run: venv
	$(BIN)/inboxd run --emulator

## Lint, type-check and run the whole test suite.
test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS)

clean:
	rm -rf $(VENV) inboxd-dev .mypy_cache .ruff_cache .pytest_cache
