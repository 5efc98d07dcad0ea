# Two commands: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/gateway.toml

.PHONY: run test test-fast bench lint typecheck install clean lock upgrade-deps

# Dependencies come from requirements.lock (exact versions, sha256 hashes): an install never picks
# up a release nobody chose. Changing them is a deliberate step: `make lock` after editing the
# ranges in pyproject.toml (keeps every other pin), `make upgrade-deps` to move every pin to the
# newest release the ranges allow; then review the diff and run `make test`.
$(BIN)/hotline-gateway: pyproject.toml requirements.lock gateway/voice/_pjnative.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

install: $(BIN)/hotline-gateway

# Rerun when the config names someone new (init-credentials issues only what is missing).
var/credentials.toml: $(CONFIG) | install
	$(BIN)/hotline-gateway init-credentials --config $(CONFIG)

# `make run SMS=smpp` (or cmpp) also starts a faithful SMSC (ISMG) and points [channels.sms] at it.
run: install var/credentials.toml
ifdef SMS
	$(BIN)/python -m peers.demo_sms --protocol $(SMS) --config $(CONFIG)
else
	$(BIN)/hotline-gateway run --config $(CONFIG)
endif

test: install
	$(BIN)/ruff check gateway peers tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

bench: install
	$(BIN)/python -m bench

LOCK_TOOLS := .venv-lock
PIP_COMPILE := $(LOCK_TOOLS)/bin/pip-compile --quiet --allow-unsafe --extra=test --generate-hashes \
	--no-emit-index-url --no-emit-find-links --strip-extras --output-file=requirements.lock

$(LOCK_TOOLS)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install --quiet pip-tools==7.6.2

lock: $(LOCK_TOOLS)/bin/pip-compile
	$(PIP_COMPILE) pyproject.toml

upgrade-deps: $(LOCK_TOOLS)/bin/pip-compile
	$(PIP_COMPILE) --upgrade pyproject.toml

clean:
	rm -rf $(VENV) $(LOCK_TOOLS) var .pytest_cache .mypy_cache
