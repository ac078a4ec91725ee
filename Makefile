# One command each for the things people do with this course. Every target sets itself up:
# the first run creates .venv and installs course_utils with its [dev] extra (a minute or two).

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

.PHONY: setup test lab student solutions train clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

# Unit tests, then every notebook executed top to bottom by nbval in smoke mode.
test: $(STAMP)
	COURSE_SMOKE=1 $(PY) -m pytest --nbval-lax --nbval-current-env tests notebooks

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Instructors: regenerate student/ from the solution notebooks (solutions stripped).
student: $(STAMP)
	$(PY) -m course_utils.release

# Instructors: execute every solution notebook into $(OUT)/, with outputs, plus an HTML copy of each.
solutions: $(STAMP)
	mkdir -p $(OUT)
	COURSE_SMOKE=$(SMOKE) MPLBACKEND=Agg $(VENV)/bin/jupyter nbconvert --to notebook --execute \
	  --ExecutePreprocessor.timeout=-1 --output-dir $(OUT) notebooks/[0-9][0-9]_*.ipynb
	$(VENV)/bin/jupyter nbconvert --to html --output-dir $(OUT) $(OUT)/[0-9][0-9]_*.ipynb

# The full training run: ResNet-18 on CIFAR-10, best checkpoint evaluated once on the test set.
# Without PRESET it picks `full` on a GPU and `cpu` otherwise.
train: $(STAMP)
	$(PY) -m course_utils train $(if $(PRESET),--preset $(PRESET)) --out $(RUN) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache $(OUT)
