# Two commands do all the set-up: `make run` and `make test` create .venv on first use (and
# reinstall when requirements*.txt or pyproject.toml change), with this checkout's own Jupyter
# kernel "compile-ckpt" inside .venv. Before pip downloads anything, scripts/torch_build.py says which
# torch build it resolved (CPU or CUDA) and its size. PIP_ARGS passes options to pip, e.g. for
# the CPU build of torch (on Linux, PyPI's torch is the CUDA build):
#   make test PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_ARGS ?=
LAB_ARGS ?=
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

# PIP_ARGS only act when .venv is created or reinstalled: with an existing .venv installed under
# other PIP_ARGS (recorded in .venv/.pip-args), stop and say how to start over, before doing nothing.
INSTALLED_PIP_ARGS := $(strip $(shell cat $(VENV)/.pip-args 2>/dev/null))
ifneq ($(wildcard $(STAMP)),)
ifneq ($(strip $(PIP_ARGS)),)
ifneq ($(strip $(PIP_ARGS)),$(INSTALLED_PIP_ARGS))
ifeq ($(filter clean-venv clean clean-kernel,$(MAKECMDGOALS)),)
$(error .venv exists, installed with PIP_ARGS="$(INSTALLED_PIP_ARGS)"; PIP_ARGS="$(strip $(PIP_ARGS))" changes nothing in it. To install with them: make clean-venv, then this command again)
endif
endif
endif
endif

.PHONY: run pages wheel test test-fast lint hooks lab install kernel clean-kernel clean-venv gpu-bench memory-bench pythons torch-versions clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(MAKE) --no-print-directory install
	@$(PY) -c "import torch, compile_ckpt.workshop, papermill; print('environment ready: torch', torch.__version__)"
	@$(MAKE) --no-print-directory kernel
	@touch $(STAMP)

## install: create $(VENV) if missing and install the pins and this package into it (the one pip line;
## scripts/test_pythons.sh calls it with VENV=.venv-py3.X PYTHON=python3.X)
install:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) scripts/torch_build.py $(PIP_ARGS)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on $(PIP_ARGS) -r requirements.txt \
	  -r requirements-dev.txt \
	  -e ".[workshop,trainers,test]" 2> >(grep -v "is ignored: it is neither" >&2)
	@printf '%s\n' "$(PIP_ARGS)" > $(VENV)/.pip-args

## kernel: register this checkout's environment as the Jupyter kernel "compile-ckpt", inside .venv
## (one per checkout: JupyterLab and papermill from this .venv find it; another checkout's never replaces it)
kernel:
	@$(PY) scripts/kernel.py install

## clean-kernel: remove this checkout's Jupyter kernel (clean-venv removes it with the environment)
clean-kernel:
	@$(PY) scripts/kernel.py remove

## clean-venv: delete .venv (its kernel too), to start over, e.g. with other PIP_ARGS
clean-venv:
	rm -rf $(VENV)

## run: execute every notebook with its defaults into runs/<UTC timestamp>/ and write a summary
run: $(STAMP)
	$(PY) -m compile_ckpt.workshop.runner $(RUN_ARGS)

## pages: execute every notebook with its defaults (as make run) and publish the HTML pages, index.html
## and the summaries under docs/run/, committed so that a reader can open an executed run without running it
pages: $(STAMP)
	rm -rf runs/.pages
	$(PY) -m compile_ckpt.workshop.runner --out runs/.pages $(RUN_ARGS)
	rm -rf docs/run && mkdir -p docs/run
	cp runs/.pages/*.html runs/.pages/summary.md runs/.pages/summary.json docs/run/
	@echo "published: docs/run/index.html"

## wheel: build dist/compile_ckpt-<version>-py3-none-any.whl (with the GPU results and the exercise
## solutions), e.g. to run a notebook in a hosted Jupyter: docs/hosted.md
wheel: $(STAMP)
	$(PY) -m build --wheel --no-isolation --outdir dist .

## test: lint (ruff, notebooks committed clean), every test, every notebook through papermill
test: lint
	$(PY) -m pytest

## test-fast: the unit tier (no notebooks, subprocess benchmarks or browser): under a minute
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

## lint: the pre-commit hooks on every file (ruff on .py and .ipynb, outputs stripped)
lint: $(STAMP)
	$(VENV)/bin/pre-commit run --all-files --show-diff-on-failure

## hooks: run the same hooks on every `git commit` (no venv activation needed)
hooks: $(STAMP)
	$(VENV)/bin/pre-commit install

## lab: JupyterLab on the notebooks; LAB_ARGS="--port 8899 --no-browser" passes options
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(ROOT_FLAG) $(LAB_ARGS)

## gpu-bench: the GPU measurements with the python on PATH (no venv, no network); GPU_ARGS pass options
gpu-bench:
	bash scripts/gpu_benchmark.sh "" $(GPU_ARGS)

## memory-bench: peak RSS of naive vs low-memory loading of a >=1 GB compiled checkpoint; what save/load add
memory-bench: $(STAMP)
	$(PY) benchmarks/load_memory.py

## pythons: the unit tier on every other Python this machine has (PYTHONS="python3.12 python3.13")
pythons:
	bash scripts/test_pythons.sh $(PYTHONS)

## torch-versions: the library's tests on the oldest torch pyproject.toml admits and the newest pip
## offers here, each in .venv-torch-X.Y.Z (TORCH_VERSIONS="2.6.0 2.14.1" picks others; GBs each)
torch-versions:
	bash scripts/test_torch_versions.sh $(TORCH_VERSIONS)

clean:
	rm -rf runs artifacts notebooks/artifacts .pytest_cache .ruff_cache .hypothesis build dist
	find . -name __pycache__ -prune -exec rm -rf {} +
