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
	$(PY) -m pip install -q -e ".[dev,coreml]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# Until the full demo lands, the shortest real pipeline: upcycle the tiny preset (MTU, and
# MTU + DTR) and inspect what was built.
demo: $(STAMP)
	$(VENV)/bin/taskfold upcycle --base preset:tiny --tasks t2i,edit,sr,inpaint --experts 4 \
		--out demo-out/mtu --overwrite
	$(VENV)/bin/taskfold upcycle --base preset:tiny --tasks t2i,edit,sr,inpaint --experts 4 --dtr \
		--out demo-out/mtu-dtr --overwrite
	$(VENV)/bin/taskfold inspect demo-out/mtu

clean:
	rm -rf $(VENV) demo-out .pytest_cache
