# notifier: `make demo` shows it working, `make test` proves it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo console test lint typecheck unit schema bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m devtools.demo

# The organisers' console with sample data: prints the URL and an organiser token.
console: install
	$(BIN)/python -m devtools.console

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

schema: install
	$(BIN)/python -m notifier.schema

test: lint typecheck
	$(BIN)/lint-imports
	$(BIN)/python -m notifier.schema --check
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit -q

bench: install sink
	$(BIN)/python -m bench
	$(BIN)/python -m bench.http

bench-quick: install sink
	$(BIN)/python -m bench --quick
	$(BIN)/python -m bench.http --events 3000 --batch-requests 6 --rush 300

# The benchmark's sink: found, else installed where this user may (root with apt-get), else
# the benchmark falls back to an aiosmtpd sink and says so.
.PHONY: sink
sink:
	@if command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ]; then \
	  echo "sink: Postfix smtp-sink found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "sink: installing Postfix's smtp-sink (Debian package postfix; the daemon is not configured or started)"; \
	  $(MAKE) --no-print-directory bench-sink >/dev/null 2>&1 || apt-get update -qq >/dev/null 2>&1; \
	  [ -x /usr/sbin/smtp-sink ] || $(MAKE) --no-print-directory bench-sink >/dev/null 2>&1 || \
	    echo "sink: could not install smtp-sink; the benchmark uses its aiosmtpd sink"; \
	else \
	  echo "sink: smtp-sink not found and not root: the benchmark uses its aiosmtpd sink (make bench-sink as root installs smtp-sink)"; \
	fi

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
