# mmfw: `make train` installs and trains the default experiment; `make test` installs and runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Extra arguments for mmfw-train / pytest: make train ARGS="fusion=late"
ARGS ?=

# Read the AV-digits raw files from the shared read-only copy when there is one (no download needed).
SHARED_AVDIGITS := $(abspath ../shared/data/avdigits)
ifeq ($(origin MMFW_AVDIGITS_RAW), undefined)
ifneq ($(wildcard $(SHARED_AVDIGITS)/mnist/mnist.npz),)
export MMFW_AVDIGITS_RAW := $(SHARED_AVDIGITS)
endif
endif

.PHONY: install train test test-fast reliability lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev,text]'
	touch $(STAMP)

install: $(STAMP)

train: install
	$(BIN)/mmfw-train $(ARGS)

test: install
	$(BIN)/pytest -n 2 --durations=15 $(ARGS)

test-fast: install
	$(BIN)/pytest -n 2 -m "not slow" $(ARGS)

# Feed mmfw bad configs, bad data and faults as a user would; prints a verdict per case (minutes): ARGS="-k manifest"
reliability: install
	$(BIN)/python bench/reliability.py $(ARGS)

lint: install
	$(BIN)/ruff check mmfw tests bench
	$(BIN)/ruff format --check mmfw tests bench

format: install
	$(BIN)/ruff check --fix mmfw tests bench
	$(BIN)/ruff format mmfw tests bench

clean:
	rm -rf $(VENV) logs data/cache .pytest_cache
