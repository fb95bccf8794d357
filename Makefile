# One command each: `make demo` runs fleet on the root fleet.yaml, `make test`
# runs the whole suite. Both install everything they need themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BASE_IMAGE ?= fleet-base:bookworm

.PHONY: install engine base-image remote-engine remote-engine-down remote-engine-deps demo demo-down test test-unit test-slow bench schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@# the editors' YAML checker, for tests/gitops/test_editor.py (needs node and npm)
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node yaml-language-server@1.25.0
	touch $(STAMP)

install: $(STAMP)

engine:
	@bash scripts/ensure-docker.sh

base-image: engine
	@FLEET_BASE_IMAGE=$(BASE_IMAGE) bash scripts/build-base-image.sh

# A second Docker engine behind sshd in a network namespace, reachable as
# `ssh $(REMOTE_ENGINE)` (scripts/remote-engine.sh; root). tests/remote start and stop
# one of their own; this one is for trying fleet against a "remote machine" by hand.
REMOTE_ENGINE ?= fleet-remote
remote-engine: engine base-image
	@bash scripts/remote-engine.sh up $(REMOTE_ENGINE)

remote-engine-down:
	@bash scripts/remote-engine.sh down $(REMOTE_ENGINE)

remote-engine-deps:  # only openssh-server/-client (apt-get), for tests/remote on a fresh machine
	@bash scripts/remote-engine.sh deps

demo: install base-image
	docker build -q -t fleet-demo:latest examples/demo-image >/dev/null
	$(BIN)/fleet apply --yes fleet.yaml
	$(BIN)/fleet status fleet.yaml

demo-down: install
	$(BIN)/fleet destroy --yes fleet.yaml

# The default suite in TEST_WORKERS processes, one test file at a time each
# (tests/parallel.py: tests/remote stays in one worker, long files start first);
# then tests/zz_engine_restart alone, as it starts and stops dockerds. Both must pass.
TEST_WORKERS ?= 3
test: install base-image remote-engine-deps
	rc=0; \
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --ignore=tests/zz_engine_restart || rc=$$?; \
	$(BIN)/python -m pytest -q tests/zz_engine_restart || rc=$$?; \
	exit $$rc

test-unit: install
	$(BIN)/python -m pytest -q -m 'not docker and not slow'

test-slow: install base-image remote-engine-deps
	$(BIN)/python -m pytest -q -m slow

bench: install engine
	@bash bench/install-tools.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)

schema: install
	$(BIN)/fleet schema > schemas/fleet.schema.json

clean:
	rm -rf $(VENV) .pytest_cache
