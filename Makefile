# The two commands of the README, and their parts.
#   make demo   set everything up and run the demo
#   make test   set everything up, start Kafka + OpenSearch, run the whole suite, stop them

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test check deps unit lint docs services-up services-down bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

# Programs the suite runs besides Python: Java and Maven (Kafka and OpenSearch run from
# Maven Central's jars), Prometheus (it scrapes a worker, tests/integration/test_prometheus.py)
# and Chromium (it renders the status page).
# Installed from Debian's packages in one step when missing, where we are root with
# apt-get; elsewhere make stops at once naming the packages to install.
deps:
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jdk-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing the Debian packages$$missing"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing programs, install the Debian packages:$$missing" \
	      "(apt-get install$$missing as root), then run make again" >&2; \
	    exit 1; \
	  fi; \
	fi

demo: $(STAMP)
	$(BIN)/evtime demo

# Services are stopped again whatever the suite's outcome.
test: deps $(STAMP)
	@set -u; \
	trap '$(BIN)/evtime services down' EXIT; \
	$(BIN)/evtime services up && $(MAKE) --no-print-directory check

check: deps lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check evtime connectors tests bench examples
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

# The API reference from the docstrings (pdoc), in build/api/index.html; a broken
# reference fails it (and tests/unit/test_api_docs.py).
docs: $(STAMP)
	$(BIN)/python docs/api.py build/api

services-up: $(STAMP)
	$(BIN)/evtime services up

services-down: $(STAMP)
	$(BIN)/evtime services down

bench: $(STAMP)
	$(BIN)/python bench/local_window.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
