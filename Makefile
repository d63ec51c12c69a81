# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export CALMOPS_HOME ?= $(CURDIR)/.calmops

.PHONY: venv chromium postgresql run test clean

venv: $(STAMP)

# torch first, on its own: the CPU wheel on these machines. Without it sdv's torch
# requirement would pull the newest CUDA build (several GB).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,serve,docker,postgres]'
	touch $(STAMP)

# The report and Dagster UI tests drive headless Chromium (Debian's package `chromium`). Installed with
# apt-get when missing and permitted (root, or sudo without a password); otherwise stop and say the command.
APT_CHROMIUM := apt-get install -y --no-install-recommends chromium
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || command -v google-chrome >/dev/null 2>&1; then \
	  :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Chromium (Debian package chromium) for the report and UI tests"; \
	  apt-get update -qq </dev/null && DEBIAN_FRONTEND=noninteractive $(APT_CHROMIUM) </dev/null; \
	elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  echo "Installing Chromium (Debian package chromium) for the report and UI tests"; \
	  sudo -n apt-get update -qq </dev/null && sudo -n env DEBIAN_FRONTEND=noninteractive $(APT_CHROMIUM) </dev/null; \
	else \
	  echo "make test needs Chromium (headless) for the report and Dagster UI tests. Install it with:" >&2; \
	  echo "    sudo apt-get install -y chromium" >&2; \
	  echo "(or put chromium, chromium-browser or google-chrome on PATH), then run make test again." >&2; \
	  exit 1; \
	fi

# calmops serve (port 5001) answers the report links of the UI's metadata; it stops with dagster dev.
run: venv
	$(BIN)/calmops demo
	$(BIN)/calmops serve --port 5001 & serve=$$!; trap 'kill $$serve 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/calmops dev --host 127.0.0.1 --port 3000

# tests/test_postgres_instance.py runs Dagster on a real PostgreSQL server (Debian's package `postgresql`,
# started by the test itself in a temporary data directory). Installed like Chromium when missing.
APT_POSTGRESQL := apt-get install -y --no-install-recommends postgresql
postgresql:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then \
	  :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing PostgreSQL (Debian package postgresql) for the Dagster-on-Postgres test"; \
	  apt-get update -qq </dev/null && DEBIAN_FRONTEND=noninteractive $(APT_POSTGRESQL) </dev/null; \
	elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  echo "Installing PostgreSQL (Debian package postgresql) for the Dagster-on-Postgres test"; \
	  sudo -n apt-get update -qq </dev/null && sudo -n env DEBIAN_FRONTEND=noninteractive $(APT_POSTGRESQL) </dev/null; \
	else \
	  echo "make test needs PostgreSQL's server binaries (initdb, pg_ctl). Install them with:" >&2; \
	  echo "    sudo apt-get install -y postgresql" >&2; \
	  exit 1; \
	fi

# One worker per core (pytest-xdist); tests marked xdist_group (the dagster dev ones) share a worker.
test: venv chromium postgresql
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

clean:
	rm -rf $(VENV) .calmops .pytest_cache
