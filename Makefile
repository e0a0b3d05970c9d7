# cxrfast developer entry points. `make test` is what CI runs (.ci/run).
#   make venv    create/refresh $(VENV): pinned requirements + editable install (builds cxrfast._C)
#   make test    unit tests (GPU tests skip themselves without CUDA), with the fixed test seed
#   make test-fresh  the same under a freshly drawn seed (printed); tests/flakes.py runs many
#   make bench   pytest-benchmark suites, then the README tables/plots (benchmarks/report.py)
#   make demo    the main job: `cxrfast demo` (synthetic data, globallocal tiny pre-trained, evaluated,
#                the zero-shot table with its bar); the loss benchmarks are `make bench` / `cxrfast bench`
#   make clean   build artefacts (keeps $(VENV); `make distclean` removes it too)
# TRITON_INTERPRET is deliberately left alone: tests that need the interpreter set it themselves.

VENV ?= .venv
# python3.11 when it runs (a pyenv shim may exist without the version), else python3.
PYTHON ?= $(shell python3.11 -c 'import sys; print(sys.executable)' 2>/dev/null || command -v python3)
REQUIREMENTS := requirements/ci.txt
CSRC := $(shell find csrc -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) 2>/dev/null)
PY := $(VENV)/bin/python

.PHONY: venv test test-fresh bench demo clean distclean

venv: $(VENV)/.stamp

# Rebuilt whenever the pins, the build description or any C++/CUDA source changes. The project is
# installed --no-deps --no-build-isolation against the pinned torch: pip never resolves torch itself.
$(VENV)/.stamp: $(REQUIREMENTS) setup.py pyproject.toml $(CSRC)
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r $(REQUIREMENTS)
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $@

test: venv
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fresh: venv
	CXRFAST_TEST_SEED=random $(PY) -m pytest -q -p no:cacheprovider tests

bench: venv
	$(PY) -m pytest benchmarks --benchmark-only -q
	$(PY) benchmarks/report.py

demo: venv
	$(VENV)/bin/cxrfast demo

clean:
	rm -rf build dist *.egg-info cxrfast/_C*.so $(VENV)/.stamp
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
