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

.PHONY: demo test bench install services-deps
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ingest demo

test: $(STAMP) services-deps
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# System packages of the services the tests start themselves: the PostgreSQL server
# binaries (the tests run a throwaway server of their own on a free port; the cluster
# the Debian package may create and start is not used). Installed with apt-get when we
# are root; otherwise say what to install.
services-deps:
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing the PostgreSQL server for the tests (apt-get install postgresql)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else \
		echo "No PostgreSQL server binaries: install them (Debian/Ubuntu: sudo apt-get install postgresql);"; \
		echo "without them the PostgreSQL tests are skipped (and fail with CI=true)."; \
	fi
