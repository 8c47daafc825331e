# Two commands for a fresh Linux machine with Python 3.11+:  make run   |   make test
# Both create .venv if it is absent and install what is missing; both are safe to repeat.
# uv (installed into the venv by pip) does the install: warm-cache installs take seconds instead of minutes.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then echo $$p; break; fi; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cxr-installed
TIMES  := runs/make-test/timings.json
TIMED  := $(BIN)/python scripts/timed.py $(TIMES)
# unit tests run in this many processes (pytest-xdist); many tests wait on subprocesses, so 2 pay off even on 2 cores
TEST_WORKERS ?= 2
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: run test install unit notebooks lint clean-venv publish-url

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: Python 3.11+ not found; install it and retry (or: make PYTHON=/path/to/python3.11)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt pyproject.toml
	@start=$$(date +%s); \
	$(BIN)/python -m pip install -q --disable-pip-version-check uv && \
	{ $(BIN)/uv pip install -q --python $(BIN)/python -r requirements.txt -r requirements-dev.txt -e . || \
	  { echo "uv failed; falling back to pip"; \
	    $(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt -e .; }; } && \
	mkdir -p runs/make-test && \
	$(BIN)/python scripts/timed.py $(TIMES) --record install $$(( $$(date +%s) - start ))
	@touch $(STAMP)

install: $(STAMP)

## make run: prepare the default data and execute notebooks 01->04 headless into runs/make-run-<time>/ (+ an HTML copy of each)
run: install
	$(BIN)/python scripts/run_notebooks.py

## make test: lint, unit + reliability tests, then every notebook under nbval in smoke mode
test: install lint unit notebooks
	@$(BIN)/python scripts/timed.py $(TIMES) --show

lint:
	$(BIN)/ruff check cxr_utils tests benchmarks scripts notebooks

# tests marked `alone` (a Ctrl-C landing inside a paused write, random kill times) lose their timing when another test
# loads the 2 cores: they run after the parallel part, by themselves
unit: install
	CXR_SMOKE=1 $(TIMED) unit_tests -- sh -c '$(BIN)/python -m pytest tests -q -p no:cacheprovider -n $(TEST_WORKERS) -m "not alone" && \
	  $(BIN)/python -m pytest tests -q -p no:cacheprovider -m alone'

notebooks: install
	CXR_SMOKE=1 $(TIMED) notebooks -- $(BIN)/python -m pytest --nbval-lax -q -p no:cacheprovider notebooks --durations=0

## make publish-url [URL=https://github.com/you/cxr-cgan.git]: the repository URL into every notebook's Colab badge and
## Setup cell (default: git remote get-url origin)
publish-url: install
	$(BIN)/python scripts/set_repo_url.py $(URL)

clean-venv:
	rm -rf $(VENV)
