# One command each for the things people do with this course. Every target sets itself up:
# the first run creates .venv and installs course_utils with its [dev] extra (a minute or two).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test lab clean

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

clean:
	rm -rf $(VENV) .pytest_cache build_notebooks
