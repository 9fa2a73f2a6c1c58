# The two commands a newcomer needs: `make serve` and `make test`.
# Everything is installed into .venv; nothing is expected on the machine beyond
# Python 3.11, Go and apt-get (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: serve test install install-test lint fmt cluster-up cluster-down postgres-up postgres-down bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip

# Stamp files make a second `make serve` start instantly; they are redone when
# pyproject.toml changes.
$(VENV)/.installed-serve: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[postgres]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,postgres,worker]'
	touch $@ $(VENV)/.installed-serve

install: $(VENV)/.installed-serve
install-test: $(VENV)/.installed-test

serve: install
	$(VENV)/bin/trainyard serve --host $(HOST) --port $(PORT)

test: install-test
	hack/test.sh

lint: install-test
	$(VENV)/bin/ruff check trainyard tests bench hack
	$(VENV)/bin/ruff format --check trainyard tests bench hack

fmt: install-test
	$(VENV)/bin/ruff format trainyard tests bench hack
	$(VENV)/bin/ruff check --fix trainyard tests bench hack

cluster-up:
	hack/cluster/up.sh

cluster-down:
	hack/cluster/down.sh

postgres-up:
	hack/postgres/up.sh

postgres-down:
	hack/postgres/down.sh

clean:
	rm -rf $(VENV) .cluster .postgres .prometheus .pytest_cache
