# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export CALMOPS_HOME ?= $(CURDIR)/.calmops

.PHONY: venv chromium postgresql redis run test clean

venv: $(STAMP)

# torch first, on its own: the CPU wheel on these machines. Without it sdv's torch
# requirement would pull the newest CUDA build (several GB).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,serve,docker,postgres,s3,generators,celery]'
	touch $(STAMP)

# apt_ensure(PACKAGE, TEST-COMMAND, WHAT-FOR): nothing when TEST-COMMAND succeeds; else install the Debian
# PACKAGE with apt-get when permitted (root, or sudo without a password); else stop and name the command.
define apt_ensure
	@if $(2); then \
	  :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing the Debian package $(1) for $(3)"; \
	  apt-get update -qq </dev/null \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(1) </dev/null; \
	elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  echo "Installing the Debian package $(1) for $(3)"; \
	  sudo -n apt-get update -qq </dev/null \
	    && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(1) </dev/null; \
	else \
	  echo "make test needs the Debian package $(1) for $(3). Install it with:" >&2; \
	  echo "    sudo apt-get install -y $(1)" >&2; \
	  exit 1; \
	fi
endef

# The report and Dagster UI tests drive headless Chromium (or chromium-browser / google-chrome on PATH).
chromium:
	$(call apt_ensure,chromium,command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1,the report and Dagster UI tests)

# calmops serve (port 5001) answers the report links of the UI's metadata; it stops with dagster dev.
run: venv
	$(BIN)/calmops demo
	$(BIN)/calmops serve --port 5001 & serve=$$!; trap 'kill $$serve 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/calmops dev --host 127.0.0.1 --port 3000

# tests/test_postgres_instance.py runs Dagster on a real PostgreSQL server (initdb, pg_ctl), started by the
# test itself in a temporary data directory.
postgresql:
	$(call apt_ensure,postgresql,ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1,the Dagster-on-Postgres test)

# One worker per core (pytest-xdist), whole modules to a worker (--dist loadfile): a module's tests share its
# module fixtures (test_dagster_dev's one home and two lives of dagster dev for four stories, the three-block
# run). (--dist loadgroup would group tests by xdist_group mark, but with pytest 9.2 and pytest-xdist 3.8 the
# mark has no effect: xdist renames grouped tests through an attribute pytest no longer reads.)
# --no-loadscope-reorder: modules go to workers in collection order, where tests/conftest.py puts the slowest
# first (xdist's default order, most tests first, started the longest module late and ended on it alone).
# compileall: an editable install leaves the project's modules without bytecode, and where Python may not
# write it (PYTHONDONTWRITEBYTECODE=1, as on these machines) each of the suite's dozens of processes that import the
# package compiled its ~100 modules again (0.25 s each); unchanged modules are skipped.
# tests/test_distributed.py runs Dagster's Celery executor on a real Redis broker (redis-server), started by
# the test itself on a free port.
redis:
	$(call apt_ensure,redis-server,command -v redis-server >/dev/null 2>&1 || test -x /usr/bin/redis-server,the distributed (Celery) test)

test: venv chromium postgresql redis
	$(BIN)/python -m compileall -q calmops_dagster assets sensors resources generators >/dev/null
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

clean:
	rm -rf $(VENV) .calmops .pytest_cache
