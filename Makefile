# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates (or refreshes) a local virtual environment and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# On a machine without the local CPU wheel, point pip at PyTorch's CPU index, e.g.
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PIP_TORCH_FLAGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
STAMP := $(VENV)/.taskfold-installed
PYTEST_ARGS ?=

.PHONY: install test test-slow demo clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(PIP_TORCH_FLAGS)
	$(PY) -m pip install -q -e ".[toolchain,dev,coreml]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# The whole story offline on a CPU: upcycle the bundled tiny base, fine-tune, export, run,
# benchmark, report (demo-out/index.html). A second run reuses finished stages.
DEMO_ARGS ?=
demo: $(STAMP)
	$(VENV)/bin/taskfold demo --out demo-out $(DEMO_ARGS)

clean:
	rm -rf $(VENV) demo-out .pytest_cache
