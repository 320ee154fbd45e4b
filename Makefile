# Two set-up-free commands: `make demo` (sample with the shipped model and score) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q 'torch>=2.3,<2.15'
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/moldiff-sample n_samples=100 out=demo/mols.sdf png=demo/mols.png evaluate=true

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) scripts/bench_sampling.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
