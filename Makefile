# Two entry points: `make demo` runs the seeds' example on its embedded default,
# `make test` runs the whole suite. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[all]'
	touch $(STAMP)

.PHONY: demo test bench install
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ingest demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
