# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export CALMOPS_HOME ?= $(CURDIR)/.calmops

.PHONY: venv run test clean

venv: $(STAMP)

# torch first, on its own: the CPU wheel on these machines. Without it sdv's torch
# requirement would pull the newest CUDA build (several GB).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,serve,docker]'
	touch $(STAMP)

run: venv
	$(BIN)/calmops demo
	$(BIN)/calmops dev --host 127.0.0.1 --port 3000

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .calmops .pytest_cache
