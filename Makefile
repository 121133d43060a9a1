# Two entry points: `make demo` runs the seeds' example on its embedded default,
# `make test` runs the whole suite. Both create .venv and install what they need.
# `make images` builds the test services' images on the Docker engine of DOCKER_HOST
# without a registry; `make container-deps` installs what CI's container pass needs.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# The demo needs the core only (no Kafka clients, Dask or test tools): its own stamp,
# so `make demo` on a fresh clone installs three small packages, not every extra.
CORE_STAMP := $(VENV)/.installed-core

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(CORE_STAMP): pyproject.toml $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e .
	touch $(CORE_STAMP)

$(STAMP): pyproject.toml $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[all]'
	touch $(STAMP) $(CORE_STAMP)

.PHONY: demo test bench install services-deps container-deps images
install: $(STAMP)

demo: $(CORE_STAMP)
	$(VENV)/bin/ingest demo

test: $(STAMP) services-deps
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# System packages of the services the tests start themselves: the PostgreSQL server
# binaries (the tests run a throwaway server of their own on a free port; the cluster
# the Debian package may create and start is not used), and Chromium for the web UI's
# browser tests (Playwright drives /usr/bin/chromium; it never downloads a browser).
# Installed with apt-get when we are root; otherwise say what to install.
services-deps:
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing the PostgreSQL server for the tests (apt-get install postgresql)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else \
		echo "No PostgreSQL server binaries: install them (Debian/Ubuntu: sudo apt-get install postgresql);"; \
		echo "without them the PostgreSQL tests are skipped (and fail with CI=true)."; \
	fi
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Chromium for the web UI's browser tests (apt-get install chromium)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "No /usr/bin/chromium: install it (Debian: sudo apt-get install chromium);"; \
		echo "without it the web UI's browser tests are skipped (and fail with CI=true)."; \
	fi

# What CI's container pass needs (.ci/run): Debian's Docker engine (run privately there,
# never as the machine's service), debootstrap for the base image, and docker-compose to
# check docker/compose.yaml. Installed with apt-get when we are root, as above.
CONTAINER_TOOLS := dockerd debootstrap docker-compose
container-deps:
	@missing=""; for tool in $(CONTAINER_TOOLS); do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	packages=$$(echo "$$missing" | sed -e 's/dockerd/docker.io/' -e 's/debootstrap/debootstrap debian-archive-keyring/'); \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing for the container tests (apt-get install$$packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$packages; \
	else \
		echo "Missing for the container tests:$$missing (Debian/Ubuntu: sudo apt-get install$$packages)"; \
	fi

# The images the pytest plugin runs in containers (see the README): Kafka when a Docker
# engine answers, HDFS and S3 with INGEST_HDFS_BACKEND / INGEST_S3_BACKEND=testcontainers.
images: $(STAMP)
	$(VENV)/bin/ingest services image kafka
	$(VENV)/bin/ingest services image hdfs
	$(VENV)/bin/ingest services image s3
