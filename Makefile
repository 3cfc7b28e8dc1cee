# Set-up and everyday commands. `make bench`, `make test` and `make demo` work on
# a fresh machine: they create the virtual environment, install torch and build
# the extension (with the CUDA kernels when nvcc and a CUDA build of torch exist).
# `make bench` runs the benchmark suite (python -m fused_linreg.bench); pass its
# options in BENCH_ARGS, e.g. `make bench BENCH_ARGS="--quick"` or
# `make bench BENCH_ARGS="--device cuda"`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# The torch requirement of pyproject.toml's dependencies (torch>=2.11,<2.16): pip installs a torch
# inside that range, which installing the package then keeps (no build against one torch that
# pip replaces by another).
TORCH ?= $(shell sed -n 's/^dependencies = \[.*"\(torch[^"]*\)".*/\1/p' pyproject.toml)
BENCH_ARGS ?=
BIN := $(VENV)/bin
SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.h) setup.py pyproject.toml

.PHONY: install test bench demo clean sanitize sanitize-build

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel setuptools ninja

$(VENV)/.deps: | $(BIN)/python
	$(BIN)/pip install "$(TORCH)" numpy pytest hypothesis "scikit-learn>=1.6" pandas
	touch $@

# --no-build-isolation: build against the torch installed above, not another
# one pip would pick for an isolated build environment.
# pip shows a build's output only with -v, and then ninja's full command lines
# (indented by pip): those go to build/build.log, the terminal gets one line per
# compiled object, its path below the build's temporary folder ("[3/16]
# avx2/csrc/cpu/linear.o"), and, if the build fails, the log's end.
BUILD_LOG := build/build.log
PROGRESS_LINES := s|^ *\(\[[0-9]*/[0-9]*\]\) .* -o [^ ]*temp[^/ ]*/\([^ ]*\).*|  \1 \2|p

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	@mkdir -p build
	@echo "building fused_linreg (full log: $(BUILD_LOG))"
	@set -o pipefail; $(BIN)/pip install -v --no-build-isolation -e . 2>&1 | tee $(BUILD_LOG) | \
		sed -un '$(PROGRESS_LINES)' || { tail -n 80 $(BUILD_LOG); exit 1; }
	touch $@

install: $(VENV)/.built

test: install
	$(BIN)/python -m pytest tests -q

# The bench extras of pyproject.toml: sklearn's and scikit-learn-intelex's rows, plots, progress bar.
$(VENV)/.bench-deps: | $(BIN)/python
	$(BIN)/pip install scikit-learn matplotlib tqdm "scikit-learn-intelex; platform_machine == 'x86_64'"
	touch $@

bench: install $(VENV)/.bench-deps
	$(BIN)/python -m fused_linreg.bench $(BENCH_ARGS)

# Trains the book's linear regression with the fused ops and prints loss per epoch.
demo: install
	$(BIN)/python -m fused_linreg.demo

# AddressSanitizer + UndefinedBehaviorSanitizer: `make sanitize` builds the CPU
# extension with both (FUSED_LINREG_SANITIZE=1) into build/sanitize/lib, a copy of
# the package that never replaces the normal in-place build, and runs the test
# suite against it. The sanitizer runtimes must be loaded before Python (which is
# not instrumented) starts: LD_PRELOAD. Leak detection is off because CPython
# leaks by design. CXX builds it and provides those runtimes. Pass pytest options
# in SANITIZE_ARGS (e.g. SANITIZE_ARGS="-x -m 'not large'"); see README "Sanitizers".
SANITIZE_DIR := $(CURDIR)/build/sanitize
SANITIZE_ARGS ?=

$(SANITIZE_DIR)/.built: $(VENV)/.deps $(SOURCES) $(wildcard pyext/fused_linreg/*.py)
	CXX=$(CXX) FUSED_LINREG_SANITIZE=1 $(BIN)/python setup.py build_py --build-lib $(SANITIZE_DIR)/lib \
		build_ext --build-lib $(SANITIZE_DIR)/lib --build-temp $(SANITIZE_DIR)/temp
	touch $@

sanitize-build: $(SANITIZE_DIR)/.built

SANITIZE_ENV = LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PYTHONPATH=$(SANITIZE_DIR)/lib

# First make sure the tests will import the sanitized copy, not an installed or in-place build.
# --capture=sys: a sanitizer writes its report to file descriptor 2 and halts; pytest's
# default fd capture would swallow the report with the test.
sanitize: sanitize-build
	$(SANITIZE_ENV) $(BIN)/python -c \
		"import fused_linreg; assert fused_linreg.__file__.startswith('$(SANITIZE_DIR)/'), fused_linreg.__file__"
	$(SANITIZE_ENV) $(BIN)/python -m pytest tests -q -p no:cacheprovider --capture=sys $(SANITIZE_ARGS)

clean:
	rm -rf build pyext/*.egg-info pyext/fused_linreg/_C*.so $(VENV)/.built
