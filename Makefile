# Set-up and everyday commands. `make bench`, `make test` and `make demo` work on
# a fresh machine: they create the virtual environment, install torch and build
# the extension (with the CUDA kernels when nvcc and a CUDA build of torch exist).
# `make bench` runs the benchmark suite (python -m fused_linreg.bench); pass its
# options in BENCH_ARGS, e.g. `make bench BENCH_ARGS="--quick"` or
# `make bench BENCH_ARGS="--device cuda"`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch
BENCH_ARGS ?=
BIN := $(VENV)/bin
SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu csrc/cuda/*.cuh) setup.py pyproject.toml

.PHONY: install test bench demo clean

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

# The bench extras of pyproject.toml: sklearn's SGDRegressor rows, plots, progress bar.
$(VENV)/.bench-deps: | $(BIN)/python
	$(BIN)/pip install scikit-learn matplotlib tqdm
	touch $@

bench: install $(VENV)/.bench-deps
	$(BIN)/python -m fused_linreg.bench $(BENCH_ARGS)

# Trains the book's linear regression with the fused ops and prints loss per epoch.
demo: install
	$(BIN)/python -m fused_linreg.demo

clean:
	rm -rf build pyext/*.egg-info pyext/fused_linreg/_C*.so $(VENV)/.built
