# Two commands do all the set-up: `make run` and `make test` create .venv on first use
# and reinstall whenever requirements.txt or pyproject.toml change.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lab clean lint gpu-bench memory-bench

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -e . 2>&1 \
	  | { grep -v "is ignored: it is neither" || true; }
	@$(PY) -c "import torch, compile_ckpt, papermill; print('environment ready: torch', torch.__version__)"
	@touch $(STAMP)

## run: execute every notebook with its defaults into runs/<UTC timestamp>/ and write a summary
run: $(STAMP)
	MPLBACKEND=module://matplotlib_inline.backend_inline $(PY) -m compile_ckpt.runner

## test: lint, unit tests, and every notebook through papermill
test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks scripts
	MPLBACKEND=agg $(PY) -m pytest

## lab: JupyterLab on the notebooks
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks scripts

## gpu-bench: the `gpu` benchmark profile with the python that is on PATH (no venv, no network);
##            GPU_ARGS="--phases ceilings,bench --budget-s 540" passes options to scripts/gpu_run.py
gpu-bench:
	bash scripts/gpu_benchmark.sh gpu "" $(GPU_ARGS)

## memory-bench: peak RSS of naive vs low-memory loading of a >=1 GB compiled checkpoint
memory-bench: $(STAMP)
	$(PY) benchmarks/load_memory.py

clean:
	rm -rf runs artifacts notebooks/artifacts .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
