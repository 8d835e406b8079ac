# Two entry points, each creating its own virtual environment on a fresh machine:
#   make demo   installs spikeforge and runs the main job (spikeforge demo)
#   make test   installs spikeforge with its test extras and runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spikeforge-installed

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spikeforge demo

test: $(STAMP)
	$(PY) -m pytest -q tests

.PHONY: install demo test
