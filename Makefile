# One command each for the things people do with this course. Every target sets itself up:
# the first run creates .venv and installs course_utils with its [dev] extra (a minute or two).
# CPU-only machine: `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs the CPU
# build of PyTorch first (see README, "Set-up"); without it pip picks the CUDA build on Linux.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Options:  make solutions SMOKE=1 OUT=build_notebooks     make train PRESET=cpu RUN=runs/cpu ARGS="--epochs 5"
SMOKE  ?= 0
OUT    ?= build_notebooks
PRESET ?=
RUN    ?= runs/$(if $(PRESET),$(PRESET),default)
ARGS   ?=
TORCH_INDEX ?=
WORK   ?= work
# The limit for one notebook cell in `make test` (nbval), in seconds: a hung cell fails instead of
# stalling the run. Five times the 60 s that any smoke cell may take on a 2-core machine. (Every test
# also has pytest-timeout's limit from pyproject.toml.)
CELL_TIMEOUT ?= 300
# EXECUTE=0 builds the website without running the notebooks (what the test of the site does:
# `make test` has run them with nbval already); the pages then show code and text, no outputs.
EXECUTE ?= 1
DOCS_STAMP := $(VENV)/.installed-docs
BOOK   := build/book$(if $(filter 1,$(SMOKE)),-smoke)$(if $(filter 0,$(EXECUTE)),-unexecuted)
# The website caches each executed notebook by its text; the cache is kept per version of
# course_utils, so that a change to the package executes every notebook again.
CODE_DIGEST = $(shell cat course_utils/*.py course_utils/*/*.py | sha256sum | cut -c1-12)

.PHONY: setup test test-train lab student solutions book train clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install torch torchvision --index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

# The website's tools (Sphinx, MyST-NB, Playwright): the [docs] extra, on top of [dev].
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[dev,docs]"
	touch $(DOCS_STAMP)

# Every test, in smoke mode, on $(TEST_WORKERS) worker processes of one thread each (pytest-xdist;
# each test file and each notebook stays on one worker). nbval executes every solution notebook once,
# one cell a test item (so --durations lists the slowest cells too), with every self-check required
# to say "correct" (notebooks/conftest.py); tests/test_student_notebooks.py runs the student
# notebooks as "Run All" does; tests/test_book.py builds the website without executing the
# notebooks again and opens it in a browser. `ONEDNN_MAX_CPU_ISA=AVX2 make test` runs all of it
# with the oneDNN kernels of most laptops (AVX2, no AVX-512), as CI does. One thread a worker: two
# threads wait for each other at every operation, and with one busy program beside it that made
# notebook 05 4 times slower (benchmarks/README.md).
TEST_WORKERS ?= 2
PYTEST := COURSE_SMOKE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile
test: $(DOCS_STAMP)
	$(PYTEST) --nbval-lax --nbval-cell-timeout=$(CELL_TIMEOUT) --durations=25 tests notebooks

# The tests that train, alone: CI runs them a second time with the machine's own kernels where it
# has AVX-512 (the first time, `make test` ran them limited to AVX2).
TRAIN_TESTS = tests/test_training.py tests/test_cli.py tests/test_memory_format.py \
  tests/test_recipe.py $(wildcard tests/test_experiments.py tests/test_*distributed*.py \
  tests/test_transfer.py tests/test_transfer_experiment.py)
test-train: $(STAMP)
	$(PYTEST) --durations=10 $(TRAIN_TESTS)

# Students: JupyterLab in $(WORK)/, a git-ignored copy of student/ that course updates never touch.
# The first run copies every student notebook there; later runs copy only notebooks that are new,
# and never overwrite one you already have.
lab: $(STAMP)
	@mkdir -p $(WORK)
	@for notebook in student/*.ipynb; do \
	  if [ -e "$(WORK)/$${notebook##*/}" ]; then :; \
	  else cp "$$notebook" "$(WORK)/" && echo "copied $$notebook to $(WORK)/"; fi; \
	done
	$(VENV)/bin/jupyter lab $(WORK)/

# Instructors: regenerate student/ from the solution notebooks (solutions stripped).
student: $(STAMP)
	$(PY) -m course_utils.release

# Instructors: execute every solution notebook into $(OUT)/, with outputs, plus an HTML copy of each.
solutions: $(STAMP)
	mkdir -p $(OUT)
	COURSE_SMOKE=$(SMOKE) MPLBACKEND=Agg $(VENV)/bin/jupyter nbconvert --to notebook --execute \
	  --ExecutePreprocessor.timeout=-1 --output-dir $(OUT) notebooks/[0-9][0-9]_*.ipynb
	$(VENV)/bin/jupyter nbconvert --to html --output-dir $(OUT) $(OUT)/[0-9][0-9]_*.ipynb

# The course website: every notebook executed (cached: a rebuild re-runs only changed notebooks),
# into $(BOOK)/html. SMOKE=1 builds it on a small subset in minutes; the outputs never go back
# into notebooks/. Needs CIFAR-10 like the notebooks do (data/ or COURSE_DATA_DIR).
book: $(DOCS_STAMP)
	COURSE_SMOKE=$(SMOKE) COURSE_BOOK_EXECUTE=$(EXECUTE) $(VENV)/bin/sphinx-build -W --keep-going \
	  -b html -c docs -d $(BOOK)/doctrees \
	  -D nb_execution_cache_path=$(abspath $(BOOK))/jupyter_cache-$(CODE_DIGEST) \
	  $(if $(filter 1,$(SMOKE)),-D nb_execution_timeout=$(CELL_TIMEOUT)) . $(BOOK)/html
	@echo "The course website: $(BOOK)/html/index.html"

# The full training run: ResNet-18 on CIFAR-10, best checkpoint evaluated once on the test set.
# Without PRESET it picks `full` on a GPU and `cpu` otherwise.
train: $(STAMP)
	$(PY) -m course_utils train $(if $(PRESET),--preset $(PRESET)) --out $(RUN) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache $(OUT) build
