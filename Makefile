# Two commands for a fresh Linux machine with Python 3.11+:  make run   |   make test
# Both create .venv if it is absent and install what is missing; both are safe to repeat.
# uv (installed into the venv by pip) does the install: warm-cache installs take seconds instead of minutes.
# CI (.ci/run) adds `make test-colab-stack`: the same tests against Colab's TensorFlow, Keras and NumPy, in .venv-colab.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then echo $$p; break; fi; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cxr-installed
TIMES  := runs/make-test/timings.json
TIMED  := $(BIN)/python scripts/timed.py $(TIMES)
# unit tests run in this many processes (pytest-xdist); many tests wait on subprocesses, so 2 pay off even on 2 cores
TEST_WORKERS ?= 2
# Colab's runtime versions (constraints-colab.txt says from where and when), in a venv of their own
COLAB_VENV  := .venv-colab
COLAB_BIN   := $(COLAB_VENV)/bin
COLAB_STAMP := $(COLAB_VENV)/.cxr-installed
COLAB_PINS  := constraints-colab.txt
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: run test install unit notebooks lint clean-venv publish-url test-colab-stack colab-install test-slow

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

## make test: lint, unit + reliability tests (all but those marked slow: make test-slow), then every notebook under
## nbval in smoke mode
test: install lint unit notebooks
	@$(BIN)/python scripts/timed.py $(TIMES) --show

lint:
	$(BIN)/ruff check cxr_utils tests benchmarks scripts notebooks

unit: install
	CXR_SMOKE=1 $(TIMED) unit_tests -- $(BIN)/python -m pytest tests -q -p no:cacheprovider -n $(TEST_WORKERS) -m "not slow" \
	  --durations=15

## make test-slow: the tests marked slow (over ~30 s each: the many-kills resume, two devices vs one, the study killed
## mid-write, notebook 04 rerun, the ImageNet photographs probe, a fresh-process load, the study CLI, notebook 02
## rerun, three benchmark smoke runs); CI runs them after `make test`
test-slow: install
	CXR_SMOKE=1 $(TIMED) slow_tests -- $(BIN)/python -m pytest tests -q -p no:cacheprovider -n $(TEST_WORKERS) -m slow \
	  --durations=0
	@$(BIN)/python scripts/timed.py $(TIMES) --show

notebooks: install
	CXR_SMOKE=1 $(TIMED) notebooks -- $(BIN)/python -m pytest --nbval-lax -q -p no:cacheprovider notebooks --durations=0

## make test-colab-stack: the unit tests and the notebooks again, in .venv-colab with Colab's TensorFlow, Keras, NumPy
## (and the other libraries Colab preinstalls, at its versions: constraints-colab.txt); the rest current. CI runs it
## after `make test`. test_stack.py checks that the venv holds exactly the pinned versions. tests/reliability (kill -9,
## full disks, locks, bad files: the operating system's side, run by `make test` on the current stack) is left out here
## so that all of CI stays under 25 minutes on 2 cores; the training, checkpoint and resume paths it drives are the
## unit tests' too, which do run here.
$(COLAB_STAMP): $(STAMP) $(COLAB_PINS)
	@start=$$(date +%s); \
	{ test -x $(COLAB_BIN)/python || $(PYTHON) -m venv $(COLAB_VENV); } && \
	$(BIN)/uv pip install -q --python $(COLAB_BIN)/python -r requirements.txt -r requirements-dev.txt -c $(COLAB_PINS) -e . && \
	$(BIN)/python scripts/timed.py $(TIMES) --record colab_install $$(( $$(date +%s) - start ))
	@touch $(COLAB_STAMP)

colab-install: $(COLAB_STAMP)

test-colab-stack: install colab-install
	CXR_SMOKE=1 CXR_STACK=$(COLAB_PINS) $(TIMED) colab_unit_tests -- $(COLAB_BIN)/python -m pytest tests -q -p no:cacheprovider \
	  -n $(TEST_WORKERS) -m "not slow" --ignore=tests/reliability
	CXR_SMOKE=1 $(TIMED) colab_notebooks -- $(COLAB_BIN)/python -m pytest --nbval-lax --nbval-current-env -q -p no:cacheprovider \
	  notebooks --durations=0
	@$(BIN)/python scripts/timed.py $(TIMES) --show

## make publish-url [URL=https://github.com/you/cxr-cgan.git]: the repository URL into every notebook's Colab badge and
## Setup cell (default: git remote get-url origin)
publish-url: install
	$(BIN)/python scripts/set_repo_url.py $(URL)

clean-venv:
	rm -rf $(VENV) $(COLAB_VENV)
