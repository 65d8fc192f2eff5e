# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUFF   := $(VENV)/bin/ruff

.PHONY: all install demo test lint format bench models hil clean

all: test

install:
	@scripts/bootstrap.sh

demo: install
	@$(PY) -m device.cli demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

hil: install
	$(PY) -m pytest -q hil_tests $(PYTEST_ARGS)

lint: install
	$(RUFF) check .
	$(RUFF) format --check .

format: install
	$(RUFF) format .
	$(RUFF) check --fix .

bench: install
	$(PY) -m bench

# Retrains the committed TFLite models from scratch (CPU; see models/README.md for the run time).
models:
	@BOOTSTRAP_TRAINING=1 scripts/bootstrap.sh
	$(VENV)/bin/pip install -q -e ".[dev,train]"
	$(PY) -m models.train all

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
