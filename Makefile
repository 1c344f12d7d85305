# The two commands of the README. Each creates/reuses .venv, installs the
# pinned requirements, builds the extension in place (ninja, incremental) and
# makes the checkout importable from the venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
DEV    := $(VENV)/.dev-linked

.PHONY: test bench build clean

test: build
	$(PY) -m pytest -q tests

bench: build
	$(PY) bench/throughput.py $(BENCH_ARGS)

build: $(DEPS) $(DEV)
	$(PY) setup.py -q build_ext --inplace

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
