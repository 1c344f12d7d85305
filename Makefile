# The two commands of the README. Each creates/reuses .venv, installs the
# pinned requirements, builds the extension in place (ninja, incremental) and
# makes the checkout importable from the venv. `make test` lints first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
DEV    := $(VENV)/.dev-linked
CPP_SOURCES = $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

.PHONY: test bench build clean lint lint-py lint-cpp format

test: lint build
	$(PY) -m pytest -q tests

bench: build
	$(PY) bench/throughput.py $(BENCH_ARGS)

build: $(DEPS) $(DEV)
	$(PY) setup.py -q build_ext --inplace

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
