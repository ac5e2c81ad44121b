# notifier: `make demo` shows it working, `make test` proves it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit schema bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m notifier.demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

schema: install
	$(BIN)/python -m notifier.schema

test: lint typecheck
	$(BIN)/python -m notifier.schema --check
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit -q

bench: install
	$(BIN)/python -m bench

bench-quick: install
	$(BIN)/python -m bench --quick

# Postfix's smtp-sink, the sink `make bench` prefers (only the binary is used; Postfix itself
# is neither configured nor started). Needs root and Debian's package archive.
.PHONY: bench-sink bench-check
bench-sink:
	echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix

bench-check: install
	$(BIN)/ruff check bench
	$(BIN)/ruff format --check bench
	$(BIN)/mypy bench

clean:
	rm -rf $(VENV) demo-out preview-out .pytest_cache .mypy_cache .ruff_cache
