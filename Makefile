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

.PHONY: install test test-slow test-js js-deps demo clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(PIP_TORCH_FLAGS)
	$(PY) -m pip install -q -e ".[toolchain,dev,coreml]"
	touch $(STAMP)

test: $(STAMP) js-deps
	$(PY) -m ruff check --quiet .
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)
	$(MAKE) test-js

# The JavaScript runtime (js/): npm dependencies without install scripts (onnxruntime-node's script
# downloads a CUDA provider from a host these machines cannot reach; its CPU binaries are in the npm
# package), and Debian's Chromium for the browser test (never a downloaded browser build). The
# pytest run above holds the JS parity tests (tests/js); this adds the type check and node's own tests.
JS_STAMP := js/node_modules/.taskfold-installed
CHROMIUM ?= /usr/bin/chromium

js-deps: $(JS_STAMP)

$(JS_STAMP): js/package.json js/package-lock.json
	cd js && npm ci --ignore-scripts --no-audit --no-fund
	test -x $(CHROMIUM) || (apt-get update && apt-get install -y chromium) || \
		echo "warning: no $(CHROMIUM); the browser test will skip"
	touch $(JS_STAMP)

test-js: $(JS_STAMP)
	cd js && npx tsc -p jsconfig.json && node --test test/

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# The whole story offline on a CPU: upcycle the bundled tiny base, fine-tune, export, run,
# benchmark, report (demo-out/index.html). A second run reuses finished stages.
DEMO_ARGS ?=
demo: $(STAMP)
	$(VENV)/bin/taskfold demo --out demo-out $(DEMO_ARGS)

clean:
	rm -rf $(VENV) demo-out .pytest_cache js/node_modules
