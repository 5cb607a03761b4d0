# `make test` and `make demo` each work on a fresh machine: they create .venv and install the project with its pins.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.covspec-installed

.PHONY: install test demo lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e ".[all,zeus,test]"
	# Zeus requires amdsmi, which fails at import without ROCm's libamd_smi.so and so breaks every Ray worker (Ray
	# imports it whenever installed); Zeus needs it only for AMD GPUs (docs/energy.md, "Zeus"). pip check may then
	# report exactly that one missing requirement, and nothing else.
	$(PY) -m pip uninstall -y amdsmi
	$(PY) -m pip check > $(VENV)/pip-check.txt || ! grep -v "^zeus [0-9.]* requires amdsmi, which is not installed.$$" $(VENV)/pip-check.txt
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
