# Two commands: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/gateway.toml

.PHONY: run test test-fast bench lint typecheck install clean

$(BIN)/hotline-gateway: pyproject.toml gateway/ivr/_pjnative.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/hotline-gateway

var/credentials.toml: | install
	$(BIN)/hotline-gateway init-credentials --config $(CONFIG)

run: install var/credentials.toml
	$(BIN)/hotline-gateway run --config $(CONFIG)

test: install
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache
