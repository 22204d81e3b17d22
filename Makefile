# bizbus — every install step lives here or in pyproject.toml.
#   make run    install into .venv, start the embedded stack and the bus (Ctrl-C stops it all)
#   make test   install into .venv, run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# the suite in two processes (pytest-xdist), whole files per process: most tests wait on brokers, databases and
# worker processes rather than on the CPU. TEST_JOBS=1 runs it in one process.
TEST_JOBS ?= 2
TEST_PARALLEL := $(if $(filter 1,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile)
BENCH_ARGS ?=

.PHONY: install tools prometheus run test test-fast lint check schemas-check bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,tryton,embedded]'
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/bizbus up

# Prometheus (its Debian package brings promtool) for the dashboard and alert-rule tests. Installed only
# when missing; as root or through sudo. Recommends (node exporter) are left out; a service the package
# may start (systemd hosts) listens on :9090 and is not used by the tests (they start their own).
tools:
	@if command -v prometheus >/dev/null; then echo "prometheus: $$(command -v prometheus)"; else \
	  SUDO=; if [ "$$(id -u)" != 0 ]; then SUDO="$$(command -v sudo || true)"; \
	    test -n "$$SUDO" || { echo "error: install the Debian package prometheus (need root or sudo)" >&2; exit 1; }; fi; \
	  echo "prometheus not on PATH: $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends prometheus"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus; fi

# a local Prometheus on :9090 scraping `make run` (the admin listener, 127.0.0.1:8089) with the alert rules; Ctrl-C stops it
prometheus: tools
	@mkdir -p .bizbus/prometheus
	prometheus --config.file=deploy/prometheus/local.yml --storage.tsdb.path=.bizbus/prometheus \
	  --web.listen-address=127.0.0.1:9090

test: $(STAMP) tools
	$(BIN)/python -m pytest $(TEST_PARALLEL) --durations=25 $(PYTEST_ARGS)

# unit tests only: no broker, no registry process
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bizbus connectors streams schemas tests

# validate pipeline + catalogue, and check schema compatibility against git history (no registry needed)
check: $(STAMP)
	$(BIN)/bizbus check
	$(BIN)/bizbus schemas check --against git

# every benchmark once (about ten minutes on two cores); a table, and bench/results.json. Sizes scale with
# BENCH_ARGS="--scale 0.1"; one benchmark: BENCH_ARGS="--only processor". See README "Benchmarks".
bench: $(STAMP)
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .bizbus .pytest_cache build *.egg-info
