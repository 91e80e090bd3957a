# LLM Personality Axes — two commands for a new user:
#   make book   set-up, execute the notebooks with papermill, build the book into _build/html
#   make test   set-up, lint (ruff), run the tests, then a smoke build of the book
#
# Options:
#   PARAMS=params/default.yaml   parameters file handed to every notebook (papermill -f)
#   PYTHON=python3.11            interpreter used to create .venv

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
# One step at a time, in the order written (pip, papermill and the book build share files).
.NOTPARALLEL:
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

PARAMS ?= params/default.yaml
FORCE  ?=

# The install stamp is named after requirements.txt's hash: a changed pin reinstalls, an unchanged
# one installs nothing (content, not mtime, decides). It lives inside .venv so deleting .venv also
# forgets it.
SHA256   := $(shell command -v sha256sum >/dev/null 2>&1 && echo sha256sum || echo 'shasum -a 256')
REQ_HASH := $(shell $(SHA256) < requirements.txt | cut -c1-16)
STAMP    := $(VENV)/.stamp-$(REQ_HASH)
PIP_FLAGS := $(if $(CI),--progress-bar off,)

# Kernels, matplotlib and Jupyter settings for everything run from here.
# JUPYTER_PATH puts the venv's "python3" kernelspec ahead of any user-level one, so papermill's
# `-k python3` always runs the venv's interpreter.
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter
export JUPYTER_PLATFORM_DIRS := 1
export MPLBACKEND := Agg
export PYDEVD_DISABLE_FILE_VALIDATION := 1

JB_FLAGS := --warningiserror --keep-going --all

.PHONY: help setup lint test test-lib test-notebooks book-smoke book html notebooks second bench clean distclean

help:
	@echo "make book    set-up, run the notebooks, build the book into _build/html (PARAMS=..., FORCE=1)"
	@echo "make test    set-up, ruff (make lint), pytest, then a smoke build of the book"
	@echo "make second  run the second model's steps 01-09 (Qwen 2.5 Coder 0.5B) into book/qwen2.5-0.5b (FORCE=1: cold)"
	@echo "make bench   set-up, run the benchmarks (benchmarks/run.py)"
	@echo "make clean   remove build outputs (_build, .stamps, caches); 'make distclean' also removes .venv"

# --------------------------------------------------------------------------------------------------
# Set-up: a virtual environment with the pinned requirements and axes_lib itself (editable, so edits to the
# sources need no reinstall), installed once per requirements hash.
setup: $(STAMP)

$(STAMP):
	@if [ ! -x $(PY) ]; then \
	  echo ">> creating $(VENV) with $$($(PYTHON) --version)"; \
	  $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
	    echo ">> warning: requirements.txt is pinned for Python 3.11; set PYTHON=python3.11 if this install fails"; \
	  $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install $(PIP_FLAGS) --upgrade pip || echo ">> warning: could not upgrade pip; going on with $$($(PY) -m pip --version)"; \
	fi
	$(PY) -m pip install $(PIP_FLAGS) --no-compile -r requirements.txt
	@# Byte-compile with every core (pip compiles one file at a time: 90 of its 130 s here). Files that do
	@# not compile under this Python (test data inside torch) are skipped, as pip itself skips them.
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null || true
	@# axes_lib installed editable from this folder: `import axes_lib` works from notebooks, Jupyter, pytest.
	@# Its dependencies are the pins above (--no-deps); setuptools, pinned there too, builds it in place
	@# (--no-build-isolation --no-index: nothing is downloaded). The .pth of older set-ups is removed.
	$(PY) -c "import sysconfig,pathlib;pathlib.Path(sysconfig.get_paths()['purelib'],'axes_lib_repo.pth').unlink(missing_ok=True)"
	$(PY) -m pip install $(PIP_FLAGS) --no-deps --no-build-isolation --no-index --no-compile -e .
	@# A kernelspec named python3 inside the venv whose argv is this venv's interpreter.
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (LLM Personality Axes)"
	@rm -f $(VENV)/.stamp-*
	@touch $@
	@echo ">> set-up done ($(STAMP))"

# --------------------------------------------------------------------------------------------------
# Tests: pytest (library tests, then smoke runs of every notebook into _build/smoke-src), nbval on the
# smoke-executed analysis notebooks, then the book built from those smoke outputs with warnings as errors.
SMOKE := _build/smoke-src
test: lint test-lib test-notebooks book-smoke

# ruff (pinned in requirements.txt, rules in pyproject.toml [tool.ruff]) first, so a slip fails in seconds.
lint: $(STAMP)
	$(BIN)/ruff check axes_lib tests benchmarks scripts notebooks

# pytest's output is kept in _build/pytest.log (.ci/run repeats its closing line last).
test-lib: $(STAMP)
	@mkdir -p _build
	AXES_SMOKE_DIR=$(CURDIR)/$(SMOKE) $(PY) -m pytest -q --durations=12 tests 2>&1 | tee _build/pytest.log

# nbval re-executes the notebooks whose outputs are deterministic and compares the cells marked
# NBVAL_CHECK_OUTPUT (lax mode: other cells only have to run).
test-notebooks: $(STAMP)
	cd $(SMOKE)/book && $(CURDIR)/$(PY) -m pytest -q -p no:cacheprovider --nbval-lax \
	  03_direction.ipynb 04_validation.ipynb

book-smoke: $(STAMP)
	rm -rf $(SMOKE)/_build
	$(BIN)/jupyter-book build $(SMOKE) $(JB_FLAGS)
	@test -f $(SMOKE)/_build/html/index.html
	@echo ">> smoke book: $(SMOKE)/_build/html/index.html"

# --------------------------------------------------------------------------------------------------
# The book: scripts/run_notebooks.py executes each notebook with papermill into book/ -- only those whose
# record (committed in the executed notebook) no longer matches what would produce it: the notebook's source,
# the parameters, the pinned requirements, the library code it imports and every artifact it can read.
# An unchanged step is rendered as committed; a changed one reruns, and so does every step that reads
# what it wrote. Then jupyter-book renders book/.

# PARAMS given on the command line must exist; the default file is used when present.
ifeq ($(origin PARAMS),command line)
ifeq ($(wildcard $(PARAMS)),)
$(error PARAMS=$(PARAMS) not found: pass an existing YAML file, e.g. PARAMS=params/default.yaml)
endif
endif
RUN_FLAGS := $(if $(wildcard $(PARAMS)),--params $(PARAMS),) $(if $(FORCE),--force,)

# The second model, Qwen 2.5 Coder 0.5B, runs steps 01-09 with its own parameters into book/qwen2.5-0.5b/ and
# artifacts/qwen2.5-0.5b/ (committed like the default model's: an up-to-date record executes nothing). It goes
# first, because the default run's step 12 compares the two. `make second FORCE=1` reruns it cold (an hour on
# 2 cores); a PARAMS given on the command line runs only that parameters file, into book/.
SECOND_PARAMS := params/qwen2.5-0.5b.yaml
SECOND_BOOK   := book/qwen2.5-0.5b
SECOND_STEPS  := 01 02 03 04 05 06 07 08 09
SECOND_FLAGS  := --params $(SECOND_PARAMS) --book $(SECOND_BOOK) --only $(SECOND_STEPS)

notebooks: $(STAMP)
	$(if $(filter command line,$(origin PARAMS)),,$(PY) scripts/run_notebooks.py $(SECOND_FLAGS))
	$(PY) scripts/run_notebooks.py $(RUN_FLAGS)

second: $(STAMP)
	$(PY) scripts/run_notebooks.py $(SECOND_FLAGS) $(if $(FORCE),--force,)

book: html

# Renders book/ as it is after the notebooks have run.
html: notebooks
	$(PY) -m benchmarks.build_times book artifacts/bench/build_times.md
	$(PY) -m benchmarks.build_times $(SECOND_BOOK) artifacts/bench/build_times_second.md --no-budget
	$(BIN)/jupyter-book build . $(JB_FLAGS)
	@test -f _build/html/index.html
	@echo ">> book: $(CURDIR)/_build/html/index.html"

# --------------------------------------------------------------------------------------------------
# Benchmarks (not part of `make test`): axes_lib vs repeng / steering-vectors / naive loops / a bare
# forward, written to artifacts/bench/results.json. BENCH_ARGS passes options, e.g.
#   make bench BENCH_ARGS=--quick
#   make bench BENCH_ARGS="--device cuda --model-config qwen"
# The peers come from requirements-bench.txt, installed with --no-deps into the same venv (their pins,
# numpy<2 and transformers<5, would downgrade the project's), under their own hash-named stamp.
BENCH_ARGS  ?=
BENCH_HASH  := $(shell $(SHA256) < requirements-bench.txt | cut -c1-16)
BENCH_STAMP := $(VENV)/.stamp-bench-$(BENCH_HASH)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -r requirements-bench.txt
	@rm -f $(VENV)/.stamp-bench-*
	@touch $@

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf _build .stamps .pytest_cache .hypothesis .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
	rm -f book/.*.tmp.ipynb

distclean: clean
	rm -rf $(VENV)
