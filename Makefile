# Set-up and everyday commands. `make bench` and `make test` work on a fresh
# machine: they create the virtual environment, install torch and build the
# extension (with the CUDA kernels when nvcc and a CUDA build of torch exist).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch
BIN := $(VENV)/bin
SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu csrc/cuda/*.cuh) setup.py pyproject.toml

.PHONY: install test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel setuptools ninja

$(VENV)/.deps: | $(BIN)/python
	$(BIN)/pip install "$(TORCH)" numpy pytest hypothesis
	touch $@

# --no-build-isolation: build against the torch installed above, not another
# one pip would pick for an isolated build environment.
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(BIN)/pip install --no-build-isolation -e .
	touch $@

install: $(VENV)/.built

test: install
	$(BIN)/python -m pytest tests -q

bench: install
	$(BIN)/python -m fused_linreg.demo

clean:
	rm -rf build pyext/*.egg-info pyext/fused_linreg/_C*.so $(VENV)/.built
