# The two commands of the README. Each creates/reuses .venv, installs the
# pinned requirements, builds the extension in place (ninja, incremental) and
# makes the checkout importable from the venv. `make test` lints first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
DEV    := $(VENV)/.dev-linked
CPP_SOURCES = $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

.PHONY: test bench bench-distributed build clean lint lint-py lint-cpp format sanitize soak

test: lint build
	$(PY) -m pytest -q tests

bench: build
	$(PY) bench/throughput.py $(BENCH_ARGS)

# relufrob.distributed at 1 and 2 gloo processes, rows and cols (bench/distributed.py).
bench-distributed: build
	$(PY) bench/distributed.py $(BENCH_ARGS)

# 10 minutes of random calls over every path at 1 and 2 threads, a sample
# judged against the float64 reference, RSS flat within 1% (tests/soak.py,
# figures in docs/soak.md). Problems come from a pool of 256 shapes, as a
# training job's do: with a fresh shape per call (SOAK_ARGS="--shapes 0")
# RSS grows by torch's brgemm cache, one kernel per GEMM shape (docs/soak.md).
# Not part of `make test`.
SOAK_ARGS ?= --shapes 256
soak: build
	$(PY) tests/soak.py $(SOAK_ARGS)

build: $(DEPS) $(DEV)
	$(PY) setup.py -q build_ext --inplace

# The parity, error and property suites against a CPU-only build compiled
# with ASan and UBSan. It lives in build/sanitize (the package's Python files
# beside the sanitized _C), so the normal in-place build is left alone. The
# sanitizer runtimes must be loaded before python; libstdc++ with them, so
# that ASan intercepts the C++ allocator torch uses. Python's own allocations
# are not leak-checked (detect_leaks=0): the interpreter never frees some.
SAN_DIR  := build/sanitize
SAN_LIBS  = $(shell g++ -print-file-name=libasan.so) $(shell g++ -print-file-name=libubsan.so) $(shell g++ -print-file-name=libstdc++.so)
SAN_TESTS = $(wildcard tests/test_parity_*.py) $(wildcard tests/test_errors_*.py) tests/test_properties.py

sanitize: $(DEPS)
	RELUFROB_SANITIZE=1 RELUFROB_CPU_ONLY=1 $(PY) setup.py -q build_ext -t $(SAN_DIR)/temp -b $(SAN_DIR)/lib
	tar -C relufrob --exclude='*.so' --exclude=__pycache__ -cf - . | tar -C $(SAN_DIR)/lib/relufrob -xf -
	cd $(SAN_DIR) && LD_PRELOAD="$(SAN_LIBS)" \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  PYTHONPATH=$(CURDIR)/$(SAN_DIR)/lib $(CURDIR)/$(VENV)/bin/pytest -q -p no:cacheprovider \
	  --rootdir=$(CURDIR) $(addprefix $(CURDIR)/,$(SAN_TESTS))

# Style, as configured in pyproject.toml ([tool.ruff]) and .clang-format.
lint: lint-py lint-cpp

lint-py: $(DEPS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lint-cpp: $(DEPS)
	$(VENV)/bin/clang-format --dry-run -Werror $(CPP_SOURCES)

# Rewrites the sources in the style that `make lint` checks.
format: $(DEPS)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/clang-format -i $(CPP_SOURCES)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# A .pth file is what `pip install -e .` would leave behind, without pip
# compiling the extension a second time in its own build directory.
$(DEV): | $(PY)
	$(PY) -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'relufrob-dev.pth').write_text('$(CURDIR)\n')"
	touch $@

clean:
	rm -rf build relufrob/*.so
