# nash_lit: the two commands a user needs are `make test` and `make reproduce`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
# data root holding CIFAR-10 (sets NASH_LIT_DATA for `make reproduce`); empty: NASH_LIT_DATA or data/
DATA ?=
# non-empty: reproduce a non-smoke profile on a tree with uncommitted changes (recorded as <sha>-dirty, with git.diff)
ALLOW_DIRTY ?=
# Writable homes for matplotlib and IPython, whatever HOME allows.
export MPLCONFIGDIR := $(CURDIR)/.mplconfig
export IPYTHONDIR := $(CURDIR)/.ipython

.PHONY: install test export reproduce clean

install: $(VENV)/.installed

# Re-installs only when pyproject.toml changes; quick when already done.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

export: install
	$(BIN)/nbdev-export

# nash_lit/ is generated from nbs/: the export must leave it unchanged. The reproduction notebooks (3x_) run once at
# the smoke profile in tests/test_reproduce.py, through the runner, so nbdev-test skips them. pytest runs on 2
# workers, a test file per worker at a time (pytest-xdist): most tests train on one thread.
test: install
	$(BIN)/nbdev-export
	@if [ -n "$$(git status --porcelain -- nash_lit)" ]; then \
	  echo "nash_lit/ differs from what nbs/ exports; run nbdev-export and commit:"; \
	  git status --short -- nash_lit; exit 1; fi
	@$(BIN)/ruff format --check --quiet nbs tests tools || { \
	  echo "nbs/, tests/ or tools/ is not formatted; run: $(BIN)/ruff format nbs tests tools"; exit 1; }
	OMP_NUM_THREADS=1 $(BIN)/nbdev-test --n-workers 2 --skip-file-re '^([_.]|3[0-9]_)'  # one thread per notebook worker
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# Runs every reproduction notebook (nbs/3[0-9]_*.ipynb) of one settings.ini profile with papermill
# (kernel python3, cwd nbs/) into a fresh folder, which replaces reports/$(PROFILE)/ (tables, figures,
# search logs, manifest.json) only when every notebook succeeded; a failure prints its cause and keeps
# the run's folder. reports/smoke/ is CI's and ignored by git.
reproduce: install
	$(BIN)/python tools/reproduce.py --profile $(PROFILE) $(if $(DATA),--data $(DATA)) $(if $(ALLOW_DIRTY),--allow-dirty)

clean:
	rm -rf _proc _docs .pytest_cache .hypothesis
