# `make test` and `make demo` each work on a fresh machine: they create .venv and install the project with its pins.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.covspec-installed

.PHONY: install test demo lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e ".[all,test]"
	$(PY) -m pip check
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra tests

demo: $(STAMP)
	$(VENV)/bin/covspec demo

clean:
	rm -rf $(VENV) build *.egg-info

lint: $(STAMP)
	$(VENV)/bin/ruff check covspec tests benchmarks
	$(VENV)/bin/ruff format --check covspec tests benchmarks
