# Two entry points, each creating its own virtual environment on a fresh machine:
#   make demo   installs spikeforge and runs the main job (spikeforge demo)
#   make test   installs spikeforge with its test extras, lints (ruff) and runs the test suite
# and what the CI adds (.ci/run):
#   make wheel-check   builds the wheel, installs it alone into a fresh virtual environment, runs
#                      `spikeforge demo --quick` and the test suite against the installed package, from outside
#                      the source tree (a spikeforge/ folder in the working directory would shadow the install)
#   make kernel-check  the Triton kernels of the torch backend's GPU path, run on the CPU by Triton's interpreter
#                      (TRITON_INTERPRET=1) against the engine and the tensor paths; adds triton to the venv
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spikeforge-installed
WHEEL_DIR := build/wheelhouse
WHEEL_VENV := build/wheel-venv
ROOT := $(abspath .)
# Norse for tests/test_nir_libs.py, without its declared torchvision (setup.cfg says why); nir, numpy and torch
# come with spikeforge, nirtorch with its test extras
NORSE := norse==1.1.0
# sinabs for tests/test_nir_libs.py, without its declared nir<=1.0.4 and samna (pbr is what it imports of them)
SINABS := sinabs==3.1.3 pbr==7.1.3
# NeuroBench's own synaptic-operation count for tests/test_synops_conventions.py, without its declared torchaudio and
# tonic (its metrics import neither)
NEUROBENCH := neurobench==2.3.0
# lava-dl's wheel (not installed: it needs Python < 3.11) for the netx files and the ground truths Lava recorded that
# tests/test_netx.py reads out of it
LAVA_DL := lava-dl==0.6.0
LAVA_DIR := .cache/lava-dl

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(NORSE) $(SINABS) $(NEUROBENCH)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 -d $(LAVA_DIR) $(LAVA_DL)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spikeforge demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q tests

wheel-check: $(STAMP)
	rm -rf $(WHEEL_DIR) $(WHEEL_VENV) build/lib build/bdist.*
	$(PY) -m pip wheel -q --no-deps -w $(WHEEL_DIR) .
	$(PY) .ci/check_wheel.py $(WHEEL_DIR)/spikeforge-*.whl
	python3 -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q --upgrade pip
	$(WHEEL_VENV)/bin/python -m pip install -q torch==2.13.0
	$(WHEEL_VENV)/bin/python -m pip install -q "$$(ls $(WHEEL_DIR)/spikeforge-*.whl)[test]"
	$(WHEEL_VENV)/bin/python -m pip install -q --no-deps $(NORSE) $(SINABS) $(NEUROBENCH)
	set -e; tmp=$$(mktemp -d); cd $$tmp; \
	  $(ROOT)/$(WHEEL_VENV)/bin/python -c 'import spikeforge, sys; assert "$(WHEEL_VENV)" in spikeforge.__file__, spikeforge.__file__'; \
	  $(ROOT)/$(WHEEL_VENV)/bin/spikeforge demo --quick --out demo; \
	  test -s demo/report.md; \
	  $(ROOT)/$(WHEEL_VENV)/bin/python -m pytest -q -p no:cacheprovider $(ROOT)/tests; \
	  cd /; rm -rf $$tmp

# triton 3.9: its interpreter works with numpy 2 (3.6's does not); the kernels themselves are checked on GPUs too
KERNEL_TESTS := tests/test_torch_conv.py tests/test_torch_ordered.py tests/test_ecmath.py tests/test_ec_nodes.py \
	tests/test_multi_threshold.py
kernel-check: $(STAMP)
	$(PY) -m pip install -q triton==3.9.0
	TRITON_INTERPRET=1 $(PY) -m pytest -q -p no:cacheprovider $(KERNEL_TESTS)

.PHONY: install demo lint test wheel-check kernel-check
