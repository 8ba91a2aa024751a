# The two entry points: `make demo` and `make test`. Both create .venv when missing.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(PY):
	python3 -m venv $(VENV)

# The CPU torch goes in first so that the package's range (torch>=2.1) never pulls a CUDA build.
$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/digits_qat.py

test: $(STAMP)
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check quantframe tests examples benchmarks

# Every script of benchmarks/ but its shared modules, each run as a module from the repository root.
BENCHMARKS := $(filter-out __init__ models timing,$(basename $(notdir $(wildcard benchmarks/*.py))))

bench: $(STAMP)
	for b in $(BENCHMARKS); do $(PY) -m benchmarks.$$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
