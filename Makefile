# One command each: `make demo` runs fleet on the root fleet.yaml, `make test`
# runs the whole suite. Both install everything they need themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BASE_IMAGE ?= fleet-base:bookworm

.PHONY: install engine base-image demo demo-down test test-unit test-slow bench schema clean

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

demo: install base-image
	docker build -q -t fleet-demo:latest examples/demo-image >/dev/null
	$(BIN)/fleet apply --yes fleet.yaml
	$(BIN)/fleet status fleet.yaml

demo-down: install
	$(BIN)/fleet destroy --yes fleet.yaml

test: install base-image
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q -m 'not docker and not slow'

test-slow: install base-image
	$(BIN)/python -m pytest -q -m slow

bench: install engine
	@bash bench/install-tools.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)

schema: install
	$(BIN)/fleet schema > schemas/fleet.schema.json

clean:
	rm -rf $(VENV) .pytest_cache
