# Every target does its own set-up: a fresh clone needs only python3 (and root on Debian for the engine).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv engine browser test test-faults test-unit test-docker test-examples lint demo bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# the pip a venv starts with (23.x) fails to resolve azure-ai-ml's OpenTelemetry pins (InconsistentCandidate)
	$(BIN)/pip install -q --disable-pip-version-check 'pip==26.3'
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

venv: $(STAMP)

# A Docker engine and the local base images, the default one and local/debian-py:3.8 (idempotent).
# Outside CI a missing engine is reported, and the docker tests then say so loudly; under CI=true it is an error.
engine: $(STAMP)
	@BEPBUILD_CLI=$(BIN)/bepbuild bash scripts/engine.sh || { [ "$$CI" != true ] && echo "warning: no Docker engine: docker tests will fail or be skipped"; }

# Debian's headless Chromium for the dashboard's browser tests (idempotent), driven by Playwright.
# Outside CI a missing one is reported, and the browser tests then say so loudly; under CI=true it is an error.
browser:
	@bash scripts/browser.sh || { [ "$$CI" != true ] && echo "warning: no Chromium: browser tests will fail or be skipped"; }

# Everything but the framework examples and the engine restart (which stops every container on the
# machine, other people's too): `make test-faults` runs that one; CI runs both.
test: venv engine browser
	$(BIN)/python -m pytest -m "not examples and not engine_restart" $(PYTEST_ARGS)

# The Docker engine restarted mid-job. Waits until no container has run for 60 s (5 s under CI=true)
# before it kills dockerd, and starts it again with scripts/engine.sh whatever happens.
test-faults: venv engine
	$(BIN)/python -m pytest -m engine_restart tests/docker/test_engine_restart.py $(PYTEST_ARGS)

# The example scoring scripts in-process, with the frameworks installed (heavy: torch, tensorflow).
EXAMPLES_VENV := .venv-examples
test-examples:
	@test -x $(EXAMPLES_VENV)/bin/python || $(PY) -m venv $(EXAMPLES_VENV)
	$(EXAMPLES_VENV)/bin/pip install -q -r examples/mnist/train/requirements.txt pytest pyyaml pandas
	$(EXAMPLES_VENV)/bin/python -m pytest -m examples tests/unit/test_mnist_examples.py $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest -m "not examples" tests/unit $(PYTEST_ARGS)

test-docker: venv engine
	$(BIN)/python -m pytest -m "docker and not engine_restart" $(PYTEST_ARGS)

# The runtime also against its minimum Python (layout.MIN_PYTHON); tests/unit/test_runtime_python.py runs it too.
lint: venv
	$(BIN)/ruff check builder runtime tests bench examples scripts
	$(BIN)/python scripts/check_runtime_python.py

demo: venv engine
	bash scripts/demo.sh

BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,bench]'
	@touch $@

bench: venv engine $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
